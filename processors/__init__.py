"""Coffea processors, the Analysis definition, the runner and the ``hepsieve`` command line.

The Python API::

    from hepsieve.processors import RunConfig, run
    result = run(RunConfig("cms-hzz4l", "toys/cms", executor="iterative"))

``run``/``RunConfig`` (and the coffea machinery behind them) are imported on first use, so
``import hepsieve.processors`` stays fast.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from hepsieve.processors.analysis import (
    Analysis,
    Categories,
    FeatureSpec,
    FileSum,
    HistogramSpec,
    Inputs,
    Scoring,
    Step,
    Style,
    TextBaseline,
    Tools,
    TrainingPolicy,
    Weights,
    branch_types,
    histogram,
    regular_axis,
)
from hepsieve.processors.cutflow import Cutflow
from hepsieve.processors.errors import (
    ChunkError,
    ChunkReadError,
    ConfigurationError,
    CutflowMismatchError,
    DataValueError,
    HepsieveError,
    HepsieveWarning,
    InputFileError,
    ModelCardError,
)

try:
    __version__ = metadata.version("hepsieve")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

_LAZY = {"run": "runner", "RunConfig": "runner", "RunResult": "runner", "get_analysis": "analyses"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"hepsieve.processors.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'hepsieve.processors' has no attribute {name!r}")


__all__ = [
    "Analysis",
    "Categories",
    "ChunkError",
    "ChunkReadError",
    "ConfigurationError",
    "Cutflow",
    "CutflowMismatchError",
    "DataValueError",
    "FeatureSpec",
    "FileSum",
    "HepsieveError",
    "HepsieveWarning",
    "HistogramSpec",
    "InputFileError",
    "Inputs",
    "ModelCardError",
    "RunConfig",
    "RunResult",
    "Scoring",
    "Step",
    "Style",
    "TextBaseline",
    "Tools",
    "TrainingPolicy",
    "Weights",
    "__version__",
    "branch_types",
    "get_analysis",
    "histogram",
    "regular_axis",
    "run",
]
