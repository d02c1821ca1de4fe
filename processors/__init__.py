"""Coffea processors, selections, the runner and the ``hepsieve`` command line."""

from hepsieve.processors.analysis import Analysis, FeatureSpec, HistogramSpec, get_analysis
from hepsieve.processors.cutflow import Cutflow
from hepsieve.processors.errors import (
    ConfigurationError,
    CutflowMismatchError,
    HepsieveError,
    HepsieveWarning,
    InputFileError,
    ModelCardError,
)

__all__ = [
    "Analysis", "ConfigurationError", "Cutflow", "CutflowMismatchError", "FeatureSpec",
    "HepsieveError", "HepsieveWarning", "HistogramSpec", "InputFileError", "ModelCardError",
    "get_analysis",
]
