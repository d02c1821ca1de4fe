"""UCI HIGGS toy and converter: layout, UCI conventions, physics, test split, CSV.gz == ROOT."""

import gzip

import numpy as np
import pytest
import uproot

from hepsieve.datasets.converters import higgs_csv_to_chunks, uci_test_rows
from hepsieve.datasets.toys.higgs_uci import BTAG_STD, PHI_SCALE, SCALE_GEV
from hepsieve.datasets.toys.reference import UCI_REFERENCE, measure_uci, table
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
        levels = (np.array([0.0, 1.0, 2.0]) / BTAG_STD[i - 1]).astype(np.float32)
        assert set(np.unique(train[f"jet{i}_btag"])) == set(levels)
    pt_gev = np.stack([train[f"jet{i}_pt"] * SCALE_GEV[f"jet{i}_pt"] for i in range(1, 5)], 1)
    assert np.all(np.diff(pt_gev, axis=1) <= 1e-3)  # pT-ordered before the per-column scaling
    # scaled like UCI: momenta and masses have means near 1
    for col in SCALE_GEV:
        assert 0.95 < train[col].mean() < 1.05, col
    # the signal chain, where the two b-tight jets are the h -> b b pair: m_bb near m_h (jets
    # lose some energy to FSR and b -> c l nu), m_wwbb near m_H0, m_jj near m_W
    two_tight = sum(train[f"jet{i}_btag"] > 1.9 / BTAG_STD[i - 1] for i in range(1, 5)) == 2
    sig = label & two_tight
    assert 105 < np.median(train["m_bb"][sig]) * SCALE_GEV["m_bb"] < 125
    assert 390 < np.median(train["m_wwbb"][sig]) * SCALE_GEV["m_wwbb"] < 440
    assert 75 < np.median(train["m_jj"][sig]) * SCALE_GEV["m_jj"] < 90
    # ... and t t -> b l nu b j j: m_jlv (or m_jjj) near m_t
    bkg = ~label & two_tight
    assert 160 < np.median(train["m_jlv"][bkg]) * SCALE_GEV["m_jlv"] < 185


def test_uci_phi_standardised(higgs_toy_dir):
    """Every phi column is phi / (pi / sqrt 3): range +-1.732, standard deviation 1 (+-0.03)."""
    train = read_all(higgs_toy_dir, "train")
    for col in (c for c in COLUMNS if c.endswith("_phi")):
        assert np.abs(train[col]).max() <= np.pi / PHI_SCALE + 1e-6, col
        assert np.abs(train[col]).max() > 1.7, col  # not radians, not half the range
        assert train[col].std() == pytest.approx(1.0, abs=0.03), col
    assert UCI_REFERENCE["phi max |value|"] == pytest.approx(1.732, abs=1e-3)


def test_uci_btag_levels_per_jet_and_btags_alone_do_not_separate(higgs_toy_dir):
    """Own three levels per jet (jets 2-4 at ~1.019 / 1.173 / 1.427 x jet 1's, +-0.06),
    6-11 % of jets at the middle level, each column's standard deviation 1 (+-0.05: the
    frozen ``BTAG_STD`` matches the b-tag physics) and b-tag-only AUC 0.5 +- 0.05."""
    measured = measure_uci(higgs_toy_dir)
    for i in (2, 3, 4):
        key = f"btag level ratio jet{i}"
        assert measured[key] == pytest.approx(UCI_REFERENCE[key], abs=0.06), key
    assert measured["btag middle level share (min)"] >= UCI_REFERENCE["btag middle level share (min)"]
    assert measured["btag middle level share (max)"] <= UCI_REFERENCE["btag middle level share (max)"]
    train = read_all(higgs_toy_dir, "train")
    for i in range(1, 5):
        assert train[f"jet{i}_btag"].std() == pytest.approx(1.0, abs=0.05)
    assert measured["btag-only AUC"] == pytest.approx(0.5, abs=0.05)


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


@pytest.fixture(scope="module")
def bdt_aucs(higgs_toy_dir):
    """Held-out AUC of a HistGradientBoosting BDT per Baldi et al. feature set (train on even rows)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from hepsieve.processors.analyses.higgs_uci import HIGH_LEVEL, LOW_LEVEL

    train = read_all(higgs_toy_dir, "train")
    fit, held_out = train["event"] % 2 == 0, train["event"] % 2 == 1
    out = {}
    for name, columns in (
        ("low-level", LOW_LEVEL),
        ("high-level", HIGH_LEVEL),
        ("all", LOW_LEVEL + HIGH_LEVEL),
    ):
        x = np.stack([train[c] for c in columns], axis=1)
        bdt = HistGradientBoostingClassifier(max_iter=200, random_state=1).fit(x[fit], train["label"][fit])
        out[name] = roc_auc_score(train["label"][held_out], bdt.predict_proba(x[held_out])[:, 1])
    return out


LOW_LEVEL_GAP = pytest.mark.xfail(
    strict=True,
    reason="known toy gap (issue 15): on the test toy's rows a BDT on the 21 low-level features "
    "reaches AUC 0.66 (0.707 on 1.1M rows), Baldi's real data 0.73",
)


@pytest.mark.parametrize("feature_set", [pytest.param("low-level", marks=LOW_LEVEL_GAP), "high-level", "all"])
def test_bdt_auc_near_the_published_real_data_value(bdt_aucs, feature_set):
    """A BDT on the toy lands near Baldi et al.'s real-data BDT AUC (0.73 / 0.78 / 0.81), within
    0.05 (held-out statistical error ~0.005 on 10k rows; the old toy gave 0.96 on all features)."""
    assert bdt_aucs[feature_set] == pytest.approx(UCI_REFERENCE[f"BDT AUC {feature_set}"], abs=0.05)


def test_bdt_feature_set_ordering_as_in_baldi(bdt_aucs):
    """As on the real data: the masses beat the raw objects, and both together beat either."""
    assert bdt_aucs["low-level"] < bdt_aucs["high-level"] < bdt_aucs["all"]


def test_reference_table_is_valid_markdown(higgs_toy_dir):
    """Every row of the printed toy-vs-reference table has four cells ("phi max |value|" escaped)."""
    lines = table("higgs-uci", higgs_toy_dir).splitlines()
    assert any(line.startswith("| phi max \\|value\\| |") for line in lines)
    for line in lines:
        assert len(line.replace("\\|", "").split("|")) == 6, line
