"""Systematic variations: weight variations exact, shape variations that move what they should,
the cutflow nominal, fill counts and ROOT statistics right (issue 13, variation axis)."""

from dataclasses import replace

import numpy as np
import pytest
import uproot

from hepsieve.processors import ConfigurationError, RunConfig, histogram, run
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.analyses.hzz4l_atlas import LEPTON_SCALE, SF_PER_LEPTON


@pytest.fixture(scope="module")
def atlas_variations(atlas_toy_dir, tmp_path_factory):
    """The ATLAS toy with every variation, m4l finely binned (to see a 0.1 % scale shift)."""
    base = get_analysis("atlas-hzz4l")
    fine = histogram("m4l", 1700, 80, 250, "m4l", lambda e: e.m4l)
    analysis = replace(base, histograms=(fine, *base.histograms[1:]))
    return run(
        RunConfig(
            analysis,
            atlas_toy_dir,
            tmp_path_factory.mktemp("var"),
            executor="iterative",
            progress=False,
            models_dir=None,
        )
    )


def _sum(h, **where):
    return h[where].sum(flow=True)


def test_every_declared_variation_is_on_the_axis(atlas_variations):
    names = list(atlas_variations.histograms["m4l"].axes["variation"])
    assert names[0] == "nominal"
    for base in ("lumi", "sf_ele", "sf_muon", "sf_pileup", "sf_leptrigger", "lepton_scale"):
        assert f"{base}Up" in names and f"{base}Down" in names
    assert len(names) == 13


def test_lumi_variation_scales_every_simulated_dataset_exactly(atlas_variations):
    h = atlas_variations.histograms["m4l"]
    for dataset in ("llll", "ggH125_ZZ4lep", "Zee"):
        nominal = _sum(h, dataset=dataset, variation="nominal").value
        assert _sum(h, dataset=dataset, variation="lumiUp").value == pytest.approx(nominal * 1.021, rel=1e-12)
        assert _sum(h, dataset=dataset, variation="lumiDown").value == pytest.approx(
            nominal * 0.979, rel=1e-12
        )
    assert _sum(h, dataset="data_A", variation="lumiUp").value == 0  # data: nominal only


def test_a_flat_weight_variation_equals_filling_with_its_factor_per_event(atlas_toy_dir, tmp_path):
    # a flat factor scales the nominal histograms instead of filling again: same sums and fills
    base = get_analysis("atlas-hzz4l")
    lumi = next(v for v in base.weights.variations if v.name == "lumi")

    def per_event(factor):
        return lambda events, objects, meta: np.full(len(events), factor(events, objects, meta))

    filled = replace(lumi, up=per_event(lumi.up), down=per_event(lumi.down))
    results = [
        run(
            RunConfig(
                replace(base, weights=replace(base.weights, variations=(variation,))),
                atlas_toy_dir,
                tmp_path / variation.up.__name__,
                executor="iterative",
                progress=False,
                models_dir=None,
                variations=["lumi"],
            )
        )
        for variation in (lumi, filled)
    ]
    scaled, refilled = (r.histograms for r in results)
    assert scaled.keys() == refilled.keys()
    for name, h in scaled.items():
        a, b = h.view(flow=True), refilled[name].view(flow=True)
        np.testing.assert_allclose(a.value, b.value, rtol=1e-12, atol=0)
        np.testing.assert_allclose(a.variance, b.variance, rtol=1e-12, atol=0)
        assert h.metadata["fills"] == refilled[name].metadata["fills"]
    assert sum(_sum(h, variation="lumiUp").value for h in scaled.values()) > 0


@pytest.mark.parametrize(("channel", "electrons", "muons"), [("4e", 4, 0), ("2e2mu", 2, 2), ("4mu", 0, 4)])
def test_per_lepton_scale_factor_variations_follow_the_lepton_flavours(
    atlas_variations, channel, electrons, muons
):
    h = atlas_variations.histograms["pt4l"]
    d_e, d_mu = SF_PER_LEPTON["ELE"][1], SF_PER_LEPTON["MUON"][1]
    nominal = _sum(h, dataset="llll", category=channel, variation="nominal").value
    for variation, factor in (
        ("sf_eleUp", (1 + d_e) ** electrons),
        ("sf_eleDown", (1 - d_e) ** electrons),
        ("sf_muonUp", (1 + d_mu) ** muons),
    ):
        got = _sum(h, dataset="llll", category=channel, variation=variation).value
        assert got == pytest.approx(nominal * factor, rel=1e-12), variation


def _mean(h):
    values, centres = h.values(), h.axes[0].centers
    return (values * centres).sum() / values.sum()


@pytest.mark.parametrize(("channel", "delta"), [("4mu", LEPTON_SCALE["mu"]), ("4e", LEPTON_SCALE["e"])])
def test_lepton_scale_moves_the_m4l_peak_by_the_scale(atlas_variations, channel, delta):
    h = atlas_variations.histograms["m4l"]
    where = {"dataset": "ggH125_ZZ4lep", "category": channel}
    nominal = _mean(h[{**where, "variation": "nominal"}][110j:140j])
    for variation, sign in (("lepton_scaleUp", 1), ("lepton_scaleDown", -1)):
        shifted = _mean(h[{**where, "variation": variation}][110j:140j])
        assert shifted / nominal - 1 == pytest.approx(sign * delta, rel=0.15), variation


def test_cutflow_stays_nominal_and_no_variation_changes_it(atlas_toy_dir, atlas_variations):
    plain = run(
        RunConfig("atlas-hzz4l", atlas_toy_dir, None, executor="iterative", progress=False, variations=[])
    )
    assert plain.cutflow == atlas_variations.cutflow
    assert list(plain.histograms["m4l"].axes["variation"]) == ["nominal"]
    only = run(
        RunConfig(
            "atlas-hzz4l",
            atlas_toy_dir,
            None,
            executor="iterative",
            progress=False,
            variations=["lumi"],
            datasets=["llll"],
        )
    )
    assert list(only.histograms["m4l"].axes["variation"]) == ["nominal", "lumiUp", "lumiDown"]
    with pytest.raises(ConfigurationError, match=r"--variations \['jes'\]: analysis 'atlas-hzz4l' declares"):
        run(RunConfig("atlas-hzz4l", atlas_toy_dir, None, executor="iterative", variations=["jes"]))


def test_root_histograms_carry_fills_and_weight_sums(atlas_variations):
    out = atlas_variations.files[0].parent
    h = atlas_variations.histograms["pt4l"]
    with uproot.open(out / "histograms.root") as fin:
        for key, variation in (("pt4l/4mu/llll", "nominal"), ("pt4l/4mu/llll__sf_muonUp", "sf_muonUp")):
            th1 = fin[key]
            one = h[{"dataset": "llll", "category": "4mu", "variation": variation}]
            np.testing.assert_allclose(th1.values(flow=True), one.values(flow=True), rtol=1e-12)
            np.testing.assert_allclose(th1.variances(flow=True), one.variances(flow=True), rtol=1e-12)
            assert th1.member("fEntries") == atlas_variations.cutflow["llll"]["category 4mu"]["n"]
            assert th1.member("fTsumw") == pytest.approx(one.values().sum(), rel=1e-12)
            assert th1.member("fTsumw2") == pytest.approx(one.variances().sum(), rel=1e-12)
            assert th1.member("fTsumw2") != pytest.approx(th1.member("fTsumw"), rel=1e-3)
        assert "pt4l/4mu/data_A__lumiUp" not in fin  # nothing filled: not written
