"""scikit-learn tree ensembles (RandomForest) exported through skl2onnx."""

from __future__ import annotations

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier


def fit_forest(x: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int, n_estimators: int = 300,
               max_depth: int = 5, n_jobs: int = -1) -> RandomForestClassifier:
    """Return a RandomForest fitted with per-event weights (trees need no input scaling)."""
    clf = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth,
                                 random_state=seed, n_jobs=n_jobs)
    return clf.fit(x, y, sample_weight=w)


def predict_forest(clf: RandomForestClassifier, x: np.ndarray) -> np.ndarray:
    """Return the native P(signal)."""
    return clf.predict_proba(np.asarray(x, dtype=np.float32))[:, 1]


def forest_to_onnx(clf: RandomForestClassifier, n_features: int) -> bytes:
    """Export to ONNX: input ``features`` (float32), output ``probabilities`` (column 1 = signal)."""
    onx = convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, n_features]))],
                          options={id(clf): {"zipmap": False}}, target_opset=17)
    onx.graph.name = "random_forest"  # skl2onnx picks a random UUID: keep exports reproducible
    return onx.SerializeToString()
