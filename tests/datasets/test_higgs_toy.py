"""UCI HIGGS toy and converter: layout, physics, test split, CSV.gz == direct ROOT output."""

import gzip

import numpy as np
import pytest
import uproot

from hepsieve.datasets.converters import higgs_csv_to_chunks, uci_test_rows
from hepsieve.datasets.toys.higgs_uci import BTAG_LEVELS, SCALE_GEV
from hepsieve.processors import InputFileError
from hepsieve.processors.analyses.higgs_uci import COLUMNS, TREE


def read_all(directory, split):
    files = sorted(directory.glob(f"HIGGS_{split}_*.root"))
    arrays = [uproot.open(f)[TREE].arrays(library="np") for f in files]
    return {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}


def test_uci_text_layout(higgs_toy_dir):
    with gzip.open(higgs_toy_dir / "HIGGS.csv.gz", "rt") as fin:
        first = fin.readline().rstrip("\n").split(",")
        n = 1 + sum(1 for _ in fin)
    assert n == 22_000 and len(first) == 29 == len(COLUMNS)
    assert first[0] in ("1.000000000000000000e+00", "0.000000000000000000e+00")
    assert all("e" in v for v in first)


def test_physics_and_split(higgs_toy_dir):
    train, test = read_all(higgs_toy_dir, "train"), read_all(higgs_toy_dir, "test")
    assert len(test["label"]) == uci_test_rows(22_000) == 1000
    np.testing.assert_array_equal(np.concatenate([train["event"], test["event"]]), np.arange(22_000))
    label = train["label"] == 1
    assert 0.50 < label.mean() < 0.56
    for i in range(1, 5):
        assert set(np.unique(train[f"jet{i}_btag"])) <= set(BTAG_LEVELS.astype(np.float32))
    pt_gev = np.stack([train[f"jet{i}_pt"] * SCALE_GEV[f"jet{i}_pt"] for i in range(1, 5)], 1)
    assert np.all(np.diff(pt_gev, axis=1) <= 1e-3)  # pT-ordered before the per-column scaling
    # scaled like UCI: background momenta and masses have means near 1
    for col in ("lepton_pT", "jet1_pt", "m_jj", "m_lv", "m_wwbb"):
        assert 0.8 < train[col][~label].mean() < 1.3
    # the signal chain: m_bb near m_h, m_wwbb near m_H0 (scaled by 130 and 420 GeV)
    assert abs(np.median(train["m_bb"][label]) * 130 - 125) < 10
    assert abs(np.median(train["m_wwbb"][label]) * 420 - 425) < 25


def test_converter_reproduces_direct_root_output(higgs_toy_dir, tmp_path):
    names = higgs_csv_to_chunks(higgs_toy_dir / "HIGGS.csv.gz", tmp_path, "root", chunk_rows=5000)
    assert names == sorted(p.name for p in higgs_toy_dir.glob("HIGGS_t*.root")) or sorted(names) == sorted(
        p.name for p in higgs_toy_dir.glob("HIGGS_t*.root")
    )
    for name in names:
        direct = uproot.open(higgs_toy_dir / name)[TREE].arrays(library="np")
        converted = uproot.open(tmp_path / name)[TREE].arrays(library="np")
        assert direct.keys() == converted.keys()
        for key in direct:
            np.testing.assert_array_equal(converted[key], direct[key])


def test_converter_rejects_other_layouts(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputFileError, match=r"x\.csv: not in the UCI HIGGS layout"):
        higgs_csv_to_chunks(bad, tmp_path / "out")


def test_generate_writes_only_the_chosen_split(tmp_path):
    from hepsieve.datasets.toys.higgs_uci import generate

    generate(tmp_path, events=3000, seed=2, datasets=["test"], chunk_rows=1000)
    assert sorted(p.name for p in tmp_path.glob("*.root")) == ["HIGGS_test_000.root"]
    test = uproot.open(tmp_path / "HIGGS_test_000.root")[TREE].arrays(["event"], library="np")["event"]
    n_test = uci_test_rows(3000)
    np.testing.assert_array_equal(test, np.arange(3000 - n_test, 3000))  # the rows of the whole toy
