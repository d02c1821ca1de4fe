"""UCI HIGGS: signal (heavy Higgs) vs tt background from 28 features, the scale benchmark.

Every row is one event with weight 1; ``label`` (1 signal, 0 background) decides the
category. No event selection: every row is scored. The score histograms are finely
binned (1000 bins) so that ROC curves and AUCs come from the merged histograms and scale
to 11M events without keeping per-event scores.
"""

from __future__ import annotations

from collections.abc import Mapping

import awkward as ak
import numpy as np

from hepsieve.datasets.toys.higgs_uci import COLUMNS, HIGH_LEVEL, LOW_LEVEL
from hepsieve.processors.analysis import Analysis, FeatureSpec, HistogramSpec, regular_axis


def weights(events: ak.Array, meta: Mapping) -> np.ndarray:
    """Return unit weights."""
    return np.ones(len(events))


def selection(events: ak.Array) -> dict[str, np.ndarray]:
    """Return no selection steps: every row is an event of the benchmark."""
    return {}


def labels(events: ak.Array) -> np.ndarray:
    """Return the UCI label (1 signal, 0 background) per event."""
    return ak.to_numpy(events.label).astype(np.int8)


def categorize(events: ak.Array) -> np.ndarray:
    """Return ``signal`` or ``background`` from the label column."""
    return np.where(labels(events) == 1, "signal", "background")


def _columns(events: ak.Array) -> dict[str, ak.Array]:
    return {name: events[name] for name in (*LOW_LEVEL, *HIGH_LEVEL)}


ANALYSIS = Analysis(
    name="higgs-uci",
    title="UCI HIGGS",
    experiment="UCI",  # neither CMS nor ATLAS: plain style, titled "UCI HIGGS"
    tree="higgs",
    fileset="higgs_uci.json",
    event_id="event",
    required_branches=("label", "event", *LOW_LEVEL, *HIGH_LEVEL),
    weights=weights,
    selection=selection,
    categorize=categorize,
    categories=("signal", "background"),
    scored_categories=("signal", "background"),
    features={
        "all": FeatureSpec((*LOW_LEVEL, *HIGH_LEVEL), _columns),
        "low-level": FeatureSpec(LOW_LEVEL, _columns),
        "high-level": FeatureSpec(HIGH_LEVEL, _columns),
    },
    default_features="all",
    histograms=(
        HistogramSpec("m_bb", regular_axis(60, 0, 3, "m_bb", r"$m_{bb}$ (scaled)"), lambda e: e.m_bb),
        HistogramSpec("m_wwbb", regular_axis(60, 0, 3, "m_wwbb", r"$m_{WWbb}$ (scaled)"), lambda e: e.m_wwbb),
    ),
    cut_histogram="m_bb",
    score_cut=0.5,
    lumi_pb=0.0,
    toy_generator="hepsieve.datasets.toys.higgs_uci:generate",
    labels=labels,
    score_bins=1000,
    # training uses the first 1M exported events and never the UCI test split
    meta={"energy_tev": 8, "train_max_events": 1_000_000, "holdout_datasets": ("test",),
          "text_baseline": {"file": "HIGGS.csv.gz", "columns": COLUMNS}},
)
