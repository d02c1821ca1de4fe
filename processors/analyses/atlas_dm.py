"""ATLAS Open Data 13 TeV: dark matter produced with a Z boson (mono-Z, Z -> ll + invisible).

Input: the five CSV files of the 2020 ``DM_ML_notebook`` (SCHEMAS.md section 4), one per
process (``DM_300``, ``ZZ``, ``WZ``, ``Z+jets``, ``Non-resonant_ll``), converted to Parquet with
``hepsieve convert --analysis atlas-dm``: any column order, extra columns left out, the row
number added as ``eventNumber`` (the k-fold event id). GeV; ``sum_lep_charge`` and ``N_bjets``
are integers.

The rows are preselected (two same-flavour leptons, ETmiss > 80 GeV, m_ll about 60-120 GeV,
at most one b-jet). The files hold no lepton flavour: same flavour is part of their
preselection, so "SFOS" below is the opposite-sign requirement ``sum_lep_charge == 0``.

Selection, one pass with two overlapping regions (``Categories(exclusive=False)``):

* step ``opposite_sign``: same-sign pairs (``sum_lep_charge = ±2``, in WZ, ZZ and even the
  signal) are removed and counted in the cutflow;
* region ``ml``: every opposite-sign event -- the classifiers score these;
* region ``cut-based``: the published selection of the ATLAS mono-Z / ZH -> ll + invisible
  search (arXiv:1708.09624): leading / subleading lepton pT > 30 / 20 GeV, 76 < m_ll < 106
  GeV, ETmiss > 90 GeV, ETmiss/HT > 0.6, dphi(pT_ll, ETmiss) > 2.7, dR_ll < 1.8, fractional
  pT difference |pT_ll - ETmiss| / pT_ll < 0.2, no b-jet. The histogram ``cut_based_cuts``
  (in ``ml``) counts how many of these cuts in a row each event passes: its reversed
  cumulative sum is the sequential cutflow of the region.

Weights: ``totalWeight`` (xsec x lumi x generator weight x scale factors / sum of weights, at
10 fb^-1), signed weights kept signed. ``hepsieve evaluate`` reports the significance of the
``cut-based`` region beside the classifiers' held-out significance scans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from hepsieve.processors.analysis import (
    Analysis,
    Categories,
    FeatureSpec,
    Inputs,
    Record,
    Scoring,
    Step,
    Style,
    Tools,
    TrainingPolicy,
    Weights,
    branch_types,
    histogram,
)

# --- schema of the real files (SCHEMAS.md section 4) ---
CSV_COLUMNS = (
    "totalWeight",
    "sum_lep_charge",
    "lead_lep_pt",
    "sublead_lep_pt",
    "mll",
    "ETmiss",
    "dRll",
    "dphi_pTll_ETmiss",
    "fractional_pT_difference",
    "ETmiss_over_HT",
    "N_bjets",
)  # the header of the real files, in this order
INT_COLUMNS = ("sum_lep_charge", "N_bjets")
EVENT_ID = "eventNumber"  # not in the files: the converter adds the row number
#: the seed notebook's seven classifier inputs
SEED_FEATURES = (
    "lead_lep_pt",
    "sublead_lep_pt",
    "mll",
    "ETmiss",
    "ETmiss_over_HT",
    "dphi_pTll_ETmiss",
    "fractional_pT_difference",
)
SEED_UNITS = ("GeV", "GeV", "GeV", "GeV", "", "rad", "")
LUMI_PB = 10_000.0  # the files' totalWeight is normalised to 10 fb^-1

# --- the files' preselection (applied by the toy generator; the real rows already pass it) ---
PRESELECTION_ETMISS_MIN = 80.0  # GeV
PRESELECTION_MLL = (60.0, 120.0)  # GeV
PRESELECTION_N_BJETS_MAX = 1

# --- the published cut-based selection (arXiv:1708.09624) ---
LEAD_LEP_PT_MIN = 30.0  # GeV
SUBLEAD_LEP_PT_MIN = 20.0  # GeV
MLL_WINDOW = (76.0, 106.0)  # GeV
ETMISS_MIN = 90.0  # GeV
ETMISS_OVER_HT_MIN = 0.6
DPHI_MIN = 2.7  # rad
DRLL_MAX = 1.8
FRACTIONAL_PT_DIFFERENCE_MAX = 0.2
N_BJETS_MAX = 0  # b-jet veto


def column(events: Record, name: str) -> np.ndarray:
    """Return one column of the events as a numpy array."""
    return ak.to_numpy(events[name])


@dataclass(frozen=True)
class Cut:
    """One cut of the cut-based selection: a name, a label built from its threshold, the mask."""

    name: str
    label: str
    passes: Callable[[Record], np.ndarray]


CUT_BASED = (
    Cut(
        "lead_lep_pt",
        f"leading lepton pT > {LEAD_LEP_PT_MIN:g} GeV",
        lambda e: column(e, "lead_lep_pt") > LEAD_LEP_PT_MIN,
    ),
    Cut(
        "sublead_lep_pt",
        f"subleading lepton pT > {SUBLEAD_LEP_PT_MIN:g} GeV",
        lambda e: column(e, "sublead_lep_pt") > SUBLEAD_LEP_PT_MIN,
    ),
    Cut(
        "mll",
        f"{MLL_WINDOW[0]:g} < m_ll < {MLL_WINDOW[1]:g} GeV",
        lambda e: (column(e, "mll") > MLL_WINDOW[0]) & (column(e, "mll") < MLL_WINDOW[1]),
    ),
    Cut("ETmiss", f"ETmiss > {ETMISS_MIN:g} GeV", lambda e: column(e, "ETmiss") > ETMISS_MIN),
    Cut(
        "ETmiss_over_HT",
        f"ETmiss/HT > {ETMISS_OVER_HT_MIN:g}",
        lambda e: column(e, "ETmiss_over_HT") > ETMISS_OVER_HT_MIN,
    ),
    Cut(
        "dphi_pTll_ETmiss",
        f"dphi(pT_ll, ETmiss) > {DPHI_MIN:g}",
        lambda e: column(e, "dphi_pTll_ETmiss") > DPHI_MIN,
    ),
    Cut("dRll", f"dR_ll < {DRLL_MAX:g}", lambda e: column(e, "dRll") < DRLL_MAX),
    Cut(
        "fractional_pT_difference",
        f"|pT_ll - ETmiss|/pT_ll < {FRACTIONAL_PT_DIFFERENCE_MAX:g}",
        lambda e: column(e, "fractional_pT_difference") < FRACTIONAL_PT_DIFFERENCE_MAX,
    ),
    Cut("b_veto", f"N_bjets <= {N_BJETS_MAX}", lambda e: column(e, "N_bjets") <= N_BJETS_MAX),
)


def cuts_passed(events: Record) -> np.ndarray:
    """Return how many cuts of the cut-based selection, in order, each event passes (0..9)."""
    passed = np.ones(len(events), dtype=bool)
    count = np.zeros(len(events), dtype=np.int64)
    for cut in CUT_BASED:
        passed &= cut.passes(events)
        count += passed
    return count


def cut_based(events: Record) -> np.ndarray:
    """Return the mask of the published cut-based selection (opposite sign is a selection step)."""
    return cuts_passed(events) == len(CUT_BASED)


def opposite_sign(events: Record, objects: Record) -> np.ndarray:
    """Return True for opposite-sign pairs (``sum_lep_charge == 0``)."""
    return column(events, "sum_lep_charge") == 0


def weights(events: Record, objects: Record, meta: Mapping) -> np.ndarray:
    """Return ``totalWeight`` (signed) for simulation, 1 for data."""
    if meta.get("is_data"):
        return np.ones(len(events))
    return column(events, "totalWeight").astype(np.float64)


def regions(events: Record) -> dict[str, np.ndarray]:
    """Return the overlapping regions: ``ml`` (every selected event) and ``cut-based``."""
    return {"ml": np.ones(len(events), dtype=bool), "cut-based": cut_based(events)}


def _columns(events: Record) -> Record:
    return events


def _histograms() -> tuple:
    return (
        histogram("ETmiss", 42, 80, 500, r"$E_T^{miss}$ [GeV]", lambda e: e.ETmiss),
        histogram("mll", 30, 60, 120, r"$m_{\ell\ell}$ [GeV]", lambda e: e.mll),
        histogram(
            "dphi_pTll_ETmiss",
            32,
            0,
            np.pi,
            r"$\Delta\phi(p_T^{\ell\ell}, E_T^{miss})$",
            lambda e: e.dphi_pTll_ETmiss,
        ),
        histogram("lead_lep_pt", 25, 0, 500, r"leading lepton $p_T$ [GeV]", lambda e: e.lead_lep_pt),
        histogram("sublead_lep_pt", 25, 0, 250, r"subleading lepton $p_T$ [GeV]", lambda e: e.sublead_lep_pt),
        histogram("ETmiss_over_HT", 40, 0, 2, r"$E_T^{miss}/H_T$", lambda e: e.ETmiss_over_HT),
        histogram(
            "fractional_pT_difference",
            40,
            0,
            2,
            r"$|p_T^{\ell\ell} - E_T^{miss}|/p_T^{\ell\ell}$",
            lambda e: e.fractional_pT_difference,
        ),
        histogram("dRll", 25, 0, 5, r"$\Delta R_{\ell\ell}$", lambda e: e.dRll),
        histogram("N_bjets", 3, 0, 3, "number of b-jets", lambda e: e.N_bjets),
        histogram(
            "cut_based_cuts",
            len(CUT_BASED) + 1,
            0,
            len(CUT_BASED) + 1,
            "cuts of the cut-based selection passed in a row",
            cuts_passed,
            categories=("ml",),
        ),
    )


#: training defaults for the small real samples (491 signal rows): shallower, slower boosting
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "hgb": {
        "max_iter": 300,
        "learning_rate": 0.03,
        "max_leaf_nodes": 6,
        "min_samples_leaf": 200,
        "l2_regularization": 10.0,
    },
    "rf": {"n_estimators": 300, "max_depth": 6, "min_samples_leaf": 20},
}

ANALYSIS = Analysis(
    name="atlas-dm",
    inputs=Inputs(
        name="csv",
        event_id=EVENT_ID,
        branches={  # in the files' column order
            **branch_types("int", EVENT_ID),
            **{c: "int" if c in INT_COLUMNS else "float" for c in CSV_COLUMNS if c != "totalWeight"},
        },
        mc_branches=branch_types("float", "totalWeight"),
    ),
    selection=(Step("opposite_sign", "opposite-sign pair (sum_lep_charge = 0)", opposite_sign),),
    weights=Weights(weights),
    categories=Categories(("ml", "cut-based"), regions, exclusive=False),
    features={
        "seed": FeatureSpec(SEED_FEATURES, _columns, units=SEED_UNITS),
        "extended": FeatureSpec((*SEED_FEATURES, "dRll", "N_bjets"), _columns, units=(*SEED_UNITS, "", "")),
    },
    histograms=_histograms(),
    scoring=Scoring(
        categories=("ml",),
        cut_histogram="ETmiss",
        score_cut=0.5,
        score_bins=100,
        working_point="significance",
        reference_categories=("cut-based",),
    ),
    style=Style(experiment="ATLAS", title=r"DM + Z($\to\ell\ell$)", energy_tev=13),
    tools=Tools(toy_generator="hepsieve.datasets.toys.atlas_dm:generate"),
    training=TrainingPolicy(demo_models=("hgb", "mlp", "rf"), hyper=HYPERPARAMETERS),
)
