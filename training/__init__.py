"""Training scripts (PyTorch, scikit-learn) -> ONNX + model cards, and evaluation metrics."""
