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
        self.add("input", np.ones(len(self.weights), dtype=bool))

    def add(self, step: str, mask: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Record the events passing ``mask`` (over this chunk's events, or over ``weights``)."""
        w = (self.weights if weights is None else np.asarray(weights, np.float64))[mask]
        self.steps[step] = {
            "n": int(np.count_nonzero(mask)),
            "sumw": float(w.sum()),
            "sumw2": float(np.square(w).sum()),
        }

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
