"""Fileset specifications: real file names + metadata, resolved against a data directory."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import uproot

from hepsieve.processors.analysis import FileSum, Inputs
from hepsieve.processors.errors import ConfigurationError, InputFileError

log = logging.getLogger(__name__)
FILESET_DIR = Path(__file__).parent / "fileset_specs"


def builtin_filesets() -> list[str]:
    """Return the names of the fileset specifications shipped with hepsieve."""
    return sorted(p.stem for p in FILESET_DIR.glob("*.json"))


def load_fileset_spec(name_or_path: str | Path) -> dict:
    """Return a fileset JSON by path, or a shipped one by name (``cms-hzz4l``, ``atlas_hzz4l_csv``)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = FILESET_DIR / f"{str(name_or_path).replace('-', '_')}.json"
        if not path.is_file():
            raise ConfigurationError(
                f"no shipped fileset {str(name_or_path)!r} (shipped: {', '.join(builtin_filesets())}); "
                "pass --fileset with the path of your fileset JSON"
            )
    if not path.is_file():
        raise ConfigurationError(f"fileset {path} does not exist")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigurationError(f"fileset {path} is not valid JSON: {err}") from None
    for key in ("tree", "datasets"):
        if key not in spec:
            raise ConfigurationError(f"fileset {path} has no {key!r} entry")
    return spec


def select_datasets(spec: dict, names: list[str] | None) -> list[str]:
    """Return ``names`` (all datasets of ``spec`` when None); ConfigurationError naming unknown ones."""
    if not names:
        return list(spec["datasets"])
    unknown = sorted(set(names) - set(spec["datasets"]))
    if unknown:
        raise ConfigurationError(f"unknown dataset(s) {unknown}; known: {sorted(spec['datasets'])}")
    return list(names)


@dataclass
class ResolvedFileset:
    """A coffea fileset with the entries per dataset and any files left out (and why)."""

    fileset: dict
    entries: dict[str, int]
    skipped: list[str] = field(default_factory=list)
    is_toy: bool = False
    #: path -> {"numentries", "uuid"}: what coffea's preprocessing would read again
    file_meta: dict[str, dict] = field(default_factory=dict)

    @property
    def total_entries(self) -> int:
        """Return the number of input entries over all datasets."""
        return sum(self.entries.values())


def _check_parquet(path: Path, columns: tuple[str, ...]) -> dict:
    """Return the rows and id of a Parquet file; raise InputFileError naming the problem."""
    try:
        meta = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 (pyarrow raises several types for damaged files)
        raise InputFileError(f"{path}: cannot be read as Parquet ({type(err).__name__}: {err})") from None
    missing = [c for c in columns if c not in meta.schema_arrow.names]
    if missing:
        raise InputFileError(f"{path}: lacks column(s) {', '.join(missing)}")
    # coffea's own id for a Parquet file
    return {"numentries": int(meta.metadata.num_rows), "uuid": hashlib.md5(str(path).encode()).digest()}


def _check_file(path: Path, tree: str, branches: tuple[str, ...], fmt: str = "root") -> dict:
    """Return the entries and UUID of one file; InputFileError naming any problem.

    Return the entries of ``tree`` in ``path`` and the file's UUID, as coffea's
    preprocessing does; raise InputFileError naming the problem.
    """
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    if fmt == "parquet":
        return _check_parquet(path, branches)
    try:
        with uproot.open(path) as fin:
            if tree not in fin:
                found = ", ".join(fin.keys()) or "nothing"
                raise InputFileError(f"{path}: no tree {tree!r} (found: {found})")
            ttree = fin[tree]
            missing = [b for b in branches if b not in ttree]
            if missing:
                raise InputFileError(f"{path}: tree {tree!r} lacks branch(es) {', '.join(missing)}")
            return {
                "numentries": int(ttree.num_entries),
                "uuid": fin.file.fUUID,
                "ttree": isinstance(ttree, uproot.TTree),
            }
    except InputFileError:
        raise
    except Exception as err:  # noqa: BLE001 (uproot raises many types for damaged files)
        raise InputFileError(f"{path}: cannot be read as ROOT ({type(err).__name__}: {err})") from None


# --- issue 12: dataset metadata from the fileset, per-file sums (NanoAOD Runs tree), file versions ---


def complete_metadata(spec: dict, meta: dict, data_dir: Path, inputs: Inputs, dataset: str) -> dict:
    """Return a dataset's metadata over the fileset's defaults, its metadata files resolved.

    The fileset's top-level ``metadata`` (e.g. a trigger table, the golden JSON) is the
    default of every dataset's own. Keys listed in ``inputs.metadata_files`` name files: a
    relative path is taken against ``data_dir``; a missing file is a ConfigurationError
    naming the key (URLs are left to the reader).
    """
    out = {**spec.get("metadata", {}), **meta}
    for key in inputs.metadata_files:
        if key not in out or "://" in str(out[key]):
            continue
        path = Path(str(out[key]))
        path = (path if path.is_absolute() else data_dir / path).resolve()
        if not path.is_file():
            raise ConfigurationError(f"dataset {dataset}: metadata {key!r}: file {path} not found")
        out[key] = str(path)
    return out


def _file_sum(fin, path: Path, total: FileSum) -> float:
    """Return the sum of ``total``'s branch over its tree in an open file; InputFileError if absent."""
    if total.tree not in fin:
        raise InputFileError(
            f"{path}: no tree {total.tree!r}, which holds {total.branches[0]} for the "
            f"normalisation (found: {', '.join(fin.keys()) or 'nothing'})"
        )
    tree = fin[total.tree]
    branch = next((b for b in total.branches if b in tree), None)
    if branch is None:
        raise InputFileError(f"{path}: tree {total.tree!r} lacks branch {' or '.join(total.branches)}")
    value = float(np.sum(tree[branch].array(library="np"), dtype=np.float64))
    if not np.isfinite(value):
        raise InputFileError(f"{path}: {total.tree}.{branch} sums to {value}")
    return value


def inspect_file(path: Path, tree: str, inputs: Inputs, required: Collection[str], is_data: bool) -> dict:
    """Return a file's per-file sums and what it looks like (``{"sums", "looks_like"}``).

    Only for inputs with ``file_sums`` or ``describe``. A missing required branch raises
    InputFileError naming it and what the file looks like (e.g. its NanoAOD version); a
    file that cannot be opened is left to the file check, which names the problem.
    """
    if not (inputs.file_sums or inputs.describe) or not path.is_file():
        return {}
    try:
        fin = uproot.open(path)
    except Exception:  # noqa: BLE001 (not ROOT, or damaged: the file check names the problem)
        return {}
    with fin:
        looks_like = None
        if tree in fin and inputs.describe is not None:
            names = set(fin[tree].keys())
            looks_like = inputs.describe(names)
            missing = [b for b in required if b not in names]
            if missing:
                raise InputFileError(
                    f"{path}: tree {tree!r} lacks branch(es) {', '.join(missing)}; "
                    f"the file looks like {looks_like}"
                )
        sums = {t.key: _file_sum(fin, path, t) for t in inputs.file_sums if not (is_data and t.mc_only)}
    return {"sums": sums, "looks_like": looks_like}


def dataset_totals(dataset: str, extras: list[dict]) -> dict:
    """Return a dataset's metadata from its files' :func:`inspect_file` results (sums added up)."""
    out: dict = {}
    for extra in extras:
        for key, value in extra.get("sums", {}).items():
            out[key] = out.get(key, 0.0) + value
    for key, value in out.items():
        if value == 0:
            raise InputFileError(f"dataset {dataset}: {key} sums to 0 over its files; cannot normalise")
        log.info("dataset %s: %s = %.8g over %d file(s)", dataset, key, value, len(extras))
    looks = sorted({e["looks_like"] for e in extras if e.get("looks_like")})
    if looks:
        out["looks_like"] = "; ".join(looks)
        log.info("dataset %s: files look like %s", dataset, out["looks_like"])
    return out


def _expand(data_dir: Path, names: list[str], dataset: str) -> list[str]:
    """Expand glob patterns (``HIGGS_train_*.root``) in sorted order; plain names pass through."""
    out = []
    for name in names:
        if any(ch in name for ch in "*?["):
            matches = sorted(p.name for p in data_dir.glob(name))
            if not matches:
                raise InputFileError(f"dataset {dataset}: no file matches {data_dir / name}")
            out += matches
        else:
            out.append(name)
    return out


def _resolve_dataset(
    out: ResolvedFileset, spec: dict, data_dir: Path, name: str, inputs: Inputs, skip_bad_files: bool
) -> None:
    """Check the files of dataset ``name`` and add the readable ones to ``out``."""
    entry = spec["datasets"][name]
    meta = dict(entry.get("metadata", {}))
    meta["inputs"] = inputs.name
    meta = complete_metadata(spec, meta, data_dir, inputs, name)  # issue 12
    required = tuple(inputs.required(bool(meta.get("is_data")), meta))  # issue 12: + meta's branches
    files, entries, ttrees, extras = {}, 0, True, []
    for fname in _expand(data_dir, entry["files"], name):
        path = (data_dir / fname).resolve()
        if not path.exists() and meta.get("optional"):
            out.skipped.append(f"{path} (optional dataset {name} absent)")
            log.warning("optional dataset %s: %s not found, left out", name, path)
            continue
        try:
            # issue 12: per-file sums (Runs tree) and what the file looks like, before the file check
            extra = inspect_file(path, spec["tree"], inputs, required, bool(meta.get("is_data")))
            file_meta = _check_file(path, spec["tree"], required, spec.get("format", "root"))
        except InputFileError as err:
            if not skip_bad_files:
                raise
            out.skipped.append(str(err))
            log.warning("skipping bad file: %s", err)
            continue
        extras.append(extra)  # issue 12: only files that are read count in the dataset's sums
        files[str(path)] = spec["tree"]
        ttrees &= file_meta.pop("ttree", False)
        out.file_meta[str(path)] = file_meta
        entries += file_meta["numentries"]
    if not files:
        return
    meta.update(dataset_totals(name, extras))  # issue 12
    meta.setdefault("lumi_pb", spec.get("lumi_pb"))
    out.fileset[name] = {"files": files, "metadata": meta}
    if ttrees:
        # coffea reads these in one pass per chunk instead of one lazy read per column
        # and buffer (a jagged branch was read twice, for its offsets and its content):
        # ATLAS, 1M events: ~20 % less CPU. (RNTuples, like the UCI HIGGS files, gain
        # nothing and uproot deprecates the branch filter coffea would use on them.)
        out.fileset[name]["preload"] = list(required) + [b for b in inputs.optional if b not in required]
    out.entries[name] = entries


def resolve_fileset(
    spec: dict,
    data_dir: str | Path,
    inputs: Inputs,
    datasets: list[str] | None = None,
    skip_bad_files: bool = False,
) -> ResolvedFileset:
    """Check every file of ``spec`` under ``data_dir`` and return the coffea fileset.

    Bad files raise :class:`InputFileError` unless ``skip_bad_files``, in which case they are
    listed in ``skipped``. Datasets marked ``optional`` whose files are absent are skipped
    and listed too. Nothing is left out silently.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ConfigurationError(
            f"data directory {data_dir} does not exist; make toys with "
            f"`hepsieve generate {spec.get('analysis', '<analysis>')} --out {data_dir}`"
        )
    names = select_datasets(spec, datasets)
    out = ResolvedFileset(fileset={}, entries={}, is_toy=(data_dir / "toy.json").is_file())
    for name in names:
        _resolve_dataset(out, spec, data_dir, name, inputs, skip_bad_files)
    if not out.fileset:
        raise InputFileError(f"no readable input files for datasets {names} under {data_dir}")
    return out
