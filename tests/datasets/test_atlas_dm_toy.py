"""The atlas-dm toy: the real files' format, derived columns from the generated objects, physics,
and yields equal to xsec x lumi x efficiency computed here, independently of the generator."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from hepsieve.datasets.filesets import load_fileset_spec
from hepsieve.datasets.toys.atlas_dm import COMPONENTS, component_rows, simulate_batches

REAL_HEADER = (
    "totalWeight,sum_lep_charge,lead_lep_pt,sublead_lep_pt,mll,ETmiss,dRll,dphi_pTll_ETmiss,"
    "fractional_pT_difference,ETmiss_over_HT,N_bjets"
)
FILES = {"DM_300": "DM_300", "ZZ": "ZZ", "WZ": "WZ", "Zjets": "Z+jets", "Non_resonant_ll": "Non-resonant_ll"}
LUMI_PB = 10_000.0  # 10 fb^-1
# published cross sections [pb], typed here independently of the generator
BR_W = 0.1071 + 0.1063  # W -> e nu, mu nu (PDG)
BR_Z = 0.033632 + 0.033662  # Z -> ee, mumu (PDG)
XSEC_PB = {
    "dmV_Zll_MET40_DM1_MM300": 0.063965,  # DSID 303513
    "ZZ_llvv": 17.3 * 2 * BR_Z * 0.2000,  # sigma(ZZ) 17.3 pb x 2 BR(Z -> ll) BR(Z -> nu nu)
    "WZ_lvll": 51.0 * BR_W * BR_Z,  # sigma(WZ) 51.0 pb
    "Zee_Zmumu": 1950.5295 + 1950.6321,  # Open Data Zee + Zmumu
    "ttbar_dilepton": 831.76 * BR_W**2,
    "Wt_dilepton": 71.7 * BR_W**2,
    "WW_lvlv": 118.7 * BR_W**2,
}


@pytest.fixture(scope="module")
def generated(dm_toy_dir, dm_toy_events):
    """Every generated batch of every file, regenerated with the generator's seeds."""
    seed = json.loads((dm_toy_dir / "toy.json").read_text())["seed"]
    names = list(load_fileset_spec("atlas-dm")["datasets"])
    out = {}
    for dataset, components in COMPONENTS.items():
        rows = component_rows(dataset, dm_toy_events)
        out[dataset] = [
            (c, list(simulate_batches(c, n, (seed, names.index(dataset), j))))
            for j, (c, n) in enumerate(zip(components, rows, strict=True))
        ]
    return out


def _csv(dm_toy_dir, dataset) -> pd.DataFrame:
    return pd.read_csv(dm_toy_dir / f"{FILES[dataset]}.csv")


def _preselection(obj) -> np.ndarray:
    """The files' preselection, recomputed here from the objects (SCHEMAS.md section 4)."""
    pt, eta, phi, m = (obj[f"lep_{v}"] for v in ("pt", "eta", "phi", "mass"))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + m**2)
    mll = np.sqrt(np.clip(energy.sum(1) ** 2 - px.sum(1) ** 2 - py.sum(1) ** 2 - pz.sum(1) ** 2, 0, None))
    met = np.hypot(obj["met_px"], obj["met_py"])
    with np.errstate(invalid="ignore"):
        return (
            (obj["n_leptons"] == 2)
            & (obj["lep_flavour"][:, 0] == obj["lep_flavour"][:, 1])
            & (np.fmax(pt[:, 0], pt[:, 1]) > 25)
            & (met > 80)
            & (mll > 60)
            & (mll < 120)
            & (obj["jet_btag"].sum(1) <= 1)
        )


def _recompute(obj) -> dict:
    """The derived CSV columns recomputed with plain numpy from the reconstructed objects."""
    pt, eta, phi, m = (obj[f"lep_{v}"] for v in ("pt", "eta", "phi", "mass"))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + m**2)
    mll = np.sqrt(energy.sum(1) ** 2 - px.sum(1) ** 2 - py.sum(1) ** 2 - pz.sum(1) ** 2)
    dphi_ll = np.angle(np.exp(1j * (phi[:, 0] - phi[:, 1])))
    met_x, met_y = obj["met_px"], obj["met_py"]
    met, ptll = np.hypot(met_x, met_y), np.hypot(px.sum(1), py.sum(1))
    dphi = np.abs(np.angle(np.exp(1j * (np.arctan2(py.sum(1), px.sum(1)) - np.arctan2(met_y, met_x)))))
    ht = pt.sum(1) + np.nansum(obj["jet_pt"], axis=1)
    return {
        "sum_lep_charge": obj["lep_charge"].sum(1),
        "lead_lep_pt": pt.max(1),
        "sublead_lep_pt": pt.min(1),
        "mll": mll,
        "ETmiss": met,
        "dRll": np.hypot(eta[:, 0] - eta[:, 1], dphi_ll),
        "dphi_pTll_ETmiss": dphi,
        "fractional_pT_difference": np.abs(ptll - met) / ptll,
        "ETmiss_over_HT": met / ht,
        "N_bjets": obj["jet_btag"].sum(1),
    }


def test_files_have_the_real_header_and_integer_columns(dm_toy_dir, dm_toy_events):
    for dataset, stem in FILES.items():
        lines = (dm_toy_dir / f"{stem}.csv").read_text().splitlines()
        assert lines[0] == REAL_HEADER and len(lines) == dm_toy_events + 1
        fields = [line.split(",") for line in lines[1:50]]
        assert all(f[1].lstrip("-").isdigit() and f[10].isdigit() for f in fields)  # integers as integers
        table = pq.read_table(dm_toy_dir / f"{stem}.parquet")
        assert table.column_names == [*REAL_HEADER.split(","), "eventNumber"]
        assert str(table.schema.field("N_bjets").type) == "int64"
        np.testing.assert_array_equal(table["eventNumber"].to_numpy(), np.arange(dm_toy_events))
        np.testing.assert_array_equal(table["mll"].to_numpy(), _csv(dm_toy_dir, dataset)["mll"].to_numpy())


def test_derived_columns_equal_the_values_recomputed_from_the_objects(dm_toy_dir, generated):
    for dataset, parts in generated.items():
        csv = _csv(dm_toy_dir, dataset)
        expected = {k: [] for k in _recompute(parts[0][1][0].objects)}
        for _, batches in parts:
            for batch in batches:
                assert np.array_equal(_preselection(batch.objects), batch.passed), dataset
                obj = {k: v[batch.passed] for k, v in batch.objects.items()}
                for k, v in _recompute(obj).items():
                    expected[k].append(v)
        for name, values in expected.items():
            np.testing.assert_allclose(csv[name].to_numpy(), np.concatenate(values), rtol=1e-9, err_msg=name)


def test_yields_equal_xsec_times_lumi_times_efficiency(dm_toy_dir, generated):
    for dataset, parts in generated.items():
        expected = 0.0
        for component, batches in parts:
            sum_w = sum(b.gen_weight.sum() for b in batches)
            passed_w = sum((b.gen_weight * b.sf)[_preselection(b.objects)].sum() for b in batches)
            expected += XSEC_PB[component.name] * LUMI_PB * passed_w / sum_w
        total = _csv(dm_toy_dir, dataset)["totalWeight"].sum()
        assert total == pytest.approx(expected, rel=1e-9), dataset


def test_signed_weights_with_realistic_negative_fractions(dm_toy_dir, dm_toy_events):
    n = dm_toy_events
    for dataset, fraction in (("ZZ", 0.12), ("WZ", 0.12), ("Zjets", 0.05), ("DM_300", 0.0)):
        negative = (_csv(dm_toy_dir, dataset)["totalWeight"] < 0).mean()
        assert abs(negative - fraction) < 4 * np.sqrt(fraction * (1 - fraction) / n) + 1e-12, dataset


def _weighted(csv, column):
    return csv[column].to_numpy(), csv["totalWeight"].to_numpy()


def test_signal_etmiss_harder_than_zjets(dm_toy_dir):
    fractions = {}
    for dataset in ("DM_300", "Zjets"):
        met, w = _weighted(_csv(dm_toy_dir, dataset), "ETmiss")
        fractions[dataset] = w[met > 150].sum() / w.sum()
    assert fractions["DM_300"] > 0.3 and fractions["DM_300"] > 3 * fractions["Zjets"]


def test_signal_dphi_peaked_at_pi(dm_toy_dir):
    dphi, w = _weighted(_csv(dm_toy_dir, "DM_300"), "dphi_pTll_ETmiss")
    counts, _ = np.histogram(dphi, bins=16, range=(0, np.pi), weights=w)
    assert np.argmax(counts) == 15 and w[dphi > 2.7].sum() / w.sum() > 0.7
    assert dphi.max() <= np.pi


def test_background_physics(dm_toy_dir, generated):
    # same-sign pairs from a lost WZ lepton; Z peak in ZZ; flat m_ll of the non-resonant
    wz = _csv(dm_toy_dir, "WZ")
    assert (wz["sum_lep_charge"] != 0).mean() > 0.02 and set(wz["sum_lep_charge"]) <= {-2, 0, 2}
    mll, w = _weighted(_csv(dm_toy_dir, "ZZ"), "mll")
    assert w[(mll > 81) & (mll < 101)].sum() / w.sum() > 0.8
    mll, w = _weighted(_csv(dm_toy_dir, "Non_resonant_ll"), "mll")
    low, high = w[mll < 90].sum(), w[mll >= 90].sum()
    assert 0.7 < low / high < 1.5
    two = np.concatenate(
        [
            b.objects["lep_flavour"][b.objects["n_leptons"] == 2]
            for _, bs in generated["Non_resonant_ll"]
            for b in bs
        ]
    )
    same_flavour = (two[:, 0] == two[:, 1]).mean()
    assert abs(same_flavour - 0.5) < 0.03  # ee : mumu : emu = 1 : 1 : 2


def test_toy_json_records_the_normalisation(dm_toy_dir):
    toy = json.loads((dm_toy_dir / "toy.json").read_text())
    assert toy["lumi_pb"] == LUMI_PB
    for dataset, record in toy["datasets"].items():
        for name, comp in record["components"].items():
            assert comp["xsec_pb"] == pytest.approx(XSEC_PB[name], rel=1e-12)
            assert comp["expected_yield"] == pytest.approx(comp["xsec_pb"] * LUMI_PB * comp["efficiency"])
        assert sum(c["expected_yield"] for c in record["components"].values()) == pytest.approx(
            _csv(dm_toy_dir, dataset)["totalWeight"].sum()
        )
