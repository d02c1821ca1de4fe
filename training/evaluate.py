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

import awkward as ak
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
    asimov_significance,
    s_over_sqrt_b,
)
from hepsieve.processors.plots import draw_roc, draw_significance_scan, experiment_label, use_style
from hepsieve.processors.provenance import RunRecord
from hepsieve.training.data import fold_masks, load_features, training_weights

log = logging.getLogger(__name__)
ROC_THRESHOLDS = np.linspace(0.0, 1.0, ROC_BINS + 1)
#: the significance scan's maximum is taken only where at least this many unweighted background
#: events pass: above that, b is a few MC events and s/sqrt(b) measures the sample size, not physics
MIN_BACKGROUND_EVENTS = 10


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
    dataset: np.ndarray | None = None


def held_out_scores(
    scorer: OnnxScorer,
    x: np.ndarray,
    y: np.ndarray,
    event: np.ndarray,
    w_phys: np.ndarray,
    w_bal: np.ndarray,
    dataset: np.ndarray | None = None,
) -> HeldOutScores:
    """Return the held-out (test) and training scores of every event."""
    test = scorer.score(x, event)
    rows, train = [], []
    for fold in range(scorer.k):
        fit_rows, _ = fold_masks(event, scorer.k, fold)
        rows.append(np.flatnonzero(fit_rows))
        train.append(scorer.predict_fold(fold, x[fit_rows]))
    return HeldOutScores(y, test, w_phys, w_bal, event, np.concatenate(rows), np.concatenate(train), dataset)


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


def asimov_uncertainty(s: np.ndarray, b: np.ndarray, s_unc: np.ndarray, b_unc: np.ndarray) -> np.ndarray:
    """Return the MC-statistical uncertainty of Z_A(s, b), propagated linearly from s and b.

    The derivatives are central differences of the metrics kernel's ``asimov_significance``
    (so there is one formula); 0 where b <= 0.
    """
    s, b = np.asarray(s, float), np.asarray(b, float)
    h_s, h_b = 1e-6 * np.maximum(np.abs(s), 1e-9), 1e-6 * np.maximum(np.abs(b), 1e-9)
    dz_ds = (asimov_significance(s + h_s, b) - asimov_significance(np.clip(s - h_s, 0, None), b)) / (
        s + h_s - np.clip(s - h_s, 0, None)
    )
    dz_db = (asimov_significance(s, b + h_b) - asimov_significance(s, b - h_b)) / (2 * h_b)
    return np.where(b > 0, np.hypot(dz_ds * s_unc, dz_db * b_unc), 0.0)


def _best(values: np.ndarray, allowed: np.ndarray) -> int | None:
    return int(np.argmax(np.where(allowed, values, -np.inf))) if allowed.any() else None


def significance_scan(
    score: np.ndarray,
    is_signal: np.ndarray,
    weight: np.ndarray,
    thresholds: np.ndarray = SCAN_THRESHOLDS,
    min_background_events: int = MIN_BACKGROUND_EVENTS,
    b_reg: float = AMS_B_REG,
) -> dict:
    """Return s/sqrt(b + b_reg) and the Asimov Z_A vs threshold (``score > t``) and their maxima.

    Physical (signed) weights; MC-statistical uncertainties from the sums of squared weights.
    The maxima are taken over thresholds with b > 0 and at least ``min_background_events``
    unweighted background events (None where there is none).
    """
    sig, w = np.asarray(is_signal, bool), np.asarray(weight, float)
    thresholds = np.round(np.asarray(thresholds, float), 12)  # 0.82, not 0.8200000000000001
    cy = CumulativeYields.from_scores(score, sig, w, thresholds)
    var = CumulativeYields.from_scores(score, sig, np.square(w), thresholds)
    raw = CumulativeYields.from_scores(score, sig, np.ones_like(w), thresholds)
    z_a = asimov_significance(cy.signal, cy.background)
    z_sb = s_over_sqrt_b(cy.signal, cy.background, b_reg)
    s_unc, b_unc = np.sqrt(var.signal), np.sqrt(var.background)
    z_unc = asimov_uncertainty(cy.signal, cy.background, s_unc, b_unc)
    allowed = (raw.background >= min_background_events) & (cy.background > 0)
    best, best_sb = _best(z_a, allowed), _best(z_sb, allowed)

    def at(values: np.ndarray, i: int | None) -> float | None:
        return None if i is None else float(values[i])

    return {
        "threshold": thresholds.tolist(),
        "s": cy.signal.tolist(),
        "b": cy.background.tolist(),
        "s_unc": s_unc.tolist(),
        "b_unc": b_unc.tolist(),
        "n_signal_events": raw.signal.astype(int).tolist(),
        "n_background_events": raw.background.astype(int).tolist(),
        "asimov": z_a.tolist(),
        "asimov_unc": z_unc.tolist(),
        "s_over_sqrt_b": z_sb.tolist(),
        "b_reg": b_reg,
        "min_background_events": min_background_events,
        "best_threshold": at(thresholds, best),
        "max_significance": at(z_a, best),
        "max_significance_unc": at(z_unc, best),
        "s_at_best": at(cy.signal, best),
        "b_at_best": at(cy.background, best),
        "best_threshold_s_sqrt_b": at(thresholds, best_sb),
        "max_significance_s_sqrt_b": at(z_sb, best_sb),
    }


def region_significance(in_region: np.ndarray, is_signal: np.ndarray, weight: np.ndarray) -> dict:
    """Return s, b (with MC-stat uncertainties), Z_A and s/sqrt(b + b_reg) of a cut-and-count region."""
    scan = significance_scan(np.asarray(in_region, float), is_signal, weight, np.array([0.5]), 0)
    keys = ("s", "b", "s_unc", "b_unc", "n_signal_events", "n_background_events")
    return {k: scan[k][0] for k in keys} | {
        "significance": scan["asimov"][0],
        "significance_unc": scan["asimov_unc"][0],
        "significance_s_sqrt_b": scan["s_over_sqrt_b"][0],
    }


def cv_threshold_significance(
    sc: HeldOutScores, k: int, min_background_events: int = MIN_BACKGROUND_EVENTS
) -> dict:
    """Return Z_A when each fold's events are cut at the threshold that is best on the other folds.

    The scan's maximum picks its threshold on the very events it counts (an optimistic bias
    that grows as the samples shrink); here no event's threshold was chosen with it.
    """
    fold, sig = sc.event % k, sc.y == 1
    s = b = 0.0
    thresholds = []
    for f in range(k):
        other, mine = fold != f, fold == f
        t = significance_scan(
            sc.test[other], sig[other], sc.w_phys[other], SCAN_THRESHOLDS, min_background_events
        )["best_threshold"]
        if t is None:
            return {"thresholds": None, "s": None, "b": None, "significance": None}
        cy = CumulativeYields.from_scores(sc.test[mine], sig[mine], sc.w_phys[mine], np.array([t]))
        s, b = s + float(cy.signal[0]), b + float(cy.background[0])
        thresholds.append(t)
    z = float(asimov_significance(np.array([s]), np.array([b]))[0])
    return {"thresholds": thresholds, "s": s, "b": b, "significance": z}


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
    } | _significance_metrics(sc, k)


def _significance_metrics(sc: HeldOutScores, k: int) -> dict:
    """Return the held-out significance scan and its headline numbers (metrics.json keys)."""
    scan = significance_scan(sc.test, sc.y == 1, sc.w_phys)
    return {
        "significance": scan,
        "max_significance": scan["max_significance"],
        "max_significance_unc": scan["max_significance_unc"],
        "max_significance_s_sqrt_b": scan["max_significance_s_sqrt_b"],
        "best_threshold": scan["best_threshold"],
        "significance_cv_threshold": cv_threshold_significance(sc, k),
    }


def reference_regions(analysis: Analysis, features_dir: str | Path) -> dict[str, dict]:
    """Return the significance of each of the analysis' reference categories on the exported events.

    The categories are recomputed with ``categories.assign`` from the exported feature columns,
    on the same (simulated) events the classifiers are evaluated on.
    """
    names = analysis.scoring.reference_categories
    if not names:
        return {}
    columns = tuple(sorted({n for spec in analysis.features.values() for n in spec.names}))
    frame = load_features(features_dir, columns)
    try:
        masks = analysis.categories.assign(ak.Array({c: frame[c].to_numpy() for c in columns}))
        regions = {name: np.asarray(masks[name], bool) for name in names}
    except (AttributeError, KeyError, IndexError, ValueError, TypeError) as err:
        raise ConfigurationError(
            f"analysis {analysis.name!r}: scoring.reference_categories {list(names)}: categories.assign "
            f"does not run on the exported feature columns {list(columns)} ({type(err).__name__}: {err}); "
            "add the columns it needs to a feature set"
        ) from None
    y, w = frame["label"].to_numpy(), frame["weight"].to_numpy(np.float64)
    return {name: region_significance(mask, y == 1, w) for name, mask in regions.items()}


def _model_inputs(analysis: Analysis, scorer: OnnxScorer, features_dir: str | Path) -> HeldOutScores:
    spec = analysis.feature_spec(scorer.feature_set)
    frame = load_features(features_dir, spec.names)
    x = frame[list(spec.names)].to_numpy(np.float32)
    y = frame["label"].to_numpy(int)
    w_phys = frame["weight"].to_numpy(np.float64)
    policy = scorer.card.training_data.get("negative_weights", "zero")
    w_bal = training_weights(w_phys, y, policy)
    event, dataset = frame["event"].to_numpy(np.int64), frame["dataset"].to_numpy()
    return held_out_scores(scorer, x, y, event, w_phys, w_bal, dataset)


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
    summary["working_point"] = analysis.scoring.working_point
    regions = reference_regions(analysis, features_dir)
    if regions:
        summary["reference_regions"] = regions
    for name, region in regions.items():
        key = name.replace("-", "_")
        summary[f"{key}_significance"] = region["significance"]
        summary[f"{key}_significance_unc"] = region["significance_unc"]
        summary[f"{key}_significance_s_sqrt_b"] = region["significance_s_sqrt_b"]
    processes = _process_labels(features_dir)
    curves = {}
    for scorer in load_scorers(models_dir, analysis):
        scores = _model_inputs(analysis, scorer, features_dir)
        m = model_metrics(scores, scorer.k, threshold)
        summary["models"][scorer.name] = m
        curves[scorer.name] = scores
        _plot_model(analysis, scorer, m, scores, out, is_toy)
        _plot_significance(analysis, scorer, m, scores, (regions, processes), out, is_toy)
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


def working_points(path: str | Path, kind: str | None = None) -> dict[str, float]:
    """Return {model: working point} from an evaluation's metrics.json.

    ``kind``: ``ams`` (the AMS scan's maximum) or ``significance`` (the Asimov significance
    scan's best threshold); None: ``significance`` for an analysis whose working point it is
    (recorded in the file), else ``ams``.
    """
    try:
        metrics = read_metrics(path)
        models = metrics["models"].items()
        if (kind or metrics.get("working_point")) == "significance":
            return {name: float(m["best_threshold"]) for name, m in models}
        return {name: float(m["ams"]["working_point"]) for name, m in models}
    except (KeyError, TypeError) as err:
        raise ConfigurationError(f"{path}: a model lacks its {kind} working point ({err})") from None


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


def _z(value: float | None, unc: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if unc is None else f"{value:.2f} ± {unc:.2f}"


def significance_table(summary: dict) -> str:
    """Return a plain-text table of held-out significances per model and of the reference regions."""
    header = (
        f"{'selection':<12s} {'Z_A (Asimov)':>14s} {'s/sqrt(b+1e-3)':>15s} {'threshold':>9s} "
        f"{'s':>8s} {'b':>9s} {'Z_A, CV threshold':>18s}"
    )
    lines = [header]
    for name, m in summary["models"].items():
        scan, cv = m["significance"], m["significance_cv_threshold"]
        s, b = scan["s_at_best"], scan["b_at_best"]
        lines.append(
            f"{name:<12s} {_z(m['max_significance'], m['max_significance_unc']):>14s} "
            f"{_z(m['max_significance_s_sqrt_b']):>15s} {_z(m['best_threshold']):>9s} "
            f"{_z(s):>8s} {_z(b):>9s} {_z(cv['significance']):>18s}"
        )
    for name, r in summary.get("reference_regions", {}).items():
        lines.append(
            f"{name:<12s} {_z(r['significance'], r['significance_unc']):>14s} "
            f"{_z(r['significance_s_sqrt_b']):>15s} {'-':>9s} {_z(r['s']):>8s} {_z(r['b']):>9s} {'-':>18s}"
        )
    lines.append(
        "held-out scores (each event scored by the fold model that did not see it); ± = MC statistics; "
        "CV threshold: each fold cut where the other folds are best"
    )
    return "\n".join(lines)


def _process_labels(features_dir: str | Path) -> dict[str, str]:
    """Return {dataset: process label} from the run that exported the features (if recorded)."""
    run_dir = Path(features_dir).parent
    if not (run_dir / "run.json").is_file():
        return {}
    meta = RunRecord.read(run_dir).datasets_meta
    return {ds: m.get("process", ds) for ds, m in meta.items()}


def _plot_significance(
    analysis: Analysis,
    scorer: OnnxScorer,
    m: dict,
    sc: HeldOutScores,
    context: tuple,
    out: Path,
    is_toy: bool,
) -> None:
    """Write the significance-scan plot: held-out score distributions per process over the scan."""
    regions, processes = context
    plt = use_style(analysis)
    datasets = sc.dataset if sc.dataset is not None else np.where(sc.y == 1, "signal", "background")
    fig = draw_significance_scan(
        plt,
        sc.test,
        np.array([processes.get(d, d) for d in datasets]),
        sc.y == 1,
        sc.w_phys,
        m["significance"],
        {name: (r["significance"], r["significance_unc"]) for name, r in regions.items()},
        f"{scorer.name} score (held-out)",
    )
    experiment_label(fig.axes[0], analysis, is_toy)
    fig.savefig(out / f"significance_{scorer.name}.png", dpi=90, bbox_inches="tight")
    plt.close(fig)


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
    """Training and held-out score distributions per class, weighted with the training weights."""
    y, test, train_rows, train = sc.y, sc.test, sc.train_rows, sc.train
    w_train = sc.w_bal[train_rows]
    bins = np.linspace(0, 1, 31)
    centres = 0.5 * (bins[1:] + bins[:-1])
    fig, ax = plt.subplots(figsize=(9, 8))
    for cls, c, colour in (("signal", 1, "tab:red"), ("background", 0, "tab:blue")):
        rows = y[train_rows] == c
        ax.hist(
            train[rows],
            bins=bins,
            weights=w_train[rows],
            density=True,
            alpha=0.35,
            color=colour,
            label=f"{cls} train",
        )
        counts, _ = np.histogram(test[y == c], bins=bins, weights=sc.w_bal[y == c])
        sumw2, _ = np.histogram(test[y == c], bins=bins, weights=np.square(sc.w_bal[y == c]))
        norm = counts.sum() * np.diff(bins)
        ax.errorbar(
            centres,
            counts / norm,
            yerr=np.sqrt(sumw2) / norm,
            fmt="o",
            color=colour,
            label=f"{cls} test (KS p = {m['ks_pvalue'][cls]:.3f})",
        )
    ax.axvline(m["at_threshold"]["threshold"], color="grey", ls=":")
    ax.set_yscale("log")
    ax.set_xlabel(f"{scorer.name} score")
    ax.set_ylabel("Normalised events (training weights)")
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
