"""The NanoAOD toy: the real layout (Events + Runs), read by coffea's NanoAODSchema without a
warning, in the v9 and v15 layouts; Runs sums, non-prompt leptons, pseudo-data overlaps."""

from __future__ import annotations

import json
import warnings

import awkward as ak
import numpy as np
import pytest
import uproot

from hepsieve.datasets.toys import cms_hzz4l_nanoaod as toy
from hepsieve.processors.analyses import hzz4l_cms_nanoaod as nano

MC = ["VBF_HToZZTo4L", "ZZTo4L", "DYJetsToLL_M-50", "TTTo2L2Nu"]


def _read(path):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    return NanoEventsFactory.from_root(
        {str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager"
    ).events()


def test_events_and_runs_trees_in_the_nanoaod_layout(nano_toy_dir):
    with uproot.open(nano_toy_dir / "ZZTo4L_0.root") as fin:
        events, runs = fin["Events"], fin["Runs"]
        for name in (
            *("run", "luminosityBlock", "event", "genWeight", "nMuon", "Muon_pt", "Muon_sip3d"),
            *("nElectron", "Electron_cutBased", "nJet", "Jet_jetId", "MET_pt", "HLT_TripleMu_12_10_5"),
        ):
            assert name in events, name
        assert events["Muon_pt"].interpretation.content.from_dtype == np.dtype(">f4")
        assert events["event"].interpretation.from_dtype == np.dtype(">u8")
        assert set(runs.keys()) >= {"run", "genEventSumw", "genEventCount"}
        counts = events["nMuon"].array(library="np")
        assert np.array_equal(counts, ak.num(events["Muon_pt"].array()).to_numpy())
        assert events["Muon_pt"].num_baskets >= 1
        assert max(b.num_entries for b in [events["run"]]) <= toy.BATCH


@pytest.mark.parametrize("version", toy.VERSIONS)
def test_coffea_reads_it_with_nanoaod_schema_without_a_warning(tmp_path, version):
    toy.generate(tmp_path, events=300, seed=2, datasets=["VBF_HToZZTo4L"], version=version)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        events = _read(tmp_path / "VBF_HToZZTo4L_0.root")
        assert len(events.Muon.pt) == 300 and (events.Muon.pt + 0).ndim == 2
    assert not caught, [str(w.message) for w in caught]
    assert type(events.Muon).__name__ == "MuonArray" and type(events.Jet).__name__ == "JetArray"
    two = events.Electron[ak.num(events.Electron) >= 2]
    assert len(two) and ak.all((two[:, 0] + two[:, 1]).mass > 0)  # behaviours work
    names = set(uproot.open(tmp_path / "VBF_HToZZTo4L_0.root")["Events"].keys())
    assert ("Jet_jetId" in names) == (version == "v9") and ("PFMET_pt" in names) == (version == "v15")
    assert nano.describe_file(names).startswith("NanoAOD >= v15" if version == "v15" else "Run 2 NanoAOD")


def test_runs_sums_split_over_files_add_up_to_the_one_file_sum(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    toy.generate(one, events=900, seed=4, datasets=["VBF_HToZZTo4L"])
    toy.generate(two, events=900, seed=4, datasets=["VBF_HToZZTo4L"], files_per_dataset=2)
    total = uproot.open(one / "VBF_HToZZTo4L_0.root")["Runs"]["genEventSumw"].array(library="np").sum()
    parts = [uproot.open(two / f"VBF_HToZZTo4L_{k}.root")["Runs"]["genEventSumw"].array(library="np").sum()
             for k in range(2)]  # fmt: skip
    assert sum(parts) == pytest.approx(total, rel=1e-12) and min(parts) > 0.3 * total
    written = uproot.open(one / "VBF_HToZZTo4L_0.root")["Events"]["genWeight"].array(library="np")
    # the Runs tree counts every generated event, also those the 4-lepton skim did not write
    assert total > written.astype(np.float64).sum() * 1.05
    a = uproot.open(one / "VBF_HToZZTo4L_0.root")["Events"].arrays(["event", "Muon_pt"])
    b = [
        uproot.open(two / f"VBF_HToZZTo4L_{k}.root")["Events"].arrays(["event", "Muon_pt"]) for k in range(2)
    ]
    assert ak.to_list(a) == ak.to_list(ak.concatenate(b))  # the same events, split


def test_non_prompt_leptons_are_removed_by_the_lepton_selection(nano_toy_dir):
    """Z+jets and ttbar carry four leptons, but their non-prompt ones fail ID, isolation, SIP3D."""
    fractions = {}
    for name in ("ZZTo4L", "DYJetsToLL_M-50", "TTTo2L2Nu"):
        events = _read(nano_toy_dir / f"{name}_0.root")
        assert ak.all(ak.num(events.Muon) + ak.num(events.Electron) >= 4)  # the 4-lepton skim
        table = nano.lepton_table(events.Muon, events.Electron)
        fractions[name] = float(np.mean(table.counts >= 4))
    assert fractions["ZZTo4L"] > 0.75
    assert fractions["DYJetsToLL_M-50"] < 0.1 and fractions["TTTo2L2Nu"] < 0.1


def test_negative_generator_weights_in_z_jets(nano_toy_dir):
    w = uproot.open(nano_toy_dir / "DYJetsToLL_M-50_0.root")["Events"]["genWeight"].array(library="np")
    assert 0.1 < np.mean(w < 0) < 0.25 and np.allclose(np.abs(w), toy.GEN_WEIGHT["zjets"], rtol=1e-6)


def test_pseudo_data_overlaps_between_primary_datasets_and_lies_partly_outside_the_golden_json(tmp_path):
    toy.generate(tmp_path, events=300, seed=9, datasets=["ZZTo4L", "DoubleEG", "DoubleMuon", "MuonEG"])
    ids = {}
    for pd in ("DoubleEG", "DoubleMuon", "MuonEG"):
        tree = uproot.open(tmp_path / f"{pd}_0.root")["Events"]
        assert (
            "genWeight" not in tree and "genEventSumw" not in uproot.open(tmp_path / f"{pd}_0.root")["Runs"]
        )
        assert not {"LHEScaleWeight", "PSWeight"} & set(tree.keys())  # generator weights: simulation only
        arr = tree.arrays(["run", "luminosityBlock", "event"], library="np")
        ids[pd] = set(zip(arr["run"], arr["luminosityBlock"], arr["event"], strict=True))
    assert ids["DoubleEG"] & ids["DoubleMuon"]  # 2e2mu events fire both: the same event twice
    golden = json.loads((tmp_path / toy.GOLDEN_JSON).read_text())
    every = set().union(*ids.values())
    bad = [e for e in every if not any(lo <= e[1] <= hi for lo, hi in golden[str(e[0])])]
    assert 0.02 < len(bad) / len(every) < 0.09  # 5 % of lumi sections are not certified


def test_deterministic_per_seed(tmp_path):
    for d in ("a", "b"):
        toy.generate(tmp_path / d, events=200, seed=3, datasets=["GluGluHToZZTo4L"])
    a, b = (uproot.open(tmp_path / d / "GluGluHToZZTo4L_0.root")["Events"].arrays() for d in ("a", "b"))
    assert ak.to_list(a) == ak.to_list(b)
