"""Plots of a finished run: stacked distributions per category, in the experiment's style."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.analysis import NOMINAL, Analysis, nominal
from hepsieve.processors.errors import ConfigurationError
from hepsieve.processors.metrics import roc_from_counts
from hepsieve.processors.outputs import load_histograms
from hepsieve.processors.provenance import RunRecord

log = logging.getLogger(__name__)


def _pyplot():
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
        import mplhep as hep
    except ImportError:
        raise ConfigurationError("plotting needs the plot extra: pip install 'hepsieve[plot]'") from None
    return plt, hep


def experiment_label(
    ax, analysis: Analysis, is_toy: bool, simulation: bool = True, lumi_fb: float | None = None
) -> None:
    """Draw the CMS/ATLAS label with "Simulation"/"Open Data" and "toy" when the input is toy."""
    _, hep = _pyplot()
    style = analysis.style
    if style.experiment not in ("CMS", "ATLAS"):
        ax.set_title(f"{style.title}{' (toy)' if is_toy else ''}", loc="left", fontsize="medium")
        return
    words = (
        (["Open Data"] if style.experiment == "ATLAS" else [])
        + (["Simulation"] if simulation else [])
        + (["toy"] if is_toy else [])
    )
    label = hep.cms if style.experiment == "CMS" else hep.atlas
    text = " ".join(words)
    adjust = _shows_offset_text(ax)  # else mplhep draws the whole figure to measure an empty text
    label.label(text, data=True, lumi=lumi_fb, com=style.energy_tev, ax=ax, loc=0, scilocator_adjust=adjust)


def _shows_offset_text(ax) -> bool:
    """Return whether the y axis, as it stands, draws an offset or ×10ⁿ text above its ticks."""
    formatter = ax.yaxis.get_major_formatter()
    if not (hasattr(formatter, "get_useOffset") and formatter.get_useOffset()):
        return False  # mplhep's own test: it makes no room either
    formatter.set_locs(ax.yaxis.get_majorticklocs())  # what a draw does first
    return bool(formatter.get_offset())


def use_style(analysis: Analysis) -> Any:
    """Activate the mplhep style of the analysis' experiment; return pyplot."""
    plt, hep = _pyplot()
    styles = {"CMS": hep.style.CMS, "ATLAS": hep.style.ATLAS}
    plt.style.use(styles.get(analysis.style.experiment, hep.style.ROOT))
    return plt


def channel_label(category: str) -> str:
    """Return a category name typeset for a plot: ``2e2mu`` -> ``2e2μ``, ``4mu`` -> ``4μ``."""
    return re.sub(r"(?<=[\de])mu", "μ", category)


def per_bin_label(axis: Any, what: str = "Events") -> str:
    """Return the y-axis title of a histogram: ``Events / 5 GeV`` from the (uniform) bin width.

    The unit is the axis label's ``[...]``; non-uniform bins give ``Events / bin``.
    """
    widths = np.diff(np.asarray(axis.edges, dtype=np.float64))
    if not np.allclose(widths, widths[0], rtol=1e-9):
        return f"{what} / bin"
    unit = re.search(r"\[([^\]]+)\]\s*$", str(getattr(axis, "label", "") or ""))
    width = f"{float(np.round(widths[0], 9)):g}"
    return f"{what} / {width} {unit.group(1)}" if unit else f"{what} / {width}"


def stack_order(yields: dict[str, float], roles: dict[str, str], signal_on_top: bool = True) -> list[str]:
    """Return the processes bottom to top: the largest background at the bottom, signal on top."""
    backgrounds = sorted((p for p in yields if roles[p] != "signal"), key=lambda p: -yields[p])
    signals = sorted((p for p in yields if roles[p] == "signal"), key=lambda p: -yields[p])
    return backgrounds + signals if signal_on_top else signals + backgrounds


def data_points(counts: np.ndarray, centres: np.ndarray) -> dict[str, np.ndarray]:
    """Return the data points as drawn: non-empty bins only, with Garwood (Poisson) 68 % intervals."""
    from hist.intervals import poisson_interval

    counts = np.asarray(counts, dtype=np.float64)
    low, high = poisson_interval(counts)
    drawn = counts > 0
    return {"x": centres[drawn], "y": counts[drawn], "low": low[drawn], "high": high[drawn]}


def ratio_points(counts: np.ndarray, expected: np.ndarray, centres: np.ndarray) -> dict[str, np.ndarray]:
    """Return data / MC per bin as drawn, with the data's Garwood interval over the expectation.

    Drawn: data bins > 0 under a positive expectation.
    """
    from hist.intervals import poisson_interval

    counts, expected = np.asarray(counts, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    low, high = poisson_interval(counts)
    drawn = (counts > 0) & (expected > 0)
    e = expected[drawn]
    return {"x": centres[drawn], "y": counts[drawn] / e, "low": low[drawn] / e, "high": high[drawn] / e}


def mc_band(
    nominal: np.ndarray, variances: np.ndarray, varied: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Return the (lower, upper) edges of the MC statistical + systematic band around ``nominal``.

    Per bin: √(σ²_stat + Σ_syst δ²), δ the largest upward (downward) shift of a systematic's
    Up and Down totals, systematics added in quadrature.
    """
    up2 = np.asarray(variances, dtype=np.float64).copy()
    down2 = up2.copy()
    for hi, lo in varied.values():
        up2 += np.maximum.reduce([hi - nominal, lo - nominal, np.zeros_like(nominal)]) ** 2
        down2 += np.maximum.reduce([nominal - hi, nominal - lo, np.zeros_like(nominal)]) ** 2
    return nominal - np.sqrt(down2), nominal + np.sqrt(up2)


def make_headroom(ax, edges: np.ndarray, tops: np.ndarray) -> float:
    """Raise the y-axis top until no legend or label lies over the bins under it; return the top.

    The legend and texts keep their place in axes coordinates, so the top follows from the
    fraction of the axes below each of them (in log space on a log axis).
    """
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    log = ax.get_yscale() == "log"
    bottom, top = ax.get_ylim()
    f = np.log10 if log else (lambda v: v)
    for artist in [*ax.texts, *([ax.get_legend()] if ax.get_legend() else [])]:
        box = artist.get_window_extent(renderer)
        axes_box = box.transformed(ax.transAxes.inverted())
        data_box = box.transformed(ax.transData.inverted())
        under = (edges[1:] > data_box.x0) & (edges[:-1] < data_box.x1)
        if not under.any() or axes_box.y0 <= 0.2 or axes_box.y0 > 1:
            continue
        peak = float(tops[under].max()) * 1.05
        if peak <= 0 or (log and peak <= bottom):
            continue
        needed = f(bottom) + (f(peak) - f(bottom)) / axes_box.y0
        top = max(top, 10**needed if log else needed)
    ax.set_ylim(bottom, top)
    return top


@dataclass
class StackPlot:
    """The numbers one stacked plot draws (returned so that tests check them, not the pixels)."""

    edges: np.ndarray
    order: list[str]  # processes bottom to top
    stacked: dict[str, np.ndarray]
    band: tuple[np.ndarray, np.ndarray]  # MC stat. + syst. band (lower, upper)
    ylabel: str
    data: dict[str, np.ndarray] | None = None
    ratio: dict[str, np.ndarray] | None = None
    ratio_band: tuple[np.ndarray, np.ndarray] | None = None
    ylim: tuple[float, float] = (0.0, 1.0)
    title: str = ""


@dataclass
class PlotInput:
    """One (histogram, category): per process the nominal hist and its varied totals; the data."""

    name: str
    category: str
    mc: dict[str, Any]  # process -> 1-D nominal hist
    varied: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # process -> syst -> (up, down)
    labels: dict[str, str]
    roles: dict[str, str]
    colors: dict[str, str | None]
    data: Any = None


def _plot_input(h, name: str, category: str, procs: dict) -> PlotInput | None:
    """Return the processes of one category of a run histogram (None if nothing was filled)."""
    from hepsieve.processors.statistics import process_sum, systematic_names

    pin = PlotInput(name, category, {}, {}, {}, {}, {})
    for pname, proc in procs.items():
        one = process_sum(h, proc.datasets, category, NOMINAL)
        if one is None:
            continue
        if proc.role == "data":
            pin.data = one
            continue
        pin.mc[pname], pin.labels[pname], pin.roles[pname] = one, proc.label, proc.role
        pin.colors[pname] = proc.color
        pin.varied[pname] = {}
        for syst in systematic_names(h):
            up = process_sum(h, proc.datasets, category, f"{syst}Up")
            down = process_sum(h, proc.datasets, category, f"{syst}Down")
            if up is not None and down is not None:
                pin.varied[pname][syst] = (up.values(), down.values())
    if not pin.mc or sum(p.sum().value for p in pin.mc.values()) == 0:
        return None
    return pin


def plot_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    signal_on_top: bool = True,
    signal_overlay: bool = False,
    log_rejection: bool = False,
) -> list[Path]:
    """Write one plot per (1-D histogram, category) of a run and its ROC curves; return the PNGs.

    Simulation is stacked by process (largest background at the bottom, the signal on top
    unless ``signal_on_top`` is False) with the MC stat. + syst. band; data as points with
    Garwood intervals and a data/MC ratio panel.
    """
    from hepsieve.processors.statistics import processes

    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise ConfigurationError(f"{run_dir} holds no run.json: is it the --out of `hepsieve run`?")
    record = RunRecord.read(run_dir)
    analysis = get_analysis(record.analysis_ref)
    hists = load_histograms(run_dir)
    procs = processes(record)
    out = Path(out_dir or run_dir / "plots")
    out.mkdir(parents=True, exist_ok=True)
    plt = use_style(analysis)
    lumi_fb = record.lumi_pb / 1000 if record.lumi_pb else None
    written = []
    for name, h in hists.items():
        if h.ndim != 4:  # dataset, category, variation + one physics axis
            log.info("%s: not a 1-D histogram, not plotted", name)
            continue
        for category in h.axes["category"]:
            pin = _plot_input(h, name, category, procs)
            if pin is None:
                continue
            fig, _ = stack_plot(plt, analysis, pin, record.is_toy, lumi_fb, signal_on_top, signal_overlay)
            path = out / f"{name}_{category}.png"
            fig.savefig(path, dpi=90, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
    if {"signal", "background"} <= set(analysis.categories.names):
        written += _roc_plots(plt, analysis, hists, out, record.is_toy, lumi_fb, log_rejection)
    log.info("wrote %d plots to %s", len(written), out)
    return written


def _roc_plots(
    plt, analysis: Analysis, hists: dict, out: Path, is_toy: bool, lumi_fb, log_rejection
) -> list[Path]:
    """One ROC plot per dataset from the merged score histograms (all models)."""
    written = []
    datasets = next((list(h.axes["dataset"]) for n, h in hists.items() if n.startswith("score_")), [])
    for dataset in datasets:
        fig, ax = plt.subplots(figsize=(9, 8))
        rocs = {
            name.removeprefix("score_"): roc_from_counts(
                nominal(h)[{"dataset": dataset, "category": "signal"}].values(flow=True),
                nominal(h)[{"dataset": dataset, "category": "background"}].values(flow=True),
            )
            for name, h in hists.items()
            if name.startswith("score_")
        }
        draw_roc(ax, rocs, title=f"{dataset}, from the score histograms", log_rejection=log_rejection)
        experiment_label(ax, analysis, is_toy, lumi_fb=lumi_fb)
        path = out / f"roc_{dataset}.png"
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def draw_roc(
    ax,
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]],
    styles: dict[str, str] | None = None,
    title: str | None = None,
    weighted: bool = False,
    log_rejection: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Draw ROC curves ``{label: (background eff., signal eff., AUC)}``; return the (x, y) drawn.

    The one ROC plotting function (evaluation and run plots).

    Efficiencies on axes from 0 to 1; with ``log_rejection``, the background rejection
    1/ε_B (points with ε_B > 0) on a log axis against the signal efficiency.
    """
    tag = " (weighted)" if weighted else ""
    drawn = {}
    for label, (fpr_in, tpr_in, auc) in curves.items():
        fpr, tpr = np.asarray(fpr_in, dtype=np.float64), np.asarray(tpr_in, dtype=np.float64)
        if log_rejection:
            keep = fpr > 0
            x, y = tpr[keep], 1.0 / fpr[keep]
        else:
            x, y = fpr, tpr
        ax.plot(x, y, (styles or {}).get(label, "-"), label=f"{label} (AUC = {auc:.4f})")
        drawn[label] = (x, y)
    ax.set_xlim(0, 1)
    if log_rejection:
        ax.set_yscale("log")
        ax.set_xlabel(f"Signal efficiency{tag}")
        ax.set_ylabel(f"Background rejection 1/$\\varepsilon_B${tag}")
        ax.legend(title=title, loc="upper right", fontsize="small")
        return drawn
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"Background efficiency{tag}")
    ax.set_ylabel(f"Signal efficiency{tag}")
    ax.legend(title=title, loc="lower right", fontsize="small")
    return drawn


def _draw_band(ax, edges, low, high, label: str | None) -> None:
    ax.stairs(
        high,
        edges,
        baseline=low,
        fill=True,
        color="none",
        hatch="////",
        edgecolor="grey",
        linewidth=0,
        label=label,
    )


def _draw_ratio(rax, plot: StackPlot, data, total: np.ndarray) -> None:
    """Draw data / MC with the data's Garwood intervals and the MC band relative to the MC."""
    centres = (plot.edges[1:] + plot.edges[:-1]) / 2
    plot.ratio = ratio_points(data.values(), total, centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        low = np.where(total > 0, plot.band[0] / total, np.nan)
        high = np.where(total > 0, plot.band[1] / total, np.nan)
    plot.ratio_band = (low, high)
    _draw_band(rax, plot.edges, low, high, None)
    r = plot.ratio
    rax.errorbar(r["x"], r["y"], yerr=[r["y"] - r["low"], r["high"] - r["y"]], fmt="ko", markersize=4)
    rax.axhline(1, color="black", lw=0.8)
    # 0-2 unless a point lies above (then up to 5: an outlier must not flatten the panel)
    rax.set_ylim(0, min(max(2.0, 1.2 * float(np.max(r["y"], initial=0))), 5.0))
    rax.set_ylabel("Data / MC")


def _draw_stack(ax, pin: PlotInput, order: list[str], hep) -> None:
    hep.histplot(
        [pin.mc[p] for p in order],
        label=[pin.labels[p] for p in order],
        color=[pin.colors[p] for p in order] if all(pin.colors[p] for p in order) else None,
        stack=True,
        histtype="fill",
        ax=ax,
        edgecolor="black",
        linewidth=0.5,
    )


def _varied_totals(pin: PlotInput) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return per systematic the (Up, Down) total of the simulation (a process without it: nominal)."""
    varied: dict[str, tuple[Any, Any]] = {}
    for syst in sorted({s for v in pin.varied.values() for s in v}):
        pairs = [pin.varied[p].get(syst, (pin.mc[p].values(),) * 2) for p in pin.mc]
        varied[syst] = (sum(u for u, _ in pairs), sum(d for _, d in pairs))
    return varied


def _figure(plt, with_ratio: bool):
    if not with_ratio:
        fig, ax = plt.subplots(figsize=(10, 8))
        return fig, ax, None
    fig, (ax, rax) = plt.subplots(
        2, 1, figsize=(10, 10), sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05}
    )
    return fig, ax, rax


def stack_plot(
    plt,
    analysis: Analysis,
    pin: PlotInput,
    is_toy: bool,
    lumi_fb: float | None,
    signal_on_top: bool = True,
    signal_overlay: bool = False,
) -> tuple[Any, StackPlot]:
    """Return the figure of one (histogram, category) and the numbers it draws.

    Stacked simulation, the MC stat. + syst. band, data with Garwood intervals (empty bins
    not drawn) and a data/MC ratio panel, y ≥ 0 with headroom for legend and labels.
    """
    _, hep = _pyplot()
    order = stack_order({p: float(h.sum().value) for p, h in pin.mc.items()}, pin.roles, signal_on_top)
    axis = pin.mc[order[0]].axes[0]
    edges = np.asarray(axis.edges, dtype=np.float64)
    total_h = sum(pin.mc.values())
    total = np.asarray(total_h.values(), dtype=np.float64)
    varied = _varied_totals(pin)
    band = mc_band(total, total_h.variances(), varied)
    plot = StackPlot(edges, order, {p: pin.mc[p].values() for p in order}, band, per_bin_label(axis))
    fig, ax, rax = _figure(plt, pin.data is not None)
    _draw_stack(ax, pin, order, hep)
    _draw_band(ax, edges, *plot.band, "MC stat. + syst." if varied else "MC stat.")
    tops = np.maximum(plot.band[1], total)
    for p in (p for p in order if signal_overlay and pin.roles[p] == "signal"):
        hep.histplot(pin.mc[p], histtype="step", color="red", linewidth=2, label=f"{pin.labels[p]}", ax=ax)
    (rax or ax).set_xlabel(str(axis.label or axis.name))
    if pin.data is not None:
        centres = (edges[1:] + edges[:-1]) / 2
        plot.data = d = data_points(pin.data.values(), centres)
        ax.errorbar(d["x"], d["y"], yerr=[d["y"] - d["low"], d["high"] - d["y"]], fmt="ko", label="Data")
        tops = np.maximum(tops, poisson_high(pin.data.values()))
        _draw_ratio(rax, plot, pin.data, total)
        ax.set_xlabel("")
    _finish_axes(ax, pin, plot, total, analysis, is_toy, lumi_fb, tops)
    return fig, plot


def poisson_high(counts: np.ndarray) -> np.ndarray:
    """Return the upper Garwood edge of each data bin (0 for an empty bin: it is not drawn)."""
    from hist.intervals import poisson_interval

    counts = np.asarray(counts, dtype=np.float64)
    return np.where(counts > 0, poisson_interval(counts)[1], 0.0)


def _finish_axes(ax, pin: PlotInput, plot: StackPlot, total, analysis, is_toy, lumi_fb, tops) -> None:
    """Axis titles, scale (y ≥ 0; log for scores), legend (top first), label and headroom."""
    ax.set_ylabel(plot.ylabel)
    if pin.name.startswith("score_") and np.any(total > 0):
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(1e-3, total[total > 0].min() / 3))
    else:
        ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    plot.title = f"{analysis.style.title}, {channel_label(pin.category)}"
    ax.legend(handles[::-1], labels[::-1], title=plot.title, fontsize="small", loc="upper right")
    experiment_label(ax, analysis, is_toy, simulation=pin.data is None, lumi_fb=lumi_fb)
    ax.set_xlim(plot.edges[0], plot.edges[-1])
    make_headroom(ax, plot.edges, tops)
    plot.ylim = ax.get_ylim()


def _score_histograms(score, process, rows, weight, bins: int = 50) -> dict[str, Any]:
    """Return {process: weighted score histogram} of the events in ``rows``, smallest yield first."""
    import hist

    out = {}
    for name in np.unique(process[rows]):
        sel = rows & (process == name)
        out[str(name)] = hist.Hist(hist.axis.Regular(bins, 0, 1), storage=hist.storage.Weight()).fill(
            score[sel], weight=weight[sel]
        )
    return dict(sorted(out.items(), key=lambda kv: kv[1].sum().value))


def _draw_scan(sax, scan: dict, reference: dict[str, tuple[float, float]]) -> None:
    """Z_A with its MC-statistical band, s/sqrt(b + b_reg), the best threshold, reference regions."""
    t = np.array(scan["threshold"])
    z, dz = np.array(scan["asimov"]), np.array(scan["asimov_unc"])
    sax.plot(t, z, color="tab:blue", label=r"$Z_A$ (Asimov)")
    sax.fill_between(t, z - dz, z + dz, color="tab:blue", alpha=0.25, label="MC stat. unc.")
    sax.plot(t, scan["s_over_sqrt_b"], "--", color="tab:orange", label=f"s/√(b + {scan['b_reg']:g})")
    few = np.array(scan["n_background_events"]) < scan["min_background_events"]
    sax.fill_between(
        t, 0, 1, where=few, transform=sax.get_xaxis_transform(), color="grey", alpha=0.2,
        label=f"< {scan['min_background_events']} background MC events",
    )  # fmt: skip
    if scan["best_threshold"] is not None:
        sax.axvline(
            scan["best_threshold"], color="tab:blue", ls=":", label=f"best: {scan['best_threshold']:.2f}"
        )
    tops = [scan["max_significance"] or 0.0]
    for name, (zr, dzr) in reference.items():
        sax.axhline(zr, color="black", ls="-.", label=f"{name}: $Z_A$ = {zr:.2f} ± {dzr:.2f}")
        sax.axhspan(zr - dzr, zr + dzr, color="black", alpha=0.1)
        tops.append(zr + dzr)
    sax.set_ylim(0, 1.4 * max(*tops, 1e-3))
    sax.set_ylabel("significance")
    sax.legend(fontsize="x-small", ncol=2, loc="upper left")


def draw_significance_scan(
    plt,
    score: np.ndarray,
    process: np.ndarray,
    is_signal: np.ndarray,
    weight: np.ndarray,
    scan: dict,
    reference: dict[str, tuple[float, float]],
    xlabel: str,
) -> Any:
    """Return the significance-scan figure: score distributions per process over the scan.

    Top: the weighted (signed, full-luminosity) score distributions, backgrounds stacked by
    process and the signal as a line; bottom: the significance of ``score > threshold`` (the
    ``significance_scan`` of ``hepsieve evaluate``) with the reference regions' significance.
    """
    _, hep = _pyplot()
    fig, (ax, sax) = plt.subplots(
        2, 1, figsize=(10, 11), sharex=True, gridspec_kw={"height_ratios": (3, 2), "hspace": 0.05}
    )
    sig = np.asarray(is_signal, bool)
    backgrounds = _score_histograms(score, process, ~sig, weight)
    if backgrounds:
        hep.histplot(list(backgrounds.values()), label=list(backgrounds), stack=True, histtype="fill", ax=ax)
    for name, h in _score_histograms(score, process, sig, weight).items():
        hep.histplot(h, histtype="step", color="red", linewidth=2, label=f"{name} (signal)", ax=ax)
    if scan["best_threshold"] is not None:
        ax.axvline(scan["best_threshold"], color="tab:blue", ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("")
    ax.set_ylabel("Events / bin")
    ax.legend(fontsize="small", loc="upper center")
    _draw_scan(sax, scan, reference)
    sax.set_xlabel(xlabel)
    sax.set_xlim(0, 1)
    return fig
