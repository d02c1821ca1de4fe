"""Train k-fold classifiers on exported features, export ONNX, verify it, write the model card."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hepsieve.models.cards import Fold, ModelCard, ModelOutput, sha256_bytes
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.analysis import Analysis, FeatureSpec
from hepsieve.processors.errors import ConfigurationError, HepsieveError
from hepsieve.processors.provenance import versions
from hepsieve.training.data import fold_masks, load_features, training_weights, validation_mask
from hepsieve.training.evaluate import weighted_auc
from hepsieve.training.kinds import MODEL_KINDS, ModelKind

log = logging.getLogger(__name__)
ONNX_TOLERANCE = 1e-4


def verify_onnx(onnx_bytes: bytes, x: np.ndarray, native: np.ndarray, output: dict) -> float:
    """Return max |ONNX - native| on ``x``; raise if it exceeds ``ONNX_TOLERANCE``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = sess.run([output["name"]], {"features": np.ascontiguousarray(x, dtype=np.float32)})[0]
    onnx_scores = out[:, output["column"]]
    diff = float(np.max(np.abs(onnx_scores - native))) if len(x) else 0.0
    if not diff < ONNX_TOLERANCE:
        raise HepsieveError(
            f"ONNX export disagrees with the native model: max |Δ| = {diff:.2e} "
            f"≥ {ONNX_TOLERANCE}; nothing was written"
        )
    return diff


def _training_frame(
    analysis: Analysis, features_dir: str | Path, spec: FeatureSpec, max_events: int | None
) -> pd.DataFrame:
    """Return the exported events a model trains on.

    Return the exported events a model trains on: held-out datasets removed, at most
    ``max_events`` (default: the analysis' training policy).
    """
    frame = load_features(features_dir, spec.names)
    held_out = list(analysis.training.holdout_datasets)
    frame = frame[~frame["dataset"].isin(held_out)].reset_index(drop=True)
    max_events = max_events or analysis.training.max_events
    return frame.iloc[:max_events] if max_events is not None else frame


@dataclass(frozen=True)
class TrainOptions:
    """The options of one training (see :func:`train`)."""

    feature_set: str
    name: str
    k: int
    seed: int
    negative_weights: str
    validation_fraction: float
    progress: bool
    hyper: dict[str, Any]
    max_events: int | None


def _train_fold(kind: ModelKind, fold: int, data: dict, opts: TrainOptions, out: Path) -> Fold:
    """Train fold model ``fold`` (events with ``event % k != fold``), export and verify it."""
    x, y, w, event, k = data["x"], data["y"], data["w"], data["event"], opts.k
    train_rows, apply_rows = fold_masks(event, k, fold)
    xt, yt, wt = x[train_rows], y[train_rows], w[train_rows]
    val = validation_mask(len(xt), opts.validation_fraction, opts.seed + fold)
    log.info(
        "%s fold %d: training on %d events (event %% %d != %d), applying to %d",
        opts.name,
        fold,
        len(xt),
        k,
        fold,
        int(apply_rows.sum()),
    )
    model, history = kind.fit(xt, yt, wt, val, opts.seed + fold, opts.progress, opts.hyper)
    onnx_bytes = kind.to_onnx(model, x.shape[1])
    native_apply, native_train = kind.predict(model, x[apply_rows]), kind.predict(model, xt)
    max_diff = verify_onnx(
        onnx_bytes,
        np.concatenate([x[apply_rows], xt]),
        np.concatenate([native_apply, native_train]),
        kind.output,
    )
    fname = f"{opts.name}_fold{fold}.onnx"
    (out / fname).write_bytes(onnx_bytes)
    metrics = {
        "auc_train": weighted_auc(yt, native_train, wt),
        "auc_test": weighted_auc(y[apply_rows], native_apply, w[apply_rows]),
        "onnx_max_abs_diff": max_diff,
    }
    return Fold(
        fold=fold,
        file=fname,
        sha256=sha256_bytes(onnx_bytes),
        trained_on=f"event % {k} != {fold}",
        applied_to=f"event % {k} == {fold}",
        n_train=int(train_rows.sum()),
        n_apply=int(apply_rows.sum()),
        metrics=metrics,
        history=history,
    )


def train(
    analysis_name: str | Analysis,
    features_dir: str | Path,
    kind: str,
    out_dir: str | Path,
    feature_set: str | None = None,
    name: str | None = None,
    k: int = 2,
    seed: int = 1,
    negative_weights: str = "zero",
    validation_fraction: float = 0.2,
    progress: bool = True,
    hyper: dict[str, Any] | None = None,
    max_events: int | None = None,
) -> Path:
    """Train ``k`` fold models of ``kind`` and return the path of the written card.

    Model ``i`` trains on events with ``event % k != i`` (a random ``validation_fraction``
    of them steers early stopping) and is reported on, and later applied to, the
    events with ``event % k == i``.
    """
    if kind not in MODEL_KINDS:
        raise ConfigurationError(f"--model {kind!r}: choose one of {', '.join(MODEL_KINDS)}")
    if k < 2:
        raise ConfigurationError("--folds must be at least 2")
    analysis = get_analysis(analysis_name)
    opts = TrainOptions(
        feature_set or analysis.default_features,
        name or kind,
        k,
        seed,
        negative_weights,
        validation_fraction,
        progress,
        dict(hyper or {}),
        max_events or analysis.training.max_events,
    )
    return _train(analysis, Path(features_dir), MODEL_KINDS[kind], Path(out_dir), opts)


def _train(analysis: Analysis, features_dir: Path, kind: ModelKind, out: Path, opts: TrainOptions) -> Path:
    spec = analysis.feature_spec(opts.feature_set)
    frame = _training_frame(analysis, features_dir, spec, opts.max_events)
    label = frame["label"].to_numpy()
    data = {
        "x": frame[list(spec.names)].to_numpy(np.float32),
        "y": label.astype(np.float32),
        "event": frame["event"].to_numpy(np.int64),
        "w": training_weights(frame["weight"].to_numpy(), label, opts.negative_weights),
    }
    out.mkdir(parents=True, exist_ok=True)
    folds = tuple(_train_fold(kind, fold, data, opts, out) for fold in range(opts.k))
    card = ModelCard(
        name=opts.name,
        analysis=analysis.name,
        feature_set=opts.feature_set,
        features=tuple(zip(spec.names, spec.units, strict=True)),
        output=ModelOutput(**kind.output),
        k=opts.k,
        folds=folds,
        kind=kind.name,
        description=kind.description,
        hyperparameters=opts.hyper,
        seed=opts.seed,
        training_data=_training_data(features_dir, frame, opts, analysis),
        reproduce=" ".join(["hepsieve", *sys.argv[1:]]) if sys.argv[0].endswith("hepsieve") else None,
        versions=versions(),
    )
    path = card.write(out / f"{opts.name}.json")
    log.info(
        "wrote %s (AUC test per fold: %s)", path, ", ".join(f"{f.metrics['auc_test']:.4f}" for f in folds)
    )
    return path


def _training_data(features_dir: Path, frame: pd.DataFrame, opts: TrainOptions, analysis: Analysis) -> dict:
    y = frame["label"].to_numpy()
    return {
        "features_dir": str(features_dir),
        "datasets": sorted(frame["dataset"].unique().tolist()),
        "n_signal": int((y == 1).sum()),
        "n_background": int((y == 0).sum()),
        "weights": "per-class normalised (each class sums to half the rows)",
        "negative_weights": opts.negative_weights,
        "validation_fraction": opts.validation_fraction,
        "max_events": opts.max_events,
        "held_out_datasets": list(analysis.training.holdout_datasets),
    }
