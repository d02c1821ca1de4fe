"""The CMS toy files: exact schema, derived branches, normalisation, seeds, section-7 physics."""

import json

import numpy as np
import pytest
import uproot
import vector

from hepsieve.datasets import load_fileset_spec
from hepsieve.datasets.toys.cms_hzz4l import generate
from hepsieve.datasets.toys.kinematics import ELECTRON_MASS_GEV, MUON_MASS_GEV, Z_MASS_GEV
from hepsieve.datasets.toys.reference import CMS_REFERENCE, cms_selected, measure_cms
from hepsieve.processors.analyses.hzz4l_cms import BRANCHES, SELECTION, TREE


def read(path):
    return uproot.open(path)[TREE].arrays(library="np")


def lepton_vector(events, i, mass):
    pt = events[f"f_lept{i}_pt"].astype(np.float64)
    return vector.array(
        {
            "pt": pt,
            "eta": events[f"f_lept{i}_eta"].astype(np.float64),
            "phi": events[f"f_lept{i}_phi"].astype(np.float64),
            "mass": np.full(len(pt), mass),
        }
    )


def test_schema_is_the_26_confirmed_branches(cms_toy_dir):
    tree = uproot.open(cms_toy_dir / "VBF_HToZZTo4mu.root")[TREE]
    assert tuple(tree.keys()) == BRANCHES and len(BRANCHES) == 26
    assert tree["f_event"].interpretation.from_dtype.kind == "i"
    assert tree["f_run"].interpretation.from_dtype.kind == "i"
    assert tree["f_mass4l"].interpretation.from_dtype == np.dtype(">f4")


@pytest.mark.parametrize(("name", "mass"), [("VBF_HToZZTo4mu", MUON_MASS_GEV), ("ZZTo4e", ELECTRON_MASS_GEV)])
def test_m4l_matches_four_vector_sum(cms_toy_dir, name, mass):
    events = read(cms_toy_dir / f"{name}.root")
    total = sum((lepton_vector(events, i, mass) for i in range(2, 5)), lepton_vector(events, 1, mass))
    np.testing.assert_allclose(events["f_mass4l"], total.mass, rtol=1e-5)


def test_jet_variables_from_the_two_jets_and_minus999_when_undefined(cms_toy_dir):
    events = read(cms_toy_dir / "GluGluHToZZTo4mu.root")
    two = events["f_jet2_pt"] != -999
    assert 0 < two.sum() < len(two)  # both categories present
    for b in ("f_massjj", "f_deltajj", "f_jet2_eta", "f_jet2_phi"):
        assert np.all(events[b][~two] == -999)
    j = [
        vector.array(
            {
                "pt": events[f"f_jet{i}_pt"][two].astype(float),
                "eta": events[f"f_jet{i}_eta"][two].astype(float),
                "phi": events[f"f_jet{i}_phi"][two].astype(float),
                "mass": np.zeros(two.sum()),
            }
        )
        for i in (1, 2)
    ]
    np.testing.assert_allclose(events["f_massjj"][two], (j[0] + j[1]).mass, rtol=1e-5)
    np.testing.assert_allclose(
        events["f_deltajj"][two], np.abs(events["f_jet1_eta"][two] - events["f_jet2_eta"][two]), rtol=1e-6
    )
    assert np.all(events["f_jet1_pt"][two] >= events["f_jet2_pt"][two])


def test_leptons_pt_ordered_and_z1_closest_to_mz(cms_toy_dir):
    events = read(cms_toy_dir / "ZZTo4mu.root")
    pts = np.stack([events[f"f_lept{i}_pt"] for i in range(1, 5)], axis=1)
    assert np.all(np.diff(pts, axis=1) <= 0)
    paired = events["f_Z1mass"] != -999  # -999: charges mis-measured, no SFOS pairing
    assert 0.99 < paired.mean() < 1
    assert np.all(events["f_Z2mass"][~paired] == -999)
    z1, z2 = events["f_Z1mass"][paired], events["f_Z2mass"][paired]
    assert np.all(np.abs(z1 - Z_MASS_GEV) <= np.abs(z2 - Z_MASS_GEV))


def test_physics_shapes(cms_toy_dir):
    vbf, ggh = read(cms_toy_dir / "VBF_HToZZTo4mu.root"), read(cms_toy_dir / "GluGluHToZZTo4mu.root")
    zz = read(cms_toy_dir / "ZZTo4mu.root")
    assert abs(np.median(vbf["f_mass4l"]) - 125) < 1
    zz_m4l = zz["f_mass4l"][cms_selected(zz)]
    assert np.median(zz_m4l) > 180  # selected q q -> ZZ: mostly both Z on shell ...
    assert 0.1 < np.mean((zz_m4l > 80) & (zz_m4l < 100)) < 0.3  # ... and the Z -> 4l peak
    assert np.mean(vbf["f_massjj"] != -999) > 3 * np.mean(ggh["f_massjj"] != -999)
    two = vbf["f_deltajj"] != -999
    assert np.median(vbf["f_deltajj"][two]) > np.median(ggh["f_deltajj"][ggh["f_deltajj"] != -999]) + 1


def test_weights_sum_to_xsec_br_lumi_acceptance(cms_toy_dir):
    spec = load_fileset_spec("cms-hzz4l")
    prov = json.loads((cms_toy_dir / "toy.json").read_text())
    for name, entry in spec["datasets"].items():
        meta, p = entry["metadata"], prov["datasets"][name]
        expected = meta["xsec_pb"] * meta["br"] * spec["lumi_pb"] * p["acceptance"] * p["efficiency"]
        assert 0.1 < p["acceptance"] < 0.8  # q q -> 4l (m_ll > 4 GeV): most gamma* fail
        total = read(cms_toy_dir / entry["files"][0])["f_weight"].astype(np.float64).sum()
        assert total == pytest.approx(expected, rel=1e-5)


def test_deterministic_per_seed(tmp_path):
    a = generate(tmp_path / "a", events=300, seed=5, datasets=["ZZTo4e"])
    b = generate(tmp_path / "b", events=300, seed=5, datasets=["ZZTo4e"])
    c = generate(tmp_path / "c", events=300, seed=6, datasets=["ZZTo4e"])
    ea, eb, ec = (read(d / "ZZTo4e.root") for d in (a, b, c))
    for branch in BRANCHES:
        np.testing.assert_array_equal(ea[branch], eb[branch])
    assert not np.array_equal(ea["f_mass4l"], ec["f_mass4l"])


# tolerances: about 3-4 binomial sigma of the 3000-event toy (6000 rows per class) plus the
# spread of the toy's modelling; a one-line physics change (jets, FSR, normalisation) moves
# them by more
CMS_TOLERANCE = {
    "vbf_rows_with_minus999": 0.03,
    "bkg_rows_with_minus999": 0.025,
    "vbf_two_jet_share": 0.03,
    "bkg_two_jet_share": 0.025,
    "ggh_share_of_two_jet_bkg": 0.025,
    "vbf_m4l_below_117": 0.015,
}


@pytest.mark.parametrize("quantity", sorted(CMS_TOLERANCE))
def test_section7_numbers(cms_toy_dir, quantity):
    """-999 patterns, >= 2-jet shares, ggH share of the 2-jet background, FSR tail (SCHEMAS 7)."""
    measured = measure_cms(cms_toy_dir)[quantity]
    assert measured == pytest.approx(CMS_REFERENCE[quantity], abs=CMS_TOLERANCE[quantity])


def test_every_selection_step_removes_events(cms_features_run):
    """The toy is written before the cms-hzz4l cuts: each processor step removes events."""
    cutflow = json.loads((cms_features_run / "cutflow.json").read_text())
    labels = [step.label for step in SELECTION]
    assert labels == list(next(iter(cutflow.values())))[1 : 1 + len(labels)]
    for dataset, steps in cutflow.items():
        n = [steps["input"]["n"], *(steps[label]["n"] for label in labels)]
        removed = -np.diff(n) / n[0]
        assert removed[0] > 0, f"{dataset}: no event with undefined Z pairing (charge mis-ID)"
        assert removed[2] > 0.05, f"{dataset}: Z windows remove {removed[2]:.3f}"  # Z* < 12 GeV
        if dataset.startswith("ZZ"):
            assert removed[1] > 0.01, f"{dataset}: m4l > 70 GeV removes {removed[1]:.3f}"  # gamma*
