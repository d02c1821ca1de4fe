"""``hepsieve bench``: events/s of the processor per executor beside independent baselines.

Rows, in one invocation (DESIGN.md section 8); each round runs all of them in turn, so that
repeats interleave and every row sees the machine's slow and fast moments alike:

- the **I/O floor**: ``uproot.iterate`` of exactly the branches the analysis reads, nothing
  else (1 and N processes; :mod:`hepsieve.processors.bench_limits`);
- the **limit loop** (UCI HIGGS): the analysis written by hand without hepsieve's code
  (read, pack, onnxruntime, hist; 1 and N processes), checked to give the processor's
  histograms bin for bin;
- the **bare loop**: hepsieve's own chunk code driven by ``uproot.iterate`` (no coffea);
- the processor per executor (1 and N workers);
- **ROOT RDataFrame** with the same selection when ``import ROOT`` works (1 and N threads;
  :mod:`hepsieve.processors.bench_rdf`), checked to give the processor's cutflow;
- the notebook approach where the analysis names a text file (``pandas.read_csv`` +
  predict + ``np.histogram`` on the first rows, extrapolated).

Ratios are printed against the I/O floor, the limit loop and RDataFrame of the same
parallelism. :func:`growth` times whole ``hepsieve run`` commands on growing inputs and fits
wall = fixed cost + events / rate.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hepsieve.datasets.filesets import ResolvedFileset, load_fileset_spec, resolve_fileset
from hepsieve.models.scorer import default_models_dir
from hepsieve.processors import bench_limits, bench_rdf
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.analysis import Analysis
from hepsieve.processors.errors import ConfigurationError, HepsieveError
from hepsieve.processors.provenance import peak_rss_mb, versions

if TYPE_CHECKING:
    from hepsieve.processors.clusters import ClusterOptions

log = logging.getLogger(__name__)
HIGGS = "higgs-uci"
ATLAS = "atlas-hzz4l"


@dataclass
class BenchSetup:
    """What every row of one bench invocation shares: analysis, files, options."""

    ref: str  # the analysis as given: a name or module:ATTR (worker processes resolve it again)
    analysis: Analysis
    data_dir: Path
    out_dir: Path
    executors: list[str]
    workers: int
    chunksize: int
    models_dir: Path | None
    model_names: list[str] | None
    spec: dict
    resolved: ResolvedFileset
    variations: list[str] | None = field(default_factory=list)  # [] nominal only, as the peers
    cluster: ClusterOptions | None = None  # also dask on jobs of this batch system (--cluster)
    items: list[bench_limits.Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def parallel(self) -> list[int]:
        """Return the process/worker/thread counts every baseline runs with (1 and N)."""
        return sorted({1, self.workers})

    def datasets(self) -> list[tuple[str, list[str], dict]]:
        """Return (dataset, files, metadata) of the resolved fileset."""
        return [(ds, list(e["files"]), e["metadata"]) for ds, e in self.resolved.fileset.items()]


def make_setup(analysis_name: str, data_dir: Path, out_dir: Path, **options: Any) -> BenchSetup:
    """Resolve the fileset; list each file with exactly the branches the analysis reads of it."""
    analysis = get_analysis(analysis_name)
    spec = load_fileset_spec(analysis.name)
    flavour = analysis.input_flavour(spec.get("inputs"))
    resolved = resolve_fileset(spec, Path(data_dir), flavour)
    setup = BenchSetup(
        analysis_name, analysis, Path(data_dir), Path(out_dir), spec=spec, resolved=resolved, **options
    )
    for dataset, entry in resolved.fileset.items():
        # what a run reads: the preflight's list (required + optional present) for TTrees
        branches = tuple(
            entry.get("preload")
            or flavour.required(bool(entry["metadata"].get("is_data")), entry["metadata"])
        )
        setup.items += [(dataset, path, tree, branches) for path, tree in entry["files"].items()]
    return setup


def _row(result: dict, kind: str, parallel: int, **extra: Any) -> dict:
    keys = ("events", "wall_s", "startup_s", "events_per_s", "worker_max_rss_mb")
    return {k: result.get(k) for k in keys} | {"kind": kind, "parallel": parallel} | extra


def io_rows(setup: BenchSetup) -> dict[str, dict]:
    """Time the I/O floor (uproot read of the analysis' branches) in 1 and N processes."""
    counts = sorted({len(branches) for *_, branches in setup.items})  # data files read fewer
    n_branches = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    rows = {}
    for n in setup.parallel:
        shares = bench_limits.deal(setup.items, n)
        result = bench_limits.in_processes(bench_limits.io_floor_share, shares, setup.chunksize)
        rows[f"I/O floor: uproot read of the {n_branches} branches, {n} process(es)"] = _row(result, "io", n)
    return rows


def _limit_card(setup: BenchSetup) -> Path | None:
    """Return the model card the HIGGS limit loop runs (None, with a note, where it cannot)."""
    if setup.analysis.name != HIGGS:
        return None
    names = setup.model_names or ["mlp"]
    models_dir = setup.models_dir or default_models_dir(setup.analysis)
    if len(names) != 1 or not (models_dir / f"{names[0]}.json").is_file():
        setup.notes.append(f"limit loop left out: it runs one model (--model-names one of {models_dir})")
        return None
    return models_dir / f"{names[0]}.json"


def limit_rows(setup: BenchSetup, check: dict | None) -> dict[str, dict]:
    """Time the hand-written HIGGS limit loop in 1 and N processes; keep its counts in ``check``."""
    card = _limit_card(setup)
    if card is None:
        return {}
    rows = {}
    for n in setup.parallel:
        shares = bench_limits.deal(setup.items, n)
        result = bench_limits.in_processes(
            bench_limits.higgs_limit_share, shares, setup.chunksize, card, bench_limits.HIGGS_SCORE_CUT
        )
        if check is not None and "limit" not in check:
            check["limit"] = bench_limits.merged_counts(result["parts"])
        rows[f"limit loop: uproot -> pack -> onnxruntime -> hist ({card.stem}), {n} process(es)"] = _row(
            result, "limit", n
        )
    return rows


def _bare_share(share: list[bench_limits.Item], ref: str, options: dict) -> dict:
    """Run hepsieve's chunk code on ``share`` from a bare uproot.iterate loop (one process)."""
    import uproot
    from coffea.processor import accumulate

    from hepsieve.models.scorer import load_scorers
    from hepsieve.processors.executors import warm_numba
    from hepsieve.processors.processor import AnalysisProcessor

    a = get_analysis(ref)
    models_dir = options["models_dir"] or default_models_dir(a)
    scorers = load_scorers(models_dir, a, threads=1, names=options["model_names"])
    proc = AnalysisProcessor(a, scorers, variations=options["variations"])
    warm_numba(a.numba_kernels)  # as the executors' workers do at their start
    start, out, n = time.time(), None, 0
    for dataset, path, tree, branches in share:
        for events in uproot.iterate(f"{path}:{tree}", list(branches), step_size=options["chunksize"]):
            meta = {"dataset": dataset, "filename": path, "entrystart": n, "entrystop": n, "fileuuid": ""}
            meta |= options["metas"][dataset]
            out = accumulate([proc.process_chunk(proc.flat_events(events, meta), meta)], out)
            n += len(events)
    return {"events": n, "start": start, "stop": time.time(), "max_rss_mb": peak_rss_mb()}


def bare_row(setup: BenchSetup) -> dict[str, dict]:
    """Time hepsieve's chunk code in a bare uproot loop, 1 process: the cost of coffea itself."""
    inputs = setup.analysis.input_flavour(setup.spec.get("inputs"))
    if inputs.schema != "base" and not inputs.plain_collections:
        note = "bare loop left out: the analysis reads NanoEvents, which coffea builds"
        setup.notes += [] if note in setup.notes else [note]
        return {}
    options = {
        "models_dir": setup.models_dir,
        "model_names": setup.model_names,
        "chunksize": setup.chunksize,
        "variations": setup.variations,
        "metas": {ds: meta for ds, _, meta in setup.datasets()},
    }
    shares = bench_limits.deal(setup.items, 1)
    result = bench_limits.in_processes(_bare_share, shares, setup.ref, options)
    return {"bare loop: uproot.iterate + hepsieve's chunk code, 1 process": _row(result, "bare", 1)}


def processor_rows(setup: BenchSetup, check: dict | None) -> dict[str, dict]:
    """Time ``hepsieve run`` per executor (1 and N workers); keep the first result in ``check``."""
    from hepsieve.processors.runner import RunConfig, run

    rows = {}
    runs = [(e, n, None) for e in setup.executors for n in ([1] if e == "iterative" else setup.parallel)]
    for executor, n, batch in runs + ([("dask", setup.workers, setup.cluster)] if setup.cluster else []):
        config = RunConfig(
            setup.ref,
            setup.data_dir,
            setup.out_dir / f"{batch.kind if batch else executor}_{n}",
            models_dir=setup.models_dir,
            models=setup.model_names,
            executor=executor,
            workers=n,
            chunksize=setup.chunksize,
            variations=setup.variations,
            cluster=batch,
            progress=False,
        )
        result = _in_fresh_process(run, config)
        if check is not None and "processor" not in check:
            check["processor"] = result
        prov = result.provenance
        where = f"dask on {batch.kind} jobs" if batch else executor
        rows[f"hepsieve {where}, {n} worker(s)"] = _row(
            prov | {"startup_s": prov["executor_start_s"]}, "hepsieve", n
        )
    return rows


def _in_fresh_process(function: Any, *args: Any) -> Any:
    """Return ``function(*args)`` run in a fresh spawned process, as a ``hepsieve run`` command is.

    In the bench's own process the local dask workers were forked from a parent grown by the
    rows before it: HIGGS 11M, 2 workers, 2.74M events/s from a fresh parent, 2.35-2.45M after
    an iterative run in the same process.
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _rdf_job(analysis_name: str, datasets: list, spec: dict, threads: int) -> dict:
    """Run the analysis' RDataFrame peer in this (spawned) process."""
    if analysis_name == ATLAS:
        return bench_rdf.atlas_rdf(datasets, spec["tree"], spec["lumi_pb"], threads)
    features = get_analysis(HIGGS).feature_spec("all").names
    return bench_rdf.higgs_rdf(datasets, spec["tree"], threads, features)


def rdf_rows(setup: BenchSetup, check: dict | None) -> dict[str, dict]:
    """Time the RDataFrame peer with 1 and N threads, each in a fresh spawned process."""
    why = bench_rdf.rdf_unavailable()
    if setup.analysis.name not in (ATLAS, HIGGS) or setup.spec.get("format", "root") != "root":
        why = f"no RDataFrame peer written for {setup.analysis.name} on these inputs"
    if why:
        if why not in setup.notes:
            setup.notes.append(why)
        return {}
    what = "same selection, histograms" if setup.analysis.name == ATLAS else "read + fill per label, no ML"
    rows = {}
    for n in setup.parallel:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            result = pool.submit(_rdf_job, setup.analysis.name, setup.datasets(), setup.spec, n).result()
        if check is not None and "rdf" not in check:
            check["rdf"] = result["cutflow"]
        timing = {"wall_s": result["stop"] - result["start"], "worker_max_rss_mb": [result["max_rss_mb"]]}
        timing |= {"startup_s": result["declare_s"], "events": result["events"]}
        timing["events_per_s"] = result["events"] / timing["wall_s"]
        rows[f"ROOT RDataFrame ({what}), {n} thread(s)"] = _row(timing, "rdf", n)
    return rows


def text_baseline(setup: BenchSetup, total_events: int, rows: int = 1_000_000) -> dict[str, dict]:
    """Time the notebook approach (pandas.read_csv + predict + np.histogram), extrapolated.

    ``rows`` rows of the analysis' text file; the time is extrapolated to ``total_events``.
    """
    from hepsieve.models.scorer import load_scorers

    analysis = setup.analysis
    baseline = analysis.tools.text_baseline
    if baseline is None or not (setup.data_dir / baseline.file).is_file():
        return {}
    import pandas as pd

    path = setup.data_dir / baseline.file
    models_dir = setup.models_dir or default_models_dir(analysis)
    scorers = load_scorers(models_dir, analysis, threads=1, names=setup.model_names)
    start = time.perf_counter()
    frame = pd.read_csv(path, header=None, names=list(baseline.columns), nrows=rows)
    for scorer in scorers:
        x = frame[list(scorer.feature_names)].to_numpy(np.float32)
        score = scorer.predict_fold(0, x)
        np.histogram(score[frame["label"].to_numpy() == 1], bins=analysis.scoring.score_bins, range=(0, 1))
    wall = time.perf_counter() - start
    extrapolated = wall * total_events / len(frame)
    name = (
        f"pandas.read_csv + predict, {len(frame)} rows (extrapolated: {extrapolated:.0f} s "
        f"for {total_events})"
    )
    result = {"events": len(frame), "wall_s": wall, "events_per_s": len(frame) / wall}
    return {name: _row(result, "notebook", 1, extrapolated_wall_s=extrapolated, extrapolated_to=total_events)}


def one_round(setup: BenchSetup, check: dict | None = None) -> dict[str, dict]:
    """Time every row once, in table order; the first round also fills ``check``."""
    rows = {"load_before": {"loadavg": os.getloadavg()}}
    rows |= io_rows(setup)
    rows |= limit_rows(setup, check)
    rows |= bare_row(setup)
    rows |= processor_rows(setup, check)
    rows |= rdf_rows(setup, check)
    return rows


def median_rows(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Return, per configuration, the round with the median events/s (and all rounds' values)."""
    rows = {}
    for name in rounds[0]:
        if name == "load_before":
            continue
        runs = sorted((r[name] for r in rounds), key=lambda r: r["events_per_s"])
        rows[name] = runs[(len(runs) - 1) // 2] | {
            "events_per_s_runs": [r[name]["events_per_s"] for r in rounds]
        }
    return rows


def run_checks(setup: BenchSetup, check: dict) -> dict[str, str]:
    """Compare the limit loop's histograms and the RDataFrame cutflow with the processor's.

    Returns one line per check; a difference raises HepsieveError after the table is printed
    (see :func:`bench`), so a baseline that computes something else never goes unnoticed.
    """
    out = {}
    result = check.get("processor")
    if result is None:
        return {"checks": "no processor row ran: nothing to compare the baselines with"}
    if "limit" in check:
        bad = bench_limits.compare_with_processor(check["limit"], result.histograms)
        n = sum(len(h) for h in check["limit"].values())
        out["limit"] = (
            f"MISMATCH limit loop vs processor histograms: {bad}"
            if bad
            else f"limit loop == processor: {n} histograms (dataset x histogram), every bin and category"
        )
    if "rdf" in check and setup.analysis.name == ATLAS:
        labels = [s.label for s in setup.analysis.steps(setup.analysis.inputs.name)]
        bad = bench_rdf.compare_atlas_cutflow(check["rdf"], result.cutflow, labels)
        out["rdf"] = (
            f"MISMATCH RDataFrame vs processor cutflow: {bad}"
            if bad
            else f"RDataFrame cutflow == processor's: {len(check['rdf'])} datasets, every step, to the event"
        )
    elif "rdf" in check:
        bad = [
            f"{ds} {cat}"
            for ds, cats in check["rdf"].items()
            for cat, v in cats.items()
            if v["n"] != result.cutflow[ds][f"category {cat}"]["n"]
        ]
        out["rdf"] = (
            f"MISMATCH RDataFrame vs processor category counts: {bad}"
            if bad
            else "RDataFrame events per category == processor's"
        )
    return out


def _ratio(rows: dict[str, dict], row: dict, kind: str) -> float | None:
    """Return the row's events/s over that of the ``kind`` row with the same parallelism."""
    ref = next((r for r in rows.values() if r["kind"] == kind and r["parallel"] == row["parallel"]), None)
    return row["events_per_s"] / ref["events_per_s"] if ref else None


def print_table(rows: dict[str, dict], header: str) -> None:
    """Print the bench table with each row's ratio to the I/O floor, limit loop and RDataFrame."""
    print(header)
    print(
        f"{'configuration':<78s} {'events':>9s} {'start [s]':>9s} {'wall [s]':>8s} {'events/s':>10s} "
        f"{'/io':>5s} {'/limit':>6s} {'/RDF':>5s} {'RSS/worker [MB]':>15s}"
    )
    for name, r in rows.items():
        ratios = {k: _ratio(rows, r, k) for k in ("io", "limit", "rdf")}
        r["ratios"] = ratios
        text = {k: "-" if v is None else f"{v:.2f}" for k, v in ratios.items()}
        rss = r.get("worker_max_rss_mb")
        rss_text = "/".join(f"{v:.0f}" for v in rss) if rss else "-"
        startup = "-" if r.get("startup_s") is None else f"{r['startup_s']:.2f}"
        print(
            f"{name:<78s} {r['events']:>9d} {startup:>9s} {r['wall_s']:>8.2f} {r['events_per_s']:>10.0f} "
            f"{text['io']:>5s} {text['limit']:>6s} {text['rdf']:>5s} {rss_text:>15s}"
        )


def scaling_lines(rows: dict[str, dict], workers: int) -> list[str]:
    """Return, per parallel executor, the speed-up from 1 to ``workers`` workers."""
    out = []
    for executor in ("futures", "dask"):
        one, many = (rows.get(f"hepsieve {executor}, {n} worker(s)") for n in (1, workers))
        if workers > 1 and one and many:
            out.append(
                f"{executor}: speed-up 1 -> {workers} workers = "
                f"{many['events_per_s'] / one['events_per_s']:.2f}x"
            )
    return out


def paired_lines(rounds: list[dict[str, dict]]) -> list[str]:
    """Return, per processor row, its events/s over the baseline's in each round (and their median).

    The baseline is the limit loop (the I/O floor where there is none) with the same
    parallelism. Rows of one round run minutes apart at most, so on a noisy machine these
    paired ratios vary less than the ratio of two medians taken from different rounds.
    """
    if len(rounds) < 2:
        return []
    out = []
    first = rounds[0]
    for name, row in first.items():
        if row.get("kind") != "hepsieve":
            continue
        base = next(
            (b for kind in ("limit", "io") for b, r in first.items()
             if r.get("kind") == kind and r.get("parallel") == row["parallel"]),
            None,
        )  # fmt: skip
        if base is None:
            continue
        ratios = [r[name]["events_per_s"] / r[base]["events_per_s"] for r in rounds]
        kind = first[base]["kind"]
        shown = " / ".join(f"{x:.2f}" for x in ratios)
        out.append(f"per round, {name} / {kind}: {shown} (median {statistics.median(ratios):.2f})")
    return out


def growth_inputs(setup: BenchSetup, sizes: list[int]) -> list[tuple[int, Path, list[str]]]:
    """Return, per size, a directory of links to the first files holding at least that many events.

    Files are taken dataset by dataset in fileset order (sorted names); each directory is
    ``out/growth/<size>``, with the datasets it holds.
    """
    ordered = [(ds, path) for ds, entry in setup.resolved.fileset.items() for path in sorted(entry["files"])]
    out = []
    for size in sorted(sizes):
        target, n, chosen = setup.out_dir / "growth" / str(size), 0, []
        for ds, path in ordered:
            if n >= size:
                break
            chosen.append((ds, Path(path)))
            n += setup.resolved.file_meta[path]["numentries"]
        target.mkdir(parents=True, exist_ok=True)
        for old in target.iterdir():
            old.unlink()
        for _, path in chosen:
            (target / path.name).symlink_to(path.resolve())
        out.append((n, target, list(dict.fromkeys(ds for ds, _ in chosen))))
    return out


def _run_command(
    setup: BenchSetup, data_dir: Path, datasets: list[str], out: Path, executor: str
) -> list[str]:
    script = Path(sys.executable).parent / "hepsieve"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "hepsieve.processors.cli"]
    command += [
        "-q",
        "run",
        setup.ref,
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--executor",
        executor,
    ]
    command += ["--workers", str(setup.workers), "--chunksize", str(setup.chunksize), "--datasets", *datasets]
    if setup.models_dir:
        command += ["--models", str(setup.models_dir)]
    return command + (["--model-names", *setup.model_names] if setup.model_names else [])


def growth(setup: BenchSetup, sizes: list[int], repeat: int, executor: str) -> dict:
    """Time whole ``hepsieve run`` commands (start-up included) on growing inputs; fit a line.

    wall = fixed + events / rate, by least squares over the median wall of each size; repeats
    interleave the sizes.
    """
    inputs = growth_inputs(setup, sizes)
    walls: dict[int, list[float]] = {n: [] for n, _, _ in inputs}
    inner: dict[int, list[float]] = {n: [] for n, _, _ in inputs}
    for i in range(repeat):
        for n, data_dir, datasets in inputs:
            out = setup.out_dir / "growth_runs" / f"{n}_{i}"
            begin = time.perf_counter()
            command = _run_command(setup, data_dir, datasets, out, executor)
            done = subprocess.run(command, capture_output=True, check=False)
            walls[n].append(time.perf_counter() - begin)
            if done.returncode:
                raise HepsieveError(f"growth run on {data_dir} failed: {done.stderr.decode()[-500:]}")
            inner[n].append(json.loads((out / "run.json").read_text())["wall_s"])
    events = np.array([n for n, _, _ in inputs], float)
    median = np.array([statistics.median(walls[int(n)]) for n in events])
    slope, fixed = np.polyfit(events, median, 1) if len(events) > 1 else (median[0] / events[0], 0.0)
    return {
        "executor": executor,
        "workers": setup.workers,
        "sizes": {int(n): {"wall_s_runs": walls[int(n)], "wall_s": float(m),
                           "processing_s_runs": inner[int(n)]}
                  for n, m in zip(events, median, strict=True)},
        "fixed_s": float(fixed),
        "per_event_us": float(slope * 1e6),
        "rate_events_per_s": float(1 / slope) if slope > 0 else None,
    }  # fmt: skip


def print_growth(result: dict) -> None:
    """Print the whole-run wall per size and the fixed and per-event cost of the fit."""
    print(f"\ngrowth: whole `hepsieve run` (--executor {result['executor']} --workers {result['workers']})")
    print(f"{'events':>10s} {'wall [s] (median)':>18s} {'runs [s]':>24s} {'processing [s]':>16s}")
    for n, r in result["sizes"].items():
        runs = "/".join(f"{w:.2f}" for w in r["wall_s_runs"])
        inner = statistics.median(r["processing_s_runs"])
        print(f"{n:>10d} {r['wall_s']:>18.2f} {runs:>24s} {inner:>16.2f}")
    rate = result["rate_events_per_s"]
    print(
        f"fit: wall = {result['fixed_s']:.2f} s fixed + {result['per_event_us']:.3f} us/event"
        + (f" ({rate:.0f} events/s)" if rate else "")
    )


def _summarise(setup: BenchSetup, rounds: list[dict], check: dict, repeat: int) -> dict:
    """Take the medians, add the text baseline, run the checks; print the table; return the report."""
    loads = [r["load_before"]["loadavg"] for r in rounds]
    rows = median_rows(rounds)
    rows |= text_baseline(setup, next(iter(rows.values()))["events"])
    checks = run_checks(setup, check)
    names = setup.model_names
    print_table(
        rows,
        f"\n{setup.analysis.name}: models {', '.join(names) if names else 'all'}; chunksize "
        f"{setup.chunksize}; {setup.workers} workers/processes/threads; variations: "
        f"{'all' if setup.variations is None else 'nominal only'}"
        + (f"; median of {repeat} rounds" if repeat > 1 else ""),
    )
    lines = scaling_lines(rows, setup.workers) + paired_lines(rounds) + list(checks.values()) + setup.notes
    lines.append(
        "load average (1/5/15 min) before each round: "
        + "; ".join("/".join(f"{v:.2f}" for v in x) for x in loads)
    )
    print("\n".join(lines))
    return {
        "analysis": setup.analysis.name, "data_dir": str(setup.data_dir), "chunksize": setup.chunksize,
        "workers": setup.workers, "repeat": repeat, "models": names or "all", "results": rows,
        "checks": checks, "notes": setup.notes, "loadavg": loads, "versions": versions(),
    }  # fmt: skip


def bench(
    analysis_name: str,
    data_dir: Path,
    out_dir: Path,
    executors: list[str],
    workers: int,
    chunksize: int,
    models_dir: Path | None = None,
    model_names: list[str] | None = None,
    repeat: int = 1,
    growth_sizes: list[int] | None = None,
    growth_executor: str = "dask",
    all_variations: bool = False,
    cluster: ClusterOptions | None = None,
) -> dict:
    """Time every row ``repeat`` times (interleaved), check the baselines, print and save the table.

    Each row is the round with the median events/s; ``events_per_s_runs`` lists them all.
    A baseline that disagrees with the processor raises HepsieveError after the table.
    The processor fills the nominal histograms only (as the baselines) unless ``all_variations``.
    """
    if repeat < 1:
        raise ConfigurationError(f"--repeat {repeat}: must be at least 1")
    setup = make_setup(
        analysis_name, data_dir, out_dir, executors=executors, workers=workers, chunksize=chunksize,
        models_dir=models_dir, model_names=model_names, variations=None if all_variations else [],
        cluster=cluster,
    )  # fmt: skip
    check: dict = {}
    rounds = [one_round(setup, check if i == 0 else None) for i in range(repeat)]
    report = _summarise(setup, rounds, check, repeat)
    if growth_sizes:
        grown = growth(setup, growth_sizes, repeat, growth_executor)
        print_growth(grown)
        report["growth"] = grown
    setup.out_dir.mkdir(parents=True, exist_ok=True)
    (setup.out_dir / "bench.json").write_text(json.dumps(report, indent=1, default=str))
    mismatches = [line for line in report["checks"].values() if line.startswith("MISMATCH")]
    if mismatches:
        raise HepsieveError("; ".join(mismatches))
    return report
