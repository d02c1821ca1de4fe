"""Training inputs: the exported feature Parquet, k-fold splits by event number, class weights."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from hepsieve.processors.errors import ConfigurationError, InputFileError
from hepsieve.processors.provenance import RunRecord
from hepsieve.training.kinds import NEGATIVE_WEIGHT_POLICIES

log = logging.getLogger(__name__)


def feature_files(features_dir: str | Path) -> list[Path]:
    """Return the feature files a ``--mode features`` run lists in its manifest (run.json).

    ``features_dir`` is the run's output directory or its ``features/``. Each file must hold
    the events the manifest says; Parquet files the manifest does not list are ignored (and
    named), so an export is read exactly once whatever else lies in the directory.
    """
    path = Path(features_dir)
    run_dir = path if (path / "run.json").is_file() else path.parent
    if not (run_dir / "run.json").is_file():
        raise InputFileError(
            f"{path}: no run.json manifest next to it; pass the --out directory (or its "
            "features/) of `hepsieve run <analysis> --mode features`"
        )
    manifest = RunRecord.read(run_dir).feature_files
    if not manifest:
        raise InputFileError(f"{run_dir}: not a --mode features run (its run.json lists no feature files)")
    files = []
    for entries in manifest.values():
        for entry in entries:
            file = run_dir / entry["file"]
            rows = pq.ParquetFile(file).metadata.num_rows if file.is_file() else None
            if rows != entry["events"]:
                raise InputFileError(
                    f"{file}: the manifest of {run_dir} lists {entry['events']} events, "
                    f"the file {'is missing' if rows is None else f'holds {rows}'}"
                )
            files.append(file)
    extra = sorted(set((run_dir / "features").rglob("*.parquet")) - set(files))
    if extra:
        log.warning(
            "%d Parquet file(s) under %s are not in the run's manifest: ignored (e.g. %s)",
            len(extra),
            run_dir / "features",
            extra[0],
        )
    return files


def load_features(features_dir: str | Path, feature_names: tuple[str, ...]) -> pd.DataFrame:
    """Return the simulated rows (label 0/1) of a feature export, with the needed columns."""
    path = Path(features_dir)
    files = feature_files(path)
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
