"""The flat read of a chunk: uproot's arrays of the branches a ``base``-schema analysis reads.

coffea's work function opens the file anew for every chunk (reading the TTree's metadata each
time) and builds NanoEvents over virtual arrays; for a flat tree that is a record array of the
branches, which ``tree.arrays`` gives directly. Measured on the 11M UCI HIGGS toy, 200k chunks:
the NanoEvents construction took ~45 ms of a 150 ms chunk, the read alone ~22 ms. A NanoAOD
analysis that reads only fields (``Inputs(plain_collections=True)``) is read the same way, its
branches grouped into plain records (:func:`nanoaod_events`); other NanoAOD analyses, RNTuple
and Parquet input keep coffea's path.

The work item, metadata, checkpoints and the returned ``{"out", "processed"}`` are coffea's
own (:meth:`coffea.processor.Runner._work_function`), so the Runner's accumulation, retries
and accounting are unchanged.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from hepsieve.processors.analysis import record
from hepsieve.processors.errors import ChunkReadError

#: how many files a thread keeps open (a worker's chunks often come from a few files)
KEEP_OPEN = 4
_LOCAL = threading.local()


def open_files() -> OrderedDict[tuple, tuple[Any, Any]]:
    """Return this thread's open trees, least recently used first.

    Per thread: a dask worker with several threads never closes a file another thread reads.
    """
    if not hasattr(_LOCAL, "files"):
        _LOCAL.files = OrderedDict()
    return _LOCAL.files


def _version(filename: str) -> tuple:
    """Return a local file's (device, inode, size, mtime): a file rewritten is opened anew."""
    if "://" in filename:
        return ()
    st = Path(filename).stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def open_tree(filename: str, treename: str, options: dict, fileuuid: bytes) -> Any:
    """Return the tree of ``filename``, kept open for the next chunks of this thread.

    The key holds the file's UUID from the input check and, for a local file, its inode, size
    and modification time, so a file replaced since is never read through an old handle.
    """
    key = (filename, treename, repr(sorted(options.items())), fileuuid, _version(filename))
    files = open_files()
    if key in files:
        files.move_to_end(key)
        return files[key][1]
    fin = uproot.open(filename, **options)
    try:
        tree = fin[treename]
    except Exception:
        fin.close()
        raise
    files[key] = (fin, tree)
    while len(files) > KEEP_OPEN:
        files.popitem(last=False)[1][0].close()
    return tree


def forget(filename: str) -> None:
    """Close and drop this thread's handles of ``filename``."""
    files = open_files()
    for key in [k for k in files if k[0] == filename]:
        files.pop(key)[0].close()


def close_all() -> None:
    """Close the files this thread keeps open."""
    files = open_files()
    while files:
        files.popitem()[1][0].close()


#: the keys a chunk's metadata adds to its dataset's (coffea's work item)
CHUNK_KEYS = ("filename", "treename", "entrystart", "entrystop", "fileuuid")


def chunk_metadata(item: Any) -> dict:
    """Return a chunk's metadata as coffea's work function builds it (``events.metadata``)."""
    fileuuid = str(uuid.UUID(bytes=item.fileuuid)) if len(item.fileuuid) > 0 else ""
    values = (item.filename, item.treename, item.entrystart, item.entrystop, fileuuid)
    chunk = dict(zip(CHUNK_KEYS, values, strict=True))
    return {"dataset": item.dataset} | chunk | (item.usermeta or {})


def read_flat(item: Any, names: list[str], options: dict) -> ak.Array:
    """Read ``names`` of a chunk; ChunkReadError naming the file and entries when it fails."""
    try:
        tree = open_tree(item.filename, item.treename, options, item.fileuuid)
        events = tree.arrays(names, entry_start=item.entrystart, entry_stop=item.entrystop, library="ak")
        missing = [n for n in names if n not in events.fields]  # an RNTuple drops unknown names
        if missing:
            raise KeyError(f"no branch(es) {', '.join(missing)}")
        return events
    except Exception as err:  # uproot raises many types for missing or damaged files
        forget(item.filename)  # a retry (a remote file) opens it anew
        raise ChunkReadError(
            f"{item.filename} entries {item.entrystart}-{item.entrystop}: "
            f"cannot be read ({type(err).__name__}: {err})"
        ) from err


def nanoaod_events(arrays: ak.Array, metadata: Mapping) -> ak.Array:
    """Return NanoAOD branches grouped as coffea's NanoAODSchema names them, as plain records.

    ``X_y`` branches that are lists per event: the collection ``X`` (records of its ``y``s, one
    list per event; the counts ``nX`` are not kept); ``X_y`` that are one value per event: the
    record ``X`` (e.g. ``HLT``); any other branch as it is (``LHEScaleWeight``, ``genWeight``).
    The events carry ``metadata`` as NanoEvents do; there are no NanoEvents methods or
    cross-references. Fields of one collection with other counts: a ChunkReadError.
    """
    from coffea.nanoevents.methods import nanoaod

    groups: dict[str, dict[str, ak.Array]] = {}
    fields: dict[str, Any] = {}
    for name in arrays.fields:
        head, _, tail = name.partition("_")
        if tail and head:
            groups.setdefault(head, {})[tail] = arrays[name]
        else:
            fields[name] = arrays[name]
    for head, columns in groups.items():
        fields[head] = _group(head, columns, metadata)
    for head in [h for h in fields if fields[h].ndim > 1]:  # the counts of lists: in the lists
        fields.pop(f"n{head}", None)
    events = record(fields, len(arrays), {"__record__": "NanoEvents"})
    return ak.with_parameter(ak.Array(events, behavior=nanoaod.behavior), "metadata", dict(metadata))


def _lists_of_records(columns: Mapping[str, ak.Array]) -> ak.Array | None:
    """Return lists by offsets that share their offsets as one list of records; None otherwise."""
    layouts = [c.layout for c in columns.values()]
    if not all(isinstance(x, ak.contents.ListOffsetArray) for x in layouts):
        return None
    offsets = np.asarray(layouts[0].offsets.data)
    if any(not np.array_equal(np.asarray(x.offsets.data), offsets) for x in layouts[1:]):
        return None  # other counts (an error, which ak.zip names) or other starts
    objects = ak.contents.RecordArray([x.content for x in layouts], list(columns))
    return ak.Array(ak.contents.ListOffsetArray(layouts[0].offsets, objects))


def _group(head: str, columns: dict[str, ak.Array], metadata: Mapping) -> ak.Array:
    """Return one NanoAOD collection (lists of records) or record (one per event)."""
    jagged = {c.ndim > 1 for c in columns.values()}
    try:
        if len(jagged) > 1:
            raise ValueError("some of its branches are lists per event and some are not")
        if jagged == {False}:
            return record(columns, len(next(iter(columns.values()))))
        lists = _lists_of_records(columns)
        return ak.zip(columns) if lists is None else lists
    except ValueError as err:
        raise ChunkReadError(
            f"{metadata.get('filename')} entries {metadata.get('entrystart')}-{metadata.get('entrystop')}: "
            f"the {head}_* branches do not make one collection ({err})"
        ) from err


def run_flat(args: dict, proc: Any) -> dict | None:
    """Run one chunk by the flat read; None when coffea's own path applies.

    ``args`` are coffea's work-function arguments (bound by name, the processor unpacked).
    The flat read applies to TTree input (``preload``) of hepsieve's processor (not a subclass
    overriding ``process``) whose analysis reads a flat tree, and when no metrics are asked for.
    """
    item = args["item"]
    if args["format"] != "root" or args["use_dataframes"] or args["savemetrics"] or item.preload is None:
        return None
    if not getattr(proc, "takes_flat_chunks", lambda: False)():
        return None
    metadata = chunk_metadata(item)
    names = proc.flat_branches(metadata, item.preload)
    if names is None:
        return None
    checkpointer = args["checkpointer"]
    if checkpointer is not None:
        out = checkpointer.load(metadata, proc)
        if out is not None:
            return out
    options = dict(args["uproot_options"])
    options["timeout"] = options.get("timeout", args["xrootdtimeout"])
    events = proc.flat_events(read_flat(item, names, options), metadata)
    out = {"out": proc.process_chunk(events, metadata), "processed": {item}}
    if checkpointer is not None:
        checkpointer.save(out, metadata, proc)
    return out
