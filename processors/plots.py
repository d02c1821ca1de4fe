"""Plots of a finished run: stacked distributions per category, in the experiment's style."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.analysis import Analysis, nominal
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
    label.label(" ".join(words), data=True, lumi=lumi_fb, com=style.energy_tev, ax=ax, loc=0)


def use_style(analysis: Analysis) -> Any:
    """Activate the mplhep style of the analysis' experiment; return pyplot."""
    plt, hep = _pyplot()
    styles = {"CMS": hep.style.CMS, "ATLAS": hep.style.ATLAS}
    plt.style.use(styles.get(analysis.style.experiment, hep.style.ROOT))
    return plt


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one plot per (histogram, category) of a run; return the PNG paths.

    Simulation is stacked by process (signal on top); where the run has data, it is drawn
    as points with Poisson errors over the stack, with a data/MC ratio panel.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise ConfigurationError(f"{run_dir} holds no run.json: is it the --out of `hepsieve run`?")
    record = RunRecord.read(run_dir)
    analysis = get_analysis(record.analysis_ref)
    hists = load_histograms(run_dir)
    meta = record.datasets_meta
    out = Path(out_dir or run_dir / "plots")
    out.mkdir(parents=True, exist_ok=True)
    plt = use_style(analysis)
    written = []
    for name, h in hists.items():
        for category in h.axes["category"]:
            mc: dict[str, Any] = {}
            roles: dict[str, str] = {}
            data = None
            for dataset in h.axes["dataset"]:
                one = nominal(h)[{"dataset": dataset, "category": category}]
                role = meta.get(dataset, {}).get("role", "background")
                if role == "data":
                    data = one if data is None else data + one
                    continue
                process = meta.get(dataset, {}).get("process", dataset)
                roles[process] = role
                mc[process] = mc[process] + one if process in mc else one
            if not mc or sum(p.sum().value for p in mc.values()) == 0:
                continue
            fig = _stack_plot(plt, analysis, name, category, mc, roles, data, record.is_toy, record.lumi_pb)
            path = out / f"{name}_{category}.png"
            fig.savefig(path, dpi=90, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
    if {"signal", "background"} <= set(analysis.categories.names):
        written += _roc_plots(plt, analysis, hists, out, record.is_toy)
    log.info("wrote %d plots to %s", len(written), out)
    return written


def _roc_plots(plt, analysis: Analysis, hists: dict, out: Path, is_toy: bool) -> list[Path]:
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
        draw_roc(ax, rocs, title=f"{dataset}, from the score histograms")
        experiment_label(ax, analysis, is_toy)
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
) -> None:
    """Draw ROC curves on ``ax`` (the one ROC plotting function).

    Draw ROC curves ``{label: (background eff., signal eff., AUC)}`` on ``ax`` (the one ROC
    plotting function: evaluation and run plots).
    """
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, (styles or {}).get(label, "-"), label=f"{label} (AUC = {auc:.4f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    tag = " (weighted)" if weighted else ""
    ax.set_xlabel(f"Background efficiency{tag}")
    ax.set_ylabel(f"Signal efficiency{tag}")
    ax.legend(title=title, loc="lower right", fontsize="small")


def _data_and_ratio(ax, rax, data, total) -> None:
    """Draw data points over the stack and the data/MC ratio with the MC statistical band."""
    counts = data.values()
    centres = data.axes[0].centers
    ax.errorbar(centres, counts, yerr=np.sqrt(counts), fmt="ko", label="Data")
    expected, mc_var = total.values(), total.variances()
    with np.errstate(divide="ignore", invalid="ignore"):
        rax.errorbar(centres, counts / expected, yerr=np.sqrt(counts) / expected, fmt="ko")
        band = np.sqrt(mc_var) / expected
    rax.stairs(
        1 + band,
        data.axes[0].edges,
        baseline=1 - band,
        fill=True,
        color="grey",
        alpha=0.4,
        label="MC stat. unc.",
    )
    rax.axhline(1, color="black", lw=0.8)
    rax.set_ylim(0, 2)
    rax.set_ylabel("Data / MC")
    rax.set_xlabel(ax.get_xlabel())
    ax.set_xlabel("")


def _stack_plot(
    plt,
    analysis: Analysis,
    name: str,
    category: str,
    mc: dict,
    roles: dict,
    data,
    is_toy: bool,
    lumi_pb: float | None,
):
    """Stacked simulation (signal on top), data points and a data/MC ratio when there is data."""
    _, hep = _pyplot()
    order = sorted(mc, key=lambda p: (roles[p] == "signal", mc[p].sum().value))
    if data is None:
        fig, ax = plt.subplots(figsize=(10, 8))
    else:
        fig, (ax, rax) = plt.subplots(
            2, 1, figsize=(10, 10), sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05}
        )
    hep.histplot(
        [mc[p] for p in order],
        label=order,
        stack=True,
        histtype="fill",
        ax=ax,
        edgecolor="black",
        linewidth=0.5,
    )
    total = sum(mc.values())
    if data is not None:
        _data_and_ratio(ax, rax, data, total)
    ax.set_ylabel("Events / bin")
    if name.startswith("score_"):
        ax.set_yscale("log")
        ax.set_ylim(bottom=max(1e-3, total.values()[total.values() > 0].min() / 3))
    elif total.values().min() >= 0:  # a process' negative-weight bin must not push the axis below 0
        ax.set_ylim(bottom=0)
    ax.legend(title=f"{analysis.style.title}, {category}", fontsize="small")
    experiment_label(
        ax, analysis, is_toy, simulation=data is None, lumi_fb=lumi_pb / 1000 if lumi_pb else None
    )
    return fig


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
