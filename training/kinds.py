"""The registries of training choices, light to import.

The registries of training choices (model kinds, MLP activations, negative-weight policies),
light to import: the command line takes its choices from here without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: hidden-layer activations of the MLP (``training/mlp.py`` maps them to torch modules)
ACTIVATIONS = ("selu", "tanh", "relu")
#: what ``--negative-weights`` may do with negative event weights in the training
NEGATIVE_WEIGHT_POLICIES = ("zero", "keep", "abs")


@dataclass(frozen=True)
class ModelKind:
    """How to fit, predict natively and export one kind of classifier (imports on use)."""

    name: str
    description: str
    output: dict[str, Any]
    hyper: tuple[str, ...] = field(default=())  # hyperparameters the command line sets

    def fit(self, x, y, w, val, seed: int, progress: bool, hyper: dict) -> tuple[Any, dict]:
        """Return (fitted model, training history); ``val`` marks the validation rows."""
        if self.name == "mlp":
            from hepsieve.training.mlp import fit_mlp

            return fit_mlp(x, y, w, val, seed, progress=progress, **hyper)
        from hepsieve.training.trees import fit_trees

        fit = ~val  # the rows the MLP trains on, so that the kinds are comparable
        return fit_trees(x[fit], y[fit], w[fit], seed, self.name, **hyper), {}

    def predict(self, model, x: np.ndarray) -> np.ndarray:
        """Return the native P(signal)."""
        if self.name == "mlp":
            from hepsieve.training.mlp import predict_mlp

            return predict_mlp(model, x)
        from hepsieve.training.trees import predict_trees

        return predict_trees(model, x)

    def to_onnx(self, model, n_features: int) -> bytes:
        """Return the ONNX export (input ``features``, float32)."""
        if self.name == "mlp":
            from hepsieve.training.mlp import mlp_to_onnx

            return mlp_to_onnx(model, n_features)
        from hepsieve.training.trees import trees_to_onnx

        return trees_to_onnx(model, n_features)


PROBABILITIES = {"name": "probabilities", "column": 1, "meaning": "P(signal)"}
MODEL_KINDS: dict[str, ModelKind] = {
    "mlp": ModelKind(
        "mlp",
        "PyTorch MLP: Standardize, hidden layers (SELU, tanh or ReLU) + dropout, "
        "sigmoid output; weighted BCE, Adam, early stopping on validation loss",
        {"name": "p_signal", "column": 0, "meaning": "P(signal)"},
        ("epochs", "hidden", "activation"),
    ),
    "rf": ModelKind("rf", "scikit-learn RandomForestClassifier (300 trees, depth 5)", PROBABILITIES),
    "hgb": ModelKind("hgb", "scikit-learn HistGradientBoostingClassifier (200 iterations)", PROBABILITIES),
    "ada": ModelKind("ada", "scikit-learn AdaBoostClassifier (200 decision stumps)", PROBABILITIES),
}
