"""Fileset specifications: real file names + metadata, resolved against a data directory."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import pyarrow as pa
import pyarrow.parquet as pq
import uproot

from hepsieve.processors.analysis import Inputs
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
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigurationError(f"fileset {path} is not valid JSON: {err}") from None
    check_spec(spec, path)
    return spec


def check_spec(spec: object, where: str | Path) -> None:
    """Check the structure of a fileset: ConfigurationError naming the entry at fault."""
    if not isinstance(spec, dict):
        raise ConfigurationError(f"fileset {where}: not a JSON object")
    for key in ("tree", "datasets"):
        if key not in spec:
            raise ConfigurationError(f"fileset {where} has no {key!r} entry")
    if not isinstance(spec["datasets"], dict) or not spec["datasets"]:
        raise ConfigurationError(
            f'fileset {where}: \'datasets\' must map dataset names to {{"files": [...], "metadata": {{...}}}}'
        )
    for name, entry in spec["datasets"].items():
        if not isinstance(entry, dict) or "files" not in entry:
            raise ConfigurationError(f"fileset {where}: dataset {name!r} has no 'files' list")
        files = entry["files"]
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ConfigurationError(f"fileset {where}: dataset {name!r}: 'files' must be a list of names")
        if not files:
            raise ConfigurationError(f"fileset {where}: dataset {name!r} lists no files")
        if not isinstance(entry.get("metadata", {}), dict):
            raise ConfigurationError(f"fileset {where}: dataset {name!r}: 'metadata' must be an object")
    _check_processes(spec, where)


ROLES = ("signal", "background", "data")


def _check_processes(spec: dict, where: str | Path) -> None:
    """Check the optional ``processes`` map: roles, and that every dataset names one of them."""
    processes = spec.get("processes")
    if processes is None:
        return
    if not isinstance(processes, dict):
        raise ConfigurationError(f"fileset {where}: 'processes' must map names to {{label, role, color}}")
    for name, proc in processes.items():
        if not isinstance(proc, dict) or proc.get("role") not in ROLES:
            raise ConfigurationError(f"fileset {where}: process {name!r}: 'role' must be one of {ROLES}")
    for name, entry in spec["datasets"].items():
        process = entry.get("metadata", {}).get("process")
        if process not in processes:
            raise ConfigurationError(
                f"fileset {where}: dataset {name!r}: process {process!r} is not one "
                f"of the fileset's processes {sorted(processes)}"
            )


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
    #: path -> {"numentries", "uuid", "filesize"}: what coffea's preprocessing would read again
    file_meta: dict[str, dict] = field(default_factory=dict)

    @property
    def total_entries(self) -> int:
        """Return the number of input entries over all datasets."""
        return sum(self.entries.values())


def _kind(type_text: str) -> str:
    """Return the branch kind (``float``, ``var * int``, ...) of an awkward type string."""
    jagged = type_text.startswith("var * ")
    prim = type_text.removeprefix("var * ").removeprefix("?")
    kind = (
        "float"
        if prim in ("float32", "float64", "double", "float")
        else "bool"
        if prim == "bool"
        else "int"
        if re.fullmatch(r"u?int(8|16|32|64)", prim)
        else prim
    )
    return f"var * {kind}" if jagged else kind


def _check_types(path: Path, found: dict[str, str], wanted: dict[str, str]) -> None:
    """Raise InputFileError naming the first branch whose kind differs from the analysis' schema."""
    for name, want in wanted.items():
        if name in found and _kind(found[name]) != want:
            raise InputFileError(
                f"{path}: branch {name!r} is {found[name]}, the analysis reads it "
                f"as {want}; wrong file, or a file of another format version"
            )


def _arrow_kind(t: pa.DataType) -> str:
    """Return the branch kind of an Arrow column type (``float``, ``var * int``, ...)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"var * {_arrow_kind(t.value_type)}"
    for test, kind in (
        (pa.types.is_floating, "float"),
        (pa.types.is_integer, "int"),
        (pa.types.is_boolean, "bool"),
    ):
        if test(t):
            return kind
    return str(t)


def _check_parquet(path: Path, inputs: dict[str, dict[str, str]], content_id: bool) -> dict:
    """Return the rows and id of a Parquet file; raise InputFileError naming the problem."""
    try:
        meta = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 (pyarrow raises several types for damaged files)
        raise InputFileError(f"{path}: cannot be read as Parquet ({type(err).__name__}: {err})") from None
    schema = meta.schema_arrow
    missing = [c for c in inputs["required"] if c not in schema.names]
    if missing:
        raise InputFileError(f"{path}: lacks column(s) {', '.join(missing)}")
    found = {f.name: _arrow_kind(f.type) for f in schema}
    _check_types(path, found, {**inputs["required"], **inputs["optional"]})
    # coffea's own id for a Parquet file is a hash of its path; a checkpoint needs the content's
    uuid = parquet_content_id(path) if content_id else hashlib.md5(str(path).encode()).digest()
    present = [c for c in inputs["optional"] if c in schema.names]
    return {"numentries": int(meta.metadata.num_rows), "uuid": uuid, "read": [*inputs["required"], *present]}


def parquet_content_id(path: Path) -> bytes:
    """Return a 16-byte hash of a Parquet file's content (its identity for checkpoints)."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fin:
        for block in iter(lambda: fin.read(1 << 22), b""):
            digest.update(block)
    return digest.digest()


def _check_root(path: Path, tree: str, inputs: dict[str, dict[str, str]]) -> dict:
    """Check a ROOT tree: branches, their types and shapes, and that the last entry reads."""
    with uproot.open(path) as fin:
        if tree not in fin:
            found = ", ".join(fin.keys()) or "nothing"
            raise InputFileError(f"{path}: no tree {tree!r} (found: {found})")
        ttree = fin[tree]
        missing = [b for b in inputs["required"] if b not in ttree]
        if missing:
            raise InputFileError(f"{path}: tree {tree!r} lacks branch(es) {', '.join(missing)}")
        read = [*inputs["required"], *(b for b in inputs["optional"] if b in ttree)]
        n = int(ttree.num_entries)
        # the last entry of every branch read: a truncated file fails here, not in a worker
        last = ttree.arrays(read, entry_start=max(n - 1, 0), entry_stop=n, library="ak")
        _check_types(
            path,
            {b: str(ak.type(last[b]).content) for b in read},
            {**inputs["required"], **inputs["optional"]},
        )
        return {
            "numentries": n,
            "uuid": fin.file.fUUID,
            "ttree": isinstance(ttree, uproot.TTree),
            "read": read,
            "clusters": cluster_starts(ttree),
        }


def cluster_starts(tree) -> list[int]:
    """Return the first entry of every cluster of a TTree or RNTuple, and its entry count."""
    n = int(tree.num_entries)
    if isinstance(tree, uproot.TTree):
        return sorted({int(x) for x in tree.common_entry_offsets()} | {0, n})
    return sorted({int(c.num_first_entry) for c in tree.cluster_summaries} | {0, n})


def _check_file(
    path: Path, tree: str, inputs: dict[str, dict[str, str]], fmt: str = "root", content_id: bool = False
) -> dict:
    """Return the entries and UUID of one file, as coffea's preprocessing does.

    Raises InputFileError naming the file and the problem (not found, not ROOT/Parquet, no
    tree, a missing branch, a branch of another type or shape, unreadable last entry).
    """
    if path.is_symlink() and not path.exists():
        raise InputFileError(f"{path}: a broken symbolic link or a link loop")
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    size = path.stat().st_size
    if fmt == "parquet":
        return _check_parquet(path, inputs, content_id) | {"filesize": size}
    try:
        return _check_root(path, tree, inputs) | {"filesize": size}
    except InputFileError:
        raise
    except Exception as err:  # noqa: BLE001 (uproot raises many types for damaged files)
        raise InputFileError(f"{path}: cannot be read as ROOT ({type(err).__name__}: {err})") from None


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


def _local_path(data_dir: Path, fname: str) -> Path:
    """Return the absolute path of a fileset entry; a symbolic link loop is an InputFileError."""
    path = data_dir / fname
    try:
        return path.resolve()
    except (RuntimeError, OSError) as err:  # Python raises RuntimeError for a link loop
        raise InputFileError(f"{path}: a symbolic link loop ({err})") from None


def _resolve_dataset(
    out: ResolvedFileset, spec: dict, data_dir: Path, name: str, inputs: Inputs, options: dict[str, bool]
) -> None:
    """Check the files of dataset ``name`` and add the readable ones to ``out``."""
    entry = spec["datasets"][name]
    meta = dict(entry.get("metadata", {}))
    meta["inputs"] = inputs.name
    branches = {"required": inputs.required(bool(meta.get("is_data"))), "optional": dict(inputs.optional)}
    files, entries, ttrees, read = {}, 0, True, None
    for fname in _expand(data_dir, entry["files"], name):
        path = _local_path(data_dir, fname)
        if not path.exists() and meta.get("optional"):
            out.skipped.append(f"{path} (optional dataset {name} absent)")
            log.warning("optional dataset %s: %s not found, left out", name, path)
            continue
        try:
            file_meta = _check_file(
                path, spec["tree"], branches, spec.get("format", "root"), options["content_ids"]
            )
        except InputFileError as err:
            if not options["skip_bad_files"]:
                raise
            out.skipped.append(str(err))
            log.warning("skipping bad file: %s", err)
            continue
        files[str(path)] = spec["tree"]
        ttrees &= file_meta.pop("ttree", False)
        present = file_meta.pop("read")
        read = present if read is None else [b for b in read if b in present]
        out.file_meta[str(path)] = file_meta
        entries += file_meta["numentries"]
    if not files:
        return
    meta.setdefault("lumi_pb", spec.get("lumi_pb"))
    meta.setdefault("lumi_uncertainty", spec.get("lumi_uncertainty"))
    if "processes" in spec:
        meta.setdefault("role", spec["processes"][meta["process"]]["role"])
    out.fileset[name] = {"files": files, "metadata": meta}
    if ttrees:
        # coffea reads these in one pass per chunk instead of one lazy read per column
        # and buffer (a jagged branch was read twice, for its offsets and its content):
        # ATLAS, 1M events: ~20 % less CPU. (RNTuples, like the UCI HIGGS files, gain
        # nothing and uproot deprecates the branch filter coffea would use on them.)
        out.fileset[name]["preload"] = read
    out.entries[name] = entries


def resolve_fileset(
    spec: dict,
    data_dir: str | Path,
    inputs: Inputs,
    datasets: list[str] | None = None,
    skip_bad_files: bool = False,
    content_ids: bool = False,
) -> ResolvedFileset:
    """Check every file of ``spec`` under ``data_dir`` and return the coffea fileset.

    Bad files raise :class:`InputFileError` unless ``skip_bad_files``, in which case they are
    listed in ``skipped``. Datasets marked ``optional`` whose files are absent are skipped
    and listed too. Nothing is left out silently. ``content_ids``: Parquet files are
    identified by a hash of their content (for checkpoints), not of their path.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ConfigurationError(
            f"data directory {data_dir} does not exist; make toys with "
            f"`hepsieve generate {spec.get('analysis', '<analysis>')} --out {data_dir}`"
        )
    names = select_datasets(spec, datasets)
    out = ResolvedFileset(fileset={}, entries={}, is_toy=(data_dir / "toy.json").is_file())
    options = {"skip_bad_files": skip_bad_files, "content_ids": content_ids}
    for name in names:
        _resolve_dataset(out, spec, data_dir, name, inputs, options)
    if not out.fileset:
        raise InputFileError(f"no readable input files for datasets {names} under {data_dir}")
    return out
