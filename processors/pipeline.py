"""The demo pipeline: toys -> features -> training -> evaluation -> ONNX run -> plots, in one call."""

from __future__ import annotations

import logging
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
DEMO_MODELS = ("mlp", "rf")


@dataclass
class DemoResult:
    """What the demo produced: the evaluation summary, the final run and the score cuts."""

    summary: dict
    result: RunResult
    score_cuts: dict[str, float] | None
    seconds: float


def toy_generator(analysis: Analysis) -> Callable[..., Path]:
    """Return the analysis' toy generator; ConfigurationError naming the field if it has none."""
    if not analysis.tools.toy_generator:
        raise ConfigurationError(
            f"analysis {analysis.name!r}: tools.toy_generator is not set, "
            "so there are no toys to generate; give real files instead"
        )
    return cast(Callable[..., Path], load_object(analysis.tools.toy_generator))


def demo(
    analysis_ref: str | Analysis,
    out: Path,
    events: int = 20_000,
    executor: str = "futures",
    workers: int = 2,
    progress: bool = True,
) -> DemoResult:
    """Generate toys, export features, train MLP and RF, evaluate, run with ONNX, plot."""
    from hepsieve.processors.plots import plot_run
    from hepsieve.training.evaluate import evaluate, working_points
    from hepsieve.training.train import train

    start = time.perf_counter()
    analysis = get_analysis(analysis_ref)
    steps = 6

    def step(i: int, text: str) -> None:
        print(f"[{i}/{steps}] {text}  ({time.perf_counter() - start:.0f} s)", flush=True)

    step(1, f"generating {events} toy events per dataset")
    toy_generator(analysis)(out / "toys", events=events, seed=1)
    common: dict[str, Any] = {
        "analysis": analysis_ref,
        "data_dir": out / "toys",
        "executor": executor,
        "workers": workers,
        "chunksize": 100_000,
        "progress": progress,
    }
    step(2, "exporting features")
    run(RunConfig(out_dir=out / "features", mode="features", **common))
    features = out / "features" / "features"
    step(3, "training MLP and RandomForest (2 folds each)")
    for kind in DEMO_MODELS:
        train(analysis_ref, features, kind, out / "models", progress=progress)
    step(4, "evaluating")
    summary = evaluate(analysis_ref, features, out / "models", out / "evaluation")
    step(5, "running the processor with ONNX inference")
    cuts = (
        working_points(out / "evaluation" / "metrics.json")
        if analysis.scoring.working_point == "ams"
        else None
    )
    result = run(RunConfig(out_dir=out / "histograms", models_dir=out / "models", score_cut=cuts, **common))
    step(6, "plotting")
    plot_run(out / "histograms")
    return DemoResult(summary, result, cuts, time.perf_counter() - start)
