"""Run an analysis over a fileset with coffea's Runner and write the outputs."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from coffea import processor
from coffea.nanoevents import BaseSchema
from coffea.processor.executor import FileMeta
from coffea.util import coffea_console

from hepsieve.datasets.filesets import ResolvedFileset, load_fileset_spec, resolve_fileset
from hepsieve.models.scorer import default_models_dir, load_scorers
from hepsieve.processors.analysis import Analysis, get_analysis
from hepsieve.processors.cutflow import cutflow_table
from hepsieve.processors.errors import ConfigurationError, CutflowMismatchError, HepsieveError
from hepsieve.processors.metrics import auc_from_histograms
from hepsieve.processors.outputs import write_outputs
from hepsieve.processors.processor import AnalysisProcessor

log = logging.getLogger(__name__)
EXECUTORS = ("iterative", "futures", "dask")
VERSIONED = ("hepsieve", "coffea", "uproot", "awkward", "hist", "numpy", "onnxruntime",
             "dask", "distributed", "torch", "scikit-learn")


@dataclass
class RunConfig:
    """Options of one ``hepsieve run``."""

    analysis: str
    data_dir: Path
    out_dir: Path
    mode: str = "histograms"  # or "features"
    models_dir: Path | None = None  # None: shipped models (histograms mode)
    models: list[str] | None = None  # subset of model names
    fileset: str | None = None  # JSON path; None: the analysis' own
    datasets: list[str] | None = None
    executor: str = "dask"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    scheduler: str | None = None
    chunksize: int = 200_000
    maxchunks: int | None = None
    skip_bad_files: bool = False
    checkpoint: Path | None = None
    score_cut: float | dict[str, float] | None = None  # one cut, or {model: cut}
    progress: bool = True


@dataclass
class RunResult:
    """What a run produced: merged histograms, cutflow, provenance and output files."""

    histograms: dict
    cutflow: dict
    provenance: dict
    files: list[Path]


def versions() -> dict[str, str]:
    """Return the installed versions of the packages that shape the result."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


#: Settings of the local dask cluster's worker processes (not of a ``--scheduler`` cluster).
#: No dashboard, so no use for the workers' statistical profiler, which samples every thread
#: each 10 ms (measured: ~9 % of a worker's time on UCI HIGGS). Dask's nanny sets
#: MALLOC_TRIM_THRESHOLD_=64 KiB, which (like any malloc tunable) also switches off glibc's
#: adaptive mmap threshold: every array above 128 KiB is then a fresh mmap, page-faulted in and
#: unmapped again, and the same chunk took 1.5-2x as long in a worker as in a plain process.
#: Workers run with glibc's defaults instead, like that plain process. The event loop beside
#: the compute thread wakes less often (tick 20 ms -> 1 s, system monitor for the dashboard
#: 0.5 -> 5 s, memory monitor 0.1 -> 1 s): each wake-up takes the GIL from the chunk being
#: processed (measured on 5M HIGGS events, 1 worker: 830 -> 190 voluntary context switches,
#: 5-6 % less wall time).
LOCAL_DASK_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
}


WORKER_MODULES = ("hepsieve.processors.processor", "hepsieve.models.scorer")


def _import_worker_modules() -> None:
    for module in WORKER_MODULES:
        importlib.import_module(module)


def _import_on_workers(client) -> None:
    """Import the processor and scorer modules on every worker now, as part of the start-up:
    a worker that cannot is named here, not in a traceback from the first chunk."""
    for module in WORKER_MODULES:
        try:
            client.run(importlib.import_module, module)
        except Exception as err:
            raise ConfigurationError(f"dask workers of {client.scheduler.address} cannot import "
                                     f"{module} ({type(err).__name__}: {err}); install hepsieve "
                                     "in the workers' environment") from None


@contextlib.contextmanager
def _process_pool(workers: int):
    """A pool of ``workers`` spawned processes, started and with hepsieve imported before the
    first chunk (coffea's default, a loky pool, starts inside the run and restarts a worker
    whose memory grew by 300 MB since it started: every few chunks at 500k events)."""
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_import_worker_modules) as pool:
        try:  # one task per worker: each submit without an idle worker starts one
            list(pool.map(abs, range(workers)))
        except BrokenProcessPool as err:
            raise ConfigurationError(f"the futures executor's worker processes cannot import "
                                     f"hepsieve ({err})") from None
        yield pool


@contextlib.contextmanager
def make_executor(name: str, workers: int, scheduler: str | None, progress: bool):
    """Yield the coffea executor for ``name`` (closing any local dask cluster afterwards)."""
    if name == "iterative":
        yield processor.IterativeExecutor(status=progress)
    elif name == "futures":
        with _process_pool(workers) as pool:
            yield processor.FuturesExecutor(pool=pool, workers=workers, status=progress)
    elif name == "dask":
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigurationError("--executor dask needs the dask extra: "
                                     "pip install 'hepsieve[dask]'") from None
        # importing distributed sets its loggers to INFO (every worker start and stop, and
        # tracebacks of connections closed at shutdown): keep those for debug logging
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("distributed").setLevel(logging.WARNING)
        # coffea's DaskExecutor imports it on every call: the first import (~0.5 s of CPU, with
        # pandas) then ran in this process beside the workers, inside the timed run
        import dask.dataframe  # noqa: F401
        if scheduler:
            with Client(scheduler) as client:
                _import_on_workers(client)
                yield processor.DaskExecutor(client=client, status=progress, retries=3)
        else:
            import dask

            with dask.config.set(LOCAL_DASK_CONFIG), \
                    LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                 dashboard_address=None) as cluster, Client(cluster) as client:
                _import_on_workers(client)
                yield processor.DaskExecutor(client=client, status=progress, retries=3)
    else:
        raise ConfigurationError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")


@contextlib.contextmanager
def _quiet_console(quiet: bool):
    """Silence coffea's rich console while ``quiet``: coffea 2026.9 draws the progress bars of
    its iterative and futures executors even with ``status=False``."""
    before = coffea_console.quiet
    coffea_console.quiet = quiet or before
    try:
        yield
    finally:
        coffea_console.quiet = before


def peak_rss_mb() -> float:
    """Peak resident memory [MB] of this process: VmHWM where /proc exists. (``ru_maxrss``
    survives fork + exec, so a spawned worker would report its parent's peak.)"""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker_max_rss_mb(executor) -> list[float] | None:
    """Peak RSS [MB] of each dask worker process (None for other executors)."""
    client = getattr(executor, "client", None)
    return sorted(client.run(peak_rss_mb).values()) if client is not None else None


def _fileset_hash(resolved: ResolvedFileset) -> str:
    desc = {ds: {f: os.stat(f).st_size for f in spec["files"]} for ds, spec in resolved.fileset.items()}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


def metadata_cache(resolved: ResolvedFileset, tree: str) -> dict:
    """Return coffea's file metadata (entries, UUID, the dataset's metadata) for every file,
    from the preflight that already opened each one: coffea then skips its own
    preprocessing pass over the files (0.8 s for the 12 UCI HIGGS files on 2 workers)."""
    return {FileMeta(ds, path, tree): {**entry["metadata"], **resolved.file_meta[path]}
            for ds, entry in resolved.fileset.items() for path in entry["files"]}


def check_accounting(cutflow: dict, resolved: ResolvedFileset, complete: bool) -> dict[str, dict]:
    """Compare processed with expected entries per dataset; raise on a mismatch of a full run."""
    summary = {}
    for dataset, expected in resolved.entries.items():
        processed = cutflow.get(dataset, {}).get("input", {}).get("n", 0)
        summary[dataset] = {"expected": expected, "processed": processed}
        if complete and processed != expected:
            raise CutflowMismatchError(
                f"dataset {dataset}: processed {processed} entries but the input files hold "
                f"{expected}; the output is incomplete and was not written")
    return summary


def run(config: RunConfig) -> RunResult:
    """Run ``config.analysis`` and write histograms, cutflow and provenance to ``out_dir``."""
    analysis: Analysis = get_analysis(config.analysis)
    if config.mode not in ("histograms", "features"):
        raise ConfigurationError(f"--mode {config.mode!r}: choose histograms or features")
    if config.executor not in EXECUTORS:
        raise ConfigurationError(f"--executor {config.executor!r}: choose one of {', '.join(EXECUTORS)}")
    if config.chunksize < 1 or config.workers < 1:
        raise ConfigurationError("--chunksize and --workers must be positive")
    spec = load_fileset_spec(config.fileset or config.analysis)
    resolved = resolve_fileset(spec, config.data_dir, analysis.required_branches,
                               datasets=config.datasets, skip_bad_files=config.skip_bad_files)

    scorers = []
    if config.mode == "histograms":
        models_dir = config.models_dir or default_models_dir(analysis)
        if config.models_dir is None and not any(models_dir.glob("*.json")):
            log.warning("no shipped models for %s: filling kinematic histograms only", analysis.name)
        else:
            threads = 0 if config.executor == "iterative" else 1
            scorers = load_scorers(models_dir, analysis, threads=threads, names=config.models)
    proc = AnalysisProcessor(analysis, scorers, mode=config.mode,
                             features_dir=config.out_dir / "features", score_cut=config.score_cut)

    log.info("%s: %d datasets, %d entries, executor=%s workers=%d chunksize=%d",
             analysis.name, len(resolved.fileset), resolved.total_entries, config.executor,
             config.workers, config.chunksize)
    checkpointer = (processor.SimpleCheckpointer(str(config.checkpoint))
                    if config.checkpoint else None)
    start = time.perf_counter()
    with make_executor(config.executor, config.workers, config.scheduler, config.progress) as ex:
        startup = time.perf_counter() - start  # local cluster start, not event processing
        runner = processor.Runner(executor=ex, schema=BaseSchema, chunksize=config.chunksize,
                                  maxchunks=config.maxchunks, checkpointer=checkpointer,
                                  format=spec.get("format", "root"),
                                  metadata_cache=metadata_cache(resolved, spec["tree"]))
        # uproot's default array cache (100 MB per file) copies every column it reads; coffea
        # reads each column of a chunk once, so the copies bought nothing (measured: ~0.1 us
        # of ~1 us per UCI HIGGS event)
        uproot_options = {"array_cache": None} if runner.format == "root" else {}
        try:
            with _quiet_console(not config.progress):
                output = runner(resolved.fileset, proc, treename=spec["tree"],
                                uproot_options=uproot_options)
        except HepsieveError:
            raise
        except Exception as err:
            raise HepsieveError(f"processing {analysis.name} failed: {type(err).__name__}: {err}") from err
        elapsed = time.perf_counter() - start - startup
        worker_rss = _worker_max_rss_mb(ex)

    cutflow = output.get("cutflow", {})
    accounting = check_accounting(cutflow, resolved, complete=config.maxchunks is None)
    n_events = sum(v["processed"] for v in accounting.values())
    provenance = {
        "command": " ".join(sys.argv), "analysis": analysis.name, "mode": config.mode,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "is_toy": resolved.is_toy, "data_dir": str(Path(config.data_dir).resolve()),
        "fileset": {ds: list(v["files"]) for ds, v in resolved.fileset.items()},
        "datasets_meta": {ds: v["metadata"] for ds, v in resolved.fileset.items()},
        "fileset_sha256": _fileset_hash(resolved), "skipped_files": resolved.skipped,
        "accounting": accounting,
        "models": {s.name: {"card": str(s.card.path), "feature_set": s.feature_set,
                            "onnx_sha256": s.hashes} for s in scorers},
        "score_cut": proc.score_cut, "events": n_events, "executor_start_s": startup, "wall_s": elapsed,
        "worker_max_rss_mb": worker_rss,
        "events_per_s": n_events / elapsed if elapsed > 0 else None,
        "versions": versions(), "host": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    if scorers and {"signal", "background"} <= set(analysis.categories):
        provenance["auc_from_histograms"] = auc_from_histograms(output["histograms"])
        log.info("AUC from the score histograms: %s", provenance["auc_from_histograms"])
    if config.mode == "features":
        provenance["feature_files"] = {ds: sorted(files) for ds, files in
                                       output.get("feature_files", {}).items()}
    files = write_outputs(config.out_dir, output.get("histograms"), cutflow, provenance)
    log.info("cutflow:\n%s", cutflow_table(cutflow))
    log.info("processed %d events in %.1f s (%.0f events/s)", n_events, elapsed,
             provenance["events_per_s"] or 0)
    if resolved.skipped:
        log.warning("left out of this run:\n  %s", "\n  ".join(resolved.skipped))
    return RunResult(output.get("histograms", {}), cutflow, provenance, files)
