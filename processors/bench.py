"""``hepsieve bench``: events/s of the processor per executor, side by side with a floor loop.

The floor is the same analysis code (selection, weights, features, ONNX, hist fill)
driven by a bare ``uproot.iterate`` loop in one process: what is left when coffea's
chunking, pickling and merging are taken away.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path

import uproot
from coffea.processor import accumulate

from hepsieve.datasets.filesets import load_fileset_spec, resolve_fileset
from hepsieve.models.scorer import default_models_dir, load_scorers
from hepsieve.processors.analysis import get_analysis
from hepsieve.processors.processor import AnalysisProcessor
from hepsieve.processors.runner import RunConfig, run, versions

log = logging.getLogger(__name__)


def floor_loop(analysis_name: str, data_dir: Path, models_dir: Path | None, chunksize: int,
               model_names: list[str] | None = None) -> dict:
    """Run the analysis with uproot.iterate + the processor's chunk function; return timing."""
    analysis = get_analysis(analysis_name)
    spec = load_fileset_spec(analysis_name)
    resolved = resolve_fileset(spec, data_dir, analysis.required_branches)
    scorers = load_scorers(models_dir or default_models_dir(analysis), analysis, threads=1,
                           names=model_names)
    proc = AnalysisProcessor(analysis, scorers)
    start, out, n = time.perf_counter(), None, 0
    for dataset, entry in resolved.fileset.items():
        for path, tree in entry["files"].items():
            for events in uproot.iterate(f"{path}:{tree}", analysis.required_branches,
                                         step_size=chunksize, library="ak"):
                meta = {"dataset": dataset, "filename": path, "entrystart": n, "entrystop": n,
                        "fileuuid": "", **entry["metadata"]}
                out = accumulate([proc.process_chunk(events, meta)], out)
                n += len(events)
    elapsed = time.perf_counter() - start
    return {"events": n, "wall_s": elapsed, "events_per_s": n / elapsed}


def bench(analysis_name: str, data_dir: Path, out_dir: Path, executors: list[str], workers: int,
          chunksize: int, models_dir: Path | None = None, model_names: list[str] | None = None) -> dict:
    """Time the floor and each executor (1 and ``workers`` workers); print and save a table."""
    out_dir = Path(out_dir)
    rows: dict[str, dict] = {"floor: uproot.iterate + onnxruntime + hist, 1 process":
                             floor_loop(analysis_name, data_dir, models_dir, chunksize, model_names)}
    for executor in executors:
        for n in ([1] if executor == "iterative" else sorted({1, workers})):
            config = RunConfig(analysis_name, data_dir, out_dir / f"{executor}_{n}",
                               models_dir=models_dir, models=model_names, executor=executor, workers=n,
                               chunksize=chunksize, progress=False)
            prov = run(config).provenance
            rows[f"hepsieve {executor}, {n} worker(s)"] = {
                "events": prov["events"], "wall_s": prov["wall_s"],
                "events_per_s": prov["events_per_s"]}
    floor = next(iter(rows.values()))["events_per_s"]
    print(f"\nmodels: {', '.join(model_names) if model_names else 'all'}; chunksize {chunksize}")
    print(f"{'configuration':<58s} {'events':>10s} {'wall [s]':>9s} {'events/s':>12s} {'/floor':>7s}")
    for name, r in rows.items():
        r["ratio_to_floor"] = r["events_per_s"] / floor
        print(f"{name:<58s} {r['events']:>10d} {r['wall_s']:>9.2f} {r['events_per_s']:>12.0f} "
              f"{r['ratio_to_floor']:>7.2f}")
    rss = {"self_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "children_max_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    print(f"peak RSS: main process {rss['self_max_rss_mb']:.0f} MB, "
          f"largest child process {rss['children_max_rss_mb']:.0f} MB")
    report = {"analysis": analysis_name, "data_dir": str(data_dir), "chunksize": chunksize,
              "models": model_names or "all",
              "results": rows, "rss": rss, "versions": versions()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=1))
    return report
