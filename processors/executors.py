"""Executors: iterative, futures (a spawned, warmed pool), dask (local cluster, --scheduler, --cluster)."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import importlib.util
import inspect
import logging
import multiprocessing
import re
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import cloudpickle
import coffea.processor.executor as coffea_executor_module
import lz4.frame
from coffea import processor
from coffea.util import coffea_console

from hepsieve.processors.analysis import EXECUTORS
from hepsieve.processors.chunkread import run_flat
from hepsieve.processors.clusters import ClusterOptions, jobqueue_client
from hepsieve.processors.errors import (
    ChunkError,
    ChunkReadError,
    ConfigurationError,
    DataValueError,
    HepsieveError,
    ModelCardError,
)
from hepsieve.processors.provenance import peak_rss_mb

log = logging.getLogger(__name__)


def _utf8_hash(items: tuple) -> int:
    """Return coffea 2026.9's ``_hash`` of ``items``, encoded as UTF-8 instead of ASCII."""
    digest = hashlib.md5(";".join(str(x) for x in items).encode("utf-8"))
    return int(digest.hexdigest()[:16], base=16)


# coffea hashes (dataset, file, tree) as ASCII, so a data directory named "données" raised
# UnicodeEncodeError inside coffea; the UTF-8 encoding is byte-identical for ASCII names.
coffea_executor_module._hash = _utf8_hash

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
SCHEDULER_TIMEOUT_S = 10
SCHEDULER_ADDRESS = re.compile(r"^((tcp|tls|ws|wss|inproc|ucx)://)?[^\s:/]+(:\d+)?$")
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux).

    A killed run then leaves no worker processing (and writing) on its own.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def warm_numba(used: bool) -> None:
    """Start numba's compiler in this process now, when the analysis has numba kernels (``used``).

    numba's first call in a process, whatever the function, costs about 0.55 s (it imports its
    lowering modules and runs every installed numba extension's entry point, awkward's among them):
    without this, every worker paid it in its first chunk. Analyses without kernels do not pay
    it (coffea imports numba in every process, but calls nothing).
    """
    if used:
        import numba

        numba.njit(lambda: 0)()


def _start_worker(numba: bool = False) -> None:
    """Initialise a futures worker: die with the parent, leave Ctrl-C to the parent, import.

    ``numba``: start numba's compiler too (:func:`warm_numba`).
    """
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in WORKER_MODULES:
        importlib.import_module(module)
    warm_numba(numba)


def _import_on_workers(client, numba: bool) -> None:
    """Import the processor and scorer modules on every dask worker now; initialise numba.

    As part of the start-up: a worker that cannot import is named here, not in a traceback
    from the first chunk; numba (when the analysis uses it) is started before the first chunk.
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
    if numba:
        client.run(warm_numba, True)


def _spawned_pool(workers: int, numba: bool) -> ProcessPoolExecutor:
    """Return a pool of ``workers`` spawned processes, started, with hepsieve imported."""
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(numba,),
    )
    try:  # one task per worker: each submit without an idle worker starts one
        list(pool.map(abs, range(workers)))
    except BrokenProcessPool as err:
        pool.shutdown(wait=False, cancel_futures=True)
        raise ConfigurationError(f"the futures executor's worker processes cannot start ({err})") from None
    return pool


class ResilientPool(Executor):
    """A pool of spawned, warmed worker processes that survives the death of a worker.

    When a worker dies (killed, out of memory), Python's pool breaks and fails every chunk it
    held; here each of those chunks is resubmitted to a fresh pool (``max_restarts`` times in
    all), so the result is that of an undisturbed run. Started before the first chunk, unlike
    coffea's default (a loky pool, which also restarts any worker whose memory grew by 300 MB).
    """

    def __init__(self, workers: int, max_restarts: int = 3, numba: bool = False):
        self.workers, self.max_restarts, self.restarts = workers, max_restarts, 0
        self.numba = numba  # start numba in each worker (:func:`warm_numba`)
        self._closed = False
        self._lock = threading.Lock()
        # every pool is started from this one long-lived thread: the kernel sends the workers'
        # parent-death signal when the *thread* that started them ends, and the callbacks that
        # replace a broken pool run in that pool's own (soon ending) manager thread
        self._spawner = ThreadPoolExecutor(1, thread_name_prefix="hepsieve-spawner")
        self._pool = self._spawner.submit(_spawned_pool, workers, numba).result()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` in a worker; a worker's death resubmits it to a fresh pool."""
        outer: Future = Future()
        self._submit(outer, fn, args, kwargs)
        return outer

    def _submit(self, outer: Future, fn: Callable, args: tuple, kwargs: dict) -> None:
        pool = self._pool
        inner = pool.submit(fn, *args, **kwargs)

        def done(f: Future) -> None:
            if f.cancelled():
                outer.cancel()
            elif isinstance(f.exception(), BrokenProcessPool) and self._replace(pool):
                self._submit(outer, fn, args, kwargs)
            elif f.exception() is not None:
                outer.set_exception(f.exception())
            else:
                outer.set_result(f.result())

        inner.add_done_callback(done)

    def _replace(self, broken: ProcessPoolExecutor) -> bool:
        """Replace a broken pool by a fresh one (once per broken pool); False when out of restarts."""
        with self._lock:
            if self._closed:
                return False  # shut down (an error, Ctrl-C): nothing is resubmitted
            if self._pool is not broken:
                return True  # another chunk of the same broken pool already replaced it
            if self.restarts >= self.max_restarts:
                return False
            self.restarts += 1
            log.warning(
                "a futures worker died: resubmitting its chunks to a fresh pool (%d/%d)",
                self.restarts,
                self.max_restarts,
            )
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._spawner.submit(_spawned_pool, self.workers, self.numba).result()
            return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the workers (``wait=False``: at once, killing any still processing)."""
        with self._lock:
            self._closed = True
            pool = self._pool
        if not wait:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
        pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        self._spawner.shutdown(wait=False)


@contextlib.contextmanager
def _process_pool(workers: int, numba: bool) -> Iterator[ResilientPool]:
    """Yield a :class:`ResilientPool`; on an error or Ctrl-C, kill its workers at once."""
    pool = ResilientPool(workers, numba=numba)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


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
    _lazy_dask_dataframe()
    return Client, LocalCluster


def _lazy_dask_dataframe() -> None:
    """Register ``dask.dataframe`` as a stand-in that imports the module on its first use.

    coffea's DaskExecutor runs ``import dask.dataframe as dd`` on every call but uses ``dd``
    only with ``use_dataframes`` (never here); the import (pandas, dask.array, scipy.fft) took
    0.5-0.8 s of every run. ``importlib.util.LazyLoader`` does not help: on Python 3.11 the
    import statement reads the module's ``__spec__``, which loads it.
    """
    name = "dask.dataframe"
    if name not in sys.modules and importlib.util.find_spec(name) is not None:
        sys.modules[name] = stand_in = _DeferredModule(name)
        setattr(sys.modules["dask"], "dataframe", stand_in)  # noqa: B010  (as an import would set it)


class _DeferredModule(types.ModuleType):
    """Stands in for a module in ``sys.modules``; the first attribute it lacks imports the module."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__spec__ = importlib.util.find_spec(name)

    def __getattr__(self, attr: str) -> Any:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        module = importlib.import_module(name)  # the real one, now in sys.modules
        return getattr(module, attr)


def _connect(client_class, scheduler: str):
    """Return a client of the scheduler at ``scheduler``.

    A malformed address, or none answering within ``SCHEDULER_TIMEOUT_S``, is a one-line
    ConfigurationError.
    """
    if not SCHEDULER_ADDRESS.match(scheduler):
        raise ConfigurationError(f"--scheduler {scheduler!r}: not a scheduler address (tcp://host:port)")
    try:
        return client_class(scheduler, timeout=f"{SCHEDULER_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigurationError(
            f"--scheduler {scheduler}: no dask scheduler answered within "
            f"{SCHEDULER_TIMEOUT_S} s ({type(err).__name__})"
        ) from err


@contextlib.contextmanager
def _local_dask_config(numba: bool = False) -> Iterator[None]:
    """Set the local cluster's dask configuration; on Linux, forked workers.

    A spawned worker starts a fresh interpreter and imports hepsieve, coffea, onnxruntime (2-3 s
    on 2 cores, and 0.7 s to stop); a forked one inherits this process' imports: measured on
    2 workers, start 2.2 -> 0.1 s, close 0.75 -> 0.03 s. The worker modules are imported here
    first. A dask configuration that names another method than dask's default (spawn) is kept.
    The fork may run beside the input checks' threads: CPython re-initialises the import,
    logging and ``concurrent.futures`` locks in the child, and a worker runs only dask's and
    hepsieve's code. ``numba``: numba's compiler is started here, before the fork, once.
    """
    import dask

    config = dict(LOCAL_DASK_CONFIG)
    method = "distributed.worker.multiprocessing-method"
    forked = sys.platform == "linux" and dask.config.get(method, "spawn") == "spawn"
    if forked:
        for module in WORKER_MODULES:
            importlib.import_module(module)
        warm_numba(numba)  # once here, inherited by every worker
        config[method] = "fork"
    with dask.config.set(config), _versions_without_pandas(forked):
        yield


@contextlib.contextmanager
def _versions_without_pandas(active: bool) -> Iterator[None]:
    """Leave pandas out of the versions that distributed's processes report, while ``active``.

    The scheduler, the client and every worker import numpy, pandas and lz4 to report their
    versions; pandas is used nowhere else in a run and its import was 0.38 s of the local
    cluster's start (0.17 s of a whole 1M-event run, median of 8 interleaved runs). Forked
    workers are copies of this process, so their pandas cannot differ. Restored on leaving:
    a later cluster of other machines compares every package again.
    """
    from distributed import versions

    before = versions.optional_packages
    if active:
        versions.optional_packages = [p for p in before if p[0] != "pandas"]
    try:
        yield
    finally:
        versions.optional_packages = before


@contextlib.contextmanager
def _dask_executor(
    workers: int, scheduler: str | None, progress: bool, cluster: ClusterOptions | None, numba: bool
) -> Iterator:
    Client, LocalCluster = _dask_imports()
    if cluster is not None:
        if scheduler:
            raise ConfigurationError("--cluster and --scheduler: give one of them")
        with jobqueue_client(cluster, workers, LOCAL_DASK_CONFIG, WORKER_MODULES) as client:
            _import_on_workers(client, numba)
            yield processor.DaskExecutor(client=client, status=progress, retries=3)
        return
    if scheduler:
        with _connect(Client, scheduler) as client:
            _import_on_workers(client, numba)
            yield processor.DaskExecutor(client=client, status=progress, retries=3)
        return
    with (
        _local_dask_config(numba),
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        _import_on_workers(client, numba)
        yield processor.DaskExecutor(client=client, status=progress, retries=3)


@contextlib.contextmanager
def make_executor(
    name: str,
    workers: int,
    scheduler: str | None,
    progress: bool,
    *,
    cluster: ClusterOptions | None = None,
    numba: bool = False,
) -> Iterator:
    """Yield the coffea executor for ``name`` (closing any local or batch dask cluster afterwards).

    ``cluster``: dask workers in batch jobs (``--cluster``, dask-jobqueue; ``name`` must be dask).
    ``numba``: the analysis has numba kernels: workers start numba's compiler before their
    first chunk (:func:`warm_numba`).
    """
    if cluster is not None and name != "dask":
        raise ConfigurationError(f"--cluster {cluster.kind} runs dask workers: use it with --executor dask")
    if name == "iterative":
        warm_numba(numba)  # the chunks run in this process
        yield processor.IterativeExecutor(status=progress)
    elif name == "futures":
        with _process_pool(workers, numba) as pool:
            yield processor.FuturesExecutor(pool=pool, workers=workers, status=progress)
    elif name == "dask":
        with _dask_executor(workers, scheduler, progress, cluster, numba) as executor:
            yield executor
    else:
        raise ConfigurationError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}")


@contextlib.contextmanager
def started_early(
    name: str, workers: int, scheduler: str | None, progress: bool, **options: Any
) -> Iterator[Callable]:
    """Start the executor in a thread now; yield ``ready()`` -> (executor, its start-up s).

    ``options``: :func:`make_executor`'s (``cluster``, ``numba``).

    A local cluster takes seconds to start (worker processes, their imports): the caller
    checks its inputs meanwhile. On leaving (also after an error or Ctrl-C) the start is
    waited for and the executor shut down. The starting thread lives until then.
    """
    stack = contextlib.ExitStack()

    def start() -> tuple[Any, float]:
        begin = time.perf_counter()
        executor = stack.enter_context(make_executor(name, workers, scheduler, progress, **options))
        return executor, time.perf_counter() - begin

    thread = ThreadPoolExecutor(1, thread_name_prefix="hepsieve-executor-start")
    future = thread.submit(start)
    try:
        yield future.result
    finally:
        with contextlib.suppress(BaseException):  # a failed start was raised by ready() already
            future.result()
        thread.submit(stack.close).result()  # in the starting thread, as dask's Client wants
        thread.shutdown()


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


class _NoTraceback:
    """Stands in for the traceback module inside coffea's executor module."""

    @staticmethod
    def print_exc(*args: Any, **kwargs: Any) -> None:
        """Print nothing."""


@contextlib.contextmanager
def quiet_tracebacks(quiet: bool) -> Iterator[None]:
    """Keep coffea's executors from printing a failed chunk's traceback before re-raising it.

    hepsieve reports the error in one line instead (``-v`` shows the traceback).
    """
    if not quiet:
        yield
        return
    original = coffea_executor_module.traceback
    coffea_executor_module.traceback = _NoTraceback
    try:
        yield
    finally:
        coffea_executor_module.traceback = original


def worker_map(executor) -> Callable[[Callable, list], list]:
    """Return ``map(fn, items) -> list`` running on the executor's workers (in order).

    dask: tasks on the cluster's workers; futures: the pool's processes; iterative: here.
    """
    client = getattr(executor, "client", None)
    if client is not None:
        return lambda fn, items: client.gather(client.map(fn, items, pure=False)) if items else []
    pool = getattr(executor, "pool", None)
    if isinstance(pool, Executor):
        return lambda fn, items: [f.result() for f in [pool.submit(fn, item) for item in items]]
    return lambda fn, items: [fn(item) for item in items]


def worker_peak_rss_mb(executor) -> list[float] | None:
    """Peak RSS [MB] of each dask worker process (None for other executors)."""
    client = getattr(executor, "client", None)
    return sorted(client.run(peak_rss_mb).values()) if client is not None else None


#: errors a chunk gives the same way each time: never retried
DETERMINISTIC = (DataValueError, ChunkError, ConfigurationError, ModelCardError)
COFFEA_READ_FAILURES = ("Failed to open file:", "Failed creating nanoevents:")


def hepsieve_cause(err: BaseException) -> HepsieveError | None:
    """Return the first HepsieveError in the cause chain of ``err`` (None if there is none)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, HepsieveError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None and err.__cause__ is not err:
        err = err.__cause__
    return err


def _work_arguments(args: tuple, kwargs: dict) -> dict:
    """Return coffea's work-function arguments by name, the chunk's processor unpickled once.

    The dask executor passes ``(item, processor)`` as the item (``processor_instance="heavy"``);
    the others pass the processor lz4-compressed and pickled.
    """
    bound = inspect.signature(processor.Runner._work_function).bind(*args, **kwargs).arguments
    if bound["processor_instance"] == "heavy":
        bound["item"], bound["processor_instance"] = bound["item"]
    proc = bound["processor_instance"]
    if not isinstance(proc, processor.ProcessorABC) and not callable(proc):
        bound["processor_instance"] = cloudpickle.loads(lz4.frame.decompress(proc))
    return dict(bound)


class HepsieveRunner(processor.Runner):
    """coffea's Runner, with chunk errors that name the chunk and read failures told apart.

    In the worker, coffea's wrapper around a failed chunk (a bare ``Exception`` quoting the
    whole WorkItem) is replaced by the HepsieveError it wraps, or, when the file could not be
    opened or read, by a :class:`ChunkReadError` naming file and entries. Deterministic errors
    are not retried; with ``skipbadfiles`` a chunk that cannot be read is dropped (its entries
    are then reported as lost by the accounting).
    """

    @staticmethod
    def _work_function(*args: Any, **kwargs: Any) -> Any:
        bound = _work_arguments(args, kwargs)
        item = bound["item"]
        try:
            flat = run_flat(bound, bound["processor_instance"])
            return flat if flat is not None else processor.Runner._work_function(**bound)
        except Exception as err:
            ours = hepsieve_cause(err)
            if ours is not None:
                raise ours from None
            if str(err).startswith(COFFEA_READ_FAILURES):
                cause = _root_cause(err)
                raise ChunkReadError(
                    f"{item.filename} entries {item.entrystart}-{item.entrystop}: "
                    f"cannot be read ({type(cause).__name__}: {cause})"
                ) from err
            raise

    @staticmethod
    def automatic_retries(
        retries: int,
        skipbadfiles: Any,
        func: Callable,
        *args: Any,
        use_result_type: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run one chunk, retrying errors that may pass; return None for a skipped chunk.

        Deterministic errors are raised at once; a chunk that cannot be read is skipped when
        ``skipbadfiles`` (after retries, for a remote file only).
        """
        for attempt in range(retries + 1):
            try:
                return func(*args, **kwargs)
            except DETERMINISTIC:
                raise
            except ChunkReadError as err:
                if "://" in str(err).split(" entries ")[0] and attempt < retries:
                    continue  # a remote read may succeed again; a damaged local file will not
                if skipbadfiles:
                    log.warning("skipping a chunk that cannot be read: %s", err)
                    return None
                raise
            except Exception:
                if attempt == retries:
                    raise
        return None
