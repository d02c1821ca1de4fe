"""``hepsieve bench``: events/s of the processor per executor, side by side with floor loops.

The floor is the same analysis code (selection, weights, features, ONNX, hist fill) driven
by a bare ``uproot.iterate`` loop: what is left when coffea's chunking, pickling and merging
are taken away; run in 1 process and in N processes (files split between them). Where the
analysis names a text baseline (UCI HIGGS), the notebook approach is timed too:
``pandas.read_csv`` of the text + model predict + ``np.histogram`` on the first rows,
extrapolated to the whole file.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import uproot
from coffea.processor import accumulate

from hepsieve.datasets.filesets import load_fileset_spec, resolve_fileset
from hepsieve.models.scorer import default_models_dir, load_scorers
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.clusters import ClusterOptions
from hepsieve.processors.errors import ConfigurationError
from hepsieve.processors.processor import AnalysisProcessor
from hepsieve.processors.provenance import peak_rss_mb, versions
from hepsieve.processors.runner import RunConfig, run

log = logging.getLogger(__name__)


def _floor_items(analysis_name: str, data_dir: Path) -> list[tuple]:
    analysis = get_analysis(analysis_name)
    spec = load_fileset_spec(analysis.name)
    resolved = resolve_fileset(spec, data_dir, analysis.input_flavour(spec.get("inputs")))
    return [
        (dataset, path, tree, entry["metadata"])
        for dataset, entry in resolved.fileset.items()
        for path, tree in entry["files"].items()
    ]


def _floor_run(
    analysis_name: str,
    items: list[tuple],
    models_dir: Path | None,
    chunksize: int,
    model_names: list[str] | None,
) -> dict:
    """Process ``items`` with uproot.iterate and the processor's chunk function.

    Process ``items`` with uproot.iterate + the processor's chunk function (one process);
    ``start``/``stop`` (epoch seconds) bracket the loop, after imports and model loading.
    """
    analysis = get_analysis(analysis_name)
    scorers = load_scorers(models_dir or default_models_dir(analysis), analysis, threads=1, names=model_names)
    proc = AnalysisProcessor(analysis, scorers)
    start, out, n = time.time(), None, 0
    for dataset, path, tree, meta in items:
        inputs = analysis.input_flavour(meta.get("inputs"))
        chunk_meta = {"dataset": dataset, "filename": path, "fileuuid": "", **meta}
        for events in _chunks(inputs.schema, path, tree, _branches_read(inputs, path, tree, meta), chunksize):
            chunk_meta |= {"entrystart": n, "entrystop": n + len(events)}
            if inputs.schema == "nanoaod":
                events.metadata.update(chunk_meta)  # NanoAOD analyses read it from the events
            out = accumulate([proc.process_chunk(events, chunk_meta)], out)
            n += len(events)
    return {"events": n, "start": start, "stop": time.time(), "max_rss_mb": peak_rss_mb()}


def _branches_read(inputs, path: str, tree: str, meta: dict) -> list[str]:
    """Return the branches a run reads of one file: required, and the optional ones it has."""
    with uproot.open(f"{path}:{tree}") as ttree:
        present = set(ttree.keys())
    required = list(inputs.required(bool(meta.get("is_data")), meta))
    return required + [b for b in inputs.optional if b in present and b not in required]


def _chunks(schema: str, path: str, tree: str, branches: list[str], chunksize: int):
    """Yield a file's chunks: awkward arrays of ``branches``, or NanoEvents (lazy) for NanoAOD."""
    if schema != "nanoaod":
        yield from uproot.iterate(f"{path}:{tree}", branches, step_size=chunksize, library="ak")
        return
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    with uproot.open(f"{path}:{tree}") as ttree:
        n = ttree.num_entries
    for lo in range(0, n, chunksize):
        factory = NanoEventsFactory.from_root(
            {path: tree},
            entry_start=lo,
            entry_stop=min(n, lo + chunksize),
            schemaclass=NanoAODSchema,
            metadata={},
            preload=branches,
        )
        yield factory.events()


def io_floor(analysis_name: str, data_dir: Path, chunksize: int) -> dict:
    """Time a bare ``uproot.iterate`` read of the branches the analysis reads (1 process)."""
    items = _floor_items(analysis_name, data_dir)
    analysis = get_analysis(analysis_name)
    start, n, n_branches = time.time(), 0, 0
    for _, path, tree, meta in items:
        branches = _branches_read(analysis.input_flavour(meta.get("inputs")), path, tree, meta)
        n_branches = max(n_branches, len(branches))
        for arrays in uproot.iterate(f"{path}:{tree}", branches, step_size=chunksize, library="ak"):
            n += len(arrays)
    wall = time.time() - start
    return {"events": n, "wall_s": wall, "startup_s": 0.0, "events_per_s": n / wall, "branches": n_branches}


def floor_loop(
    analysis_name: str,
    data_dir: Path,
    models_dir: Path | None,
    chunksize: int,
    model_names: list[str] | None = None,
    processes: int = 1,
) -> dict:
    """Time the floor loop in ``processes`` processes (files dealt round-robin by size).

    ``wall_s`` runs from the first process starting its loop to the last one ending it, as
    the executors' ``wall_s`` leaves out their start-up; ``startup_s`` is the rest.
    """
    items = sorted(_floor_items(analysis_name, data_dir), key=lambda i: -Path(i[1]).stat().st_size)
    begin = time.time()
    shares = [items[i::processes] for i in range(processes)]
    # a fresh process even for one share, so that its peak memory is the loop's alone;
    # spawn: the parent already holds onnxruntime thread pools, which fork would copy
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(
            pool.map(
                _floor_run,
                [analysis_name] * processes,
                shares,
                [models_dir] * processes,
                [chunksize] * processes,
                [model_names] * processes,
            )
        )
    total = time.time() - begin
    wall = max(p["stop"] for p in parts) - min(p["start"] for p in parts)
    n = sum(p["events"] for p in parts)
    return {
        "events": n,
        "wall_s": wall,
        "startup_s": total - wall,
        "events_per_s": n / wall,
        "worker_max_rss_mb": [p["max_rss_mb"] for p in parts],
    }


def text_baseline(
    analysis_name: str,
    data_dir: Path,
    models_dir: Path | None,
    model_names: list[str] | None,
    total_events: int,
    rows: int = 1_000_000,
) -> dict | None:
    """Time the notebook approach (pandas.read_csv + predict + histogram).

    Time pandas.read_csv + predict + np.histogram on ``rows`` rows; extrapolate to
    ``total_events`` (the events of the benchmark's files).
    """
    analysis = get_analysis(analysis_name)
    baseline = analysis.tools.text_baseline
    if baseline is None or not (Path(data_dir) / baseline.file).is_file():
        return None
    import pandas as pd

    path = Path(data_dir) / baseline.file
    scorers = load_scorers(models_dir or default_models_dir(analysis), analysis, threads=1, names=model_names)
    start = time.perf_counter()
    frame = pd.read_csv(path, header=None, names=list(baseline.columns), nrows=rows)
    for scorer in scorers:
        x = frame[list(scorer.feature_names)].to_numpy(np.float32)
        score = scorer.predict_fold(0, x)
        np.histogram(score[frame["label"].to_numpy() == 1], bins=analysis.scoring.score_bins, range=(0, 1))
    wall = time.perf_counter() - start
    return {
        "events": len(frame),
        "wall_s": wall,
        "events_per_s": len(frame) / wall,
        "extrapolated_wall_s": wall * total_events / len(frame),
        "extrapolated_to": total_events,
    }


def _scaling(rows: dict[str, dict], workers: int) -> dict[str, str]:
    """Return, per parallel executor, its scaling against the floor and over workers.

    Per parallel executor: throughput with ``workers`` workers over the N-process floor,
    and the speed-up from 1 to ``workers`` workers; for batch-system workers (``--cluster``),
    their throughput over the floor and over the local dask cluster's.
    """
    floor_n = rows.get(f"floor: same loop, {workers} processes")
    out = {}
    for executor in ("futures", "dask"):
        one, many = (rows.get(f"hepsieve {executor}, {n} worker(s)") for n in (1, workers))
        if workers > 1 and floor_n and one and many:
            out[executor] = (
                f"{executor}: {workers} workers / {workers}-process floor = "
                f"{many['events_per_s'] / floor_n['events_per_s']:.2f}; speed-up 1 -> "
                f"{workers} workers = {many['events_per_s'] / one['events_per_s']:.2f}x"
            )
    local = rows.get(f"hepsieve dask, {workers} worker(s)")
    for name, row in rows.items():
        if name.startswith("hepsieve dask on ") and floor_n and local:
            kind = name.removeprefix("hepsieve dask on ").split()[0]
            out[kind] = (
                f"{kind} jobs: {workers} workers / {workers}-process floor = "
                f"{row['events_per_s'] / floor_n['events_per_s']:.2f}; / local dask, {workers} workers = "
                f"{row['events_per_s'] / local['events_per_s']:.2f}"
            )
    return out


def _run_row(config: RunConfig) -> dict:
    """Run ``config``; return its bench row (events, wall and start-up time, events/s, peak RSS)."""
    prov = run(config).provenance
    return {
        "events": prov["events"],
        "wall_s": prov["wall_s"],
        "startup_s": prov["executor_start_s"],
        "events_per_s": prov["events_per_s"],
        "worker_max_rss_mb": prov.get("worker_max_rss_mb"),
    }


def _one_round(
    analysis_name: str,
    data_dir: Path,
    out_dir: Path,
    executors: list[str],
    workers: int,
    chunksize: int,
    models_dir: Path | None,
    model_names: list[str] | None,
    cluster: ClusterOptions | None = None,
) -> dict[str, dict]:
    """Time the floors, each executor (1 and ``workers`` workers) and the ``cluster``, in this order."""
    rows: dict[str, dict] = {
        "floor: uproot.iterate + onnxruntime + hist, 1 process": floor_loop(
            analysis_name, data_dir, models_dir, chunksize, model_names
        )
    }
    if workers > 1:
        rows[f"floor: same loop, {workers} processes"] = floor_loop(
            analysis_name, data_dir, models_dir, chunksize, model_names, processes=workers
        )
    io = io_floor(analysis_name, data_dir, chunksize)
    rows[f"I/O floor: uproot.iterate of the {io.pop('branches')} branches read, 1 process"] = io
    runs = [(e, n, None) for e in executors for n in ([1] if e == "iterative" else sorted({1, workers}))]
    for executor, n, batch in runs + ([("dask", workers, cluster)] if cluster else []):
        config = RunConfig(
            analysis_name,
            data_dir,
            out_dir / f"{batch.kind if batch else executor}_{n}",
            models_dir=models_dir,
            models=model_names,
            executor=executor,
            workers=n,
            chunksize=chunksize,
            cluster=batch,
            progress=False,
        )
        where = f"dask on {batch.kind} jobs" if batch else executor
        rows[f"hepsieve {where}, {n} worker(s)"] = _run_row(config)
    return rows


def _median_rows(rounds: list[dict[str, dict]]) -> dict[str, dict]:
    """Return, per configuration, the round with the median events/s (and all rounds' values)."""
    rows = {}
    for name in rounds[0]:
        runs = sorted((r[name] for r in rounds), key=lambda r: r["events_per_s"])
        rows[name] = runs[(len(runs) - 1) // 2] | {
            "events_per_s_runs": [r[name]["events_per_s"] for r in rounds]
        }
    return rows


def _rdataframe_note() -> str:
    try:
        import ROOT  # noqa: F401
    except ImportError:
        return "ROOT (PyROOT) is not importable here: RDataFrame comparison skipped"
    return "ROOT is importable, but the RDataFrame comparison is not implemented yet"


def _print_table(rows: dict[str, dict], header: str) -> None:
    """Print the bench table; add each row's ratio to the first (the 1-process floor)."""
    floor = next(iter(rows.values()))["events_per_s"]
    print(header)
    print(
        f"{'configuration':<70s} {'events':>10s} {'start-up [s]':>12s} {'wall [s]':>9s} "
        f"{'events/s':>12s} {'/floor':>7s} {'peak RSS/worker [MB]':>21s}"
    )
    for name, r in rows.items():
        r["ratio_to_floor"] = r["events_per_s"] / floor
        rss = r.get("worker_max_rss_mb")
        rss_text = "/".join(f"{v:.0f}" for v in rss) if rss else "-"
        startup = f"{r['startup_s']:.2f}" if "startup_s" in r else "-"
        print(
            f"{name:<70s} {r['events']:>10d} {startup:>12s} {r['wall_s']:>9.2f} {r['events_per_s']:>12.0f} "
            f"{r['ratio_to_floor']:>7.2f} {rss_text:>21s}"
        )


def _report(analysis_name, data_dir, chunksize, repeat, model_names, rows, scaling, rdf_note) -> dict:
    return {
        "analysis": analysis_name,
        "data_dir": str(data_dir),
        "chunksize": chunksize,
        "repeat": repeat,
        "models": model_names or "all",
        "results": rows,
        "scaling": scaling,
        "rdataframe": rdf_note,
        "versions": versions(),
    }


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
    cluster: ClusterOptions | None = None,
) -> dict:
    """Time the floors, each executor (1 and ``workers`` workers) and the text baseline.

    With ``repeat`` > 1 the whole sequence runs that many times, so that every configuration
    sees the machine's slow and fast moments alike; each row is the run with the median
    events/s, and ``events_per_s_runs`` lists them all. ``cluster``: also the dask executor
    with ``workers`` workers in jobs of that batch system (``--cluster``).
    """
    if repeat < 1:
        raise ConfigurationError(f"--repeat {repeat}: must be at least 1")
    out_dir = Path(out_dir)
    args = (analysis_name, data_dir, out_dir, executors, workers, chunksize, models_dir, model_names)
    rows = _median_rows([_one_round(*args, cluster) for _ in range(repeat)])
    floor_events = next(iter(rows.values()))["events"]
    text = text_baseline(analysis_name, data_dir, models_dir, model_names, floor_events)
    if text:
        rows[
            f"pandas.read_csv + predict, {text['events']} rows (extrapolated: "
            f"{text['extrapolated_wall_s']:.0f} s for {floor_events})"
        ] = text
    rdf_note = _rdataframe_note()
    _print_table(
        rows,
        f"\nmodels: {', '.join(model_names) if model_names else 'all'}; chunksize {chunksize}"
        + (f"; median of {repeat} rounds" if repeat > 1 else ""),
    )
    scaling = _scaling(rows, workers)
    for line in scaling.values():
        print(line)
    print(rdf_note)
    report = _report(analysis_name, data_dir, chunksize, repeat, model_names, rows, scaling, rdf_note)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=1))
    return report
