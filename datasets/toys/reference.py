"""The reference numbers of realistic toys (SCHEMAS.md section 7) and their measurement on toys.

Each ``measure_*`` function reads a toy directory with uproot/numpy only (no processor code,
so it also checks the processors) and returns the same keys as the matching ``*_REFERENCE``
dictionary. ``python -m hepsieve.datasets.toys.reference <analysis> DIR`` prints the table
toy vs reference.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import uproot

from hepsieve.datasets.filesets import load_fileset_spec
from hepsieve.processors.analyses.higgs_uci import TREE as HIGGS_TREE
from hepsieve.processors.analyses.hzz4l_atlas import MEV
from hepsieve.processors.analyses.hzz4l_atlas import TREE as ATLAS_TREE
from hepsieve.processors.analyses.hzz4l_cms import BRANCHES as CMS_BRANCHES
from hepsieve.processors.analyses.hzz4l_cms import TREE as CMS_TREE
from hepsieve.processors.analyses.hzz4l_cms import UNDEFINED

#: CMS reduced ntuples (seed 001 printouts): fractions of rows, the ggH share of the weighted
#: >= 2-jet background, the VBF m4l tail below 117 GeV, the seed's RF / ANN on the 5 features
CMS_REFERENCE = {
    "vbf_rows_with_minus999": 0.427,
    "bkg_rows_with_minus999": 0.894,
    "vbf_two_jet_share": 0.57,
    "bkg_two_jet_share": 0.11,
    "ggh_share_of_two_jet_bkg": 0.08,
    "vbf_m4l_below_117": 0.04,
    "rf_weighted_auc": 0.981,
    "rf_accuracy_at_0.6": 0.947,
    "ann_weighted_auc": 0.975,
    "ann_accuracy_at_0.6": 0.929,
}
#: ATLAS Open Data 2020 4l at 10 fb-1: yields after the official notebook cuts (first four
#: leptons, sum charge 0, sum type in {44, 48, 52}, all masses), in 80-250 GeV (AGC), the m4l
#: resolution [GeV] per channel and sumw/events of three samples
ATLAS_REFERENCE = {
    "data": 507.0,
    "ZZ*": 264.9,
    "Z+jets": 95.1,
    "ttbar": 28.1,
    "H": 9.63,
    "ggH": 8.64,
    "VBF": 0.775,
    "WH": 0.218,
    "ZH": 0.0015,
    "data 80-250": 371.0,
    "H 80-250": 9.61,
    "ZZ* 80-250": 174.6,
    "Z+ttbar 80-250": 112.1,
    "resolution 4e": 2.2,
    "resolution 2e2mu": 1.9,
    "resolution 4mu": 1.6,
    "sumw/events ggH": 28.0,
    "sumw/events llll": 0.42,
    "sumw/events Zee": 1900.0,
    "negative weights ttbar": 0.0,
    "ZH xsec_pb": 2.1424784e-6,
}
#: UCI HIGGS conventions and Baldi et al. (2014) test AUCs on the real data
UCI_REFERENCE = {
    "phi max |value|": np.pi / (np.pi / np.sqrt(3)),
    "btag level ratio jet2": 1.019,
    "btag level ratio jet3": 1.173,
    "btag level ratio jet4": 1.427,
    "btag middle level share (min)": 0.06,
    "btag middle level share (max)": 0.11,
    "btag-only AUC": 0.5,
    "BDT AUC low-level": 0.73,
    "BDT AUC high-level": 0.78,
    "BDT AUC all": 0.81,
    "DNN AUC low-level": 0.880,
    "DNN AUC high-level": 0.800,
    "DNN AUC all": 0.885,
}
ATLAS_GROUPS = {
    "ZZ*": ("llll",),
    "Z+jets": ("Zee", "Zmumu"),
    "ttbar": ("ttbar_lep",),
    "ggH": ("ggH125_ZZ4lep",),
    "VBF": ("VBFH125_ZZ4lep",),
    "WH": ("WH125_ZZ4lep",),
    "ZH": ("ZH125_ZZ4lep",),
}
ATLAS_CHANNELS = {"4e": 44, "2e2mu": 48, "4mu": 52}


def gaussian_core_width(values: np.ndarray, centre: float, half_window: float = 10.0) -> float:
    """Return the sigma of a Gaussian fitted to the core of ``values`` (iterated +-1.5 sigma window).

    The core is what experiments quote as the mass resolution: the FSR tail and wide
    outliers are left out. The fit maximises the likelihood of a Gaussian truncated to the
    window; starting from the median and MAD inside ``centre +- half_window``.
    """
    from scipy import optimize, stats

    x = np.asarray(values, dtype=np.float64)
    x = x[np.abs(x - centre) < half_window]
    mu, sigma = np.median(x), 1.4826 * np.median(np.abs(x - np.median(x)))
    for _ in range(5):
        lo, hi = mu - 1.5 * sigma, mu + 1.5 * sigma
        core = x[(x > lo) & (x < hi)]

        def nll(p, core=core, lo=lo, hi=hi):
            m, s = p[0], abs(p[1])
            norm = stats.norm.cdf(hi, m, s) - stats.norm.cdf(lo, m, s)
            return -np.sum(stats.norm.logpdf(core, m, s)) + len(core) * np.log(max(norm, 1e-300))

        mu, sigma = optimize.minimize(nll, [mu, sigma], method="Nelder-Mead").x
        sigma = abs(sigma)
    return float(sigma)


def _atlas_tree(toy_dir: Path, spec: dict, dataset: str) -> dict:
    """Return the branches of one ATLAS toy file that the notebook reads (numpy/awkward)."""
    names = ["lep_pt", "lep_eta", "lep_phi", "lep_E", "lep_charge", "lep_type"]
    if not spec["datasets"][dataset]["metadata"].get("is_data"):
        names += ["mcWeight", "XSection", "SumWeights"]
        names += [f"scaleFactor_{s}" for s in ("PILEUP", "ELE", "MUON", "LepTRIGGER")]
    return uproot.open(toy_dir / spec["datasets"][dataset]["files"][0])[ATLAS_TREE].arrays(names)


def atlas_notebook_selection(events) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (passes, m4l [GeV], sum of types) with the official notebook's cuts.

    The first four leptons of every event (the 4lep skim has at least four): sum of charges 0
    and sum of types in {44, 48, 52}. No isolation, trigger or mass cut.
    """
    import vector

    first = {
        f: np.asarray(events[f"lep_{f}"][:, :4].to_numpy())
        for f in ("pt", "eta", "phi", "E", "charge", "type")
    }
    vecs = [
        vector.array(
            {
                "pt": first["pt"][:, i],
                "eta": first["eta"][:, i],
                "phi": first["phi"][:, i],
                "E": first["E"][:, i],
            }
        )
        for i in range(4)
    ]
    m4l = (vecs[0] + vecs[1] + vecs[2] + vecs[3]).mass / MEV
    sum_type = first["type"].astype(np.int64).sum(axis=1)
    passes = (first["charge"].sum(axis=1) == 0) & np.isin(sum_type, list(ATLAS_CHANNELS.values()))
    return passes, m4l, sum_type


def atlas_event_weight(events, lumi_pb: float) -> np.ndarray:
    """Return the notebook's MC weight: mcWeight x scale factors x XSection x lumi / SumWeights."""
    sf = np.ones(len(events["mcWeight"]))
    for s in ("PILEUP", "ELE", "MUON", "LepTRIGGER"):
        sf = sf * np.asarray(events[f"scaleFactor_{s}"], dtype=np.float64)
    return (
        np.asarray(events["mcWeight"], dtype=np.float64)
        * sf
        * np.asarray(events["XSection"], dtype=np.float64)
        * lumi_pb
        / np.asarray(events["SumWeights"], dtype=np.float64)
    )


def _atlas_yields(toy_dir: Path, spec: dict) -> tuple[dict, dict]:
    """Return (yields after the notebook cuts, the ggH m4l per channel) of an ATLAS toy."""
    out: dict[str, float] = {}
    ggh_m4l: dict[str, np.ndarray] = {}
    for name, entry in spec["datasets"].items():
        events = _atlas_tree(toy_dir, spec, name)
        passes, m4l, sum_type = atlas_notebook_selection(events)
        is_data = entry["metadata"].get("is_data")
        w = np.ones(len(passes)) if is_data else atlas_event_weight(events, spec["lumi_pb"])
        group = "data" if is_data else next(g for g, ds in ATLAS_GROUPS.items() if name in ds)
        window = passes & (m4l > 80) & (m4l < 250)
        out[group] = out.get(group, 0.0) + float(w[passes].sum())
        out[f"{group} 80-250"] = out.get(f"{group} 80-250", 0.0) + float(w[window].sum())
        if name == "ggH125_ZZ4lep":
            ggh_m4l = {c: m4l[passes & (sum_type == t)] for c, t in ATLAS_CHANNELS.items()}
    return out, ggh_m4l


def measure_atlas(toy_dir: str | Path) -> dict[str, float]:
    """Return the ATLAS section-7 numbers measured on a toy directory (``ATLAS_REFERENCE`` keys)."""
    toy_dir, spec = Path(toy_dir), load_fileset_spec("atlas-hzz4l")
    raw, ggh_m4l = _atlas_yields(toy_dir, spec)
    higgs = ("ggH", "VBF", "WH", "ZH")
    out = {k: raw[k] for k in ("data", "ZZ*", "Z+jets", "ttbar", *higgs)}
    out["H"] = sum(raw[h] for h in higgs)
    out["data 80-250"] = raw["data 80-250"]
    out["H 80-250"] = sum(raw[f"{h} 80-250"] for h in higgs)
    out["ZZ* 80-250"] = raw["ZZ* 80-250"]
    out["Z+ttbar 80-250"] = raw["Z+jets 80-250"] + raw["ttbar 80-250"]
    for channel, m4l in ggh_m4l.items():
        out[f"resolution {channel}"] = gaussian_core_width(m4l, 125.0)
    for label, dataset in (("ggH", "ggH125_ZZ4lep"), ("llll", "llll"), ("Zee", "Zee")):
        out[f"sumw/events {label}"] = float(np.mean(_atlas_tree(toy_dir, spec, dataset)["mcWeight"]))
    out["negative weights ttbar"] = float(np.mean(_atlas_tree(toy_dir, spec, "ttbar_lep")["mcWeight"] < 0))
    out["ZH xsec_pb"] = float(_atlas_tree(toy_dir, spec, "ZH125_ZZ4lep")["XSection"][0])
    return out


def _cms_read(toy_dir: Path, spec: dict, dataset: str) -> dict[str, np.ndarray]:
    return uproot.open(toy_dir / spec["datasets"][dataset]["files"][0])[CMS_TREE].arrays(library="np")


def cms_selected(events: dict[str, np.ndarray]) -> np.ndarray:
    """Return the cms-hzz4l selection (four leptons defined, m4l > 70, Z windows), re-implemented."""
    defined = np.logical_and.reduce(
        [events[b] != UNDEFINED for b in CMS_BRANCHES if b.startswith("f_lept")]
        + [events[b] != UNDEFINED for b in ("f_mass4l", "f_Z1mass", "f_Z2mass")]
    )
    z1, z2 = events["f_Z1mass"], events["f_Z2mass"]
    return defined & (events["f_mass4l"] > 70) & (z1 > 40) & (z1 < 120) & (z2 > 12) & (z2 < 120)


def measure_cms(toy_dir: str | Path) -> dict[str, float]:
    """Return the CMS section-7 row/weight numbers on the selected rows of a toy (``CMS_REFERENCE``).

    The real ntuples hold selected events, so rows are counted after the cms-hzz4l selection
    (the toy also writes events that fail it). Background: ggH + ZZ, both channels.
    """
    toy_dir, spec = Path(toy_dir), load_fileset_spec("cms-hzz4l")
    rows: dict[str, list] = {"vbf": [], "bkg": []}
    two_jet_w = {"ggh": 0.0, "zz": 0.0}
    vbf_m4l = []
    physics = [b for b in CMS_BRANCHES if b not in ("f_run", "f_event", "f_weight")]
    for name, entry in spec["datasets"].items():
        process = entry["metadata"]["process"]
        if process not in ("vbf_h", "ggh", "zz"):
            continue
        events = _cms_read(toy_dir, spec, name)
        sel = cms_selected(events)
        any_undefined = np.logical_or.reduce([events[b] == UNDEFINED for b in physics])[sel]
        two_jets = (events["f_jet2_pt"] != UNDEFINED)[sel]
        rows["vbf" if process == "vbf_h" else "bkg"].append((any_undefined, two_jets))
        if process == "vbf_h":
            vbf_m4l.append(events["f_mass4l"][sel])
        else:
            two_jet_w[process] += float(events["f_weight"][sel][two_jets].astype(np.float64).sum())
    out = {}
    for tag in ("vbf", "bkg"):
        out[f"{tag}_rows_with_minus999"] = float(np.mean(np.concatenate([r[0] for r in rows[tag]])))
        out[f"{tag}_two_jet_share"] = float(np.mean(np.concatenate([r[1] for r in rows[tag]])))
    out["ggh_share_of_two_jet_bkg"] = two_jet_w["ggh"] / (two_jet_w["ggh"] + two_jet_w["zz"])
    out["vbf_m4l_below_117"] = float(np.mean(np.concatenate(vbf_m4l) < 117))
    return out


def _higgs_columns(toy_dir: Path) -> dict[str, np.ndarray]:
    files = sorted(toy_dir.glob("HIGGS_t*.root"))
    arrays = [uproot.open(f)[HIGGS_TREE].arrays(library="np") for f in files]
    return {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}


def measure_uci(toy_dir: str | Path) -> dict[str, float]:
    """Return the UCI HIGGS format numbers measured on a toy (``UCI_REFERENCE`` keys, no AUCs of models)."""
    from sklearn.metrics import roc_auc_score

    cols = _higgs_columns(Path(toy_dir))
    phis = [c for c in cols if c.endswith("_phi")]
    out = {"phi max |value|": float(max(np.abs(cols[c]).max() for c in phis))}
    levels = {i: np.unique(cols[f"jet{i}_btag"]) for i in range(1, 5)}
    middle = []
    for i in range(1, 5):
        if i > 1:
            out[f"btag level ratio jet{i}"] = float(levels[i][1:].mean() / levels[1][1:].mean())
        middle.append(np.mean(cols[f"jet{i}_btag"] == levels[i][1]))
    out["btag middle level share (min)"] = float(min(middle))
    out["btag middle level share (max)"] = float(max(middle))
    btag_sum = sum(cols[f"jet{i}_btag"] / levels[i][-1] for i in range(1, 5))
    out["btag-only AUC"] = float(roc_auc_score(cols["label"], btag_sum))
    return out


# model name in an evaluation's metrics.json -> reference key prefix (AUC and accuracy)
METRIC_KEYS: dict[str, dict[str, tuple[str, str | None]]] = {
    "cms-hzz4l": {
        "rf": ("rf_weighted_auc", "rf_accuracy_at_0.6"),
        "mlp": ("ann_weighted_auc", "ann_accuracy_at_0.6"),
    },
    "higgs-uci": {
        **{
            f"hgb{s}": (f"BDT AUC {t}", None)
            for s, t in (("", "all"), ("_low-level", "low-level"), ("_high-level", "high-level"))
        },
        **{
            f"mlp{s}": (f"DNN AUC {t}", None)
            for s, t in (("", "all"), ("_low-level", "low-level"), ("_high-level", "high-level"))
        },
    },
}


def model_numbers(analysis: str, metrics_paths: list[str | Path]) -> dict[str, float]:
    """Return the section-7 model numbers from ``hepsieve evaluate`` metrics.json files.

    AUC: the held-out weighted AUC; accuracy: (TP + TN) / all at the analysis' threshold with
    class-balanced weights (the seed's convention: signal and background renormalised).
    """
    keys: dict[str, tuple[str, str | None]] = METRIC_KEYS.get(analysis, {})
    out: dict[str, float] = {}
    for path in metrics_paths:
        for name, m in json.loads(Path(path).read_text())["models"].items():
            if name not in keys:
                continue
            auc_key, accuracy_key = keys[name]
            out[auc_key] = float(m["auc_test"])
            if accuracy_key:
                cm = np.asarray(m["at_threshold"]["class_balanced"]["confusion_matrix"])
                out[accuracy_key] = float(np.trace(cm) / cm.sum())
    return out


MEASURES: dict[str, tuple[Callable[[str | Path], dict[str, float]], dict]] = {
    "cms-hzz4l": (measure_cms, CMS_REFERENCE),
    "atlas-hzz4l": (measure_atlas, ATLAS_REFERENCE),
    "higgs-uci": (measure_uci, UCI_REFERENCE),
}


def table(analysis: str, toy_dir: str | Path, metrics_paths: tuple[str | Path, ...] = ()) -> str:
    """Return the toy-vs-reference table (markdown) of a toy directory (+ models' metrics.json)."""
    measure, reference = MEASURES[analysis]
    toy = measure(toy_dir) | model_numbers(analysis, list(metrics_paths))
    lines = ["| quantity | toy | reference | toy / reference |", "|---|---|---|---|"]
    for key, ref in reference.items():
        if key not in toy:
            continue
        ratio = f"{toy[key] / ref:.3f}" if ref else "-"
        name = key.replace("|", "\\|")  # "phi max |value|" must not split the markdown row
        lines.append(f"| {name} | {toy[key]:.4g} | {ref:.4g} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the toy-vs-reference table (``--json``: the measured numbers) of a toy directory."""
    parser = argparse.ArgumentParser(prog="python -m hepsieve.datasets.toys.reference")
    parser.add_argument("analysis", choices=sorted(MEASURES))
    parser.add_argument("toy_dir")
    parser.add_argument("--metrics", action="append", default=[], help="a hepsieve evaluate metrics.json")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.json:
        measured = MEASURES[args.analysis][0](args.toy_dir) | model_numbers(args.analysis, args.metrics)
        sys.stdout.write(json.dumps(measured, indent=2) + "\n")
    else:
        sys.stdout.write(table(args.analysis, args.toy_dir, tuple(args.metrics)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
