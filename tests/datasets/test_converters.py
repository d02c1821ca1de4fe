"""CSV -> Parquet conversion: atomic output, bad input named by file, row and column, schema casts."""

import gzip
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hepsieve.datasets.converters import CsvSchema, csv_schema, csv_to_parquet, higgs_csv_to_chunks
from hepsieve.processors import InputFileError
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.cli import main

HEADER = "a,b,c"
N_ROWS = 60_000  # several pyarrow blocks at the small block size below
BLOCK = 1 << 16


def _rows(n: int = N_ROWS) -> list[str]:
    return [f"{i},{i * 0.25!r},{i % 3}" for i in range(n)]


def _write(path: Path, lines: list[str], header: str = HEADER) -> Path:
    text = header + "\n" + "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _outputs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.endswith((".csv", ".gz")))


def _convert_fails(src: Path, dst: Path, **kw) -> str:
    with pytest.raises(InputFileError) as err:
        csv_to_parquet(src, dst, block_size=BLOCK, **kw)
    assert "\n" not in str(err.value)
    assert not dst.exists() and _outputs(dst.parent) == [], "a failed conversion left output behind"
    return str(err.value)


def test_good_csv_round_trips_with_row_numbers(tmp_path):
    src = _write(tmp_path / "good.csv", _rows())
    assert csv_to_parquet(src, tmp_path / "out" / "good.parquet", event_id="ev", block_size=BLOCK) == N_ROWS
    table = pq.read_table(tmp_path / "out" / "good.parquet")
    assert table.column_names == ["a", "b", "c", "ev"]
    np.testing.assert_array_equal(table["ev"].to_numpy(), np.arange(N_ROWS))
    np.testing.assert_array_equal(table["b"].to_numpy(), np.arange(N_ROWS) * 0.25)
    assert str(table.schema.field("a").type) == "int64"
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


def test_truncated_gzip_is_an_error_with_the_row_and_no_output(tmp_path):
    full = _write(tmp_path / "full.csv.gz", _rows())
    data = full.read_bytes()
    full.unlink()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(data[: len(data) // 2])
    message = _convert_fails(cut, tmp_path / "cut.parquet")
    assert "cut.csv.gz: row " in message and "truncated" in message


def test_failed_conversion_removes_an_earlier_output(tmp_path):
    dst = tmp_path / "x.parquet"
    csv_to_parquet(_write(tmp_path / "x.csv", _rows(100)), dst)
    rows = _rows()
    rows[50_000] = "50000,1.0"
    _write(tmp_path / "x.csv", rows)
    _convert_fails(tmp_path / "x.csv", dst)


def test_ragged_row_names_file_row_and_missing_column(tmp_path):
    rows = _rows()
    rows[41_234] = "41234,3.5"
    message = _convert_fails(_write(tmp_path / "ragged.csv", rows), tmp_path / "ragged.parquet")
    assert (
        "ragged.csv: malformed CSV: row 41235 (line 41236): Expected 3 columns, got 2 (missing column(s) c)"
        in message
    )


def test_late_non_numeric_value_names_file_row_and_column(tmp_path):
    rows = _rows()
    rows[55_000] = "55000,oops,1"
    message = _convert_fails(_write(tmp_path / "late.csv", rows), tmp_path / "late.parquet")
    assert "late.csv: row 55001 (line 55002), column 'b': 'oops' is not a number" in message


def test_early_non_numeric_value_does_not_turn_the_column_into_strings(tmp_path):
    rows = _rows()
    rows[2] = "2,n/a,2"
    message = _convert_fails(_write(tmp_path / "early.csv", rows), tmp_path / "early.parquet")
    assert "early.csv: row 3 (line 4), column 'b': 'n/a' is not a number" in message


def test_empty_field_is_an_error_not_a_silent_nan(tmp_path):
    rows = _rows()
    rows[30_000] = "30000,,0"
    message = _convert_fails(_write(tmp_path / "empty.csv", rows), tmp_path / "empty.parquet")
    assert "row 30001 (line 30002), column 'b': '' is not a number" in message


def test_float_after_integer_rows_is_named(tmp_path):
    rows = _rows()
    rows[45_000] = "45000.5,1.0,0"
    message = _convert_fails(_write(tmp_path / "int.csv", rows), tmp_path / "int.parquet")
    assert "row 45001 (line 45002), column 'a': '45000.5' is not an integer" in message
    assert "--analysis" in message


def test_a_text_column_is_kept_as_text(tmp_path):
    src = _write(tmp_path / "text.csv", [f"{i},{i}.5,sample{i % 2}" for i in range(10)])
    csv_to_parquet(src, tmp_path / "text.parquet")
    assert pq.read_table(tmp_path / "text.parquet")["c"].to_pylist()[:2] == ["sample0", "sample1"]


SCHEMA = CsvSchema({"a": "int", "b": "float", "c": "int", "ev": "int"}, ("a", "b", "c"), "ev", "analysis 'x'")


def test_schema_casts_any_column_order_and_leaves_extra_columns_out(tmp_path):
    src = _write(tmp_path / "s.csv", ["hello,2.0,1.5,3", "q,-1,2.5,4"], header="note,c,b,a")
    assert csv_to_parquet(src, tmp_path / "s.parquet", schema=SCHEMA) == 2
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.column_names == ["c", "b", "a", "ev"]
    assert [str(table.schema.field(c).type) for c in table.column_names] == [
        "int64",
        "double",
        "int64",
        "int64",
    ]
    assert table["c"].to_pylist() == [2, -1] and table["b"].to_pylist() == [1.5, 2.5]


def test_schema_rejects_a_non_integral_int_and_a_missing_column(tmp_path):
    src = _write(tmp_path / "s.csv", ["2.0,1.5,3", "1.5,2.5,4"], header="c,b,a")
    message = _convert_fails(src, tmp_path / "s.parquet", schema=SCHEMA)
    assert "s.csv: row 2 (line 3), column 'c': 1.5 is not an integer (the column is declared int)" in message
    src = _write(tmp_path / "m.csv", ["1.5,3"], header="b,a")
    message = _convert_fails(src, tmp_path / "m.parquet", schema=SCHEMA)
    assert "m.csv: lacks column(s) c needed by analysis 'x'" in message


def test_header_problems(tmp_path):
    _convert_fails(_write(tmp_path / "dup.csv", ["1,2,3"], header="a,b,a"), tmp_path / "dup.parquet")
    _convert_fails(_write(tmp_path / "anon.csv", ["1,2,3"], header=",b,c"), tmp_path / "anon.parquet")
    # with a schema, an unnamed extra column (a written pandas index) is left out like any other
    (tmp_path / "ok").mkdir()
    src = _write(tmp_path / "ok" / "index.csv", ["0,1,2.5,3", "1,4,5.5,6"], header=",a,b,c")
    assert csv_to_parquet(src, tmp_path / "ok" / "index.parquet", schema=SCHEMA) == 2
    assert pq.read_table(tmp_path / "ok" / "index.parquet").column_names == ["a", "b", "c", "ev"]
    (tmp_path / "none.csv").write_text("a,b,c\n")
    assert "no data rows" in _convert_fails(tmp_path / "none.csv", tmp_path / "none.parquet")
    assert "file not found" in _convert_fails(tmp_path / "absent.csv", tmp_path / "absent.parquet")


def test_analysis_schema_of_atlas_dm():
    schema = csv_schema(get_analysis("atlas-dm").inputs, "atlas-dm")
    assert schema.event_id == "eventNumber" and "eventNumber" not in schema.required
    assert schema.kinds["N_bjets"] == "int" and schema.kinds["totalWeight"] == "float"
    assert "totalWeight" not in schema.required  # simulation only: a data file has none


def test_cli_convert_with_an_analysis_names_the_missing_column(tmp_path, capsys):
    header = "totalWeight,sum_lep_charge,lead_lep_pt,sublead_lep_pt,mll,ETmiss,dRll,fractional_pT_difference"
    src = _write(tmp_path / "ZZ.csv", ["0.1,0,50,30,91,100,1.2,0.1"], header=header)
    assert main(["convert", "--analysis", "atlas-dm", str(src), "--out", str(tmp_path / "pq")]) == 2
    err = capsys.readouterr().err
    assert (
        "ZZ.csv: lacks column(s) dphi_pTll_ETmiss, ETmiss_over_HT, N_bjets needed by analysis 'atlas-dm'"
        in err
    )
    assert not (tmp_path / "pq" / "ZZ.parquet").exists()


def test_higgs_converter_truncated_gzip_leaves_no_chunks(tmp_path):
    line = ",".join(["1"] + ["0.5"] * 28)
    text = ("\n".join([line] * 40_000) + "\n").encode()
    data = gzip.compress(text)
    (tmp_path / "HIGGS.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="truncated"):
        higgs_csv_to_chunks(
            tmp_path / "HIGGS.csv.gz", tmp_path / "out", "parquet", chunk_rows=5000, rows=40_000
        )
    assert list((tmp_path / "out").iterdir()) == []


def test_higgs_converter_bad_value_names_row_and_column(tmp_path):
    good = ",".join(["1"] + ["0.5"] * 28)
    bad = ",".join(["1"] + ["0.5"] * 27 + ["x"])
    (tmp_path / "HIGGS.csv").write_text("\n".join([good] * 30 + [bad] + [good] * 5) + "\n")
    with pytest.raises(InputFileError, match=r"row 31 \(line 31\), column 'm_wwbb': 'x' is not a number"):
        higgs_csv_to_chunks(tmp_path / "HIGGS.csv", tmp_path / "out", "parquet", chunk_rows=10)
    assert list((tmp_path / "out").iterdir()) == []


def test_output_appears_only_when_complete(tmp_path, monkeypatch):
    import pyarrow.parquet as pq_module

    dst = tmp_path / "x.parquet"
    csv_to_parquet(_write(tmp_path / "old.csv", _rows(10)), dst)
    old = dst.read_bytes()
    seen = []
    write_table = pq_module.ParquetWriter.write_table

    def spy(self, table, *args, **kwargs):
        seen.append(dst.read_bytes() == old)  # while writing, dst is still the earlier, complete file
        return write_table(self, table, *args, **kwargs)

    monkeypatch.setattr(pq_module.ParquetWriter, "write_table", spy)
    assert csv_to_parquet(_write(tmp_path / "new.csv", _rows()), dst, block_size=BLOCK) == N_ROWS
    assert len(seen) > 1 and all(seen)
    assert pq.read_metadata(dst).num_rows == N_ROWS
