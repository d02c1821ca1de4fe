"""`hepsieve stats`: fit-ready histograms, pyhf workspace, datacard and significance (issue 13).

Run directories are written with the run's own writer (`write_outputs`), then read back by the
whole stats path (run.json + histograms.pkl -> fit/)."""

import json
import math
from pathlib import Path

import hist
import numpy as np
import pytest
import uproot

from hepsieve.processors.cli import main
from hepsieve.processors.errors import ConfigurationError
from hepsieve.processors.outputs import attach_fills, write_outputs
from hepsieve.processors.provenance import RunRecord
from hepsieve.processors.statistics import variation_kind, write_fit

PROCESSES = {
    "higgs": {"label": "H(125)", "role": "signal", "color": "#00cdff"},
    "zz": {"label": "ZZ*", "role": "background", "color": "#ff0000"},
    "ttbar": {"label": "tt", "role": "background", "color": "#35b000"},
    "data": {"label": "Data", "role": "data", "color": "#000000"},
}
DATASETS = {  # two datasets make one process (higgs); two data periods make data_obs
    "ggH": {"process": "higgs", "role": "signal", "is_data": False},
    "VBF": {"process": "higgs", "role": "signal", "is_data": False},
    "llll": {"process": "zz", "role": "background", "is_data": False},
    "ttbar_lep": {"process": "ttbar", "role": "background", "is_data": False},
    "data_A": {"process": "data", "role": "data", "is_data": True},
    "data_B": {"process": "data", "role": "data", "is_data": True},
}


def asimov_z(s: float, b: float) -> float:
    return math.sqrt(2 * ((s + b) * math.log(1 + s / b) - s))


def book(bins: int = 1, categories=("sr",), variations=("nominal",)) -> hist.Hist:
    return hist.Hist(
        hist.axis.StrCategory([], name="dataset", growth=True),
        hist.axis.StrCategory(list(categories), name="category"),
        hist.axis.StrCategory(list(variations), name="variation"),
        hist.axis.Regular(bins, 0, 5 * bins, name="m4l", label="$m_{4l}$ [GeV]"),
        storage=hist.storage.Weight(),
    )


def fill(h, fills, dataset, category, variation, x, w):
    """Fill one (dataset, category, variation) with events at x of weight w; count the fills."""
    x = np.atleast_1d(np.asarray(x, dtype=float))
    w = np.broadcast_to(np.asarray(w, dtype=float), x.shape)
    h.fill(dataset=dataset, category=category, variation=variation, m4l=x, weight=w)
    key = ("m4l", dataset, category, variation)
    fills[key] = fills.get(key, 0) + len(x)


def write_run(path: Path, h: hist.Hist, fills: dict, datasets=DATASETS, processes=PROCESSES) -> Path:
    attach_fills({"m4l": h}, fills)
    record = RunRecord(
        command="test", analysis="atlas-hzz4l", analysis_ref="atlas-hzz4l", mode="histograms",
        config={}, is_toy=True, data_dir=str(path), fileset={d: [] for d in datasets},
        datasets_meta={d: dict(m) for d, m in datasets.items()}, fileset_sha256="0", lumi_pb=10064.0,
        processes=processes, skipped_files=[], accounting={}, models={}, score_cut={}, events=0,
        executor_start_s=0.0, wall_s=0.0, events_per_s=None,
    )  # fmt: skip
    write_outputs(path, {"m4l": h}, {}, record)
    return path


def counting_run(path: Path, s: float, b: float, n_obs: int | None, n_mc: int = 400) -> Path:
    """One bin: signal s from two datasets, background b, and n_obs data events (or no data)."""
    h, fills = book(), {}
    fill(h, fills, "ggH", "sr", "nominal", np.full(n_mc, 2.5), 0.75 * s / n_mc)
    fill(h, fills, "VBF", "sr", "nominal", np.full(n_mc, 2.5), 0.25 * s / n_mc)
    fill(h, fills, "llll", "sr", "nominal", np.full(n_mc, 2.5), b / n_mc)
    datasets = dict(DATASETS)
    if n_obs is None:
        datasets = {k: v for k, v in DATASETS.items() if not v["is_data"]}
    else:
        fill(h, fills, "data_A", "sr", "nominal", np.full(n_obs // 2, 2.5), 1.0)
        fill(h, fills, "data_B", "sr", "nominal", np.full(n_obs - n_obs // 2, 2.5), 1.0)
    return write_run(path, h, fills, datasets)


@pytest.mark.parametrize(("s", "b"), [(5.0, 2.3), (9.6, 174.6), (0.8, 0.05)])
def test_counting_case_gives_the_analytic_asimov_significance(tmp_path, s, b):
    _, summary = write_fit(counting_run(tmp_path, s, b, None), "m4l")
    stat_free = summary["results"]["data_stat"]["expected"]
    assert stat_free["Z"] == pytest.approx(asimov_z(s, b), abs=1e-3)
    assert stat_free["mu_hat"] == pytest.approx(1.0, abs=1e-3)
    assert summary["results"]["data_stat"]["observed"] is None  # no data in the run
    # MC statistics (staterror) can only lower the significance
    assert summary["results"]["stat"]["expected"]["Z"] < stat_free["Z"]
    on_disk = json.loads((tmp_path / "fit" / "significance.json").read_text())
    assert on_disk["results"]["data_stat"]["expected"]["Z"] == pytest.approx(asimov_z(s, b), abs=1e-3)


def test_counting_case_observed_significance_through_the_command_line(tmp_path, capsys):
    s, b = 6.0, 4.0  # n_obs = s + b: the observed Z equals the Asimov formula
    run_dir = counting_run(tmp_path, s, b, n_obs=10)
    assert main(["stats", str(run_dir), "--histogram", "m4l"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((run_dir / "fit" / "significance.json").read_text())
    observed = summary["results"]["data_stat"]["observed"]
    assert observed["Z"] == pytest.approx(asimov_z(s, b), abs=1e-3)
    assert observed["mu_hat"] == pytest.approx(1.0, abs=2e-3)
    assert f"{observed['Z']:7.3f}" in printed and "stat. (data only)" in printed
    assert summary["has_data"]


def test_the_mu_hat_uncertainty_is_the_profile_width(tmp_path):
    # one bin, no nuisance: sigma(mu) from HESSE = sqrt(s + b) / s at mu = 1 on Asimov data
    s, b = 20.0, 30.0
    _, summary = write_fit(counting_run(tmp_path, s, b, None), "m4l")
    expected = summary["results"]["data_stat"]["expected"]
    assert expected["mu_unc"] == pytest.approx(math.sqrt(s + b) / s, rel=2e-2)


def _layout_run(path: Path, zz_top: float = 10) -> Path:
    """Three bins, categories sr/cr/empty, a +7 % weight variation on zz only, a shape one.

    zz spans 0 to ``zz_top``: with 10, the last bin (10-15) is empty in every nominal sample."""
    variations = ("nominal", "zz_xsecUp", "zz_xsecDown", "scaleUp", "scaleDown")
    h, fills = book(3, ("sr", "cr", "empty"), variations), {}
    rng = np.random.default_rng(1)
    x = {n: rng.uniform(lo, hi, size) for n, lo, hi, size in (
        ("ggH_sr", 5, 10, 300), ("VBF_sr", 5, 10, 100), ("zz_sr", 0, zz_top, 500), ("zz_cr", 0, zz_top, 400),
        ("ggH_cr", 0, 10, 20))}  # fmt: skip
    for variation in variations:  # the same events in every variation
        shift = {"scaleUp": 0.4, "scaleDown": -0.4}.get(variation, 0.0)
        zz = {"zz_xsecUp": 1.07, "zz_xsecDown": 0.93}.get(variation, 1.0)
        fill(h, fills, "ggH", "sr", variation, x["ggH_sr"] + shift, 0.02)
        fill(h, fills, "VBF", "sr", variation, x["VBF_sr"] + shift, 0.01)
        fill(h, fills, "llll", "sr", variation, x["zz_sr"] + shift, 0.05 * zz)
        fill(h, fills, "llll", "cr", variation, x["zz_cr"] + shift, 0.05 * zz)
        fill(h, fills, "ggH", "cr", variation, x["ggH_cr"] + shift, 0.002)
        # ttbar: only in sr's first bin, with one negative-weight event
        fill(h, fills, "ttbar_lep", "sr", variation, [1.0, 2.0, 3.0], [0.3, 0.2, -0.1])
    fill(h, fills, "data_A", "sr", "nominal", rng.uniform(0, 10, 40), 1.0)
    fill(h, fills, "data_B", "sr", "nominal", rng.uniform(0, 10, 12), 1.0)
    fill(h, fills, "data_A", "cr", "nominal", rng.uniform(0, 10, 20), 1.0)
    return write_run(path, h, fills)


@pytest.fixture
def layout(tmp_path):
    run_dir = _layout_run(tmp_path)
    main(["-q", "stats", str(run_dir), "--histogram", "m4l"])
    return run_dir


def test_fit_dir_holds_the_four_files_and_nothing_partial(layout):
    assert sorted(p.name for p in (layout / "fit").iterdir()) == [
        "datacard.txt", "histograms.root", "significance.json", "workspace.json",
    ]  # fmt: skip
    assert not list(layout.glob(".fit.partial-*"))


def test_workspace_validates_with_an_empty_category_and_an_empty_sample(layout):
    import pyhf

    spec = json.loads((layout / "fit" / "workspace.json").read_text())
    pyhf.schema.validate(spec, "workspace.json")
    channels = {c["name"]: c for c in spec["channels"]}
    assert set(channels) == {"sr", "cr"}  # the category without simulation is left out
    assert {s["name"] for s in channels["cr"]["samples"]} == {"higgs", "zz"}  # ttbar is empty there
    # sr's third bin is empty in every sample and in the data: left out of the workspace
    assert [len(s["data"]) for s in channels["sr"]["samples"]] == [2, 2, 2]
    assert len(next(o for o in spec["observations"] if o["name"] == "sr")["data"]) == 2
    model = pyhf.Workspace(spec).model()
    assert model.config.poi_name == "mu"
    summary = json.loads((layout / "fit" / "significance.json").read_text())
    assert any(n.startswith("empty: no simulated process") for n in summary["notes"])
    assert any("ttbar" in n and "cr" in n for n in summary["notes"])


def test_negative_bins_are_reported(layout):
    summary = json.loads((layout / "fit" / "significance.json").read_text())
    assert summary["negative_bins"] == []  # ttbar's first bin: 0.3 + 0.2 - 0.1 > 0


def test_a_negative_bin_is_named(tmp_path):
    h, fills = book(2), {}
    fill(h, fills, "ggH", "sr", "nominal", [1.0, 6.0], 1.0)
    fill(h, fills, "llll", "sr", "nominal", [1.0, 6.0], 3.0)
    fill(h, fills, "ttbar_lep", "sr", "nominal", [6.0, 1.0], [0.5, -0.2])
    _, summary = write_fit(write_run(tmp_path, h, fills), "m4l")
    assert summary["negative_bins"] == [{"channel": "sr", "process": "ttbar", "bin": 0, "value": -0.2}]


def test_weight_variation_of_seven_percent_is_exact_in_the_up_histogram(layout):
    with uproot.open(layout / "fit" / "histograms.root") as f:
        for channel in ("sr", "cr"):
            nominal = f[f"{channel}/zz"].values()
            np.testing.assert_allclose(f[f"{channel}/zz_zz_xsecUp"].values(), 1.07 * nominal, rtol=1e-12)
            np.testing.assert_allclose(f[f"{channel}/zz_zz_xsecDown"].values(), 0.93 * nominal, rtol=1e-12)
            higgs = f[f"{channel}/higgs"].values()
            np.testing.assert_array_equal(f[f"{channel}/higgs_zz_xsecUp"].values(), higgs)
    spec = json.loads((layout / "fit" / "workspace.json").read_text())
    zz = next(s for s in spec["channels"][0]["samples"] if s["name"] == "zz")
    norm = next(m for m in zz["modifiers"] if m["name"] == "zz_xsec")
    assert norm["type"] == "normsys"
    assert norm["data"] == pytest.approx({"hi": 1.07, "lo": 0.93}, rel=1e-12)
    assert not [m for m in zz["modifiers"] if m["name"] == "zz_xsec" and m["type"] == "histosys"]
    shape = [m["type"] for m in zz["modifiers"] if m["name"] == "scale"]
    assert "histosys" in shape  # the shape variation moves events between bins


def test_root_layout_read_back_by_uproot(layout):
    h = __import__("pickle").loads((layout / "histograms.pkl").read_bytes())["m4l"]

    def summed(datasets, category, variation="nominal"):
        return h[{"dataset": datasets, "category": category, "variation": variation}][{"dataset": sum}]

    with uproot.open(layout / "fit" / "histograms.root") as f:
        assert sorted(k.split(";")[0] for k in f.keys(recursive=False)) == ["cr", "sr"]
        higgs = f["sr/higgs"]
        ref = summed(["ggH", "VBF"], "sr")
        np.testing.assert_allclose(higgs.values(), ref.values(), rtol=1e-12)
        np.testing.assert_allclose(higgs.errors(), np.sqrt(ref.variances()), rtol=1e-12)
        assert higgs.member("fEntries") == 400  # fills of both datasets
        assert higgs.member("fTsumw") == pytest.approx(ref.values().sum(), rel=1e-12)
        assert higgs.member("fTsumw2") == pytest.approx(ref.variances().sum(), rel=1e-12)
        data = f["sr/data_obs"]
        np.testing.assert_array_equal(data.values(), summed(["data_A", "data_B"], "sr").values())
        assert data.member("fEntries") == 52
        assert f["sr/zz"].values().shape == (3,)  # every bin, also the one empty everywhere
        np.testing.assert_array_equal(
            f["sr/higgs_scaleUp"].values(), summed(["ggH", "VBF"], "sr", "scaleUp").values()
        )
        assert "cr/ttbar" not in f  # an empty sample is not written


def test_root_layout_read_back_by_root(layout):
    ROOT = pytest.importorskip("ROOT", reason="PyROOT not importable (pip install root)")
    h = __import__("pickle").loads((layout / "histograms.pkl").read_bytes())["m4l"]
    ref = h[{"dataset": ["ggH", "VBF"], "category": "sr", "variation": "nominal"}][{"dataset": sum}]
    f = ROOT.TFile.Open(str(layout / "fit" / "histograms.root"))
    th1 = f.Get("sr/higgs")
    assert th1.GetNbinsX() == 3
    for i in range(3):
        assert th1.GetBinContent(i + 1) == pytest.approx(ref.values()[i], rel=1e-12)
        assert th1.GetBinError(i + 1) == pytest.approx(math.sqrt(ref.variances()[i]), rel=1e-12)
    assert th1.GetEntries() == 400
    sumw, sumw2 = ref.values().sum(), ref.variances().sum()
    assert th1.GetEffectiveEntries() == pytest.approx(sumw**2 / sumw2, rel=1e-9)
    assert th1.Integral() == pytest.approx(sumw, rel=1e-12)
    f.Close()


def test_datacard_describes_the_same_histograms(layout):
    card = (layout / "fit" / "datacard.txt").read_text().splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in card if line and not line.startswith("#")}
    assert "shapes * * histograms.root $CHANNEL/$PROCESS $CHANNEL/$PROCESS_$SYSTEMATIC" in card
    bins = [line.split()[1:] for line in card if line.startswith("bin")]
    assert bins[0] == ["sr", "cr"]
    processes = [line.split()[1:] for line in card if line.startswith("process")]
    assert list(zip(bins[1], processes[0], strict=True)) == [
        ("sr", "higgs"), ("sr", "zz"), ("sr", "ttbar"), ("cr", "higgs"), ("cr", "zz"),
    ]  # fmt: skip
    assert processes[1] == ["0", "1", "2", "0", "1"]  # signal <= 0, backgrounds > 0
    assert rows["zz_xsec"][0] == "lnN"
    assert rows["zz_xsec"][1:] == ["-", "0.93/1.07", "-", "-", "0.93/1.07"]
    assert rows["scale"][0] == "shape"
    assert "* autoMCStats 0" in card


def test_variation_kind():
    nominal = np.array([1.0, 2.0, 3.0])
    assert variation_kind(nominal, nominal * 1.1, nominal * 0.9)[0] == "normsys"
    assert variation_kind(nominal, nominal, nominal)[0] == "none"
    assert variation_kind(nominal, nominal[::-1], nominal)[0] == "shape"


def test_unknown_histogram_or_category_is_a_configuration_error(layout):
    with pytest.raises(ConfigurationError, match="--histogram 'nope'"):
        write_fit(layout, "nope")
    with pytest.raises(ConfigurationError, match=r"--categories \['vbf'\]"):
        write_fit(layout, "m4l", ["vbf"])


def test_data_in_a_bin_without_expectation_is_an_error(tmp_path):
    h, fills = book(2), {}
    fill(h, fills, "ggH", "sr", "nominal", [1.0], 1.0)
    fill(h, fills, "llll", "sr", "nominal", [1.0], 1.0)
    fill(h, fills, "data_A", "sr", "nominal", [7.0], 1.0)
    with pytest.raises(ConfigurationError, match=r"category 'sr': bins \[1\]"):
        write_fit(write_run(tmp_path, h, fills), "m4l")


def test_cabinetry_reads_the_layout_and_gives_the_same_significance(tmp_path):
    cabinetry = pytest.importorskip(
        "cabinetry", reason="cabinetry not installed (pip install 'hepsieve[fit]')"
    )
    # cabinetry fits every bin: no bin may be empty in every sample (ours leaves such bins out)
    layout = _layout_run(tmp_path, zz_top=15)
    write_fit(layout, "m4l")
    summary = json.loads((layout / "fit" / "significance.json").read_text())
    config = {
        "General": {
            "Measurement": "m", "POI": "mu", "HistogramFolder": str(layout / "cabinetry"),
            "InputPath": f"{layout}/fit/histograms.root" + ":{RegionPath}/{SamplePath}{VariationPath}",
        },
        "Regions": [{"Name": c, "RegionPath": c} for c in ("sr", "cr")],
        "Samples": [
            {"Name": "Data", "SamplePath": "data_obs", "Data": True},
            {"Name": "higgs", "SamplePath": "higgs"},
            {"Name": "zz", "SamplePath": "zz"},
            {"Name": "ttbar", "SamplePath": "ttbar", "Regions": ["sr"]},
        ],
        "NormFactors": [{"Name": "mu", "Samples": "higgs", "Bounds": [0, 10]}],
        "Systematics": [
            {"Name": "zz_xsec", "Type": "NormPlusShape", "Samples": "zz",
             "Up": {"VariationPath": "_zz_xsecUp"}, "Down": {"VariationPath": "_zz_xsecDown"}},
            {"Name": "scale", "Type": "NormPlusShape",
             "Up": {"VariationPath": "_scaleUp"}, "Down": {"VariationPath": "_scaleDown"}},
        ],
    }  # fmt: skip
    cabinetry.configuration.validate(config)
    cabinetry.templates.collect(config)
    spec = cabinetry.workspace.build(config)
    model, data = cabinetry.model_utils.model_and_data(spec)
    ours = summary["results"]["all"]
    observed = cabinetry.fit.significance(model, data)
    assert observed.observed_significance == pytest.approx(ours["observed"]["Z"], abs=2e-3)
    # our expected: the pre-fit Asimov data set (mu = 1, nuisances nominal), as cabinetry builds it
    asimov = cabinetry.model_utils.asimov_data(model)
    expected = cabinetry.fit.significance(model, asimov)
    assert expected.observed_significance == pytest.approx(ours["expected"]["Z"], abs=2e-3)


def test_fileset_lumi_uncertainty_is_a_normsys_where_no_lumi_variation_is_declared(tmp_path):
    datasets = {d: m | {"lumi_uncertainty": 0.025} for d, m in DATASETS.items() if not m["is_data"]}
    h, fills = book(), {}
    fill(h, fills, "ggH", "sr", "nominal", [1.0], 2.0)
    fill(h, fills, "llll", "sr", "nominal", [1.0], 5.0)
    write_fit(write_run(tmp_path, h, fills, datasets), "m4l")
    spec = json.loads((tmp_path / "fit" / "workspace.json").read_text())
    for sample in spec["channels"][0]["samples"]:
        lumi = [m for m in sample["modifiers"] if m["name"] == "lumi"]
        assert lumi == [{"name": "lumi", "type": "normsys", "data": {"hi": 1.025, "lo": 0.975}}]
    card = (tmp_path / "fit" / "datacard.txt").read_text().splitlines()
    assert next(line for line in card if line.startswith("lumi")).split() == [
        "lumi",
        "lnN",
        "0.975/1.025",
        "0.975/1.025",
    ]


@pytest.fixture(scope="module")
def atlas_fit(tmp_path_factory):
    """A histogram run of an ATLAS toy with the shipped models, then `hepsieve stats` on it.

    10 000 events per MC sample: with the 2 000 of the shared toy, some bins of every
    histogram hold pseudo-data but no (or a negative) background, which stats rightly refuses.
    """
    from hepsieve.datasets.toys.atlas_hzz4l import generate
    from hepsieve.processors import RunConfig, run

    toy_dir = generate(tmp_path_factory.mktemp("atlas_fit_toys"), events=10_000, seed=3)
    out = tmp_path_factory.mktemp("atlas_hists")
    run(RunConfig("atlas-hzz4l", toy_dir, out, executor="iterative", progress=False))
    return write_fit(out)


def test_stats_on_an_atlas_run(atlas_fit):
    fit_dir, summary = atlas_fit
    assert summary["histogram"] == "m4l_mlp_pass"  # the default: m4l after the first model's cut
    assert summary["channels"] == ["ch_4e", "ch_2e2mu", "ch_4mu"]
    assert summary["has_data"] and summary["is_toy"]
    spec = json.loads((fit_dir / "workspace.json").read_text())
    kinds = {}
    for channel in spec["channels"]:
        for sample in channel["samples"]:
            for m in sample["modifiers"]:
                kinds.setdefault(m["name"], set()).add(m["type"])
                if m["name"] == "lumi":
                    assert m["data"] == pytest.approx({"hi": 1.021, "lo": 0.979}, rel=1e-9)
    assert kinds["lumi"] == {"normsys"} and kinds["mu"] == {"normfactor"}
    assert "histosys" in kinds["lepton_scale"]  # the momentum scale moves events between bins
    results = summary["results"]
    assert (
        results["all"]["expected"]["Z"]
        <= results["stat"]["expected"]["Z"]
        <= results["data_stat"]["expected"]["Z"]
    )
    assert results["all"]["expected"]["mu_hat"] == pytest.approx(1.0, abs=1e-2)
    with uproot.open(fit_dir / "histograms.root") as f:
        assert f["ch_4mu/data_obs"].member("fEntries") == f["ch_4mu/data_obs"].values(flow=True).sum()
        assert "ch_4mu/higgs_lepton_scaleUp" in f


def test_a_bin_with_signal_and_no_background_is_left_out_with_a_note(tmp_path):
    h, fills = book(2), {}
    fill(h, fills, "ggH", "sr", "nominal", [1.0, 6.0], [4.0, 0.5])
    fill(h, fills, "llll", "sr", "nominal", [1.0], 2.0)
    _, summary = write_fit(
        write_run(tmp_path, h, fills, {k: v for k, v in DATASETS.items() if not v["is_data"]}), "m4l"
    )
    # the background-only hypothesis cannot describe the second bin's Asimov data: left out
    assert summary["results"]["data_stat"]["expected"]["Z"] == pytest.approx(asimov_z(4.0, 2.0), abs=1e-3)
    assert any(
        "bins [1] have no background expectation (signal there: 0.5 events" in n for n in summary["notes"]
    )
