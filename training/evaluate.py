"""Evaluation of trained fold models on the exported features: metrics JSON and plots.

"test" scores: each event scored by the model that did not see it (its own fold);
"train" scores: each fold model on the events it was trained on. Weighted metrics use
the per-class normalised training weights, except purity and efficiency, which use
the physical event weights.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from hepsieve.models.scorer import OnnxScorer, load_scorers
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.analysis import Analysis
from hepsieve.processors.errors import ConfigurationError
from hepsieve.processors.metrics import (
    AMS_B_REG,
    ROC_BINS,
    SCAN_THRESHOLDS,
    CumulativeYields,
    ams,
)
from hepsieve.processors.plots import draw_roc, experiment_label, use_style
from hepsieve.training.data import fold_masks, load_features, training_weights

log = logging.getLogger(__name__)
ROC_THRESHOLDS = np.linspace(0.0, 1.0, ROC_BINS + 1)


@dataclass(frozen=True)
class HeldOutScores:
    """Held-out and training scores of one model on the exported events.

    Scores of one model on the exported events: ``test`` (each event by the fold model
    that did not see it) and ``train`` (each fold model on its own training events).
    """

    y: np.ndarray
    test: np.ndarray
    w_phys: np.ndarray
    w_bal: np.ndarray
    event: np.ndarray
    train_rows: np.ndarray
    train: np.ndarray


def held_out_scores(
    scorer: OnnxScorer, x: np.ndarray, y: np.ndarray, event: np.ndarray, w_phys: np.ndarray, w_bal: np.ndarray
) -> HeldOutScores:
    """Return the held-out (test) and training scores of every event."""
    test = scorer.score(x, event)
    rows, train = [], []
    for fold in range(scorer.k):
        fit_rows, _ = fold_masks(event, scorer.k, fold)
        rows.append(np.flatnonzero(fit_rows))
        train.append(scorer.predict_fold(fold, x[fit_rows]))
    return HeldOutScores(y, test, w_phys, w_bal, event, np.concatenate(rows), np.concatenate(train))


def weighted_auc(y: np.ndarray, score: np.ndarray, w: np.ndarray) -> float:
    """Return the weighted ROC AUC from the metrics kernel (10 000 score bins)."""
    return CumulativeYields.from_scores(score, y == 1, w, ROC_THRESHOLDS).auc()


def threshold_metrics(y: np.ndarray, score: np.ndarray, w_balanced: np.ndarray, threshold: float) -> dict:
    """Return confusion matrix, precision, recall and F1 at ``threshold`` (raw and weighted)."""
    pred = (score > threshold).astype(int)
    out: dict = {"threshold": threshold}
    for tag, w in (("unweighted", None), ("class_balanced", w_balanced)):
        p, r, f1, _ = precision_recall_fscore_support(
            y, pred, average="binary", sample_weight=w, zero_division=0
        )
        cm = confusion_matrix(y, pred, sample_weight=w, labels=[0, 1])
        out[tag] = {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f1),
            "confusion_matrix": cm.tolist(),
        }
    return out


def purity_efficiency(cy: CumulativeYields) -> dict:
    """Return signal purity S/(S+B) and efficiency S/S_tot vs threshold (physical weights)."""
    purity, efficiency = cy.purity(), cy.efficiency()
    best = int(np.argmax(purity * efficiency))
    return {
        "threshold": cy.thresholds.tolist(),
        "purity": purity.tolist(),
        "efficiency": efficiency.tolist(),
        "best_threshold": float(cy.thresholds[best]),
        "best_purity_x_efficiency": float(purity[best] * efficiency[best]),
    }


def ams_scan(cy: CumulativeYields, b_reg: float = AMS_B_REG) -> dict:
    """Return AMS vs threshold (physical weights) and the working point that maximises it."""
    values = ams(cy.signal, cy.background, b_reg)
    best = int(np.argmax(values))
    return {
        "threshold": cy.thresholds.tolist(),
        "ams": values.tolist(),
        "b_reg": b_reg,
        "working_point": float(cy.thresholds[best]),
        "best_ams": float(values[best]),
        "s_at_working_point": float(cy.signal[best]),
        "b_at_working_point": float(cy.background[best]),
    }


def model_metrics(sc: HeldOutScores, k: int, threshold: float) -> dict:
    """Return every metric of one model from its held-out and training scores."""
    y, test, w_bal = sc.y, sc.test, sc.w_bal
    y_train = y[sc.train_rows]
    scan = CumulativeYields.from_scores(test, y == 1, sc.w_phys, SCAN_THRESHOLDS)
    return {
        "auc_test": weighted_auc(y, test, w_bal),
        "auc_train": weighted_auc(y_train, sc.train, w_bal[sc.train_rows]),
        "auc_test_per_fold": [
            weighted_auc(y[f], test[f], w_bal[f]) for f in (sc.event[:, None] % k == np.arange(k)).T
        ],
        "ks_pvalue": {
            cls: float(ks_2samp(sc.train[y_train == c], test[y == c]).pvalue)
            for c, cls in ((1, "signal"), (0, "background"))
        },
        "at_threshold": threshold_metrics(y, test, w_bal, threshold),
        "purity_efficiency": purity_efficiency(scan),
        "ams": ams_scan(scan),
        "n_events": len(y),
    }


def _model_inputs(analysis: Analysis, scorer: OnnxScorer, features_dir: str | Path) -> HeldOutScores:
    spec = analysis.feature_spec(scorer.feature_set)
    frame = load_features(features_dir, spec.names)
    x = frame[list(spec.names)].to_numpy(np.float32)
    y = frame["label"].to_numpy(int)
    w_phys = frame["weight"].to_numpy(np.float64)
    policy = scorer.card.training_data.get("negative_weights", "zero")
    w_bal = training_weights(w_phys, y, policy)
    return held_out_scores(scorer, x, y, frame["event"].to_numpy(np.int64), w_phys, w_bal)


def evaluate(
    analysis_name: str | Analysis,
    features_dir: str | Path,
    models_dir: str | Path,
    out_dir: str | Path,
    threshold: float | None = None,
    is_toy: bool = True,
) -> dict:
    """Compute metrics for every model in ``models_dir``; write metrics.json and plots."""
    analysis = get_analysis(analysis_name)
    threshold = analysis.scoring.score_cut if threshold is None else threshold
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"analysis": analysis.name, "threshold": threshold, "models": {}}
    curves = {}
    for scorer in load_scorers(models_dir, analysis):
        scores = _model_inputs(analysis, scorer, features_dir)
        m = model_metrics(scores, scorer.k, threshold)
        summary["models"][scorer.name] = m
        curves[scorer.name] = scores
        _plot_model(analysis, scorer, m, scores, out, is_toy)
        log.info(
            "%s: AUC test %.4f train %.4f, F1@%.2f %.3f, KS p (s/b) %.3f/%.3f",
            scorer.name,
            m["auc_test"],
            m["auc_train"],
            threshold,
            m["at_threshold"]["unweighted"]["f1"],
            m["ks_pvalue"]["signal"],
            m["ks_pvalue"]["background"],
        )
    _plot_roc(analysis, curves, out, is_toy)
    write_metrics(summary, out / "metrics.json")
    return summary


def write_metrics(summary: dict, path: Path) -> Path:
    """Write an evaluation summary as ``metrics.json`` (through a temporary file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(path)
    return path


def read_metrics(path: str | Path) -> dict:
    """Read an evaluation's ``metrics.json``; ConfigurationError naming the file if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
        data["models"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise ConfigurationError(
            f"{path}: not the metrics.json of `hepsieve evaluate` ({type(err).__name__}: {err})"
        ) from None
    return data


def working_points(path: str | Path) -> dict[str, float]:
    """Return {model: AMS working point} from an evaluation's metrics.json."""
    try:
        return {name: float(m["ams"]["working_point"]) for name, m in read_metrics(path)["models"].items()}
    except (KeyError, TypeError) as err:
        raise ConfigurationError(f"{path}: a model lacks its AMS working point ({err})") from None


def metrics_table(summary: dict) -> str:
    """Return a plain-text table of AUCs, F1, KS and the AMS working point per model."""
    t = summary["threshold"]
    header = (
        f"{'model':<8s} {'AUC test':>9s} {'AUC train':>10s} {'AUC per fold':>18s} "
        f"{'F1@' + str(t):>8s} {'KS p s/b':>12s} {'AMS WP':>7s} {'AMS':>6s}"
    )
    lines = [header]
    for name, m in summary["models"].items():
        folds = "/".join(f"{a:.4f}" for a in m["auc_test_per_fold"])
        lines.append(
            f"{name:<8s} {m['auc_test']:>9.4f} {m['auc_train']:>10.4f} {folds:>18s} "
            f"{m['at_threshold']['unweighted']['f1']:>8.3f} "
            f"{m['ks_pvalue']['signal']:>7.2f}/{m['ks_pvalue']['background']:.2f} "
            f"{m['ams']['working_point']:>7.2f} {m['ams']['best_ams']:>6.2f}"
        )
    return "\n".join(lines)


def _save(plt, fig, ax, analysis: Analysis, is_toy: bool, path: Path) -> None:
    """Label, write and close one evaluation figure."""
    experiment_label(ax, analysis, is_toy)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _plot_roc(analysis: Analysis, curves: dict[str, HeldOutScores], out: Path, is_toy: bool) -> None:
    plt = use_style(analysis)
    fig, ax = plt.subplots(figsize=(9, 8))
    rocs = {}
    for name, sc in curves.items():
        for tag, yy, ss, ww in (
            ("test", sc.y, sc.test, sc.w_bal),
            ("train", sc.y[sc.train_rows], sc.train, sc.w_bal[sc.train_rows]),
        ):
            cy = CumulativeYields.from_scores(ss, yy == 1, ww, ROC_THRESHOLDS)
            rocs[f"{name} {tag}"] = (*cy.roc(), cy.auc())
    draw_roc(ax, rocs, styles={k: "--" if k.endswith("train") else "-" for k in rocs}, weighted=True)
    _save(plt, fig, ax, analysis, is_toy, out / "roc.png")


def _plot_model(
    analysis: Analysis, scorer: OnnxScorer, m: dict, sc: HeldOutScores, out: Path, is_toy: bool
) -> None:
    """Write the score, confusion, purity x efficiency, AMS and loss plots of one model."""
    plt = use_style(analysis)
    for plot in (_plot_scores, _plot_confusion, _plot_purity, _plot_ams, _plot_loss):
        fig, ax, name = plot(plt, scorer, m, sc)
        if fig is not None:
            _save(plt, fig, ax, analysis, is_toy, out / f"{name}_{scorer.name}.png")


def _plot_scores(plt, scorer: OnnxScorer, m: dict, sc: HeldOutScores):
    y, test, train_rows, train = sc.y, sc.test, sc.train_rows, sc.train
    bins = np.linspace(0, 1, 31)
    centres = 0.5 * (bins[1:] + bins[:-1])
    fig, ax = plt.subplots(figsize=(9, 8))
    for cls, c, colour in (("signal", 1, "tab:red"), ("background", 0, "tab:blue")):
        ax.hist(
            train[y[train_rows] == c], bins=bins, density=True, alpha=0.35, color=colour, label=f"{cls} train"
        )
        counts, _ = np.histogram(test[y == c], bins=bins)
        norm = counts.sum() * np.diff(bins)
        ax.errorbar(
            centres,
            counts / norm,
            yerr=np.sqrt(counts) / norm,
            fmt="o",
            color=colour,
            label=f"{cls} test (KS p = {m['ks_pvalue'][cls]:.3f})",
        )
    ax.axvline(m["at_threshold"]["threshold"], color="grey", ls=":")
    ax.set_yscale("log")
    ax.set_xlabel(f"{scorer.name} score")
    ax.set_ylabel("Normalised events")
    ax.legend(fontsize="small")
    return fig, ax, "scores"


def _plot_confusion(plt, scorer: OnnxScorer, m: dict, sc: HeldOutScores):
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
    return fig, ax, "confusion"


def _plot_purity(plt, scorer: OnnxScorer, m: dict, sc: HeldOutScores):
    pe = m["purity_efficiency"]
    fig, ax = plt.subplots(figsize=(9, 8))
    purity, eff = np.array(pe["purity"]), np.array(pe["efficiency"])
    ax.plot(pe["threshold"], purity, label="purity S/(S+B)")
    ax.plot(pe["threshold"], eff, label="signal efficiency")
    ax.plot(pe["threshold"], purity * eff, label="purity × efficiency")
    ax.axvline(pe["best_threshold"], color="grey", ls=":")
    ax.set_xlabel(f"{scorer.name} score threshold")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize="small")
    return fig, ax, "purity_efficiency"


def _plot_ams(plt, scorer: OnnxScorer, m: dict, sc: HeldOutScores):
    scan = m["ams"]
    fig, ax = plt.subplots(figsize=(9, 8))
    ax.plot(scan["threshold"], scan["ams"], label=f"AMS ($b_{{reg}}$ = {scan['b_reg']:g})")
    ax.axvline(
        scan["working_point"],
        color="grey",
        ls=":",
        label=f"working point {scan['working_point']:.2f} (AMS = {scan['best_ams']:.2f})",
    )
    ax.set_xlabel(f"{scorer.name} score threshold")
    ax.set_ylabel("AMS (weighted, full luminosity)")
    ax.legend(fontsize="small")
    return fig, ax, "ams"


def _plot_loss(plt, scorer: OnnxScorer, m: dict, sc: HeldOutScores):
    folds = [f for f in scorer.card.folds if f.history.get("train_loss")]
    if not folds:
        return None, None, "loss"
    fig, ax = plt.subplots(figsize=(9, 8))
    for f in folds:
        h = f.history
        ax.plot(h["train_loss"], label=f"fold {f.fold} train")
        ax.plot(h["val_loss"], "--", label=f"fold {f.fold} validation")
        ax.axvline(h["best_epoch"], color="grey", ls=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel("weighted BCE loss")
    ax.legend(fontsize="small")
    return fig, ax, "loss"
