"""Classifier metrics from filled histograms: they scale to any number of events."""

from __future__ import annotations

import hist
import numpy as np


def roc_from_counts(signal: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Return (background efficiency, signal efficiency, AUC) from per-bin score contents.

    Efficiencies are cumulated from the highest-score bin down; the AUC is the trapezoid
    area, i.e. events within one bin count as tied (half), as in an unbinned ROC with ties.
    """
    s = np.concatenate([[0.0], np.cumsum(np.asarray(signal, float)[::-1])])
    b = np.concatenate([[0.0], np.cumsum(np.asarray(background, float)[::-1])])
    tpr, fpr = s / s[-1], b / b[-1]
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def auc_from_histograms(histograms: dict[str, hist.Hist], signal: str = "signal",
                        background: str = "background") -> dict[str, dict[str, float]]:
    """Return ``{model: {dataset: AUC}}`` from every ``score_<model>`` histogram (flow bins included)."""
    out: dict[str, dict[str, float]] = {}
    for name, h in histograms.items():
        if not name.startswith("score_"):
            continue
        for dataset in h.axes["dataset"]:
            s = h[{"dataset": dataset, "category": signal}].values(flow=True)
            b = h[{"dataset": dataset, "category": background}].values(flow=True)
            if s.sum() > 0 and b.sum() > 0:
                out.setdefault(name.removeprefix("score_"), {})[dataset] = roc_from_counts(s, b)[2]
    return out
