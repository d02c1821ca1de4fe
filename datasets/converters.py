"""Streaming converters: CSV (optionally gzipped) -> Parquet, never the whole file in memory."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from hepsieve.processors.errors import InputFileError

log = logging.getLogger(__name__)


def csv_to_parquet(src: str | Path, dst: str | Path, event_id: str | None = None,
                   block_size: int = 1 << 24) -> int:
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
