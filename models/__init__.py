"""Shipped ONNX models with their cards, and the ONNX scorer used by the processors."""

from hepsieve.models.scorer import ModelCard, OnnxScorer, default_models_dir, load_scorers

__all__ = ["ModelCard", "OnnxScorer", "default_models_dir", "load_scorers"]
