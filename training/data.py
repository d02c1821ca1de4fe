"""Training inputs: the exported feature Parquet, k-fold splits by event number, class weights."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from hepsieve.processors.errors import ConfigurationError, InputFileError
from hepsieve.training.kinds import NEGATIVE_WEIGHT_POLICIES

log = logging.getLogger(__name__)


def load_features(features_dir: str | Path, feature_names: tuple[str, ...]) -> pd.DataFrame:
    """Return the simulated rows (label 0/1) of a feature export, with the needed columns."""
    path = Path(features_dir)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else []
    if not files:
        raise InputFileError(
            f"no feature Parquet files under {path}; export them with "
            "`hepsieve run <analysis> --mode features --out DIR` and pass DIR/features"
        )
    dataset = pads.dataset([str(f) for f in files], format="parquet")
    needed = [*feature_names, "weight", "label", "event", "dataset"]
    missing = [c for c in needed if c not in dataset.schema.names]
    if missing:
        raise InputFileError(f"feature files under {path} lack column(s) {missing}")
    frame = dataset.to_table(columns=needed).to_pandas()
    frame = frame[frame["label"] >= 0].reset_index(drop=True)
    for label, what in ((1, "signal"), (0, "background")):
        if not (frame["label"] == label).any():
            raise InputFileError(f"feature files under {path} hold no {what} events")
    return frame


def fold_masks(event: np.ndarray, k: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, apply) masks: model ``fold`` trains on ``event % k != fold``."""
    in_fold = np.asarray(event) % k == fold
    return ~in_fold, in_fold


def training_weights(weight: np.ndarray, label: np.ndarray, negative: str = "zero") -> np.ndarray:
    """Return per-class normalised weights (each class sums to half the rows, mean 1).

    Negative weights follow ``negative``: ``zero`` drops them from the training (their
    number and weight are logged), ``keep`` keeps the sign, ``abs`` flips it.
    """
    if negative not in NEGATIVE_WEIGHT_POLICIES:
        raise ConfigurationError(
            f"--negative-weights {negative!r}: choose one of {', '.join(NEGATIVE_WEIGHT_POLICIES)}"
        )
    w = np.asarray(weight, dtype=np.float64).copy()
    neg = w < 0
    if neg.any():
        log.info(
            "%d events (%.2f %% of |weight|) carry negative weights: policy %r",
            neg.sum(),
            100 * np.abs(w[neg]).sum() / np.abs(w).sum(),
            negative,
        )
        w = np.where(neg, 0.0, w) if negative == "zero" else np.abs(w) if negative == "abs" else w
    for cls in (0, 1):
        rows = label == cls
        total = w[rows].sum()
        if total <= 0:
            raise ConfigurationError(f"class {cls} has non-positive total training weight")
        w[rows] *= 0.5 * len(w) / total
    return w


def validation_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """Return a seeded random mask selecting ``fraction`` of ``n`` rows for validation."""
    rng = np.random.default_rng(seed)
    return rng.random(n) < fraction
