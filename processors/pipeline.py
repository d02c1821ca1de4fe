"""The demo pipeline: toys -> features -> training -> evaluation -> ONNX run -> plots, in one call."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from hepsieve.processors.analyses import get_analysis, load_object
from hepsieve.processors.analysis import Analysis
from hepsieve.processors.errors import ConfigurationError
from hepsieve.processors.runner import RunConfig, RunResult, run

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What the demo produced: the evaluation summary, the final run and the score cuts."""

    summary: dict
    result: RunResult
    score_cuts: dict[str, float] | None
    seconds: float
    data_dir: Path | None = None  # the run's input directory
    significance: dict | None = None  # fit/significance.json of the final run (None: no fit)
    no_fit_reason: str | None = None  # why there is no significance table


def prepare_inputs(analysis: Analysis, data_dir: Path, out_dir: Path) -> Path:
    """Return the directory a run of ``analysis`` reads for the files in ``data_dir``.

    A Parquet fileset whose files are in ``data_dir`` as CSV (``<name>.csv`` or ``.csv.gz``):
    those are converted (schema-aware: the analysis' column types, any column order, extra
    columns left out) into ``out_dir``; otherwise ``data_dir`` itself.
    """
    from hepsieve.datasets.converters import csv_schema, csv_to_parquet
    from hepsieve.datasets.filesets import load_fileset_spec

    data_dir = Path(data_dir)
    spec = load_fileset_spec(analysis.name)
    if spec.get("format") != "parquet":
        return data_dir
    schema = csv_schema(analysis.input_flavour(spec.get("inputs")), f"analysis {analysis.name!r}")
    files = [f for entry in spec["datasets"].values() for f in entry["files"]]
    sources = {f: [data_dir / f.replace(".parquet", ext) for ext in (".csv", ".csv.gz")] for f in files}
    if not any(p.is_file() for paths in sources.values() for p in paths):
        return data_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, paths in sources.items():
        csv = next((p for p in paths if p.is_file()), None)
        if csv is not None:
            rows = csv_to_parquet(csv, out_dir / name, schema=schema)
            print(f"      {csv} -> {out_dir / name} ({rows} rows)", flush=True)
        elif (data_dir / name).is_file():
            shutil.copy2(data_dir / name, out_dir / name)
    if (data_dir / "toy.json").is_file():  # keeps the plots' "toy" label
        shutil.copy2(data_dir / "toy.json", out_dir / "toy.json")
    return out_dir


def toy_generator(analysis: Analysis) -> Callable[..., Path]:
    """Return the analysis' toy generator; ConfigurationError naming the field if it has none."""
    if not analysis.tools.toy_generator:
        raise ConfigurationError(
            f"analysis {analysis.name!r}: tools.toy_generator is not set, "
            "so there are no toys to generate; give real files instead"
        )
    return cast(Callable[..., Path], load_object(analysis.tools.toy_generator))


def _demo_inputs(analysis: Analysis, out: Path, events: int, data_dir: Path | None) -> Path:
    """Return the demo's input directory: fresh toys, or the real files in ``data_dir``."""
    if data_dir is not None:
        return prepare_inputs(analysis, Path(data_dir), out / "data")
    toy_generator(analysis)(out / "toys", events=events, seed=1)
    return out / "toys"


def demo(
    analysis_ref: str | Analysis,
    out: Path,
    events: int = 20_000,
    executor: str = "futures",
    workers: int = 2,
    progress: bool = True,
    data_dir: Path | None = None,
) -> DemoResult:
    """Generate toys (or read ``data_dir``), export features, train, evaluate, run with ONNX, plot.

    The model kinds and hyperparameters: the analysis' ``TrainingPolicy`` (default MLP and RF).
    """
    from hepsieve.processors.plots import plot_run
    from hepsieve.training.evaluate import evaluate, working_points
    from hepsieve.training.train import train

    start = time.perf_counter()
    analysis = get_analysis(analysis_ref)
    steps = 7

    def step(i: int, text: str) -> None:
        print(f"[{i}/{steps}] {text}  ({time.perf_counter() - start:.0f} s)", flush=True)

    step(1, f"generating {events} toy events per dataset" if data_dir is None else f"reading {data_dir}")
    inputs = _demo_inputs(analysis, out, events, data_dir)
    common: dict[str, Any] = {"analysis": analysis_ref, "data_dir": inputs, "executor": executor}
    common |= {"workers": workers, "chunksize": 100_000, "progress": progress}
    step(2, "exporting features")
    features_run = run(RunConfig(out_dir=out / "features", mode="features", **common))
    features = out / "features" / "features"
    step(3, f"training {', '.join(analysis.training.demo_models)} (2 folds each)")
    for kind in analysis.training.demo_models:
        hyper = dict(analysis.training.hyper.get(kind, {}))
        train(analysis_ref, features, kind, out / "models", progress=progress, hyper=hyper)
    step(4, "evaluating (held-out events only)")
    is_toy = features_run.record.is_toy
    summary = evaluate(analysis_ref, features, out / "models", out / "evaluation", is_toy=is_toy)
    step(5, "running the processor with ONNX inference")
    kind = analysis.scoring.working_point
    cuts = None if kind == "fixed" else working_points(out / "evaluation" / "metrics.json", kind)
    result = run(RunConfig(out_dir=out / "histograms", models_dir=out / "models", score_cut=cuts, **common))
    step(6, "plotting")
    plot_run(out / "histograms")
    step(7, "statistics: fit inputs and significance (pyhf)")
    significance, reason = demo_significance(out / "histograms")
    return DemoResult(summary, result, cuts, time.perf_counter() - start, Path(inputs), significance, reason)


def demo_significance(run_dir: Path) -> tuple[dict | None, str | None]:
    """Return the significance.json of ``hepsieve stats`` on the demo's run, or why there is none.

    An analysis without a signal process (or with an empty signal) has nothing to fit: the
    reason is returned (and printed by the demo), not raised.
    """
    from hepsieve.processors.statistics import write_fit

    try:
        _, summary = write_fit(run_dir)
    except ConfigurationError as err:
        return None, str(err)
    return summary, None
