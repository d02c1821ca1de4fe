"""scikit-learn tree ensembles (RandomForest, HistGradientBoosting, AdaBoost) via skl2onnx."""

from __future__ import annotations

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import ClassifierMixin
from sklearn.ensemble import AdaBoostClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier


def make_classifier(kind: str, seed: int, **hyper) -> ClassifierMixin:
    """Return an unfitted classifier: ``rf`` (300 trees, depth 5), ``hgb`` or ``ada`` (200 stumps)."""
    if kind == "rf":
        return RandomForestClassifier(
            **({"n_estimators": 300, "max_depth": 5, "n_jobs": -1} | hyper), random_state=seed
        )
    if kind == "hgb":
        return HistGradientBoostingClassifier(
            **({"max_iter": 200, "early_stopping": False} | hyper), random_state=seed
        )
    if kind == "ada":
        stump = DecisionTreeClassifier(max_depth=1)
        return AdaBoostClassifier(stump, **({"n_estimators": 200} | hyper), random_state=seed)
    raise ValueError(f"unknown tree kind {kind!r}; choose rf, hgb or ada")


def fit_trees(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int, kind: str = "rf", **hyper
) -> ClassifierMixin:
    """Return the classifier fitted with per-event weights (trees need no input scaling)."""
    clf = make_classifier(kind, seed, **hyper).fit(x, y, sample_weight=w)
    if isinstance(clf, HistGradientBoostingClassifier):
        _float32_thresholds(clf)
    return clf


def _float32_thresholds(clf: HistGradientBoostingClassifier) -> None:
    """Round split thresholds down to float32 values, in place.

    The trees compare float32 inputs with float64 thresholds; ONNX stores float32 ones, so
    an input between the two roundings would take another branch. With no float32 value in
    (round_down(t), t], ``x <= t`` and ``x <= round_down(t)`` agree for every float32 ``x``:
    the native predictions do not change and the ONNX export matches them exactly.
    """
    for trees in clf._predictors:
        for tree in trees:
            t = tree.nodes["num_threshold"]
            t32 = t.astype(np.float32)
            t32 = np.where(t32.astype(np.float64) > t, np.nextafter(t32, np.float32(-np.inf)), t32)
            tree.nodes["num_threshold"] = t32.astype(np.float64)


def predict_trees(clf: ClassifierMixin, x: np.ndarray) -> np.ndarray:
    """Return the native P(signal)."""
    return clf.predict_proba(np.asarray(x, dtype=np.float32))[:, 1]


def _coerce_missing_value_flags() -> None:
    """Work around skl2onnx 1.20 on HistGradientBoosting missing-value flags.

    Leaves get a Python ``bool`` in the ``nodes_missing_value_tracks_true`` ints attribute,
    which onnx refuses; pass ints instead.
    """
    import skl2onnx.common.tree_ensemble as tree_ensemble

    original = tree_ensemble.add_node
    if getattr(original, "coerces_missing_flags", False):
        return

    def add_node(*args, nodes_missing_value_tracks_true=0, **kwargs):
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    add_node.coerces_missing_flags = True  # type: ignore[attr-defined]
    tree_ensemble.add_node = add_node


def trees_to_onnx(clf: ClassifierMixin, n_features: int) -> bytes:
    """Export to ONNX: input ``features`` (float32), output ``probabilities`` (column 1 = signal)."""
    if isinstance(clf, HistGradientBoostingClassifier):
        _coerce_missing_value_flags()
    onx = convert_sklearn(
        clf,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options={id(clf): {"zipmap": False}},
        target_opset=17,
    )
    onx.graph.name = type(clf).__name__  # skl2onnx picks a random UUID: keep exports reproducible
    return onx.SerializeToString()
