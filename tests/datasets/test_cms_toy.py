"""The CMS toy files: exact schema, derived branches from the objects, normalisation, seeds."""

import json

import numpy as np
import pytest
import uproot
import vector

from hepsieve.datasets import load_fileset_spec
from hepsieve.datasets.toys.cms_hzz4l import generate
from hepsieve.datasets.toys.kinematics import ELECTRON_MASS_GEV, MUON_MASS_GEV, Z_MASS_GEV
from hepsieve.processors.analyses.hzz4l_cms import BRANCHES, TREE


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
    assert np.all(np.abs(events["f_Z1mass"] - Z_MASS_GEV) <= np.abs(events["f_Z2mass"] - Z_MASS_GEV))


def test_physics_shapes(cms_toy_dir):
    vbf, ggh = read(cms_toy_dir / "VBF_HToZZTo4mu.root"), read(cms_toy_dir / "GluGluHToZZTo4mu.root")
    zz = read(cms_toy_dir / "ZZTo4mu.root")
    assert abs(np.median(vbf["f_mass4l"]) - 125) < 1
    assert np.median(zz["f_mass4l"]) > 180
    assert np.mean(vbf["f_massjj"] != -999) > 3 * np.mean(ggh["f_massjj"] != -999)
    two = vbf["f_deltajj"] != -999
    assert np.median(vbf["f_deltajj"][two]) > np.median(ggh["f_deltajj"][ggh["f_deltajj"] != -999]) + 1


def test_weights_sum_to_xsec_br_lumi_acceptance(cms_toy_dir):
    spec = load_fileset_spec("cms-hzz4l")
    prov = json.loads((cms_toy_dir / "toy.json").read_text())
    for name, entry in spec["datasets"].items():
        meta, p = entry["metadata"], prov["datasets"][name]
        expected = meta["xsec_pb"] * meta["br"] * spec["lumi_pb"] * p["acceptance"] * p["efficiency"]
        assert 0.2 < p["acceptance"] < 0.8
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
