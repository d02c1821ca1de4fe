"""Streaming converters (never the whole file in memory): CSV -> Parquet, UCI HIGGS -> chunks."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import uproot

from hepsieve.datasets.progress import ProgressWriter
from hepsieve.processors.analyses.higgs_uci import COLUMNS, TREE, UCI_ROWS, UCI_TEST_ROWS
from hepsieve.processors.errors import InputFileError

log = logging.getLogger(__name__)


def csv_to_parquet(
    src: str | Path, dst: str | Path, event_id: str | None = None, block_size: int = 1 << 24
) -> int:
    """Convert ``src`` CSV (header row; ``.gz`` read on the fly) to ``dst``; return the rows.

    If ``event_id`` is given and the CSV lacks that column, the row number is added
    under that name (k-fold routing needs a stable per-event integer).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputFileError(f"{src}: file not found")
    try:
        reader = pacsv.open_csv(src, read_options=pacsv.ReadOptions(block_size=block_size))
    except (pa.ArrowInvalid, OSError) as err:
        raise InputFileError(f"{src}: cannot be read as CSV ({err})") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    rows, writer = 0, None
    try:
        for batch in reader:
            table = pa.Table.from_batches([batch])
            if event_id and event_id not in table.column_names:
                table = table.append_column(event_id, pa.array(np.arange(rows, rows + len(table))))
            if writer is None:
                writer = pq.ParquetWriter(dst, table.schema)
            writer.write_table(table)
            rows += len(table)
    except pa.ArrowInvalid as err:
        raise InputFileError(f"{src}: malformed CSV near row {rows} ({err})") from None
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise InputFileError(f"{src}: no rows")
    log.info("converted %s -> %s (%d rows)", src, dst, rows)
    return rows


def count_lines(src: Path) -> int:
    """Return the number of lines of a (gzipped) text file, streaming."""
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rb") as fin:
        return sum(block.count(b"\n") for block in iter(lambda: fin.read(1 << 24), b""))


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
    Output is written by the same code as the toy generator's direct output.
    """
    src, out = Path(src), Path(out_dir)
    if not src.is_file():
        raise InputFileError(f"{src}: file not found")
    if fmt not in ("root", "parquet"):
        raise InputFileError(f"--format {fmt!r}: choose root or parquet")
    n_rows = rows if rows is not None else count_lines(src)
    out.mkdir(parents=True, exist_ok=True)
    options = pacsv.ReadOptions(column_names=list(COLUMNS), block_size=block_size)
    convert = pacsv.ConvertOptions(column_types={c: pa.float64() for c in COLUMNS})

    def batches():
        try:
            for batch in pacsv.open_csv(src, read_options=options, convert_options=convert):
                yield {c: batch.column(c).to_numpy() for c in COLUMNS}
        except pa.ArrowInvalid as err:
            raise InputFileError(
                f"{src}: not in the UCI HIGGS layout (29 numeric columns, no header): {err}"
            ) from None

    names = write_higgs_chunks(out, batches(), n_rows, fmt, chunk_rows)
    log.info("converted %s -> %d %s chunks in %s", src, len(names), fmt, out)
    return names


def uci_test_rows(n_rows: int) -> int:
    """Return the size of the test split: 500 000 of 11M rows, the same fraction below."""
    return UCI_TEST_ROWS if n_rows >= UCI_ROWS else round(n_rows * UCI_TEST_ROWS / UCI_ROWS)


def _write_chunk(out: Path, fmt: str, name: str, cols: dict[str, np.ndarray]) -> None:
    if fmt == "root":
        with uproot.recreate(out / f"{name}.root", compression=uproot.LZ4(1)) as fout:
            fout[TREE] = cols
    else:
        pq.write_table(pa.table(cols), out / f"{name}.parquet")


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
