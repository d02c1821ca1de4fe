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

from hepsieve.processors.analysis import (
    Analysis,
    Categories,
    FeatureSpec,
    Inputs,
    Scoring,
    ShapeVariation,
    Step,
    Style,
    Tools,
    Weights,
    branch_types,
    histogram,
    relative_variation,
)

# --- schema of the real files (SCHEMAS.md section 1): the toy generator writes exactly this ---
TREE = "HZZ4LeptonsAnalysisReduced"
UNDEFINED = -999.0  # sentinel of an undefined value (e.g. no second jet)
LEPTON_BRANCHES = tuple(f"f_lept{i}_{v}" for i in range(1, 5) for v in ("pt", "eta", "phi"))
JET_BRANCHES = tuple(f"f_jet{i}_{v}" for i in range(1, 3) for v in ("pt", "eta", "phi"))
HIGH_LEVEL = ("f_massjj", "f_deltajj", "f_mass4l", "f_Z1mass", "f_Z2mass")
BRANCHES = (
    "f_run",
    "f_event",
    "f_weight",
    *HIGH_LEVEL,
    *LEPTON_BRANCHES,
    *JET_BRANCHES,
)  # the 26 confirmed branches, in file order

# --- systematic uncertainties ---
#: lepton momentum scale, relative (CMS H->ZZ->4l: muons ~0.1 %, electrons ~0.3 %)
LEPTON_SCALE = {"4mu": 0.001, "4e": 0.003}
SCALED_BY_LEPTONS = (*(f"f_lept{i}_pt" for i in range(1, 5)), "f_mass4l", "f_Z1mass", "f_Z2mass")

# --- selection thresholds [GeV] ---
M4L_MIN = 70.0
Z1_WINDOW = (40.0, 120.0)
Z2_WINDOW = (12.0, 120.0)


def _defined(x: ak.Array) -> np.ndarray:
    """Return True where a flat branch holds a real value (not -999, not NaN/inf)."""
    x = ak.to_numpy(x)
    return np.isfinite(x) & (x != UNDEFINED)


def weights(events: ak.Array, objects: ak.Array, meta: Mapping) -> np.ndarray:
    """Return per-event weights: f_weight for simulation, 1 for data."""
    if meta.get("is_data"):
        return np.ones(len(events))
    return ak.to_numpy(events.f_weight).astype(np.float64)


def lepton_scale(events: ak.Array, objects: ak.Array, meta: Mapping, direction: int) -> tuple:
    """Return the events with lepton momenta and the masses made of them scaled by 1 ± δ.

    The reduced ntuples store no lepton flavour per event, so the file's channel decides δ
    (``4l`` files: the electron value). Masses of (nearly) massless leptons scale like the
    momenta; -999 sentinels stay -999.
    """
    factor = 1.0 + direction * LEPTON_SCALE.get(meta.get("channel", "4e"), LEPTON_SCALE["4e"])
    columns = {f: ak.to_numpy(events[f]) for f in events.fields}
    for f in SCALED_BY_LEPTONS:
        columns[f] = np.where(columns[f] != UNDEFINED, columns[f] * factor, columns[f]).astype(
            columns[f].dtype
        )
    varied = ak.zip(columns, depth_limit=1)
    return varied, varied


def _four_leptons_defined(events: ak.Array, objects: ak.Array) -> np.ndarray:
    return np.logical_and.reduce(
        [_defined(events[b]) for b in (*LEPTON_BRANCHES, "f_mass4l", "f_Z1mass", "f_Z2mass")]
    )


def _in_window(x: ak.Array, window: tuple[float, float]) -> np.ndarray:
    x = ak.to_numpy(x)
    return (x > window[0]) & (x < window[1])


SELECTION = (
    Step("leptons", "four leptons defined", _four_leptons_defined),
    Step("m4l", f"m4l > {M4L_MIN:g} GeV", lambda e, o: ak.to_numpy(e.f_mass4l) > M4L_MIN),
    Step(
        "z_windows",
        f"Z1 in {Z1_WINDOW[0]:g}-{Z1_WINDOW[1]:g}, Z2 in {Z2_WINDOW[0]:g}-{Z2_WINDOW[1]:g} GeV",
        lambda e, o: _in_window(e.f_Z1mass, Z1_WINDOW) & _in_window(e.f_Z2mass, Z2_WINDOW),
    ),
)


def categorize(events: ak.Array) -> dict[str, np.ndarray]:
    """Return ``vbf`` (a second jet: f_jet2_pt != -999) and ``untagged`` (the rest).

    Only the -999 sentinel decides: a NaN/inf jet variable keeps the event in ``vbf``,
    where it is counted and excluded from scoring with a warning, never re-labelled.
    """
    vbf = ak.to_numpy(events.f_jet2_pt) != UNDEFINED
    return {"vbf": vbf, "untagged": ~vbf}


def _columns(events: ak.Array) -> ak.Array:
    return events


ANALYSIS = Analysis(
    name="cms-hzz4l",
    inputs=Inputs(
        branches={
            **branch_types("int", "f_event"),
            **branch_types("float", *HIGH_LEVEL, *LEPTON_BRANCHES, *JET_BRANCHES),
        },
        mc_branches=branch_types("float", "f_weight"),
        event_id="f_event",
    ),
    selection=SELECTION,
    weights=Weights(
        weights, variations=(relative_variation("lumi", "lumi_uncertainty", "integrated luminosity"),)
    ),
    shape_variations=(
        ShapeVariation("lepton_scale", lepton_scale, "lepton momentum scale (0.1 % mu, 0.3 % e)"),
    ),
    categories=Categories(("vbf", "untagged"), categorize),
    features={
        "high-level": FeatureSpec(HIGH_LEVEL, _columns, units=("GeV", "", "GeV", "GeV", "GeV")),
        "low-level": FeatureSpec(LEPTON_BRANCHES + JET_BRANCHES, _columns, units=("GeV", "", "rad") * 6),
    },
    histograms=(
        histogram("m4l", 66, 70, 400, r"$m_{4\ell}$ [GeV]", lambda e: e.f_mass4l),
        histogram("mjj", 40, 0, 2000, r"$m_{jj}$ [GeV]", lambda e: e.f_massjj, categories=("vbf",)),
        histogram(
            "delta_eta_jj", 36, 0, 9, r"$|\Delta\eta_{jj}|$", lambda e: e.f_deltajj, categories=("vbf",)
        ),
        histogram("z1_mass", 40, 40, 120, r"$m_{Z_1}$ [GeV]", lambda e: e.f_Z1mass),
        histogram("z2_mass", 36, 12, 120, r"$m_{Z_2}$ [GeV]", lambda e: e.f_Z2mass),
    ),
    scoring=Scoring(categories=("vbf",), cut_histogram="m4l", score_cut=0.6),
    style=Style(experiment="CMS", title="CMS VBF H→ZZ→4ℓ", energy_tev=13),
    tools=Tools(toy_generator="hepsieve.datasets.toys.cms_hzz4l:generate"),
)
