"""Provenance of a run: the ``run.json`` record (its one owner), package versions, peak memory."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any

from hepsieve.processors.errors import ConfigurationError

RUN_RECORD_VERSION = 1
VERSIONED = (
    "hepsieve",
    "coffea",
    "uproot",
    "awkward",
    "hist",
    "numpy",
    "onnxruntime",
    "dask",
    "distributed",
    "torch",
    "scikit-learn",
)


def versions() -> dict[str, str]:
    """Return the installed versions of the packages that shape the result."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def host() -> dict[str, Any]:
    """Return the CPU count and platform of this machine."""
    return {"cpus": os.cpu_count(), "platform": platform.platform()}


def peak_rss_mb() -> float:
    """Return the peak resident memory [MB] of this process.

    Peak resident memory [MB] of this process: VmHWM where /proc exists. (``ru_maxrss``
    survives fork + exec, so a spawned worker would report its parent's peak.)
    """
    try:
        with Path("/proc/self/status").open() as status:
            for line in status:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class RunRecord:
    """What ``run.json`` holds: how a run was made, what it read and what it processed."""

    command: str
    analysis: str  # the analysis' name
    analysis_ref: str  # how to load it again: a registered name or module:ATTR
    mode: str
    config: dict[str, Any]
    is_toy: bool
    data_dir: str | None  # None: a fileset of absolute paths or URLs, no --data-dir
    fileset: dict[str, list[str]]  # dataset -> files
    datasets_meta: dict[str, dict[str, Any]]
    fileset_sha256: str
    lumi_pb: float | None
    processes: dict[str, dict[str, Any]] | None
    skipped_files: list[str]
    accounting: dict[str, dict[str, int]]  # dataset -> expected / processed entries
    models: dict[str, dict[str, Any]]  # name -> card, feature set, ONNX sha256 per fold
    score_cut: dict[str, float]
    events: int
    executor_start_s: float
    wall_s: float
    events_per_s: float | None
    worker_max_rss_mb: list[float] | None = None
    auc_from_histograms: dict[str, dict[str, float]] | None = None
    feature_files: dict[str, list[dict[str, Any]]] | None = None  # the manifest: file, events
    reused_chunks: int | None = None  # read back from --checkpoint
    versions: dict[str, str] = field(default_factory=versions)
    host: dict[str, Any] = field(default_factory=host)
    record_version: int = RUN_RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready dict (optional entries left out when empty)."""
        out = asdict(self)
        return {k: v for k, v in out.items() if v is not None or k == "events_per_s"}

    def write(self, path: str | Path) -> Path:
        """Write ``run.json`` at ``path`` (through a temporary file and a rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, default=str))
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecord:
        """Read ``RUN_DIR/run.json``; ConfigurationError naming the file if it is not one."""
        path = Path(run_dir) / "run.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigurationError(
                f"{path}: not the run.json of a finished `hepsieve run` ({type(err).__name__}: {err})"
            ) from None
        known = {f.name for f in fields(cls)}
        data.setdefault("analysis_ref", data.get("analysis", ""))
        data.setdefault("lumi_pb", None)
        data.setdefault("processes", None)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as err:
            raise ConfigurationError(f"{path}: incomplete run record ({err})") from None
