"""Plots of a finished run: stacked distributions per category, in the experiment's style."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hepsieve.processors.analysis import Analysis, get_analysis
from hepsieve.processors.errors import ConfigurationError
from hepsieve.processors.outputs import load_histograms

log = logging.getLogger(__name__)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import mplhep as hep
    except ImportError:
        raise ConfigurationError("plotting needs the plot extra: pip install 'hepsieve[plot]'") from None
    return plt, hep


def experiment_label(ax, analysis: Analysis, is_toy: bool, simulation: bool = True,
                     lumi_fb: float | None = None) -> None:
    """Draw the CMS/ATLAS label with "Simulation"/"Open Data" and "toy" when the input is toy."""
    _, hep = _pyplot()
    words = (["Open Data"] if analysis.experiment == "ATLAS" else []) + \
        (["Simulation"] if simulation else []) + (["toy"] if is_toy else [])
    style = hep.cms if analysis.experiment == "CMS" else hep.atlas
    style.label(" ".join(words), data=True, lumi=lumi_fb, com=analysis.meta.get("energy_tev", 13),
                ax=ax, loc=0)


def use_style(analysis: Analysis):
    """Activate the mplhep style of the analysis' experiment; return pyplot."""
    plt, hep = _pyplot()
    plt.style.use(hep.style.CMS if analysis.experiment == "CMS" else hep.style.ATLAS)
    return plt


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one stacked plot per (histogram, category) of a run; return the PNG paths."""
    run_dir = Path(run_dir)
    prov_path = run_dir / "run.json"
    if not prov_path.is_file():
        raise ConfigurationError(f"{run_dir} holds no run.json: is it the --out of `hepsieve run`?")
    prov = json.loads(prov_path.read_text())
    analysis = get_analysis(prov["analysis"])
    hists = load_histograms(run_dir)
    meta = prov.get("datasets_meta", {})
    out = Path(out_dir or run_dir / "plots")
    out.mkdir(parents=True, exist_ok=True)
    plt = use_style(analysis)
    _, hep = _pyplot()
    written = []
    for name, h in hists.items():
        for category in h.axes["category"]:
            proc_hists: dict[str, object] = {}
            roles: dict[str, str] = {}
            for dataset in h.axes["dataset"]:
                process = meta.get(dataset, {}).get("process", dataset)
                roles[process] = meta.get(dataset, {}).get("role", "background")
                one = h[{"dataset": dataset, "category": category}]
                proc_hists[process] = proc_hists[process] + one if process in proc_hists else one
            if not proc_hists or sum(p.sum().value for p in proc_hists.values()) == 0:
                continue
            # backgrounds below, ascending, signal on top
            order = sorted(proc_hists, key=lambda p: (roles[p] == "signal", proc_hists[p].sum().value))
            fig, ax = plt.subplots(figsize=(10, 8))
            hep.histplot([proc_hists[p] for p in order], label=order, stack=True,
                         histtype="fill", ax=ax, edgecolor="black", linewidth=0.5)
            ax.set_ylabel("Events / bin")
            if name.startswith("score_"):
                ax.set_yscale("log")
                ax.set_ylim(bottom=max(1e-4, ax.get_ylim()[0]))
            ax.legend(title=f"{analysis.title}, {category}", fontsize="small")
            experiment_label(ax, analysis, prov.get("is_toy", False),
                             lumi_fb=analysis.lumi_pb / 1000)
            path = out / f"{name}_{category}.png"
            fig.savefig(path, dpi=90, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
    log.info("wrote %d plots to %s", len(written), out)
    return written

