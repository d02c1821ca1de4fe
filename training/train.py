"""Train k-fold classifiers on exported features, export ONNX, verify it, write the model card."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from sklearn.metrics import roc_auc_score

from hepsieve.models.scorer import sha256_bytes
from hepsieve.processors.analysis import get_analysis
from hepsieve.processors.errors import ConfigurationError, HepsieveError
from hepsieve.processors.runner import versions
from hepsieve.training.data import fold_masks, load_features, training_weights, validation_mask

log = logging.getLogger(__name__)
ONNX_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ModelKind:
    """How to fit, predict natively and export one kind of classifier."""

    description: str
    output: dict

    def fit(self, x, y, w, val, seed, progress, hyper):  # noqa: D102
        raise NotImplementedError

    def predict(self, model, x) -> np.ndarray:  # noqa: D102
        raise NotImplementedError

    def to_onnx(self, model, n_features) -> bytes:  # noqa: D102
        raise NotImplementedError


class MlpKind(ModelKind):
    """PyTorch MLP (selu/tanh/relu, dropout, early stopping)."""

    def fit(self, x, y, w, val, seed, progress, hyper):
        from hepsieve.training.mlp import fit_mlp
        return fit_mlp(x, y, w, val, seed, progress=progress, **hyper)

    def predict(self, model, x):
        from hepsieve.training.mlp import predict_mlp
        return predict_mlp(model, x)

    def to_onnx(self, model, n_features):
        from hepsieve.training.mlp import mlp_to_onnx
        return mlp_to_onnx(model, n_features)


@dataclass(frozen=True)
class SklearnKind(ModelKind):
    """A scikit-learn tree ensemble (``rf``, ``hgb`` or ``ada``)."""

    sklearn_kind: str = "rf"

    def fit(self, x, y, w, val, seed, progress, hyper):
        from hepsieve.training.forest import fit_forest
        fit = ~val  # same rows as the MLP sees, so the two are comparable
        return fit_forest(x[fit], y[fit], w[fit], seed, self.sklearn_kind, **hyper), {}

    def predict(self, model, x):
        from hepsieve.training.forest import predict_forest
        return predict_forest(model, x)

    def to_onnx(self, model, n_features):
        from hepsieve.training.forest import forest_to_onnx
        return forest_to_onnx(model, n_features)


PROBABILITIES = {"name": "probabilities", "column": 1, "meaning": "P(signal)"}
MODEL_KINDS: dict[str, ModelKind] = {
    "mlp": MlpKind("PyTorch MLP: Standardize, hidden layers (SELU, tanh or ReLU) + dropout, sigmoid output; "
                   "weighted BCE, Adam, early stopping on validation loss",
                   {"name": "p_signal", "column": 0, "meaning": "P(signal)"}),
    "rf": SklearnKind("scikit-learn RandomForestClassifier (300 trees, depth 5)", PROBABILITIES, "rf"),
    "hgb": SklearnKind("scikit-learn HistGradientBoostingClassifier (200 iterations)",
                       PROBABILITIES, "hgb"),
    "ada": SklearnKind("scikit-learn AdaBoostClassifier (200 decision stumps)", PROBABILITIES, "ada"),
}


def verify_onnx(onnx_bytes: bytes, x: np.ndarray, native: np.ndarray, output: dict) -> float:
    """Return max |ONNX - native| on ``x``; raise if it exceeds ``ONNX_TOLERANCE``."""
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = sess.run([output["name"]], {"features": np.ascontiguousarray(x, dtype=np.float32)})[0]
    onnx_scores = out[:, output["column"]]
    diff = float(np.max(np.abs(onnx_scores - native))) if len(x) else 0.0
    if not diff < ONNX_TOLERANCE:
        raise HepsieveError(f"ONNX export disagrees with the native model: max |Δ| = {diff:.2e} "
                            f"≥ {ONNX_TOLERANCE}; nothing was written")
    return diff


def _weighted_auc(y, score, w) -> float:
    return float(roc_auc_score(y, score, sample_weight=w))


def train(analysis_name: str, features_dir: str | Path, kind: str, out_dir: str | Path,
          feature_set: str | None = None, name: str | None = None, k: int = 2, seed: int = 1,
          negative_weights: str = "zero", validation_fraction: float = 0.2,
          progress: bool = True, hyper: dict[str, Any] | None = None,
          max_events: int | None = None) -> Path:
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
    spec = analysis.feature_spec(feature_set)
    feature_set = feature_set or analysis.default_features
    model_kind, hyper = MODEL_KINDS[kind], dict(hyper or {})
    name = name or kind
    frame = load_features(features_dir, spec.names)
    held_out = list(analysis.meta.get("holdout_datasets", ()))
    frame = frame[~frame["dataset"].isin(held_out)].reset_index(drop=True)
    max_events = max_events or analysis.meta.get("train_max_events")
    if max_events is not None:
        frame = frame.iloc[:max_events]
    x = frame[list(spec.names)].to_numpy(np.float32)
    y = frame["label"].to_numpy(np.float32)
    event = frame["event"].to_numpy(np.int64)
    w = training_weights(frame["weight"].to_numpy(), frame["label"].to_numpy(), negative_weights)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    folds = []
    for fold in range(k):
        train_rows, apply_rows = fold_masks(event, k, fold)
        xt, yt, wt = x[train_rows], y[train_rows], w[train_rows]
        val = validation_mask(len(xt), validation_fraction, seed + fold)
        log.info("%s fold %d: training on %d events (event %% %d != %d), applying to %d",
                 name, fold, len(xt), k, fold, int(apply_rows.sum()))
        model, history = model_kind.fit(xt, yt, wt, val, seed + fold, progress, hyper)
        onnx_bytes = model_kind.to_onnx(model, len(spec.names))
        native_apply = model_kind.predict(model, x[apply_rows])
        native_train = model_kind.predict(model, xt)
        max_diff = verify_onnx(onnx_bytes, np.concatenate([x[apply_rows], xt]),
                               np.concatenate([native_apply, native_train]), model_kind.output)
        fname = f"{name}_fold{fold}.onnx"
        (out / fname).write_bytes(onnx_bytes)
        folds.append({
            "fold": fold, "file": fname, "sha256": sha256_bytes(onnx_bytes),
            "trained_on": f"event % {k} != {fold}", "applied_to": f"event % {k} == {fold}",
            "n_train": int(train_rows.sum()), "n_apply": int(apply_rows.sum()),
            "metrics": {"auc_train": _weighted_auc(yt, native_train, wt),
                        "auc_test": _weighted_auc(y[apply_rows], native_apply, w[apply_rows]),
                        "onnx_max_abs_diff": max_diff},
            "history": history,
        })
    card = {
        "name": name, "analysis": analysis.name, "kind": kind,
        "description": model_kind.description, "hyperparameters": hyper,
        "feature_set": feature_set,
        "features": [{"name": n, "unit": u} for n, u in
                     zip(spec.names, spec.units or ("",) * len(spec.names), strict=True)],
        "input": {"name": "features", "dtype": "float32", "shape": ["batch", len(spec.names)],
                  "preprocessing": "inside the ONNX graph (raw features in)"},
        "output": model_kind.output, "k": k, "folds": folds, "seed": seed,
        "training_data": {
            "features_dir": str(features_dir),
            "datasets": sorted(frame["dataset"].unique().tolist()),
            "n_signal": int((y == 1).sum()), "n_background": int((y == 0).sum()),
            "weights": "per-class normalised (each class sums to half the rows)",
            "negative_weights": negative_weights, "validation_fraction": validation_fraction,
            "max_events": max_events, "held_out_datasets": held_out,
        },
        "reproduce": " ".join(["hepsieve", *sys.argv[1:]]) if sys.argv[0].endswith("hepsieve") else None,
        "versions": versions(),
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(card, indent=1))
    log.info("wrote %s (AUC test per fold: %s)", path,
             ", ".join(f"{f['metrics']['auc_test']:.4f}" for f in folds))
    return path
