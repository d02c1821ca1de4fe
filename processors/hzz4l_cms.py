"""CMS 2018 VBF H->ZZ->4l on the reduced ntuples (tree ``HZZ4LeptonsAnalysisReduced``).

Weight recipe: ``weight = f_weight`` for simulation (it already holds
xsec x BR x lumi x acceptance, see SCHEMAS.md section 1); 1 for data.
Events with fewer than two jets are kept in the ``untagged`` category (their jet
variables are -999); the classifiers score the ``vbf`` category (>= 2 jets).
"""

from __future__ import annotations

from collections.abc import Mapping

import awkward as ak
import numpy as np

from hepsieve.processors.analysis import Analysis, FeatureSpec, HistogramSpec, regular_axis

UNDEFINED = -999.0
LEPTON_BRANCHES = tuple(f"f_lept{i}_{v}" for i in range(1, 5) for v in ("pt", "eta", "phi"))
JET_BRANCHES = tuple(f"f_jet{i}_{v}" for i in range(1, 3) for v in ("pt", "eta", "phi"))
HIGH_LEVEL = ("f_massjj", "f_deltajj", "f_mass4l", "f_Z1mass", "f_Z2mass")


def _defined(x: ak.Array) -> np.ndarray:
    """True where a flat branch holds a real value (not -999, not NaN/inf)."""
    x = ak.to_numpy(x)
    return np.isfinite(x) & (x != UNDEFINED)


def weights(events: ak.Array, meta: Mapping) -> np.ndarray:
    """Return per-event weights: f_weight for simulation, 1 for data."""
    if meta.get("is_data"):
        return np.ones(len(events))
    return ak.to_numpy(events.f_weight).astype(np.float64)


def selection(events: ak.Array) -> dict[str, np.ndarray]:
    """Return the ordered selection steps (each mask is applied on top of the previous)."""
    leptons_ok = np.logical_and.reduce(
        [_defined(events[b]) for b in (*LEPTON_BRANCHES, "f_mass4l", "f_Z1mass", "f_Z2mass")])
    m4l = ak.to_numpy(events.f_mass4l)
    z1, z2 = ak.to_numpy(events.f_Z1mass), ak.to_numpy(events.f_Z2mass)
    return {
        "four leptons defined": leptons_ok,
        "m4l > 70 GeV": m4l > 70,
        "Z1 in 40-120, Z2 in 12-120 GeV": (z1 > 40) & (z1 < 120) & (z2 > 12) & (z2 < 120),
    }


def categorize(events: ak.Array) -> np.ndarray:
    """Return ``"vbf"`` for events with a second jet (f_jet2_pt != -999), else ``"untagged"``.

    Only the -999 sentinel decides: a NaN/inf jet variable keeps the event in ``vbf``,
    where it is counted and excluded from scoring with a warning, never re-labelled.
    """
    return np.where(ak.to_numpy(events.f_jet2_pt) != UNDEFINED, "vbf", "untagged")


def _columns(events: ak.Array) -> dict[str, ak.Array]:
    return {name: events[name] for name in (*HIGH_LEVEL, *LEPTON_BRANCHES, *JET_BRANCHES)}


ANALYSIS = Analysis(
    name="cms-hzz4l",
    title="CMS VBF H→ZZ→4ℓ",
    experiment="CMS",
    tree="HZZ4LeptonsAnalysisReduced",
    fileset="cms_hzz4l.json",
    event_id="f_event",
    required_branches=("f_event", "f_weight", *HIGH_LEVEL, *LEPTON_BRANCHES, *JET_BRANCHES),
    weights=weights,
    selection=selection,
    categorize=categorize,
    categories=("vbf", "untagged"),
    scored_categories=("vbf",),
    features={
        "high-level": FeatureSpec(HIGH_LEVEL, _columns, units=("GeV", "", "GeV", "GeV", "GeV")),
        "low-level": FeatureSpec(LEPTON_BRANCHES + JET_BRANCHES, _columns,
                                 units=("GeV", "", "rad") * 6),
    },
    default_features="high-level",
    histograms=(
        HistogramSpec("m4l", regular_axis(66, 70, 400, "m4l", r"$m_{4\ell}$ [GeV]"), lambda e: e.f_mass4l),
        HistogramSpec("mjj", regular_axis(40, 0, 2000, "mjj", r"$m_{jj}$ [GeV]"), lambda e: e.f_massjj,
                      categories=("vbf",)),
        HistogramSpec("delta_eta_jj", regular_axis(36, 0, 9, "delta_eta_jj", r"$|\Delta\eta_{jj}|$"),
                      lambda e: e.f_deltajj, categories=("vbf",)),
        HistogramSpec("z1_mass", regular_axis(40, 40, 120, "z1_mass", r"$m_{Z_1}$ [GeV]"),
                      lambda e: e.f_Z1mass),
        HistogramSpec("z2_mass", regular_axis(36, 12, 120, "z2_mass", r"$m_{Z_2}$ [GeV]"),
                      lambda e: e.f_Z2mass),
    ),
    cut_histogram="m4l",
    score_cut=0.6,
    lumi_pb=59700.0,
    toy_generator="hepsieve.datasets.toys.cms_hzz4l:generate",
    meta={"energy_tev": 13, "year": 2018},
)
