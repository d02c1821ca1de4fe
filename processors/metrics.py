"""The one metrics kernel: binned cumulative yields and the metrics made of them.

The one metrics kernel: binned cumulative yields -> ROC/AUC, AMS, s/√(b+b_reg), Asimov Z,
purity × efficiency, all O(N) (one pass to bin the scores, then sums over the bins).

Per-event scores (``hepsieve evaluate``) and filled score histograms (``hepsieve run``) go
through the same :class:`CumulativeYields`, so their numbers agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import hist
import numpy as np

from hepsieve.processors.analysis import nominal

#: thresholds of the working-point scans (AMS, significance, purity x efficiency)
SCAN_THRESHOLDS = np.linspace(0.0, 1.0, 101)
#: bins of per-event scores for ROC curves and AUCs (binning error well below 1e-4)
ROC_BINS = 10_000
AMS_B_REG = 1e-3


def ams(s: np.ndarray, b: np.ndarray, b_reg: float = AMS_B_REG) -> np.ndarray:
    """Approximate median significance sqrt(2((s+b+b_reg) ln(1 + s/(b+b_reg)) - s))."""
    b = np.clip(b, 0, None) + b_reg  # signed weights can leave a slightly negative b
    s = np.clip(s, 0, None)
    return np.sqrt(np.clip(2 * ((s + b) * np.log1p(s / b) - s), 0, None))


def asimov_significance(s: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Asimov discovery significance Z_A = sqrt(2((s+b) ln(1+s/b) - s)); 0 where b <= 0."""
    s, b = np.clip(np.asarray(s, float), 0, None), np.asarray(b, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.sqrt(np.clip(2 * ((s + b) * np.log1p(s / b) - s), 0, None))
    return np.where(b > 0, z, 0.0)


def s_over_sqrt_b(s: np.ndarray, b: np.ndarray, b_reg: float = AMS_B_REG) -> np.ndarray:
    """Return s / sqrt(b + b_reg) (the DM notebook's significance), b clipped at 0."""
    return np.asarray(s, float) / np.sqrt(np.clip(b, 0, None) + b_reg)


@dataclass(frozen=True)
class CumulativeYields:
    """Signal and background yields above each score threshold, and their totals.

    Signal and background yields with a score above each threshold (``score > t``), and
    the yields of all events (for efficiencies and the ROC end point).
    """

    thresholds: np.ndarray
    signal: np.ndarray
    background: np.ndarray
    total_signal: float
    total_background: float

    @classmethod
    def from_counts(
        cls, signal_counts: np.ndarray, background_counts: np.ndarray, thresholds: np.ndarray | None = None
    ) -> CumulativeYields:
        """Return the yields of per-bin contents in increasing score.

        Yields from per-bin contents in increasing score: bin ``i`` lies between thresholds
        ``i-1`` and ``i``, with one bin below the first threshold and one above the last
        (``len(thresholds) + 1`` bins; e.g. a histogram with its flow bins). Without
        ``thresholds``, the inner bin boundaries are numbered 0, 1, ...
        """
        s = np.cumsum(np.asarray(signal_counts, float)[::-1])[::-1]
        b = np.cumsum(np.asarray(background_counts, float)[::-1])[::-1]
        if thresholds is None:
            thresholds = np.arange(len(s) - 1, dtype=float)
        return cls(np.asarray(thresholds, float), s[1:], b[1:], float(s[0]), float(b[0]))

    @classmethod
    def from_scores(
        cls,
        score: np.ndarray,
        is_signal: np.ndarray,
        weight: np.ndarray,
        thresholds: np.ndarray = SCAN_THRESHOLDS,
    ) -> CumulativeYields:
        """Return the yields of per-event scores (O(N): one binning pass).

        Yields of per-event scores: one binning pass (bins closed on the right, so the
        yields are exactly those with ``score > t``), then sums over the bins.
        """
        thresholds = np.asarray(thresholds, float)
        idx = np.searchsorted(thresholds, np.asarray(score, np.float64), side="left")
        sig = np.asarray(is_signal, bool)
        w = np.asarray(weight, float)
        n = len(thresholds) + 1
        return cls.from_counts(
            np.bincount(idx[sig], w[sig], minlength=n),
            np.bincount(idx[~sig], w[~sig], minlength=n),
            thresholds,
        )

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """Return (background efficiency, signal efficiency) with the end points.

        Return (background efficiency, signal efficiency) from the highest threshold down,
        with the end points (0, 0) and (1, 1).
        """
        fpr = np.concatenate([[0.0], self.background[::-1] / self.total_background, [1.0]])
        tpr = np.concatenate([[0.0], self.signal[::-1] / self.total_signal, [1.0]])
        return fpr, tpr

    def auc(self) -> float:
        """Return the area under the ROC curve (events tied within a bin count as half)."""
        fpr, tpr = self.roc()
        return float(np.trapezoid(tpr, fpr))

    def efficiency(self) -> np.ndarray:
        """Return the signal efficiency S(> t) / S(all) per threshold."""
        return self.signal / self.total_signal

    def purity(self) -> np.ndarray:
        """Return the purity S / (S + B) above each threshold (0 where nothing passes)."""
        total = self.signal + self.background
        return np.divide(self.signal, total, out=np.zeros_like(total), where=total > 0)


def roc_from_counts(signal: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Return (background efficiency, signal efficiency, AUC) from per-bin score contents.

    Return (background efficiency, signal efficiency, AUC) from per-bin score contents,
    events within one bin counting as tied (half), as in an unbinned ROC with ties.
    """
    cy = CumulativeYields.from_counts(signal, background)
    fpr, tpr = cy.roc()
    return fpr, tpr, cy.auc()


def auc_from_histograms(
    histograms: dict[str, hist.Hist], signal: str = "signal", background: str = "background"
) -> dict[str, dict[str, float]]:
    """Return ``{model: {dataset: AUC}}`` from every ``score_<model>`` histogram (flow bins included)."""
    out: dict[str, dict[str, float]] = {}
    for name, h in histograms.items():
        if not name.startswith("score_"):
            continue
        for dataset in h.axes["dataset"]:
            one = nominal(h)
            s = one[{"dataset": dataset, "category": signal}].values(flow=True)
            b = one[{"dataset": dataset, "category": background}].values(flow=True)
            if s.sum() > 0 and b.sum() > 0:
                out.setdefault(name.removeprefix("score_"), {})[dataset] = roc_from_counts(s, b)[2]
    return out
