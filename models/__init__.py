"""Shipped ONNX models with their cards, the card schema and the ONNX scorer."""

from hepsieve.models.cards import Fold, ModelCard, ModelOutput
from hepsieve.models.scorer import OnnxScorer, default_models_dir, load_scorers

__all__ = ["Fold", "ModelCard", "ModelOutput", "OnnxScorer", "default_models_dir", "load_scorers"]
