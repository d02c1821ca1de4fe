"""Evaluation of trained fold models on the exported features: metrics JSON and plots.

"test" scores: each event scored by the model that did not see it (its own fold);
"train" scores: each fold model on the events it was trained on. Weighted metrics use
the per-class normalised training weights, except purity and efficiency, which use
the physical event weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from hepsieve.models.scorer import OnnxScorer, load_scorers
from hepsieve.processors.analysis import Analysis, get_analysis
from hepsieve.processors.plots import experiment_label, use_style
from hepsieve.training.data import fold_masks, load_features, training_weights

log = logging.getLogger(__name__)
THRESHOLDS = np.linspace(0.0, 1.0, 101)


def _scores(scorer: OnnxScorer, x: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (test scores per event, train-score row indices and scores)."""
    test = scorer.score(x, event)
    rows, train = [], []
    for fold in range(scorer.k):
        fit_rows, _ = fold_masks(event, scorer.k, fold)
        rows.append(np.flatnonzero(fit_rows))
        train.append(scorer.predict_fold(fold, x[fit_rows]))
    return test, (np.concatenate(rows), np.concatenate(train))


def threshold_metrics(y: np.ndarray, score: np.ndarray, w_balanced: np.ndarray,
                      threshold: float) -> dict:
    """Return confusion matrix, precision, recall and F1 at ``threshold`` (raw and weighted)."""
    pred = (score > threshold).astype(int)
    out = {"threshold": threshold}
    for tag, w in (("unweighted", None), ("class_balanced", w_balanced)):
        p, r, f1, _ = precision_recall_fscore_support(y, pred, average="binary", sample_weight=w,
                                                      zero_division=0)
        cm = confusion_matrix(y, pred, sample_weight=w, labels=[0, 1])
        out[tag] = {"precision": float(p), "recall": float(r), "f1": float(f1),
                    "confusion_matrix": cm.tolist()}
    return out


def purity_efficiency(y: np.ndarray, score: np.ndarray, w_phys: np.ndarray) -> dict:
    """Return signal purity S/(S+B) and efficiency S/S_tot vs threshold (physical weights)."""
    sig = y == 1
    s = np.array([w_phys[sig & (score > t)].sum() for t in THRESHOLDS])
    b = np.array([w_phys[~sig & (score > t)].sum() for t in THRESHOLDS])
    purity = np.divide(s, s + b, out=np.zeros_like(s), where=(s + b) > 0)
    efficiency = s / w_phys[sig].sum()
    best = int(np.argmax(purity * efficiency))
    return {"threshold": THRESHOLDS.tolist(), "purity": purity.tolist(),
            "efficiency": efficiency.tolist(), "best_threshold": float(THRESHOLDS[best]),
            "best_purity_x_efficiency": float(purity[best] * efficiency[best])}


def ams(s: np.ndarray, b: np.ndarray, b_reg: float = 1e-3) -> np.ndarray:
    """Approximate median significance sqrt(2((s+b+b_reg) ln(1 + s/(b+b_reg)) - s))."""
    b = np.clip(b, 0, None) + b_reg  # signed weights can leave a slightly negative b
    s = np.clip(s, 0, None)
    return np.sqrt(np.clip(2 * ((s + b) * np.log1p(s / b) - s), 0, None))


def ams_scan(y: np.ndarray, score: np.ndarray, w_phys: np.ndarray, b_reg: float = 1e-3) -> dict:
    """Return AMS vs threshold (physical weights) and the working point that maximises it."""
    sig = y == 1
    s = np.array([w_phys[sig & (score > t)].sum() for t in THRESHOLDS])
    b = np.array([w_phys[~sig & (score > t)].sum() for t in THRESHOLDS])
    values = ams(s, b, b_reg)
    best = int(np.argmax(values))
    return {"threshold": THRESHOLDS.tolist(), "ams": values.tolist(), "b_reg": b_reg,
            "working_point": float(THRESHOLDS[best]), "best_ams": float(values[best]),
            "s_at_working_point": float(s[best]), "b_at_working_point": float(b[best])}


def evaluate(analysis_name: str, features_dir: str | Path, models_dir: str | Path,
             out_dir: str | Path, threshold: float | None = None, is_toy: bool = True) -> dict:
    """Compute metrics for every model in ``models_dir``; write metrics.json and plots."""
    analysis = get_analysis(analysis_name)
    threshold = analysis.score_cut if threshold is None else threshold
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"analysis": analysis.name, "threshold": threshold, "models": {}}
    curves = {}
    for scorer in load_scorers(models_dir, analysis):
        spec = analysis.feature_spec(scorer.feature_set)
        frame = load_features(features_dir, spec.names)
        x = frame[list(spec.names)].to_numpy(np.float32)
        y = frame["label"].to_numpy(int)
        event = frame["event"].to_numpy(np.int64)
        w_phys = frame["weight"].to_numpy(np.float64)
        policy = scorer.card.data.get("training_data", {}).get("negative_weights", "zero")
        w_bal = training_weights(w_phys, y, policy)
        test, (train_rows, train) = _scores(scorer, x, event)
        m = {
            "auc_test": float(roc_auc_score(y, test, sample_weight=w_bal)),
            "auc_train": float(roc_auc_score(y[train_rows], train, sample_weight=w_bal[train_rows])),
            "auc_test_per_fold": [float(roc_auc_score(y[f], test[f], sample_weight=w_bal[f]))
                                  for f in (event[:, None] % scorer.k == np.arange(scorer.k)).T],
            "ks_pvalue": {cls: float(ks_2samp(train[y[train_rows] == c], test[y == c]).pvalue)
                          for c, cls in ((1, "signal"), (0, "background"))},
            "at_threshold": threshold_metrics(y, test, w_bal, threshold),
            "purity_efficiency": purity_efficiency(y, test, w_phys),
            "ams": ams_scan(y, test, w_phys),
            "n_events": int(len(y)),
        }
        summary["models"][scorer.name] = m
        curves[scorer.name] = (y, test, w_bal, train_rows, train)
        _plot_model(analysis, scorer, m, curves[scorer.name], out, is_toy)
        log.info("%s: AUC test %.4f train %.4f, F1@%.2f %.3f, KS p (s/b) %.3f/%.3f", scorer.name,
                 m["auc_test"], m["auc_train"], threshold,
                 m["at_threshold"]["unweighted"]["f1"], m["ks_pvalue"]["signal"],
                 m["ks_pvalue"]["background"])
    _plot_roc(analysis, curves, out, is_toy)
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    return summary


def _save(plt, fig, ax, analysis: Analysis, is_toy: bool, path: Path) -> None:
    """Label, write and close one evaluation figure."""
    experiment_label(ax, analysis, is_toy)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _plot_roc(analysis: Analysis, curves: dict, out: Path, is_toy: bool) -> None:
    plt = use_style(analysis)
    fig, ax = plt.subplots(figsize=(9, 8))
    for name, (y, test, w, train_rows, train) in curves.items():
        for tag, yy, ss, ww, style in (("test", y, test, w, "-"),
                                       ("train", y[train_rows], train, w[train_rows], "--")):
            fpr, tpr, _ = roc_curve(yy, ss, sample_weight=ww)
            auc = roc_auc_score(yy, ss, sample_weight=ww)
            ax.plot(fpr, tpr, style, label=f"{name} {tag} (AUC = {auc:.4f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("Background efficiency (weighted)")
    ax.set_ylabel("Signal efficiency (weighted)")
    ax.legend(loc="lower right", fontsize="small")
    _save(plt, fig, ax, analysis, is_toy, out / "roc.png")


def _plot_model(analysis: Analysis, scorer: OnnxScorer, m: dict, curve: tuple, out: Path,
                is_toy: bool) -> None:
    plt = use_style(analysis)
    y, test, w, train_rows, train = curve
    name = scorer.name
    bins = np.linspace(0, 1, 31)
    centres = 0.5 * (bins[1:] + bins[:-1])
    fig, ax = plt.subplots(figsize=(9, 8))
    for cls, c, colour in (("signal", 1, "tab:red"), ("background", 0, "tab:blue")):
        ax.hist(train[y[train_rows] == c], bins=bins, density=True, alpha=0.35, color=colour,
                label=f"{cls} train")
        counts, _ = np.histogram(test[y == c], bins=bins)
        norm = counts.sum() * np.diff(bins)
        ax.errorbar(centres, counts / norm, yerr=np.sqrt(counts) / norm, fmt="o", color=colour,
                    label=f"{cls} test (KS p = {m['ks_pvalue'][cls]:.3f})")
    ax.axvline(m["at_threshold"]["threshold"], color="grey", ls=":")
    ax.set_yscale("log")
    ax.set_xlabel(f"{name} score")
    ax.set_ylabel("Normalised events")
    ax.legend(fontsize="small")
    _save(plt, fig, ax, analysis, is_toy, out / f"scores_{name}.png")

    cm = np.array(m["at_threshold"]["class_balanced"]["confusion_matrix"])
    cm = cm / cm.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="white" if v > 0.5 else "black")
    ax.set_xticks([0, 1], ["background", "signal"])
    ax.set_yticks([0, 1], ["background", "signal"])
    ax.set_xlabel(f"predicted (score > {m['at_threshold']['threshold']})")
    ax.set_ylabel("true")
    _save(plt, fig, ax, analysis, is_toy, out / f"confusion_{name}.png")

    pe = m["purity_efficiency"]
    fig, ax = plt.subplots(figsize=(9, 8))
    purity, eff = np.array(pe["purity"]), np.array(pe["efficiency"])
    ax.plot(pe["threshold"], purity, label="purity S/(S+B)")
    ax.plot(pe["threshold"], eff, label="signal efficiency")
    ax.plot(pe["threshold"], purity * eff, label="purity × efficiency")
    ax.axvline(pe["best_threshold"], color="grey", ls=":")
    ax.set_xlabel(f"{name} score threshold")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize="small")
    _save(plt, fig, ax, analysis, is_toy, out / f"purity_efficiency_{name}.png")

    scan = m["ams"]
    fig, ax = plt.subplots(figsize=(9, 8))
    ax.plot(scan["threshold"], scan["ams"], label=f"AMS ($b_{{reg}}$ = {scan['b_reg']:g})")
    ax.axvline(scan["working_point"], color="grey", ls=":",
               label=f"working point {scan['working_point']:.2f} (AMS = {scan['best_ams']:.2f})")
    ax.set_xlabel(f"{name} score threshold")
    ax.set_ylabel("AMS (weighted, full luminosity)")
    ax.legend(fontsize="small")
    _save(plt, fig, ax, analysis, is_toy, out / f"ams_{name}.png")

    folds = [f for f in scorer.card.data["folds"] if f.get("history", {}).get("train_loss")]
    if folds:
        fig, ax = plt.subplots(figsize=(9, 8))
        for f in folds:
            h = f["history"]
            ax.plot(h["train_loss"], label=f"fold {f['fold']} train")
            ax.plot(h["val_loss"], "--", label=f"fold {f['fold']} validation")
            ax.axvline(h["best_epoch"], color="grey", ls=":")
        ax.set_xlabel("epoch")
        ax.set_ylabel("weighted BCE loss")
        ax.legend(fontsize="small")
        _save(plt, fig, ax, analysis, is_toy, out / f"loss_{name}.png")
