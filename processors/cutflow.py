"""Event accounting: (n_events, sum of weights) after each selection step, per dataset."""

from __future__ import annotations

import numpy as np


class Cutflow:
    """Ordered cutflow of one chunk; steps add up across chunks as coffea accumulators.

    The output is ``{"cutflow": {dataset: {step: {"n": int, "sumw": float, "sumw2": float}}}}``,
    nested dicts of numbers that coffea's ``accumulate`` adds key by key.
    """

    def __init__(self, dataset: str, weights: np.ndarray):
        self.dataset = dataset
        self.weights = np.asarray(weights, dtype=np.float64)
        self.steps: dict[str, dict[str, float]] = {}
        self._squares: tuple[np.ndarray, np.ndarray] | None = None  # (weights, their squares)
        self.add("input", np.ones(len(self.weights), dtype=bool))

    def _with_squares(self, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Return the weights and their squares, squared once per weight array (steps share it)."""
        w = self.weights if weights is None else np.asarray(weights, np.float64)
        if self._squares is None or self._squares[0] is not w:
            self._squares = (w, np.square(w))
        return self._squares

    def add(self, step: str, mask: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Record the events passing ``mask`` (over this chunk's events, or over ``weights``)."""
        w, w2 = self._with_squares(weights)
        n = int(np.count_nonzero(mask))
        if n != len(w):  # weights (finite, as the processor checks) times the mask: no copy, no branch
            w, w2 = w * mask, w2 * mask
        self.steps[step] = {"n": n, "sumw": float(w.sum()), "sumw2": float(w2.sum())}

    def as_output(self) -> dict:
        """Return the accumulator form ``{"cutflow": {dataset: steps}}``."""
        return {"cutflow": {self.dataset: self.steps}}


def cutflow_table(cutflow: dict[str, dict[str, dict[str, float]]]) -> str:
    """Return a plain-text table of a merged cutflow, one block per dataset."""
    lines = []
    for dataset, steps in cutflow.items():
        n0 = steps["input"]["n"] or 1
        lines.append(f"{dataset}")
        for step, v in steps.items():
            lines.append(f"  {step:<34s} {v['n']:>12d} {100 * v['n'] / n0:7.2f}%  sumw={v['sumw']:.6g}")
    return "\n".join(lines)
