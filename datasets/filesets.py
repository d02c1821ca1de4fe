"""Fileset specifications: real file names + metadata, resolved against a data directory."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import re
import uuid as uuid_module
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import uproot

from hepsieve.datasets.remote import RemotePolicy, check_url, is_url, uproot_options, url_size, with_retries
from hepsieve.processors.analysis import FileSum, Inputs
from hepsieve.processors.errors import ConfigurationError, InputFileError

log = logging.getLogger(__name__)
FILESET_DIR = Path(__file__).parent / "fileset_specs"


def builtin_filesets() -> list[str]:
    """Return the names of the fileset specifications shipped with hepsieve."""
    return sorted(p.stem for p in FILESET_DIR.glob("*.json"))


def load_fileset_spec(name_or_path: str | Path | dict) -> dict:
    """Return a fileset by path, a shipped one by name (``cms-hzz4l``), or a fileset dict checked.

    hepsieve's form (``{"tree", "lumi_pb", "datasets": {name: {"files": [...], "metadata"}}}``),
    coffea's (``{name: {"files": {path: tree}, "metadata": {...}}}``) and the output of
    ``coffea.dataset_tools.preprocess`` (``files: {path: {"object_path", "steps", "uuid", ...}}``)
    are all accepted and returned in hepsieve's form.
    """
    if isinstance(name_or_path, dict):
        return normalize_spec(name_or_path, "(dict)")
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
    return normalize_spec(spec, path)


def is_coffea_fileset(spec: object) -> bool:
    """Return whether ``spec`` is in coffea's form: ``{dataset: {"files": {path: tree | {...}}}}``."""
    return (
        isinstance(spec, dict)
        and bool(spec)
        and "datasets" not in spec
        and all(isinstance(v, dict) and isinstance(v.get("files"), dict) for v in spec.values())
    )


def normalize_spec(spec: object, where: str | Path) -> dict:
    """Return ``spec`` (hepsieve's or coffea's form) in hepsieve's form, checked (see check_spec)."""
    if is_coffea_fileset(spec):
        spec = {"datasets": spec}
    if isinstance(spec, dict) and isinstance(spec.get("datasets"), dict):
        spec = dict(spec)
        spec["datasets"] = {
            name: _normalize_dataset(spec, name, entry, where) for name, entry in spec["datasets"].items()
        }
        if "tree" not in spec:
            _tree_from_files(spec, where)
    check_spec(spec, where)
    return cast(dict, spec)  # check_spec raised unless it is one


def _normalize_dataset(spec: dict, name: str, entry: object, where: str | Path) -> object:
    """Turn coffea's ``files: {path: tree | {object_path, steps, uuid, num_entries}}`` into a list.

    The trees go to ``trees`` (checked to be one tree), what coffea's ``preprocess`` found to
    ``preprocessed`` (path -> steps, uuid, entries) and its dataset form to ``form``.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
        return entry
    entry, trees, done = dict(entry), set(), {}
    for fname, value in entry["files"].items():
        info = value if isinstance(value, dict) else {"object_path": value}
        trees.add(info.get("object_path"))
        if all(info.get(k) is not None for k in ("steps", "uuid", "num_entries")):
            done[fname] = {k: info[k] for k in ("steps", "uuid", "num_entries")}
        fmt = info.get("format") or entry.get("format")
        if fmt and fmt != spec.get("format", "root"):
            spec["format"] = fmt
    entry["files"], entry["trees"] = list(entry["files"]), sorted(trees - {None})
    if done:
        entry["preprocessed"] = done
    if entry.get("compressed_form") or entry.get("form"):
        entry["form"] = entry.pop("compressed_form", None) or entry["form"]
    if entry.get("metadata") is None:
        entry["metadata"] = {}
    for key in ("compressed_form", "format", "did"):
        entry.pop(key, None)
    return entry


def _tree_from_files(spec: dict, where: str | Path) -> None:
    """Set ``spec["tree"]`` from the trees its files name (one tree for the whole fileset)."""
    trees = {t for e in spec["datasets"].values() if isinstance(e, dict) for t in e.get("trees", [])}
    if spec.get("format") == "parquet" and not trees:
        trees = {"parquet"}
    if len(trees) > 1:
        raise ConfigurationError(
            f"fileset {where}: its files name several trees ({', '.join(sorted(trees))}); "
            "hepsieve reads one tree per fileset: split it into one fileset per tree"
        )
    if trees:
        spec["tree"] = trees.pop()
    flavours = {e.get("metadata", {}).get("inputs") for e in spec["datasets"].values() if isinstance(e, dict)}
    if len(flavours) == 1 and None not in flavours and "inputs" not in spec:
        spec["inputs"] = flavours.pop()  # hepsieve fileset writes the analysis' input flavour here


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
            raise ConfigurationError(
                f"fileset {where}: dataset {name!r}: 'files' must be a list of names "
                "or a {path: tree} object"
            )
        if not files:
            raise ConfigurationError(f"fileset {where}: dataset {name!r} lists no files")
        if not isinstance(entry.get("metadata", {}), dict):
            raise ConfigurationError(f"fileset {where}: dataset {name!r}: 'metadata' must be an object")
        trees = set(entry.get("trees", [])) - {spec["tree"]}
        if trees and spec.get("format", "root") == "root":
            raise ConfigurationError(
                f"fileset {where}: dataset {name!r} reads tree(s) {', '.join(sorted(trees))}, "
                f"the fileset's tree is {spec['tree']!r}: hepsieve reads one tree per fileset"
            )
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
    #: path -> [[start, stop], ...]: the chunks coffea's ``preprocess`` chose (its output as fileset)
    steps: dict[str, list[list[int]]] = field(default_factory=dict)

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


def _check_types(path: Path | str, found: dict[str, str], wanted: dict[str, str]) -> None:
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


def _check_root(
    path: Path | str,
    tree: str,
    inputs: dict[str, dict[str, str]],
    options: dict | None = None,
    inspect: Callable[[Any], dict] | None = None,
) -> dict:
    """Check a ROOT tree: branches, their types and shapes, and that the last entry reads.

    ``inspect``, given the open file, adds its result as ``extra`` (a URL is opened once).
    """
    with uproot.open(path, **(options or {})) as fin:
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
        meta = {
            "numentries": n,
            "uuid": fin.file.fUUID,
            "ttree": isinstance(ttree, uproot.TTree),
            "read": read,
            "clusters": cluster_starts(ttree),
            "filesize": getattr(fin.file.source, "num_bytes", None),
        }
        return meta | {"extra": inspect(fin)} if inspect is not None else meta


def cluster_starts(tree) -> list[int]:
    """Return the first entry of every cluster of a TTree or RNTuple, and its entry count."""
    n = int(tree.num_entries)
    if isinstance(tree, uproot.TTree):
        return sorted({int(x) for x in tree.common_entry_offsets()} | {0, n})
    return sorted({int(c.num_first_entry) for c in tree.cluster_summaries} | {0, n})


def _check_file(
    path: Path, tree: str, inputs: dict[str, dict[str, str]], fmt: str = "root", content_id: bool = False
) -> dict:
    """Return the entries and UUID of one local file, as coffea's preprocessing does.

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


# --- dataset metadata from the fileset, per-file sums (NanoAOD Runs tree), file versions ---


def complete_metadata(spec: dict, meta: dict, data_dir: Path | None, inputs: Inputs, dataset: str) -> dict:
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
        path = (path if path.is_absolute() else Path(data_dir or ".") / path).resolve()
        if not path.is_file():
            raise ConfigurationError(f"dataset {dataset}: metadata {key!r}: file {path} not found")
        out[key] = str(path)
    return out


def _file_sum(fin, path: str, total: FileSum) -> float:
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
    """Return a local file's per-file sums and what it looks like (``{"sums", "looks_like"}``).

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
        return _inspect_open(fin, str(path), tree, inputs, required, is_data)


def _inspect_open(
    fin, location: str, tree: str, inputs: Inputs, required: Collection[str], is_data: bool
) -> dict:
    """Return :func:`inspect_file`'s result from an open file."""
    looks_like = None
    if tree in fin and inputs.describe is not None:
        names = set(fin[tree].keys())
        looks_like = inputs.describe(names)
        missing = [b for b in required if b not in names]
        if missing:
            raise InputFileError(
                f"{location}: tree {tree!r} lacks branch(es) {', '.join(missing)}; "
                f"the file looks like {looks_like}"
            )
    sums = {t.key: _file_sum(fin, location, t) for t in inputs.file_sums if not (is_data and t.mc_only)}
    return {"sums": sums, "looks_like": looks_like}


def _inspect_checked(location: str, check: FileCheck) -> dict:
    """Return the per-file sums of a file that passed its check (a URL, or known from preprocess).

    The file is opened for its sums only when the analysis has some (e.g. the NanoAOD ``Runs``
    tree); a URL is read with the check's timeout and retries.
    """
    inputs = check.inputs
    if inputs is None or not any(not (check.is_data and t.mc_only) for t in inputs.file_sums):
        return {}

    def read() -> dict:
        options = uproot_options(location, check.policy.timeout_s) if is_url(location) else {}
        with uproot.open(location, **options) as fin:
            return _inspect_open(fin, location, check.tree, inputs, (), check.is_data)

    if is_url(location):
        return with_retries(read, location, check.policy)
    try:
        return read()
    except InputFileError:
        raise
    except Exception as err:  # noqa: BLE001 (uproot raises many types for damaged files)
        raise InputFileError(f"{location}: cannot be read as ROOT ({type(err).__name__}: {err})") from None


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


def _check_url(url: str, check: FileCheck) -> dict:
    """Check a ROOT file at a URL as :func:`_check_file` checks a local one (timeout, retries).

    The file's sums (:func:`_inspect_open`) are read in the same open, as ``meta["extra"]``.
    """
    check_url(url)
    if check.fmt != "root":
        raise ConfigurationError(
            f"{url}: {check.fmt} input is read from local paths only; copy it or convert it to ROOT"
        )
    policy = check.policy
    inputs = check.inputs

    def sums(fin) -> dict:
        if inputs is None:
            return {}
        return _inspect_open(fin, url, check.tree, inputs, (), check.is_data)

    options = uproot_options(url, policy.timeout_s)
    meta = with_retries(lambda: _check_root(url, check.tree, check.branches, options, sums), url, policy)
    if meta["filesize"] is None:
        meta["filesize"] = with_retries(lambda: url_size(url, policy.timeout_s), url, policy)
    return meta


@dataclass(frozen=True)
class FileCheck:
    """One file of the preflight: the entry as the fileset writes it and what to check in it."""

    dataset: str
    entry: str
    data_dir: str | None
    tree: str
    branches: dict[str, dict[str, str]]
    fmt: str = "root"
    content_id: bool = False
    policy: RemotePolicy = field(default_factory=RemotePolicy)
    #: what coffea's preprocess found (entries, uuid, steps) when its form vouches for the types
    known: dict | None = None
    #: the analysis' inputs, for per-file sums (NanoAOD Runs tree) and what the file looks like
    inputs: Inputs | None = None
    is_data: bool = False


def locate(entry: str, data_dir: str | Path | None) -> str:
    """Return where a fileset entry is read: a URL as written, a local path made absolute.

    A relative name needs ``data_dir``; a symbolic link loop is an InputFileError.
    """
    if is_url(entry):
        return entry
    path = Path(entry)
    if not path.is_absolute():
        if data_dir is None:
            raise ConfigurationError(f"fileset entry {entry!r} is a relative name: give --data-dir")
        path = Path(data_dir) / entry
    try:
        return str(path.resolve())
    except (RuntimeError, OSError) as err:  # Python raises RuntimeError for a link loop
        raise InputFileError(f"{path}: a symbolic link loop ({err})") from None


def check_input_file(check: FileCheck) -> dict:
    """Check one file of the preflight; return ``{"location", "meta"}`` or ``{"location", "error"}``.

    Never raises, so that it can run on dask or futures workers: the client turns an ``error``
    into the InputFileError (or, ``config``, the ConfigurationError) it names, or a skip.
    """
    location = check.entry
    try:
        location = locate(check.entry, check.data_dir)
        if check.known is not None:  # entries, uuid and types from preprocess; sums from the file
            return {
                "location": location,
                "meta": _known_meta(check.known),
                "extra": _inspect_checked(location, check),
            }
        extra = {}
        if is_url(location):
            meta = _check_url(location, check)
            extra = meta.pop("extra", {})
        else:
            if check.inputs is not None:  # before the file check: names the file's version
                required = check.branches["required"]
                extra = inspect_file(Path(location), check.tree, check.inputs, required, check.is_data)
            meta = _check_file(Path(location), check.tree, check.branches, check.fmt, check.content_id)
    except ConfigurationError as err:
        return {"location": location, "error": str(err), "config": True}
    except InputFileError as err:
        missing = "file not found" in str(err) or "FileNotFoundError" in str(err)
        return {"location": location, "error": str(err), "missing": missing}
    return {"location": location, "meta": meta, "extra": extra}


def _known_meta(known: dict) -> dict:
    """Return the preflight's file metadata from coffea's preprocess output (no re-opening)."""
    return {
        "numentries": int(known["num_entries"]),
        "uuid": uuid_module.UUID(str(known["uuid"])).bytes,
        "ttree": False,
        "read": known["read"],
        "filesize": None,
        "steps": [[int(a), int(b)] for a, b in known["steps"]],
    }


def _form_kind(form) -> str:
    """Return the branch kind (``float``, ``var * int``, ...) of an awkward form."""
    if isinstance(form, ak.forms.ListOffsetForm | ak.forms.ListForm):
        return f"var * {_form_kind(form.content)}"
    if isinstance(form, ak.forms.IndexedOptionForm | ak.forms.ByteMaskedForm | ak.forms.UnmaskedForm):
        return _form_kind(form.content)
    return _kind(getattr(form, "primitive", str(form)))


def _preprocessed(entry: dict, name: str, fname: str, branches: dict[str, dict[str, str]]) -> dict | None:
    """Return coffea's preprocess result for one file when the dataset's form checks its branches.

    Without a form (``preprocess(save_form=False)``) the file is opened and checked as any other.
    """
    done = entry.get("preprocessed", {}).get(fname)
    if done is None or not entry.get("form"):
        return None
    from coffea.util import decompress_form

    form = ak.forms.from_json(decompress_form(entry["form"]))
    missing = [b for b in branches["required"] if b not in form.fields]
    if missing:
        raise InputFileError(
            f"dataset {name}: coffea's preprocess form lacks branch(es) {', '.join(missing)}"
        )
    present = [*branches["required"], *(b for b in branches["optional"] if b in form.fields)]
    found = {b: _form_kind(form.content(b)) for b in present}
    _check_types(f"dataset {name} (preprocess form)", found, {**branches["required"], **branches["optional"]})
    return done | {"read": present}


def _expand(data_dir: Path | None, names: list[str], dataset: str) -> list[str]:
    """Expand glob patterns (``HIGGS_train_*.root``) in sorted order; plain names and URLs pass through."""
    out = []
    for name in names:
        if not is_url(name) and any(ch in name for ch in "*?["):
            base = Path(name).parent if Path(name).is_absolute() else data_dir
            pattern = Path(name).name if Path(name).is_absolute() else name
            matches = sorted(str(p) for p in Path(base or ".").glob(pattern))
            if not matches:
                raise InputFileError(f"dataset {dataset}: no file matches {Path(base or '.') / pattern}")
            out += [m if Path(name).is_absolute() else str(Path(m).relative_to(base or ".")) for m in matches]
        else:
            out.append(name)
    return out


def _dataset_inputs(
    spec: dict, entry: dict, data_dir: Path | None, inputs: Inputs, name: str
) -> tuple[dict, dict]:
    """Return a dataset's completed metadata and the branches its files must (and may) have.

    Required: the analysis' branches and those the metadata asks for (e.g. the HLT paths of a
    NanoAOD trigger table).
    """
    meta = complete_metadata(
        spec, {**entry.get("metadata", {}), "inputs": inputs.name}, data_dir, inputs, name
    )
    required = inputs.required(bool(meta.get("is_data")), meta)
    return meta, {"required": required, "optional": dict(inputs.optional)}


def _plan(
    spec: dict, data_dir: Path | None, name: str, inputs: Inputs, options: dict
) -> tuple[dict, list[FileCheck]]:
    """Return the completed metadata of dataset ``name`` and the checks of its files (globs expanded)."""
    entry = spec["datasets"][name]
    meta, branches = _dataset_inputs(spec, entry, data_dir, inputs, name)
    inspect = inputs if inputs.file_sums or inputs.describe else None
    return meta, [
        FileCheck(
            name,
            fname,
            None if data_dir is None else str(data_dir),
            spec["tree"],
            branches,
            spec.get("format", "root"),
            options["content_ids"],
            options["policy"],
            _preprocessed(entry, name, fname, branches),
            inspect,
            bool(meta.get("is_data")),
        )
        for fname in _expand(data_dir, entry["files"], name)
    ]


def _assemble(
    out: ResolvedFileset, spec: dict, name: str, meta: dict, results: list[dict], options: dict
) -> None:
    """Add the readable files of dataset ``name`` to ``out``; skip (and list) the others or raise."""
    files, entries, ttrees, read, extras = {}, 0, True, None, []
    for result in results:
        location = result["location"]
        if "error" in result:
            if result.get("config"):
                raise ConfigurationError(result["error"])
            if result.get("missing") and meta.get("optional"):
                out.skipped.append(f"{location} (optional dataset {name} absent)")
                log.warning("optional dataset %s: %s not found, left out", name, location)
                continue
            if not options["skip_bad_files"]:
                raise InputFileError(result["error"])
            out.skipped.append(result["error"])
            log.warning("skipping bad file: %s", result["error"])
            continue
        file_meta = dict(result["meta"])
        extras.append(result.get("extra", {}))  # only files that are read count in the dataset's sums
        files[location] = spec["tree"]
        ttrees &= file_meta.pop("ttree", False)
        present = file_meta.pop("read")
        read = present if read is None else [b for b in read if b in present]
        if "steps" in file_meta:
            out.steps[location] = file_meta.pop("steps")
        out.file_meta[location] = file_meta
        entries += file_meta["numentries"]
    if not files:
        return
    meta.update(dataset_totals(name, extras))
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


#: files checked at once by the client's own preflight (uproot reads release the GIL, and a
#: remote file spends most of its check waiting for the server)
PREFLIGHT_THREADS = 8


def thread_map(fn: Callable[[FileCheck], dict], checks: list[FileCheck]) -> list[dict]:
    """Return ``[fn(c) for c in checks]``, computed in a pool of threads (in order)."""
    if len(checks) <= 1:
        return [fn(c) for c in checks]
    with ThreadPoolExecutor(
        min(PREFLIGHT_THREADS, len(checks)), thread_name_prefix="hepsieve-preflight"
    ) as pool:
        return list(pool.map(fn, checks))


def _check_data_dir(spec: dict, data_dir: Path | None, names: list[str], client_sees_files: bool) -> None:
    """Raise ConfigurationError when local names need a data directory that is not there."""
    if data_dir is None or not client_sees_files or data_dir.is_dir():
        return
    relative = [
        f for n in names for f in spec["datasets"][n]["files"] if not is_url(f) and not Path(f).is_absolute()
    ]
    if relative:
        raise ConfigurationError(
            f"data directory {data_dir} does not exist; make toys with "
            f"`hepsieve generate {spec.get('analysis', '<analysis>')} --out {data_dir}`"
        )


def resolve_fileset(
    spec: dict,
    data_dir: str | Path | None,
    inputs: Inputs,
    datasets: list[str] | None = None,
    skip_bad_files: bool = False,
    content_ids: bool = False,
    *,
    policy: RemotePolicy | None = None,
    check_map: Callable[[Callable[[FileCheck], dict], list[FileCheck]], list[dict]] | None = None,
) -> ResolvedFileset:
    """Check every file of ``spec`` (local under ``data_dir``, or URLs) and return the coffea fileset.

    Bad files raise :class:`InputFileError` unless ``skip_bad_files``, in which case they are
    listed in ``skipped``. Datasets marked ``optional`` whose files are absent are skipped
    and listed too. Nothing is left out silently. ``content_ids``: Parquet files are
    identified by a hash of their content (for checkpoints), not of their path. The files are
    checked in parallel, by ``check_map(check_input_file, checks)`` (default: threads of this
    process; the runner passes the workers' map when the client cannot see the files); each
    URL is read with ``policy``'s timeout and retries.
    """
    data_dir = None if data_dir is None else Path(data_dir)
    names = select_datasets(spec, datasets)
    _check_data_dir(spec, data_dir, names, check_map is None)
    is_toy = data_dir is not None and (data_dir / "toy.json").is_file()
    out = ResolvedFileset(fileset={}, entries={}, is_toy=is_toy)
    options = {
        "skip_bad_files": skip_bad_files,
        "content_ids": content_ids,
        "policy": policy or RemotePolicy(),
    }
    plans = {name: _plan(spec, data_dir, name, inputs, options) for name in names}
    checks = [c for _, dataset_checks in plans.values() for c in dataset_checks]
    results = iter((check_map or thread_map)(check_input_file, checks))
    for name, (meta, dataset_checks) in plans.items():
        _assemble(out, spec, name, meta, [next(results) for _ in dataset_checks], options)
    if not out.fileset:
        where = f" under {data_dir}" if data_dir is not None else ""
        raise InputFileError(f"no readable input files for datasets {names}{where}")
    return out


def list_sources(sources: list[str]) -> list[str]:
    """Return the files of ``sources``: URLs and files as given, directories listed, .txt files read."""
    out: list[str] = []
    for source in sources:
        path = Path(source)
        if is_url(source):
            out.append(source)
        elif path.is_dir():
            out += sorted(
                str(p.resolve()) for p in path.iterdir() if p.is_file() and p.suffix in (".root", ".parquet")
            )
        elif path.suffix == ".txt" and path.is_file():
            lines = (line.strip() for line in path.read_text().splitlines())
            out += [line for line in lines if line and not line.startswith("#")]
        elif path.is_file():
            out.append(str(path.resolve()))
        else:
            raise ConfigurationError(f"{source}: not a directory, a file, a list of files (.txt) or a URL")
    return out


def _dataset_of(spec: dict, names: list[str], location: str) -> str | None:
    """Return the dataset whose file names (or globs) match the file name of ``location``."""
    base = location.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    for name in names:
        if any(fnmatch.fnmatchcase(base, Path(pattern).name) for pattern in spec["datasets"][name]["files"]):
            return name
    return None


def build_fileset(spec: dict, files: list[str], datasets: list[str] | None = None) -> tuple[dict, list[str]]:
    """Return coffea's fileset of ``files`` with ``spec``'s dataset metadata, and the unmatched files.

    Each file goes to the dataset whose file names (or globs) match its name; the fileset's
    tree, format, input flavour, luminosity and process role go to each dataset (coffea's form
    has no top level).
    """
    names = select_datasets(spec, datasets)
    out: dict[str, dict] = {}
    unmatched = []
    for location in files:
        name = _dataset_of(spec, names, location)
        if name is None:
            unmatched.append(location)
            continue
        meta = dict(spec["datasets"][name].get("metadata", {}))
        meta.setdefault("lumi_pb", spec.get("lumi_pb"))
        meta.setdefault("lumi_uncertainty", spec.get("lumi_uncertainty"))
        if "processes" in spec:  # coffea's form has no top level: each dataset carries its role
            meta.setdefault("role", spec["processes"][meta["process"]]["role"])
        if spec.get("inputs"):
            meta.setdefault("inputs", spec["inputs"])
        entry = out.setdefault(name, {"files": {}, "metadata": meta, "format": spec.get("format", "root")})
        entry["files"][location] = spec["tree"]
    return out, unmatched


def write_fileset(fileset: dict, path: str | Path) -> Path:
    """Write a fileset JSON atomically (a temporary file renamed into place); return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(fileset, indent=1) + "\n")
    tmp.replace(path)
    return path
