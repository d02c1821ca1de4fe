"""Batch-system clusters of dask workers (``--cluster slurm|htcondor|pbs|sge|lsf``, dask-jobqueue).

Each batch job runs one single-threaded dask worker process per core it asks for, with the
worker settings of the local cluster (``LOCAL_DASK_CONFIG``: no profiler, glibc's malloc
defaults, a quieter event loop), handed to the job's nanny through its environment
(``DASK_INTERNAL_INHERIT_CONFIG``, which dask reads at start-up), and imports hepsieve's worker
modules at start (``--preload``), also in jobs that replace lost ones. A job script that is not
accepted, a batch system whose commands are missing and jobs that do not start in time are
one-line ConfigurationErrors naming the job script and the jobs' logs.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hepsieve.processors.errors import ConfigurationError

log = logging.getLogger(__name__)
#: --cluster name -> (dask-jobqueue class, the batch system's submit command)
CLUSTERS: dict[str, tuple[str, str]] = {
    "slurm": ("SLURMCluster", "sbatch"),
    "htcondor": ("HTCondorCluster", "condor_submit"),
    "pbs": ("PBSCluster", "qsub"),
    "sge": ("SGECluster", "qsub"),
    "lsf": ("LSFCluster", "bsub"),
}
JOB_SCRIPT = "job_script.sh"
MEMORY_PER_CORE = "2GB"
DISK_PER_JOB = "1GB"


@dataclass(frozen=True)
class ClusterOptions:
    """What each batch job of a ``--cluster`` asks for and how long to wait for the jobs.

    ``cores`` per job (one single-threaded worker process per core), ``memory`` per job (default
    2 GB per core), ``walltime``, ``queue``, ``account``, extra job directives (``#SBATCH``
    lines without the prefix), a YAML ``profile`` of dask-jobqueue keyword arguments (the
    options here override it), ``adapt`` = (minimum, maximum) workers, ``job_timeout_s`` for the
    first workers to connect, ``log_dir`` for the job script and the jobs' logs.
    """

    kind: str
    cores: int = 1
    memory: str | None = None
    walltime: str | None = None
    queue: str | None = None
    account: str | None = None
    job_directives: tuple[str, ...] = ()
    profile: str | None = None
    adapt: tuple[int, int] | None = None
    job_timeout_s: float = 300.0
    log_dir: str = "hepsieve-jobs"

    def __post_init__(self) -> None:
        if self.kind not in CLUSTERS:
            raise ConfigurationError(f"--cluster {self.kind!r}: choose one of {', '.join(CLUSTERS)}")
        if self.cores < 1:
            raise ConfigurationError(f"--cores {self.cores}: must be at least 1")
        if self.adapt is not None and not 0 <= self.adapt[0] <= self.adapt[1] >= 1:
            raise ConfigurationError(
                f"--adapt {self.adapt[0]} {self.adapt[1]}: need 0 <= MIN <= MAX, MAX >= 1"
            )


def read_profile(path: str | Path, kind: str) -> dict[str, Any]:
    """Return the dask-jobqueue keyword arguments of a YAML cluster profile.

    Either the arguments themselves, or dask-jobqueue's own configuration layout
    (``jobqueue: {slurm: {...}}``), of which the ``kind`` section is taken.
    """
    import yaml

    path = Path(path)
    try:
        profile = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigurationError(
            f"--cluster-config {path}: cannot be read ({type(err).__name__}: {err})"
        ) from None
    if isinstance(profile, dict) and isinstance(profile.get("jobqueue"), dict):
        profile = profile["jobqueue"].get(kind, {})
    if not isinstance(profile, dict):
        raise ConfigurationError(f"--cluster-config {path}: not a mapping of dask-jobqueue options")
    return profile


def worker_prologue(worker_config: dict[str, Any]) -> list[str]:
    """Return the job-script lines that give each job's dask workers ``worker_config``."""
    import dask.config

    return [f"export DASK_INTERNAL_INHERIT_CONFIG={dask.config.serialize(worker_config)}"]


def cluster_kwargs(
    options: ClusterOptions, worker_config: dict[str, Any], worker_modules: tuple[str, ...]
) -> dict[str, Any]:
    """Return the dask-jobqueue keyword arguments: the profile, overridden by the options."""
    kwargs = read_profile(options.profile, options.kind) if options.profile else {}
    cli = {
        "cores": options.cores,
        "processes": options.cores,
        "memory": options.memory,
        "walltime": options.walltime,
        "queue": options.queue,
        "account": options.account,
    }
    kwargs |= {k: v for k, v in cli.items() if v is not None}
    kwargs.setdefault("processes", kwargs["cores"])
    if "memory" not in kwargs:
        kwargs["memory"] = f"{int(MEMORY_PER_CORE.removesuffix('GB')) * int(kwargs['cores'])}GB"
    kwargs["job_extra_directives"] = _directives(options, kwargs.get("job_extra_directives"))
    kwargs["job_script_prologue"] = [*kwargs.get("job_script_prologue", []), *worker_prologue(worker_config)]
    preload = [arg for module in worker_modules for arg in ("--preload", module)]
    kwargs["worker_extra_args"] = [*kwargs.get("worker_extra_args", []), *preload]
    if options.kind == "htcondor":
        kwargs.setdefault("disk", DISK_PER_JOB)  # HTCondor jobs must say how much scratch disk
    kwargs.setdefault("job_name", "hepsieve")
    kwargs.setdefault("log_directory", options.log_dir)
    return kwargs


def _directives(options: ClusterOptions, profile: list[str] | dict[str, str] | None) -> list | dict:
    """Return the profile's job directives followed by ``--job-directive``'s.

    HTCondor's are a submit-description mapping (``KEY=VALUE`` on the command line); the other
    batch systems' a list of lines without their prefix (``#SBATCH``, ``#PBS``, ...).
    """
    if options.kind != "htcondor":
        return [*(profile or []), *options.job_directives]
    out: dict[str, str] = dict(profile) if isinstance(profile, dict) else {}
    for line in options.job_directives:
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--job-directive {line!r}: HTCondor directives are KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _cluster_class(kind: str):
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigurationError(
            f"--cluster {kind} needs dask-jobqueue: pip install 'hepsieve[dask]'"
        ) from None
    return getattr(dask_jobqueue, CLUSTERS[kind][0])


def _check_commands(kind: str) -> None:
    """Raise ConfigurationError when the batch system's submit command is not on PATH."""
    command = CLUSTERS[kind][1]
    if shutil.which(command) is None:
        raise ConfigurationError(
            f"--cluster {kind}: the batch system's command {command!r} is not on PATH; run hepsieve on "
            f"a node that submits {kind} jobs (a login node, or after loading its module)"
        )


def _build(options: ClusterOptions, kwargs: dict[str, Any]):
    """Return the jobqueue cluster and the path of its job script (written for the user to read)."""
    log_dir = Path(kwargs["log_directory"])
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        cluster = _cluster_class(options.kind)(**kwargs)
    except (TypeError, ValueError) as err:
        where = f" (--cluster-config {options.profile})" if options.profile else ""
        raise ConfigurationError(f"--cluster {options.kind}{where}: {err}") from None
    script = log_dir / JOB_SCRIPT
    script.write_text(cluster.job_script())
    return cluster, script


def _job_ids(cluster) -> list[str]:
    return [str(job.job_id) for job in cluster.workers.values() if getattr(job, "job_id", None)]


def job_states(kind: str, job_ids: list[str]) -> str:
    """Return what the batch system says of ``job_ids`` (Slurm: state and reason), or their ids."""
    if kind == "slurm" and job_ids and shutil.which("squeue"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T (%R)"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
            states = "; ".join(line.strip() for line in out.splitlines() if line.strip())
            return states or f"{', '.join(job_ids)} no longer queued"
    return ", ".join(job_ids) or "none submitted"


def _last_log_line(log_dir: Path) -> str:
    """Return the last line of the newest non-empty job error log (where a job says why it died)."""
    logs = sorted((p for p in log_dir.glob("*.err") if p.stat().st_size), key=lambda p: p.stat().st_mtime)
    if not logs:
        return ""
    lines = [line for line in logs[-1].read_text(errors="replace").splitlines() if line.strip()]
    return f"; {logs[-1].name} ends: {lines[-1].strip()[:200]}" if lines else ""


def _submit(cluster, options: ClusterOptions, workers: int, script: Path) -> None:
    """Submit the jobs now; a job the batch system refuses is a ConfigurationError naming the script.

    ``cluster.scale`` submits in the background, where a refusal is only logged: the jobs of
    the first ``workers`` (or the adaptive minimum) are submitted here, in the foreground.
    """
    wanted = options.adapt[0] if options.adapt is not None else workers
    while len(cluster.worker_spec) < -(-wanted // options.cores):  # one job per `cores` workers
        cluster.worker_spec.update(cluster.new_worker_spec())
    try:
        cluster.sync(cluster._correct_state_internal)
    except Exception as err:  # noqa: BLE001 (the batch system's error, whatever its type)
        from distributed.core import Status

        for job in cluster._created:  # refused jobs never started: let the cluster close cleanly
            if job.status == Status.created:
                job.status = Status.failed
        text = " ".join(str(err).split())[:400]
        raise ConfigurationError(
            f"--cluster {options.kind}: the job was refused ({text}); job script: {script}"
        ) from None
    if options.adapt is not None:
        cluster.adapt(minimum=options.adapt[0], maximum=options.adapt[1])


def wait_for_workers(client, cluster, options: ClusterOptions, workers: int, script: Path) -> int:
    """Wait up to ``job_timeout_s`` for the workers; return how many connected.

    None at all is a ConfigurationError naming the jobs' states, the job script and the log
    directory; fewer than asked for is a warning (the others join when their jobs start).
    """
    wanted = max(options.adapt[0], 1) if options.adapt else workers
    with contextlib.suppress(TimeoutError, OSError):
        client.wait_for_workers(wanted, timeout=options.job_timeout_s)
    connected = len(client.scheduler_info(n_workers=-1)["workers"])
    if connected == 0:
        log_dir = Path(script).parent
        raise ConfigurationError(
            f"--cluster {options.kind}: no dask worker connected within {options.job_timeout_s:g} s; jobs: "
            f"{job_states(options.kind, _job_ids(cluster))}; job script: {script}; job logs: "
            f"{log_dir}/{_last_log_line(log_dir)}"
        )
    if connected < wanted:
        log.warning(
            "--cluster %s: %d of %d workers connected; starting with those", options.kind, connected, wanted
        )
    return connected


@contextlib.contextmanager
def jobqueue_client(
    options: ClusterOptions, workers: int, worker_config: dict[str, Any], worker_modules: tuple[str, ...]
) -> Iterator[Any]:
    """Yield a dask client of a batch-system cluster with ``workers`` workers started (or adapting)."""
    import dask
    from distributed import Client

    _check_commands(options.kind)
    kwargs = cluster_kwargs(options, worker_config, worker_modules)
    with dask.config.set(worker_config):
        cluster, script = _build(options, kwargs)
        with cluster, Client(cluster) as client:
            _submit(cluster, options, workers, script)
            log.info(
                "--cluster %s: %s; job script %s",
                options.kind,
                job_states(options.kind, _job_ids(cluster)),
                script,
            )
            wait_for_workers(client, cluster, options, workers, script)
            yield client
