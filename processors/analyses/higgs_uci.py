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

from hepsieve.processors.analysis import (
    Analysis,
    Categories,
    FeatureSpec,
    Inputs,
    Scoring,
    Style,
    TextBaseline,
    Tools,
    TrainingPolicy,
    Weights,
    branch_types,
    histogram,
)
from hepsieve.processors.errors import DataValueError

# --- schema of the UCI file (SCHEMAS.md section 5) and of its ROOT/Parquet chunks ---
TREE = "higgs"
LOW_LEVEL = (
    "lepton_pT",
    "lepton_eta",
    "lepton_phi",
    "missing_energy_magnitude",
    "missing_energy_phi",
    *(f"jet{i}_{v}" for i in range(1, 5) for v in ("pt", "eta", "phi", "btag")),
)
HIGH_LEVEL = ("m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb")
COLUMNS = ("label", *LOW_LEVEL, *HIGH_LEVEL)  # the UCI text columns, in order
EVENT_ID = "event"  # added by the converter: the row number in the UCI file
UCI_ROWS, UCI_TEST_ROWS = 11_000_000, 500_000  # the last 500 000 rows are the test split
TRAIN_MAX_EVENTS = 1_000_000


def weights(events: ak.Array, objects: ak.Array, meta: Mapping) -> np.ndarray:
    """Return unit weights."""
    return np.ones(len(events))


def labels(events: ak.Array) -> np.ndarray:
    """Return the UCI label (1 signal, 0 background) per event; DataValueError for any other."""
    label = ak.to_numpy(events.label)
    bad = np.flatnonzero((label != 0) & (label != 1))
    if len(bad):
        raise DataValueError(f"{len(bad)} label(s) neither 0 nor 1 (e.g. {label[bad[0]]})", bad)
    return label.astype(np.int8)


def categorize(events: ak.Array) -> dict[str, np.ndarray]:
    """Return ``signal`` and ``background`` masks from the label column."""
    signal = labels(events) == 1
    return {"signal": signal, "background": ~signal}


def _columns(events: ak.Array) -> ak.Array:
    return events


ANALYSIS = Analysis(
    name="higgs-uci",
    inputs=Inputs(
        branches={**branch_types("float", *COLUMNS), **branch_types("int", EVENT_ID)}, event_id=EVENT_ID
    ),
    selection=(),
    weights=Weights(weights),
    categories=Categories(("signal", "background"), categorize),
    features={
        "all": FeatureSpec((*LOW_LEVEL, *HIGH_LEVEL), _columns, units=("",) * 28),
        "low-level": FeatureSpec(LOW_LEVEL, _columns, units=("",) * 21),
        "high-level": FeatureSpec(HIGH_LEVEL, _columns, units=("",) * 7),
    },
    histograms=(
        histogram("m_bb", 60, 0, 3, r"$m_{bb}$ (scaled)", lambda e: e.m_bb),
        histogram("m_wwbb", 60, 0, 3, r"$m_{WWbb}$ (scaled)", lambda e: e.m_wwbb),
    ),
    scoring=Scoring(
        categories=("signal", "background"), cut_histogram="m_bb", score_cut=0.5, score_bins=1000
    ),
    style=Style(experiment="UCI", title="UCI HIGGS", energy_tev=8),
    labels=labels,
    tools=Tools(
        toy_generator="hepsieve.datasets.toys.higgs_uci:generate",
        text_baseline=TextBaseline("HIGGS.csv.gz", COLUMNS),
    ),
    # training uses the first 1M exported events and never the UCI test split
    training=TrainingPolicy(max_events=TRAIN_MAX_EVENTS, holdout_datasets=("test",)),
)
