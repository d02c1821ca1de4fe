"""The Analysis definition that ties one physics case together, and the analysis registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import awkward as ak
import hist
import numpy as np

from hepsieve.processors.errors import ConfigurationError

#: analysis name -> "module:attribute" of its Analysis object (imported on demand)
ANALYSES: dict[str, str] = {
    "cms-hzz4l": "hepsieve.processors.hzz4l_cms:ANALYSIS",
    "atlas-hzz4l": "hepsieve.processors.hzz4l_atlas:ANALYSIS",
    "higgs-uci": "hepsieve.processors.higgs_uci:ANALYSIS",
}


@dataclass(frozen=True)
class FeatureSpec:
    """Ordered model inputs and how to compute them from a selected chunk."""

    names: tuple[str, ...]
    compute: Callable[[ak.Array], Mapping[str, ak.Array]]
    units: tuple[str, ...] = ()

    def columns(self, events: ak.Array) -> dict[str, np.ndarray]:
        """Return each feature as a numpy array (its own dtype, no copy), in ``names`` order."""
        cols = self.compute(events)
        return {n: ak.to_numpy(cols[n]) for n in self.names}


def regular_axis(bins: int, start: float, stop: float, name: str, label: str) -> hist.axis.Regular:
    """Return a named regular axis (the physics axis of a :class:`HistogramSpec`)."""
    return hist.axis.Regular(bins, start, stop, name=name, label=label)


@dataclass(frozen=True)
class HistogramSpec:
    """One physics histogram: its axis and the quantity filled from selected events."""

    name: str
    axis: hist.axis.Regular
    value: Callable[[ak.Array], np.ndarray]
    categories: tuple[str, ...] | None = None  # None: every category


@dataclass(frozen=True)
class Analysis:
    """Everything one physics case needs: schema, selection, features, weights, histograms, roles."""

    name: str
    title: str
    experiment: str  # "CMS" or "ATLAS": plot style and label
    tree: str
    fileset: str  # JSON file name in hepsieve/datasets/filesets
    event_id: str  # integer branch used for k-fold routing
    required_branches: tuple[str, ...]
    weights: Callable[[ak.Array, Mapping], np.ndarray]
    selection: Callable[[ak.Array], Mapping[str, np.ndarray]]  # ordered step -> mask
    categorize: Callable[[ak.Array], np.ndarray]  # selected events -> category name per event
    categories: tuple[str, ...]
    scored_categories: tuple[str, ...]
    features: Mapping[str, FeatureSpec]
    default_features: str
    histograms: tuple[HistogramSpec, ...]
    cut_histogram: str  # histogram also filled after the score cut
    score_cut: float
    lumi_pb: float
    toy_generator: str  # "module:function"
    # selected events -> the record that categories, features and histograms read (once per chunk)
    derive: Callable[[ak.Array], ak.Array] | None = None
    # per-event training label (1 signal, 0 background) where a file mixes both; else by role
    labels: Callable[[ak.Array], np.ndarray] | None = None
    score_bins: int = 50  # fine binning lets ROC/AUC be computed from the score histograms
    meta: Mapping[str, object] = field(default_factory=dict)

    def feature_spec(self, name: str | None = None) -> FeatureSpec:
        """Return the named feature set (default: ``default_features``)."""
        name = name or self.default_features
        if name not in self.features:
            raise ConfigurationError(
                f"analysis {self.name!r} has no feature set {name!r}; "
                f"choose one of {sorted(self.features)}")
        return self.features[name]

    def histogram(self, name: str) -> HistogramSpec:
        """Return the histogram definition called ``name``."""
        return next(h for h in self.histograms if h.name == name)


def get_analysis(name: str) -> Analysis:
    """Return the registered Analysis called ``name`` (e.g. ``"cms-hzz4l"``)."""
    if name not in ANALYSES:
        raise ConfigurationError(f"unknown analysis {name!r}; known: {', '.join(ANALYSES)}")
    return load_object(ANALYSES[name])


def load_object(path: str) -> object:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
