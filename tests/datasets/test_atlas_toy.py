"""ATLAS toy: schema, truth, weight normalisation, section-7 yields/resolution/weights, CSV."""

import json

import awkward as ak
import numpy as np
import pytest
import uproot

from hepsieve.datasets import load_fileset_spec
from hepsieve.datasets.converters import csv_to_parquet
from hepsieve.datasets.toys.atlas_hzz4l import write_kaggle_csv
from hepsieve.datasets.toys.reference import ATLAS_REFERENCE, measure_atlas
from hepsieve.processors import InputFileError
from hepsieve.processors.analyses.hzz4l_atlas import TREE

SPEC = load_fileset_spec("atlas-hzz4l")


def tree(toy_dir, dataset):
    return uproot.open(toy_dir / SPEC["datasets"][dataset]["files"][0])[TREE]


def test_mini_schema_jagged_mev_and_fifth_leptons(atlas_toy_dir):
    t = tree(atlas_toy_dir, "Zmumu")
    for branch in (
        "lep_n",
        "lep_pt",
        "lep_E",
        "lep_ptcone30",
        "lep_etcone20",
        "lep_trackd0pvunbiased",
        "lep_tracksigd0pvunbiased",
        "lep_z0",
        "lep_isTightID",
        "lep_trigMatched",
        "lep_truthMatched",
        "jet_n",
        "jet_pt",
        "jet_E",
        "met_et",
        "mcWeight",
        "SumWeights",
        "XSection",
        "runNumber",
        "eventNumber",
        "channelNumber",
    ):
        assert branch in t
    ev = t.arrays(["lep_n", "lep_pt", "lep_type", "lep_charge", "mcWeight"])
    assert ak.all(ev.lep_n == ak.num(ev.lep_pt)) and ak.all(ev.lep_n >= 4)
    assert 0.05 < ak.mean(ev.lep_n == 5) < 0.2
    assert set(np.unique(ak.flatten(ev.lep_type))) == {11, 13}
    assert set(np.unique(ak.flatten(ev.lep_charge))) == {-1, 1}
    assert np.median(ak.to_numpy(ak.flatten(ev.lep_pt))) > 5000  # MeV


def test_non_prompt_leptons_are_less_isolated_and_displaced(atlas_toy_dir):
    ev = tree(atlas_toy_dir, "ttbar_lep").arrays(
        ["lep_pt", "lep_ptcone30", "lep_tracksigd0pvunbiased", "lep_truthMatched"]
    )
    prompt = ak.flatten(ev.lep_truthMatched)
    iso = ak.to_numpy(ak.flatten(ev.lep_ptcone30 / ev.lep_pt))
    sig = ak.to_numpy(ak.flatten(ev.lep_tracksigd0pvunbiased))
    assert np.median(iso[~prompt]) > 5 * np.median(iso[prompt])
    assert np.median(sig[~prompt]) > 3 * np.median(sig[prompt])


def test_signal_peak_at_125(atlas_run):
    import pyarrow.dataset as pads

    table = pads.dataset(str(atlas_run[1] / "features"), format="parquet").to_table().to_pandas()
    m4l = table.loc[table.dataset == "ggH125_ZZ4lep", "m4l"].to_numpy()
    window = m4l[(m4l > 110) & (m4l < 140)]
    assert len(window) > 0.9 * len(m4l)
    assert np.median(window) == pytest.approx(125, abs=1)


def _independent_selection(ev):
    """Plain-Python per-event version of the standard selection (not the analysis code)."""
    keep = []
    for i in range(len(ev["eventNumber"])):
        good = []
        for j in range(len(ev["lep_pt"][i])):
            pt = ev["lep_pt"][i][j] / 1000
            is_e = ev["lep_type"][i][j] == 11
            theta = 2 * np.arctan(np.exp(-ev["lep_eta"][i][j]))
            if (
                ev["lep_isTightID"][i][j]
                and ev["lep_ptcone30"][i][j] / 1000 < 0.3 * pt
                and ev["lep_etcone20"][i][j] / 1000 < 0.3 * pt
                and abs(ev["lep_tracksigd0pvunbiased"][i][j]) < (5 if is_e else 3)
                and abs(ev["lep_z0"][i][j] * np.sin(theta)) < 0.5
                and pt > (7 if is_e else 5)
                and abs(ev["lep_eta"][i][j]) < (2.47 if is_e else 2.5)
            ):
                good.append(j)
        charges = [ev["lep_charge"][i][j] for j in good]
        types = [ev["lep_type"][i][j] for j in good]
        e_charge = sum(c for c, t in zip(charges, types, strict=True) if t == 11)
        keep.append(
            bool(ev["trigE"][i] or ev["trigM"][i])
            and len(good) == 4
            and sum(charges) == 0
            and sum(types) in (44, 48, 52)
            and e_charge == 0
        )
    return np.array(keep)


@pytest.mark.parametrize("dataset", ["ggH125_ZZ4lep", "llll"])
def test_selected_weights_equal_xsec_lumi_mcweight_sf_over_sumw(atlas_toy_dir, atlas_run, dataset):
    ev = tree(atlas_toy_dir, dataset).arrays(library="np")
    keep = _independent_selection(ev)
    sf = (
        ev["scaleFactor_PILEUP"]
        * ev["scaleFactor_ELE"]
        * ev["scaleFactor_MUON"]
        * ev["scaleFactor_LepTRIGGER"]
    )
    expected = (
        float(ev["XSection"][0])
        * SPEC["lumi_pb"]
        * np.sum(ev["mcWeight"][keep].astype(float) * sf[keep].astype(float))
        / float(ev["SumWeights"][0])
    )
    steps = atlas_run[0].cutflow[dataset]
    last = steps["two same-flavour opposite-sign pairs"]
    assert last["n"] == keep.sum()
    assert last["sumw"] == pytest.approx(expected, rel=1e-6)
    m4l = atlas_run[0].histograms["m4l"][{"dataset": dataset, "variation": "nominal"}].sum(flow=True).value
    assert m4l == pytest.approx(expected, rel=1e-6)


def test_pseudo_data_agrees_with_mc_within_3_sigma(atlas_run):
    h = atlas_run[0].histograms["m4l"]
    data = sum(
        h[{"dataset": d, "variation": "nominal"}].sum(flow=True).value
        for d in h.axes["dataset"]
        if d.startswith("data")
    )
    mc = sum(
        h[{"dataset": d, "variation": "nominal"}].sum(flow=True).value
        for d in h.axes["dataset"]
        if not d.startswith("data")
    )
    assert data > 20
    assert abs(data - mc) < 3 * np.sqrt(mc)


def test_data_files_have_unit_weight_and_lumi_split(atlas_toy_dir):
    prov = json.loads((atlas_toy_dir / "toy.json").read_text())
    counts = {d: prov["datasets"][d]["events"] for d in ("data_A", "data_B", "data_C", "data_D")}
    assert counts["data_D"] > counts["data_A"]
    ev = tree(atlas_toy_dir, "data_C").arrays(["mcWeight", "eventNumber"], library="np")
    assert np.all(ev["mcWeight"] == 0) and len(np.unique(ev["eventNumber"])) == len(ev["eventNumber"])


def test_csv_and_root_inputs_give_identical_histograms(atlas_toy_dir, atlas_run, tmp_path):
    from hepsieve.processors.runner import RunConfig, run

    for csv in write_kaggle_csv(atlas_toy_dir, tmp_path / "csv"):
        csv_to_parquet(csv, tmp_path / "pq" / csv.with_suffix(".parquet").name)
    flat = run(
        RunConfig(
            "atlas-hzz4l",
            tmp_path / "pq",
            tmp_path / "out",
            executor="iterative",
            fileset="atlas_hzz4l_csv",
            progress=False,
        )
    )
    root = atlas_run[0].histograms
    for name in ("m4l", "z1_mass", "z2_mass", "pt4l"):
        for dataset in ("llll", "ggH125_ZZ4lep"):
            a, b = (
                flat.histograms[name][{"dataset": dataset, "variation": "nominal"}],
                root[name][{"dataset": dataset, "variation": "nominal"}],
            )
            np.testing.assert_array_equal(a.values(flow=True), b.values(flow=True))
            np.testing.assert_array_equal(a.variances(flow=True), b.variances(flow=True))
        data_root = sum(
            root[name][{"dataset": d, "variation": "nominal"}].values(flow=True)
            for d in root[name].axes["dataset"]
            if d.startswith("data")
        )
        np.testing.assert_array_equal(
            flat.histograms[name][{"dataset": "data", "variation": "nominal"}].values(flow=True), data_root
        )


def test_converter_streams_gzip_adds_event_id_and_names_bad_files(tmp_path):
    import gzip

    import pyarrow.parquet as pq

    src = tmp_path / "x.csv.gz"
    with gzip.open(src, "wt") as fout:
        fout.write("a,b\n" + "".join(f"{i},{i * 0.5}\n" for i in range(1000)))
    assert csv_to_parquet(src, tmp_path / "x.parquet", event_id="eventNumber", block_size=1 << 12) == 1000
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.column("eventNumber").to_pylist() == list(range(1000))
    assert table.column("b").to_pylist()[-1] == 499.5
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n")
    message = r"bad\.csv: (cannot be read as|malformed) CSV.*Expected 2 columns"
    with pytest.raises(InputFileError, match=message):
        csv_to_parquet(bad, tmp_path / "bad.parquet")


@pytest.fixture(scope="module")
def atlas_section7(atlas_toy_dir):
    return measure_atlas(atlas_toy_dir)


# after the official notebook cuts (first four leptons, sum charge 0, sum type 44/48/52):
# within 15 % of the Open Data table (issue 15); the 2000-event toy's statistical error is
# 2-5 % per process
YIELDS = ("ZZ*", "Z+jets", "ttbar", "H", "ggH", "VBF", "WH", "ZH")
# in 80-250 GeV (AGC): not calibrated, a test of the toy's m4l shapes; 15 %
WINDOW_YIELDS = ("H 80-250", "ZZ* 80-250", "Z+ttbar 80-250")


@pytest.mark.parametrize("quantity", YIELDS + WINDOW_YIELDS)
def test_yields_after_notebook_cuts_match_the_official_table(atlas_section7, quantity):
    assert atlas_section7[quantity] == pytest.approx(ATLAS_REFERENCE[quantity], rel=0.15)


@pytest.fixture(scope="module")
def ggh_m4l(tmp_path_factory):
    """m4l [GeV] per channel of a 20 000-event ggH toy after the notebook cuts."""
    from hepsieve.datasets.toys.atlas_hzz4l import generate
    from hepsieve.datasets.toys.reference import ATLAS_CHANNELS, atlas_notebook_selection

    toy = generate(tmp_path_factory.mktemp("atlas_ggh"), events=20_000, seed=8, datasets=["ggH125_ZZ4lep"])
    passes, m4l, sum_type = atlas_notebook_selection(tree(toy, "ggH125_ZZ4lep").arrays())
    return {channel: m4l[passes & (sum_type == t)] for channel, t in ATLAS_CHANNELS.items()}


@pytest.mark.parametrize("channel", ["4e", "2e2mu", "4mu"])
def test_m4l_resolution_per_channel(ggh_m4l, channel):
    """ggH m4l Gaussian core: 2.2 / 1.9 / 1.6 GeV (4e / 2e2mu / 4mu) within 10 % (fit error ~3 %)."""
    from hepsieve.datasets.toys.reference import gaussian_core_width

    width = gaussian_core_width(ggh_m4l[channel], 125.0)
    assert width == pytest.approx(ATLAS_REFERENCE[f"resolution {channel}"], rel=0.10)


def test_m4l_has_an_fsr_tail(ggh_m4l):
    """Unrecovered FSR: 2-8 % of the ggH events (notebook cuts) 8 GeV or more below the peak."""
    tail = np.mean(np.concatenate(list(ggh_m4l.values())) < 117)
    assert 0.02 < tail < 0.08


def test_mc_weights_per_generator(atlas_toy_dir, atlas_section7):
    """sumw/events: ggH 28, llll 0.42, Zee 1900 (5 %); negative weights: Sherpa llll ~10 %,
    none for Powheg (ttbar, Z, ggH); Pythia 8 WH/ZH exactly 1; ZH xsec as the infofile."""
    for sample in ("ggH", "llll", "Zee"):
        key = f"sumw/events {sample}"
        assert atlas_section7[key] == pytest.approx(ATLAS_REFERENCE[key], rel=0.05), key
    weights = {
        d: tree(atlas_toy_dir, d)["mcWeight"].array(library="np") for d in SPEC["datasets"] if "data" not in d
    }
    for dataset in ("ttbar_lep", "Zee", "Zmumu", "ggH125_ZZ4lep", "VBFH125_ZZ4lep"):
        assert np.all(weights[dataset] > 0), dataset
    assert 0.05 < np.mean(weights["llll"] < 0) < 0.15
    assert np.all(weights["WH125_ZZ4lep"] == 1) and np.all(weights["ZH125_ZZ4lep"] == 1)
    assert weights["ggH125_ZZ4lep"].std() / weights["ggH125_ZZ4lep"].mean() > 0.2  # NNLOPS spread
    assert atlas_section7["ZH xsec_pb"] == pytest.approx(2.1424784e-6, rel=1e-6)
    assert SPEC["datasets"]["ZH125_ZZ4lep"]["metadata"]["xsec_pb"] == 2.1424784e-6
