"""Streaming converters (never the whole file in memory): CSV -> Parquet, UCI HIGGS -> chunks.

Both are atomic: output is written to a temporary file (directory) and renamed into place only
when the whole input was read; a failed conversion leaves no output behind. Bad input -- a
truncated ``.csv.gz``, a ragged row, a non-numeric value, a non-integral value in an integer
column, an empty field -- is an :class:`InputFileError` naming the file, the row (and line)
and the column. A CSV column is never turned into strings because of one bad value.

With a :class:`CsvSchema` (``hepsieve convert --analysis NAME``) each declared column is cast to
its declared kind (``float`` -> float64, ``int`` -> int64 after a check that every value is
integral, ``bool``), columns may come in any order, extra columns are left out, and a missing
required column is one error naming the file and the column.
"""

from __future__ import annotations

import csv
import gzip
import logging
import os
import re
import shutil
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import uproot

from hepsieve.datasets.progress import ProgressWriter
from hepsieve.processors.analyses.higgs_uci import COLUMNS, TREE, UCI_ROWS, UCI_TEST_ROWS
from hepsieve.processors.analysis import Inputs
from hepsieve.processors.errors import InputFileError

log = logging.getLogger(__name__)

#: what pyarrow's CSV reader parses as a number (surrounding blanks, nan and inf included)
NUMBER = re.compile(
    r"^\s*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|nan|inf|infinity)\s*$", re.IGNORECASE
)
#: Arrow types declared columns are read as (ints as float64 first: "3.0" is a valid integer)
READ_TYPES = {"float": pa.float64(), "int": pa.float64(), "bool": pa.bool_()}
MAX_EXACT_INT = 2**53  # float64 holds every integer up to here
#: entries per TTree basket / Parquet row group of every file hepsieve writes (DESIGN.md section 8):
#: a chunk of a multiple of it reads and decompresses each basket once (a 1M-entry basket read
#: by 200k chunks is decompressed five times), and RDataFrame's threads get a cluster each
CLUSTER_ENTRIES = 100_000
#: no value is null: an empty field or "NA" in a numeric column is an error, not a silent NaN
STRICT_VALUES = {"null_values": [], "strings_can_be_null": False, "quoted_strings_can_be_null": False}


@dataclass(frozen=True)
class CsvSchema:
    """Declared columns of a CSV: kind per name (float/int/bool), the required ones, the event id."""

    kinds: Mapping[str, str]
    required: tuple[str, ...]
    event_id: str | None = None
    where: str = "the schema"


def csv_schema(inputs: Inputs, where: str) -> CsvSchema:
    """Return the CSV schema of an analysis input flavour (its branches must be flat)."""
    kinds = {**inputs.branches, **inputs.mc_branches, **inputs.optional}
    jagged = [n for n, k in kinds.items() if k.startswith("var")]
    if jagged:
        raise InputFileError(f"{where}: jagged branches {jagged} cannot come from a CSV file")
    required = tuple(n for n in inputs.branches if n != inputs.event_id)
    return CsvSchema(kinds, required, inputs.event_id, where)


@dataclass
class _Plan:
    """How one CSV file is read: its header, the columns kept and their kinds."""

    src: Path
    header: tuple[str, ...]
    keep: tuple[str, ...]
    kinds: dict[str, str]  # declared kinds, and after the first block the inferred ones
    add_event_id: str | None
    text_columns: set[str] = field(default_factory=set)
    inferred: set[str] = field(default_factory=set)  # kinds pyarrow inferred, not declared
    has_header: bool = True


def _open_text(src: Path) -> IO[str]:
    if src.suffix == ".gz":
        return gzip.open(src, "rt", newline="", encoding="utf-8-sig")
    return src.open(newline="", encoding="utf-8-sig")


def _read_header(src: Path) -> tuple[str, ...]:
    """Return the column names of the header row; InputFileError if there is none."""
    if not src.is_file():
        raise InputFileError(f"{src}: file not found")
    try:
        with _open_text(src) as fin:
            header = tuple(name.strip() for name in next(csv.reader(fin), []))
    except (OSError, EOFError, UnicodeDecodeError, zlib.error, csv.Error) as err:
        raise InputFileError(f"{src}: cannot be read as CSV ({type(err).__name__}: {err})") from None
    if not header:
        raise InputFileError(f"{src}: no header row")
    return header


def _check_names(src: Path, header: tuple[str, ...], kept: tuple[str, ...]) -> None:
    """Raise InputFileError for an empty or repeated name among the columns written."""
    if any(not name for name in kept):
        raise InputFileError(f"{src}: the header has an empty column name: {list(header)}")
    repeated = sorted({n for n in kept if header.count(n) > 1})
    if repeated:
        raise InputFileError(f"{src}: column name(s) {repeated} appear more than once in the header")


def _plan(src: Path, header: tuple[str, ...], schema: CsvSchema | None, event_id: str | None) -> _Plan:
    if schema is None:
        _check_names(src, header, header)
        add = event_id if event_id and event_id not in header else None
        return _Plan(src, header, header, {}, add)
    missing = [c for c in schema.required if c not in header]
    if missing:
        raise InputFileError(
            f"{src}: lacks column(s) {', '.join(missing)} needed by {schema.where} "
            f"(the header has {', '.join(header)})"
        )
    keep = tuple(c for c in header if c in schema.kinds)
    _check_names(src, header, keep)  # an extra column (e.g. an unnamed index) may be anything
    extra = [c or "(unnamed)" for c in header if c not in schema.kinds]
    if extra:
        log.info(
            "%s: extra column(s) %s left out (%s does not read them)", src, ", ".join(extra), schema.where
        )
    event = schema.event_id if schema.event_id not in header else None
    return _Plan(src, header, keep, {c: schema.kinds[c] for c in keep}, event)


def _where(plan: _Plan, row: int, column: str | None = None) -> str:
    """Return 'FILE: row R (line L)[, column C]' for data row ``row`` (0-based)."""
    line = row + 1 + plan.has_header
    return f"{plan.src}: row {row + 1} (line {line})" + ("" if column is None else f", column {column!r}")


def _check_text_columns(plan: _Plan, batch: pa.RecordBatch, first_row: int) -> None:
    """Columns read as text: a mix of numbers and other values is an error, not a text column."""
    for name in plan.keep:
        if name in plan.kinds or not pa.types.is_string(batch.schema.field(name).type):
            continue
        is_number = pc.match_substring_regex(batch.column(name), NUMBER.pattern, ignore_case=True)
        numbers = np.asarray(is_number.to_numpy(zero_copy_only=False), dtype=bool)
        if numbers.any() and not numbers.all():
            row = int(np.flatnonzero(~numbers)[0])
            value = batch.column(name)[row].as_py()
            raise InputFileError(f"{_where(plan, first_row + row, name)}: {value!r} is not a number")
        plan.text_columns.add(name)
        log.info("%s: column %r holds text; kept as strings", plan.src, name)


def _infer_kinds(plan: _Plan, schema: pa.Schema) -> None:
    """Record the kinds pyarrow inferred for undeclared columns (for the error diagnosis)."""
    for name in plan.keep:
        if name not in plan.kinds:
            dtype = schema.field(name).type
            if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
                plan.kinds[name] = "int" if pa.types.is_integer(dtype) else "float"
                plan.inferred.add(name)


def _cast_declared(plan: _Plan, batch: pa.RecordBatch, first_row: int, declared: set[str]) -> dict:
    """Return the batch's columns, declared ints checked integral and cast to int64."""
    out: dict[str, Any] = {}
    for name in plan.keep:
        col = batch.column(name)
        if name in declared and plan.kinds[name] == "int":
            values = col.to_numpy()
            bad = ~np.isfinite(values) | (np.abs(values) > MAX_EXACT_INT) | (values != np.round(values))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise InputFileError(
                    f"{_where(plan, first_row + row, name)}: {float(values[row])!r} is not an integer "
                    "(the column is declared int)"
                )
            col = pa.array(values.astype(np.int64))
        out[name] = col
    if plan.add_event_id:
        out[plan.add_event_id] = pa.array(np.arange(first_row, first_row + batch.num_rows, dtype=np.int64))
    return out


def _row_problem(plan: _Plan, row: int, fields: list[str], numeric: list[tuple[int, str, str]]) -> str | None:
    """Return what is wrong with one data row (field count, numbers, integers), or None."""
    width = len(plan.header)
    if len(fields) != width:
        lost = plan.header[len(fields) :]
        detail = f"missing column(s) {', '.join(lost)}" if lost else "more fields than the header"
        where = _where(plan, row).replace(f"{plan.src}: ", f"{plan.src}: malformed CSV: ", 1)
        return f"{where}: Expected {width} columns, got {len(fields)} ({detail})"
    for i, name, kind in numeric:
        value = fields[i]
        if not NUMBER.match(value):
            return f"{_where(plan, row, name)}: {value!r} is not a number"
        if kind == "int" and not float(value).is_integer():
            hint = (
                " (the first rows were integers: declare its type with --analysis)"
                if name in plan.inferred
                else ""
            )
            return f"{_where(plan, row, name)}: {value!r} is not an integer{hint}"
    return None


def _scan_for_problem(plan: _Plan, skip: int) -> str | None:
    """Return the first bad row at or after data row ``skip``, read with the csv module.

    Only run after pyarrow failed (so per-row Python is no hot path); it names the row and
    column, which pyarrow's streaming reader does not know.
    """
    numeric = [
        (i, n, plan.kinds[n]) for i, n in enumerate(plan.header) if plan.kinds.get(n) in ("float", "int")
    ]
    row = skip - 1
    try:
        with _open_text(plan.src) as fin:
            rows = csv.reader(fin)
            if plan.has_header:
                next(rows, None)
            for row, fields in enumerate(rows):
                problem = None if row < skip else _row_problem(plan, row, fields, numeric)
                if problem:
                    return problem
    except (EOFError, OSError, zlib.error, csv.Error, UnicodeDecodeError) as err:
        problem = f"the file ends or breaks there ({type(err).__name__}: {err}); truncated?"
        return f"{_where(plan, row + 1)}: {problem}"
    return None


def _diagnosis(plan: _Plan, rows_done: int, err: Exception) -> InputFileError:
    """Return the error for a failed read, naming file, row and column where they are known."""
    found = _scan_for_problem(plan, rows_done)
    if found is None:
        found = f"{plan.src}: after row {rows_done}: {type(err).__name__}: {err}"
    return InputFileError(f"{found}; nothing was written")


def _read_options(plan: _Plan, block_size: int) -> dict:
    declared = {c for c in plan.keep if c in plan.kinds}
    convert = pacsv.ConvertOptions(
        column_types={c: READ_TYPES[plan.kinds[c]] for c in declared},
        include_columns=list(plan.keep),
        **STRICT_VALUES,
    )
    names = {} if plan.has_header else {"column_names": list(plan.header)}
    return {"read_options": pacsv.ReadOptions(block_size=block_size, **names), "convert_options": convert}


def _batches(plan: _Plan, block_size: int) -> Iterator[tuple[int, dict]]:
    """Yield (first row, checked columns) per block; InputFileError naming row and column."""
    declared = {c for c in plan.keep if c in plan.kinds}
    rows = 0
    try:
        reader = pacsv.open_csv(plan.src, **_read_options(plan, block_size))
        _infer_kinds(plan, reader.schema)
        for batch in reader:
            if rows == 0:
                _check_text_columns(plan, batch, rows)
            yield rows, _cast_declared(plan, batch, rows, declared)
            rows += batch.num_rows
    except (pa.ArrowInvalid, OSError, EOFError) as err:
        raise _diagnosis(plan, rows, err) from err


@contextmanager
def _atomic(dst: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dst``, renamed onto it only if the block succeeds.

    On failure the temporary file is removed, and so is an earlier ``dst``: a failed
    conversion leaves no output that a later run could mistake for this input's.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(dst)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, InputFileError) and dst.exists():
            dst.unlink()
            log.warning("removed the earlier %s: the new conversion into it failed", dst)
        raise


def csv_to_parquet(
    src: str | Path,
    dst: str | Path,
    event_id: str | None = None,
    block_size: int = 1 << 24,
    schema: CsvSchema | None = None,
) -> int:
    """Convert ``src`` CSV (header row; ``.gz`` read on the fly) to ``dst``; return the rows.

    If the CSV lacks the event-id column (``event_id``, or the schema's), the row number is
    added under that name (k-fold routing needs a stable per-event integer). Without a
    ``schema`` the column types are inferred from the first block of rows.
    """
    src, dst = Path(src), Path(dst)
    plan = _plan(src, _read_header(src), schema, event_id)
    rows = 0
    with _atomic(dst) as tmp:
        writer = None
        try:
            for first, columns in _batches(plan, block_size):
                table = pa.table(columns)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table, row_group_size=CLUSTER_ENTRIES)
                rows = first + table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise InputFileError(f"{src}: no data rows")
    _warn_unterminated(src)
    log.info("converted %s -> %s (%d rows)", src, dst, rows)
    return rows


def _warn_unterminated(src: Path) -> None:
    """Warn when a plain CSV does not end with a newline: its last value may be cut short."""
    if src.suffix != ".gz" and src.stat().st_size:
        with src.open("rb") as fin:
            fin.seek(-1, os.SEEK_END)
            if fin.read(1) not in (b"\n", b"\r"):
                log.warning("%s does not end with a newline: is its last row complete?", src)


def count_lines(src: Path) -> int:
    """Return the number of lines of a (gzipped) text file, streaming."""
    opener = gzip.open if src.suffix == ".gz" else open
    try:
        with opener(src, "rb") as fin:
            return sum(block.count(b"\n") for block in iter(lambda: fin.read(1 << 24), b""))
    except (EOFError, OSError, zlib.error) as err:
        raise InputFileError(
            f"{src}: cannot be read to the end ({type(err).__name__}: {err}); truncated?"
        ) from None


def higgs_csv_to_chunks(
    src: str | Path,
    out_dir: str | Path,
    fmt: str = "root",
    chunk_rows: int = 1_000_000,
    rows: int | None = None,
    block_size: int = 1 << 26,
) -> list[str]:
    """Convert the UCI ``HIGGS.csv(.gz)`` into ``HIGGS_{train,test}_<i>`` ROOT/Parquet chunks.

    Streams the text (a first pass counts the rows unless ``rows`` is given, so the last
    500 000 rows of 11M — the same fraction of a smaller file — go to the test chunks).
    Output is written by the same code as the toy generator's direct output, into a
    temporary directory whose chunks move into ``out_dir`` only when every row was read.
    """
    src, out = Path(src), Path(out_dir)
    if not src.is_file():
        raise InputFileError(f"{src}: file not found")
    if fmt not in ("root", "parquet"):
        raise InputFileError(f"--format {fmt!r}: choose root or parquet")
    n_rows = rows if rows is not None else count_lines(src)
    plan = _Plan(src, COLUMNS, COLUMNS, dict.fromkeys(COLUMNS, "float"), None, has_header=False)

    def batches():
        done = 0
        try:
            for batch in pacsv.open_csv(src, **_read_options(plan, block_size)):
                yield {c: batch.column(c).to_numpy() for c in COLUMNS}
                done += batch.num_rows
        except (pa.ArrowInvalid, OSError, EOFError) as err:
            problem = _scan_for_problem(plan, done) or f"{type(err).__name__}: {err}"
            raise InputFileError(
                f"{src}: not in the UCI HIGGS layout (29 numeric columns, no header): {problem}; "
                "nothing was written"
            ) from err

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".convert-{os.getpid()}.tmp"
    try:
        tmp.mkdir()
        names = write_higgs_chunks(tmp, batches(), n_rows, fmt, chunk_rows)
        for name in names:
            (tmp / name).replace(out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s -> %d %s chunks in %s", src, len(names), fmt, out)
    return names


def uci_test_rows(n_rows: int) -> int:
    """Return the size of the test split: 500 000 of 11M rows, the same fraction below."""
    return UCI_TEST_ROWS if n_rows >= UCI_ROWS else round(n_rows * UCI_TEST_ROWS / UCI_ROWS)


def write_tree(path: Path, tree: str, cols: dict[str, np.ndarray]) -> None:
    """Write flat numpy columns as a TTree (LZ4) in baskets of ``CLUSTER_ENTRIES`` entries."""
    with uproot.recreate(path, compression=uproot.LZ4(1)) as fout:
        fout.mktree(tree, {k: v.dtype for k, v in cols.items()})
        n = len(next(iter(cols.values())))
        for start in range(0, n, CLUSTER_ENTRIES):
            fout[tree].extend({k: v[start : start + CLUSTER_ENTRIES] for k, v in cols.items()})


def _write_chunk(out: Path, fmt: str, name: str, cols: dict[str, np.ndarray]) -> None:
    if fmt == "root":
        write_tree(out / f"{name}.root", TREE, cols)
    else:
        pq.write_table(pa.table(cols), out / f"{name}.parquet", row_group_size=CLUSTER_ENTRIES)


class _ChunkBuffer:
    """Buffers rows of one split and writes them as ``HIGGS_<split>_<i>`` chunk files."""

    def __init__(self, out: Path, fmt: str, splits: tuple[str, ...]):
        self.out, self.fmt, self.splits = out, fmt, splits
        self.names: list[str] = []
        self.buffer: dict[str, list[np.ndarray]] = {}
        self.buffered = 0
        self.counters = {"train": 0, "test": 0}

    def add(self, part: dict[str, np.ndarray]) -> None:
        for k, v in part.items():
            self.buffer.setdefault(k, []).append(v)
        self.buffered += len(part["event"])

    def flush(self, split: str) -> None:
        if not self.buffered:
            return
        name = f"HIGGS_{split}_{self.counters[split]:03d}"
        self.counters[split] += 1
        if split in self.splits:
            _write_chunk(self.out, self.fmt, name, {k: np.concatenate(v) for k, v in self.buffer.items()})
            self.names.append(f"{name}.{self.fmt}")
        self.buffer, self.buffered = {}, 0


def write_higgs_chunks(
    out: Path,
    rows,
    n_rows: int,
    fmt: str,
    chunk_rows: int = 1_000_000,
    progress: ProgressWriter | None = None,
    splits: tuple[str, ...] = ("train", "test"),
) -> list[str]:
    """Write UCI-column batches to ``HIGGS_{train,test}_<i>`` chunk files; return their names.

    The one writer of the HIGGS chunk layout (the converter and the toy generator both use
    it). Values are stored as float32 (label as float32 0/1 like UCI), ``event`` as the int64
    row number; the last ``uci_test_rows(n_rows)`` rows go to the test chunks. Only the chunks
    of ``splits`` are written (the rows and their numbers stay those of the whole file).
    """
    n_train = n_rows - uci_test_rows(n_rows)
    chunks, row = _ChunkBuffer(out, fmt, splits), 0
    for cols in rows:
        start, size = 0, len(cols["label"])
        while start < size:
            split, limit = ("train", n_train) if row < n_train else ("test", n_rows)
            take = min(size - start, chunk_rows - chunks.buffered, limit - row)
            part = {k: v[start : start + take].astype(np.float32) for k, v in cols.items()}
            part["event"] = np.arange(row, row + take, dtype=np.int64)
            chunks.add(part)
            row, start = row + take, start + take
            if chunks.buffered == chunk_rows or row == limit:
                chunks.flush(split)
            if progress:
                progress.advance(take)
    return chunks.names
