"""Executors: iterative, futures (a spawned, warmed pool) and dask (local cluster or --scheduler)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from coffea import processor
from coffea.util import coffea_console

from hepsieve.processors.errors import ConfigurationError
from hepsieve.processors.provenance import peak_rss_mb

log = logging.getLogger(__name__)
EXECUTORS = ("iterative", "futures", "dask")

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
    """Import the processor and scorer modules on every dask worker now.

    Import the processor and scorer modules on every worker now, as part of the start-up:
    a worker that cannot is named here, not in a traceback from the first chunk.
    """
    for module in WORKER_MODULES:
        try:
            client.run(importlib.import_module, module)
        except Exception as err:  # noqa: BLE001 (any failure on a worker: name the worker)
            raise ConfigurationError(
                f"dask workers of {client.scheduler.address} cannot import "
                f"{module} ({type(err).__name__}: {err}); install hepsieve "
                "in the workers' environment"
            ) from None


@contextlib.contextmanager
def _process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """Yield a pool of ``workers`` spawned, warmed processes.

    A pool of ``workers`` spawned processes, started and with hepsieve imported before the
    first chunk (coffea's default, a loky pool, starts inside the run and restarts a worker
    whose memory grew by 300 MB since it started: every few chunks at 500k events).
    """
    with ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_import_worker_modules
    ) as pool:
        try:  # one task per worker: each submit without an idle worker starts one
            list(pool.map(abs, range(workers)))
        except BrokenProcessPool as err:
            raise ConfigurationError(
                f"the futures executor's worker processes cannot import hepsieve ({err})"
            ) from None
        yield pool


def _dask_imports():
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigurationError(
            "--executor dask needs the dask extra: pip install 'hepsieve[dask]'"
        ) from None
    # importing distributed sets its loggers to INFO (every worker start and stop, and
    # tracebacks of connections closed at shutdown): keep those for debug logging
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)
    # coffea's DaskExecutor imports it on every call: the first import (~0.5 s of CPU, with
    # pandas) then ran in this process beside the workers, inside the timed run
    import dask.dataframe  # noqa: F401

    return Client, LocalCluster


@contextlib.contextmanager
def _dask_executor(workers: int, scheduler: str | None, progress: bool) -> Iterator:
    Client, LocalCluster = _dask_imports()
    if scheduler:
        with Client(scheduler) as client:
            _import_on_workers(client)
            yield processor.DaskExecutor(client=client, status=progress, retries=3)
        return
    import dask

    with (
        dask.config.set(LOCAL_DASK_CONFIG),
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        _import_on_workers(client)
        yield processor.DaskExecutor(client=client, status=progress, retries=3)


@contextlib.contextmanager
def make_executor(name: str, workers: int, scheduler: str | None, progress: bool) -> Iterator:
    """Yield the coffea executor for ``name`` (closing any local dask cluster afterwards)."""
    if name == "iterative":
        yield processor.IterativeExecutor(status=progress)
    elif name == "futures":
        with _process_pool(workers) as pool:
            yield processor.FuturesExecutor(pool=pool, workers=workers, status=progress)
    elif name == "dask":
        with _dask_executor(workers, scheduler, progress) as executor:
            yield executor
    else:
        raise ConfigurationError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")


@contextlib.contextmanager
def quiet_console(quiet: bool) -> Iterator[None]:
    """Silence coffea's rich console while ``quiet``.

    Silence coffea's rich console while ``quiet``: coffea 2026.9 draws the progress bars of
    its iterative and futures executors even with ``status=False``.
    """
    before = coffea_console.quiet
    coffea_console.quiet = quiet or before
    try:
        yield
    finally:
        coffea_console.quiet = before


def worker_peak_rss_mb(executor) -> list[float] | None:
    """Peak RSS [MB] of each dask worker process (None for other executors)."""
    client = getattr(executor, "client", None)
    return sorted(client.run(peak_rss_mb).values()) if client is not None else None
