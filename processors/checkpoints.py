"""Checkpoints of chunk results, keyed by everything that shaped them.

A chunk's checkpoint lives under ``DIR/<identity>/<dataset>/<file uuid>/<file size>/<tree>/
<start>-<stop>.coffea``. The identity hashes the analysis definition (its source and that of
hepsieve's processing code), the processor configuration (mode, models' sha256s, score cuts and
working points, feature sets) and the versions of the libraries that compute the result; the
path adds the file's identity (ROOT UUID or Parquet content hash, and size), tree and entry
range. A checkpoint made with anything else different is never found, so never reused.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import lz4.frame
import pyarrow.parquet as pq
from coffea.processor import CheckpointerABC

from hepsieve.processors.analysis import Analysis
from hepsieve.processors.provenance import versions

log = logging.getLogger(__name__)
PROCESSING_PACKAGES = ("hepsieve.processors", "hepsieve.models")
IDENTITY_VERSIONS = ("coffea", "uproot", "awkward", "numpy", "hist", "vector", "onnxruntime")


def _callables(value: Any, seen: set[int]) -> Iterator[Any]:
    """Yield every callable reachable through dataclass fields, mappings and tuples."""
    if id(value) in seen:
        return
    seen.add(id(value))
    if callable(value) and not isinstance(value, type):
        yield value
    if is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            yield from _callables(getattr(value, f.name), seen)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _callables(v, seen)
    elif isinstance(value, tuple | list):
        for v in value:
            yield from _callables(v, seen)


def _source_files(analysis: Analysis) -> list[Path]:
    """Return the source files of the analysis' code and of hepsieve's processing code."""
    files = set()
    for fn in _callables(analysis, set()):
        module = inspect.getmodule(fn)
        if module is not None and getattr(module, "__file__", None):
            files.add(Path(str(module.__file__)))
    for package in PROCESSING_PACKAGES:  # every module, imported in this process or not
        files.update(Path(str(importlib.import_module(package).__file__)).parent.rglob("*.py"))
    return sorted(files)


def describe(value: Any) -> Any:
    """Return a stable, JSON-ready description of a definition (callables by qualified name)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: describe(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [describe(v) for v in value]
    if callable(value) and not isinstance(value, type):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)  # e.g. hist axes: their repr lists bins, edges, name and label


def analysis_fingerprint(analysis: Analysis) -> str:
    """Return a hash of the analysis definition: its description and the code it runs."""
    digest = hashlib.sha256(json.dumps(describe(analysis), sort_keys=True).encode())
    for path in _source_files(analysis):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_identity(analysis: Analysis, processor_identity: dict[str, Any]) -> str:
    """Return the identity of a run's chunk results (everything but the chunk's file and range)."""
    library = {k: v for k, v in versions().items() if k in IDENTITY_VERSIONS or k == "hepsieve"}
    desc = {"analysis": analysis_fingerprint(analysis), "processor": processor_identity, "versions": library}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _feature_files_intact(output: dict) -> bool:
    """Return True if every feature file a checkpointed chunk wrote still holds its rows."""
    for files in output.get("feature_files", {}).values():
        for path, rows in files.items():
            try:
                if pq.ParquetFile(path).metadata.num_rows != rows:
                    return False
            except (OSError, ValueError):
                return False
    return True


class IdentityCheckpointer(CheckpointerABC):
    """Saves and loads chunk outputs under a directory keyed by the run identity."""

    def __init__(self, checkpoint_dir: str | Path, identity: str):
        self.root = Path(checkpoint_dir).absolute()
        self.identity = identity
        self.dir = self.root / identity

    def filepath(self, metadata: dict) -> Path:
        """Return the checkpoint file of the chunk described by coffea's chunk ``metadata``."""
        return (
            self.dir
            / metadata["dataset"]
            / (metadata["fileuuid"] or "no-uuid")
            / str(metadata.get("filesize", "?"))
            / metadata["treename"]
            / f"{metadata['entrystart']}-{metadata['entrystop']}.coffea"
        )

    def load(self, metadata: dict, processor_instance: Any) -> dict | None:
        """Return the checkpointed output of this chunk (marked as reused), or None."""
        path = self.filepath(metadata)
        try:
            with lz4.frame.open(path, "rb") as fin:
                output = cloudpickle.load(fin)
        except FileNotFoundError:
            return None
        except Exception as err:  # noqa: BLE001 (a damaged checkpoint is recomputed, and said so)
            log.warning("checkpoint %s cannot be read (%s): recomputing that chunk", path, err)
            return None
        # coffea saves {"out": the processor's output, "processed": {work item}}
        if not isinstance(output, dict) or not isinstance(output.get("out"), dict):
            log.warning("checkpoint %s is not a chunk result: recomputing that chunk", path)
            return None
        if not _feature_files_intact(output["out"]):
            log.warning("checkpoint %s: its feature file changed or is gone: recomputing", path)
            return None
        return output | {"out": output["out"] | {"reused_chunks": 1}}

    def save(self, output: dict, metadata: dict, processor_instance: Any) -> None:
        """Write this chunk's output (through a temporary file and a rename)."""
        path = self.filepath(metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with lz4.frame.open(tmp, "wb") as fout:
            cloudpickle.dump(output, fout)
        tmp.replace(path)

    def other_identities(self) -> list[str]:
        """Return the identities of checkpoints in this directory made with another configuration."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name != self.identity)
