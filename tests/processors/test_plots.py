"""Publication plots: the numbers behind them (ratio, Garwood error bars, bin-width label, stack
order, headroom, band), not the file sizes (issue 13)."""

import hist
import numpy as np
import pytest
from scipy.stats import chi2, norm

pytest.importorskip("mplhep", reason="plots need the plot extra (pip install 'hepsieve[plot]')")

from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.plots import (
    PlotInput,
    channel_label,
    data_points,
    draw_roc,
    mc_band,
    per_bin_label,
    plot_run,
    stack_plot,
    use_style,
)

EDGES = np.arange(80, 131, 5.0)  # 10 bins of 5 GeV


def garwood(n):
    alpha = 2 * norm.sf(1)
    low = np.where(n > 0, chi2.ppf(alpha / 2, 2 * n) / 2, 0.0)
    return low, chi2.ppf(1 - alpha / 2, 2 * (n + 1)) / 2


def one(values, variances=None):
    h = hist.Hist(
        hist.axis.Regular(10, 80, 130, name="m4l", label=r"$m_{4\ell}$ [GeV]"), storage=hist.storage.Weight()
    )
    h.view()["value"] = values
    h.view()["variance"] = variances if variances is not None else np.asarray(values) * 0.01
    return h


@pytest.fixture(scope="module")
def atlas():
    return get_analysis("atlas-hzz4l")


@pytest.fixture(scope="module")
def plt(atlas):
    return use_style(atlas)


def plot_input(with_data=True, syst=0.1):
    zz = np.array([4, 5, 6, 7, 8, 8, 7, 6, 5, 4], float)
    zjets = zz / 4
    higgs = np.array([0, 0, 0, 0, 0.5, 3, 0.5, 0, 0, 0], float)
    data = np.array([10, 8, 9, 11, 0, 17, 12, 9, 0, 3], float)
    mc = {"zjets": one(zjets), "higgs": one(higgs), "zz": one(zz)}
    varied = {p: {"norm": (h.values() * (1 + syst), h.values() * (1 - syst))} for p, h in mc.items()}
    return PlotInput(
        "m4l", "2e2mu", mc, varied,
        labels={"zz": "ZZ*", "zjets": "Z+jets", "higgs": "H(125)"},
        roles={"zz": "background", "zjets": "background", "higgs": "signal"},
        colors={"zz": "#ff0000", "zjets": "#6b59d3", "higgs": "#00cdff"},
        data=one(data, data) if with_data else None,
    )  # fmt: skip


def test_bin_width_label_from_the_axis():
    assert per_bin_label(one(np.ones(10)).axes[0]) == "Events / 5 GeV"
    assert per_bin_label(hist.axis.Regular(20, 0, 1, label="score")) == "Events / 0.05"
    assert per_bin_label(hist.axis.Variable([0, 1, 3], label="x [GeV]")) == "Events / bin"


def test_channel_labels_are_typeset():
    assert [channel_label(c) for c in ("2e2mu", "4mu", "4e", "vbf")] == ["2e2μ", "4μ", "4e", "vbf"]


def test_data_points_are_garwood_and_empty_bins_are_not_drawn():
    counts = np.array([0, 1, 4, 0, 9, 25], float)
    centres = np.arange(6.0)
    points = data_points(counts, centres)
    drawn = counts > 0
    np.testing.assert_array_equal(points["x"], centres[drawn])
    low, high = garwood(counts)
    np.testing.assert_allclose(points["low"], low[drawn], rtol=1e-6)
    np.testing.assert_allclose(points["high"], high[drawn], rtol=1e-6)
    assert points["high"][0] == pytest.approx(3.2995, abs=1e-3)  # n = 1: 1 +2.30 -0.83, not 1 ± 1


def test_stack_plot_numbers(plt, atlas):
    pin = plot_input()
    fig, plot = stack_plot(plt, atlas, pin, is_toy=True, lumi_fb=10.064)
    total = sum(h.values() for h in pin.mc.values())
    data = pin.data.values()
    assert plot.order == ["zz", "zjets", "higgs"]  # largest background at the bottom, signal on top
    assert plot.ylabel == "Events / 5 GeV" and fig.axes[0].get_ylabel() == "Events / 5 GeV"
    # ratio = data / MC (an inverted MC / data fails here: data != MC in every bin)
    drawn = data > 0
    np.testing.assert_allclose(plot.ratio["y"], data[drawn] / total[drawn], rtol=1e-12)
    low, high = garwood(data)
    np.testing.assert_allclose(plot.ratio["low"], low[drawn] / total[drawn], rtol=1e-6)
    np.testing.assert_allclose(plot.ratio["high"], high[drawn] / total[drawn], rtol=1e-6)
    np.testing.assert_allclose(plot.data["high"], high[drawn], rtol=1e-6)
    assert len(plot.data["x"]) == 8  # the two empty data bins are not drawn
    # the band: MC stat. (+) a 10 % normalisation systematic
    stat2 = sum(h.variances() for h in pin.mc.values())
    np.testing.assert_allclose(plot.band[1], total + np.sqrt(stat2 + (0.1 * total) ** 2), rtol=1e-12)
    np.testing.assert_allclose(plot.ratio_band[0], plot.band[0] / total, rtol=1e-12)
    assert plot.ylim[0] == 0
    labels = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "toy" in labels and "10.064" in labels and "fb" in labels
    assert "2e2μ" in fig.axes[0].get_legend().get_title().get_text()
    plt.close(fig)


def test_legend_and_labels_leave_the_data_free(plt, atlas):
    pin = plot_input()
    pin.data.view()["value"][-1] = 40  # a high data point under the legend (upper right)
    fig, plot = stack_plot(plt, atlas, pin, is_toy=True, lumi_fb=10.064)
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    tops = np.maximum(plot.band[1], garwood(pin.data.values())[1] * (pin.data.values() > 0))
    for artist in [ax.get_legend(), *ax.texts]:
        box = artist.get_window_extent(renderer).transformed(ax.transData.inverted())
        under = (EDGES[1:] > box.x0) & (EDGES[:-1] < box.x1)
        assert tops[under].max() < box.y0, artist
    plt.close(fig)


def test_signal_order_is_configurable_and_overlay_drawn(plt, atlas):
    fig, plot = stack_plot(plt, atlas, plot_input(), True, 10.0, signal_on_top=False, signal_overlay=True)
    assert plot.order == ["higgs", "zz", "zjets"]
    plt.close(fig)


def test_band_is_asymmetric_where_the_systematic_is():
    nominal = np.array([10.0, 10.0])
    low, high = mc_band(nominal, np.zeros(2), {"a": (np.array([12.0, 10.0]), np.array([9.0, 10.0]))})
    np.testing.assert_allclose(high, [12.0, 10.0])
    np.testing.assert_allclose(low, [9.0, 10.0])


def test_roc_axes_and_log_rejection(plt):
    fpr, tpr = np.array([0.0, 0.01, 0.1, 1.0]), np.array([0.0, 0.5, 0.9, 1.0])
    fig, ax = plt.subplots()
    drawn = draw_roc(ax, {"mlp": (fpr, tpr, 0.95)})
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (0, 1)
    np.testing.assert_array_equal(drawn["mlp"][0], fpr)
    fig2, ax2 = plt.subplots()
    drawn = draw_roc(ax2, {"mlp": (fpr, tpr, 0.95)}, log_rejection=True)
    np.testing.assert_allclose(drawn["mlp"][1], [100.0, 10.0, 1.0])  # 1 / background efficiency
    np.testing.assert_allclose(drawn["mlp"][0], [0.5, 0.9, 1.0])
    assert ax2.get_yscale() == "log"
    plt.close(fig)
    plt.close(fig2)


def test_plot_run_writes_one_plot_per_filled_category(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "stats_tests", Path(__file__).with_name("test_statistics.py")
    )
    stats_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stats_tests)  # the run directory of the stats tests
    run_dir = stats_tests._layout_run(tmp_path)
    paths = plot_run(run_dir)
    assert sorted(p.name for p in paths) == ["m4l_cr.png", "m4l_sr.png"]  # not the empty category


@pytest.mark.parametrize("scale", [10.0, 3e6], ids=["no offset text", "x10^6 offset text"])
def test_experiment_label_where_mplhep_measuring_draw_puts_it_without_that_draw(plt, atlas, scale):
    """mplhep draws the whole figure to measure the y axis' ×10ⁿ text (one of a plot's two whole
    draws); the label skips that draw when the axis shows no such text, and lands at the same place."""
    import mplhep as hep
    from matplotlib.figure import Figure

    from hepsieve.processors.plots import experiment_label

    def label_positions(ours: bool):
        fig, ax = plt.subplots()
        ax.stairs(np.linspace(1, 2, 10) * scale, EDGES)
        draws = []
        original = Figure.draw
        Figure.draw = lambda self, renderer: (draws.append(1), original(self, renderer))[1]
        try:
            if ours:
                experiment_label(ax, atlas, is_toy=True, lumi_fb=10.0)
            else:  # mplhep's own measuring draw, always
                hep.atlas.label("Open Data Simulation toy", data=True, lumi=10.0, com=13, ax=ax, loc=0)
        finally:
            Figure.draw = original
        where = [(t.get_text(), *t.get_position()) for t in ax.texts]
        plt.close(fig)
        return where, len(draws)

    ours, our_draws = label_positions(True)
    theirs, their_draws = label_positions(False)
    assert ours == theirs
    assert our_draws == their_draws - (1 if scale < 1e3 else 0)  # one whole-figure draw fewer
