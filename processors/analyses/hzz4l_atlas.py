"""ATLAS Open Data 13 TeV H->ZZ*->4l on the ``4lep`` skim (tree ``mini``) or its flat CSV form.

Weight recipe (SCHEMAS.md section 2), simulation:
``mcWeight x scaleFactor_PILEUP x scaleFactor_ELE x scaleFactor_MUON x scaleFactor_LepTRIGGER
x XSection x lumi / SumWeights`` (signed weights kept signed); data: 1. The flat
Kaggle-style input carries ``totalWeight`` instead, and its rows already hold the four
selected leptons, so the object selection has nothing to remove there.

Object selection (good lepton): tight ID, ptcone30/pT < 0.3, etcone20/pT < 0.3,
|d0/sigma(d0)| < 5 (e) / 3 (mu), |z0 sin(theta)| < 0.5 mm, pT > 7 (e) / 5 (mu) GeV,
|eta| < 2.47 (e) / 2.5 (mu). Event selection: trigger, exactly four good leptons,
sum of charges 0, sum of types in {44, 48, 52} (4e, 2e2mu, 4mu), two same-flavour
opposite-sign (SFOS) pairs. Z1 is the SFOS pair closest to m_Z, Z2 the other pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import awkward as ak
import numba
import numpy as np

from hepsieve.processors.analyses.fourlepton import closest_z
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
    WeightVariation,
    branch_types,
    flat_values,
    histogram,
    relative_variation,
)

# --- schema of the real files (SCHEMAS.md sections 2 and 3) ---
TREE = "mini"
MEV = 1000.0
CHANNELS = {44: "4e", 48: "2e2mu", 52: "4mu"}  # sum of the four lepton types
LEPTON_FIELDS = ("pt", "eta", "phi", "E", "charge", "type")
MINI_LEPTONS = {
    **branch_types(
        "var * float",
        "lep_pt",
        "lep_eta",
        "lep_phi",
        "lep_E",
        "lep_ptcone30",
        "lep_etcone20",
        "lep_tracksigd0pvunbiased",
        "lep_z0",
    ),
    **branch_types("var * int", "lep_charge", "lep_type"),
    **branch_types("var * bool", "lep_isTightID"),
}
MINI_MC = branch_types(
    "float",
    "mcWeight",
    "scaleFactor_PILEUP",
    "scaleFactor_ELE",
    "scaleFactor_MUON",
    "scaleFactor_LepTRIGGER",
    "XSection",
    "SumWeights",
)
FLAT_LEPTONS = {
    f"lep_{f}_{i}": ("int" if f in ("charge", "type") else "float") for f in LEPTON_FIELDS for i in range(4)
}
KINEMATIC = ("lep1_pt", "lep2_pt", "lep3_pt", "lep4_pt", "z1_mass", "z2_mass", "pt4l")

# --- object selection thresholds (GeV, mm) ---
ISOLATION_MAX = 0.3  # ptcone30/pT and etcone20/pT
D0_SIGNIFICANCE_MAX = {"e": 5.0, "mu": 3.0}
Z0_SIN_THETA_MAX_MM = 0.5
PT_MIN = {"e": 7.0, "mu": 5.0}
ETA_MAX = {"e": 2.47, "mu": 2.5}
N_LEPTONS = 4

# --- systematic uncertainties (the mini trees carry none: flat relative values, documented) ---
#: per-lepton scale-factor uncertainties: the event factor is (1 ± δ)^n for n leptons of the flavour
SF_PER_LEPTON = {"ELE": ("e", 0.01), "MUON": ("mu", 0.01)}
SF_PER_EVENT = {"PILEUP": 0.02, "LepTRIGGER": 0.005}
#: lepton momentum scale, relative (ATLAS H->4l: electrons ~0.4 %, muons ~0.1 %)
LEPTON_SCALE = {"e": 0.004, "mu": 0.001}


@dataclass(frozen=True)
class LeptonTable:
    """All leptons of a chunk as flat numpy columns, with counts and the good-lepton mask.

    Momenta in GeV. The object selection needs no jagged structure, only per-event sums, so
    it runs on flat arrays (several times faster than jagged ``ak.where`` chains).
    """

    columns: dict[str, np.ndarray]
    counts: np.ndarray
    good: np.ndarray

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, mask: np.ndarray) -> LeptonTable:
        """Return the table of the events where ``mask`` is True, with the kinematic columns only.

        The identification columns are read where the good mask is made: on the chunk's table.
        """
        keep = np.repeat(mask, self.counts)
        columns = {k: self.columns[k][keep] for k in LEPTON_FIELDS}
        return LeptonTable(columns, self.counts[mask], self.good[keep])

    def good_sum(self, values: np.ndarray | int) -> np.ndarray:
        """Return the per-event sum (float64) of ``values`` (per lepton, or one) over the good leptons."""
        values = np.broadcast_to(np.asarray(values), self.good.shape)
        return _good_sums(self.counts, self.good, values)

    def four_good(self) -> dict[str, np.ndarray]:
        """Return (n, 4) columns of the good leptons (every event must have exactly four)."""
        return {f: self.columns[f][self.good].reshape(-1, N_LEPTONS) for f in LEPTON_FIELDS}


@numba.njit(cache=True)
def _good_sums(counts, good, values) -> np.ndarray:
    """Return the per-event sums of ``values`` over the good leptons: one pass (np.bincount took 4x)."""
    out, start = np.zeros(len(counts)), 0
    for event, n in enumerate(counts):
        for k in range(start, start + n):
            if good[k]:
                out[event] += values[k]
        start += n
    return out


def lepton_columns(events: ak.Array) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Return flat per-lepton numpy columns (GeV) and the leptons per event, for either flavour."""
    if "lep_pt" in events.fields:  # ROOT mini tree, MeV

        def flat(branch):
            return flat_values(events[branch])

        cols = {f: flat(f"lep_{f}") for f in LEPTON_FIELDS}
        for f in ("pt", "E"):
            cols[f] = cols[f] / MEV
        cols |= {
            "ptcone30": flat("lep_ptcone30") / MEV,
            "etcone20": flat("lep_etcone20") / MEV,
            "sigd0": flat("lep_tracksigd0pvunbiased"),
            "z0": flat("lep_z0"),
            "tight": flat("lep_isTightID"),
        }
        return cols, ak.to_numpy(ak.num(events.lep_pt))
    # flat Kaggle-style columns lep_<var>_0..3 (GeV): four selected leptons per row
    n_lep = sum(1 for f in events.fields if f.startswith("lep_pt_"))
    cols = {
        f: np.stack([ak.to_numpy(events[f"lep_{f}_{i}"]) for i in range(n_lep)], axis=1).ravel()
        for f in LEPTON_FIELDS
    }
    return cols, np.full(len(events), n_lep)


def good_mask(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Return the object selection per lepton (all True where the input lacks ID variables)."""
    if "ptcone30" not in cols:
        return np.ones(len(cols["pt"]), dtype=bool)
    pt, eta, electron = cols["pt"], cols["eta"], cols["type"] == 11

    def per_flavour(cut):
        return np.where(electron, cut["e"], cut["mu"])

    return (
        cols["tight"]
        & (cols["ptcone30"] < ISOLATION_MAX * pt)
        & (cols["etcone20"] < ISOLATION_MAX * pt)
        & (np.abs(cols["sigd0"]) < per_flavour(D0_SIGNIFICANCE_MAX))
        & _z0_sin_theta_ok(cols["z0"], eta)
        & (pt > per_flavour(PT_MIN))
        & (np.abs(eta) < per_flavour(ETA_MAX))
    )


def _z0_sin_theta_ok(z0: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Return |z0 sin(theta)| < the maximum, with sin(theta) = 1 / cosh(eta).

    cosh(eta) >= 1, so |z0| below the maximum passes without it; cosh only for the others
    (the costliest part of the lepton selection otherwise).
    """
    ok = np.abs(z0) < Z0_SIN_THETA_MAX_MM
    far = np.flatnonzero(~ok)
    ok[far] = np.abs(z0[far]) < Z0_SIN_THETA_MAX_MM * np.cosh(eta[far])
    return ok


def objects(events: ak.Array) -> LeptonTable:
    """Return the chunk's lepton table with the good-lepton mask (once per chunk)."""
    cols, counts = lepton_columns(events)
    return LeptonTable(cols, counts, good_mask(cols))


def lepton_scale(events: ak.Array, leptons: LeptonTable, meta: Mapping, direction: int) -> tuple:
    """Return the events and the lepton table with pT and E scaled by 1 ± δ(flavour).

    The good-lepton mask is made again: pT thresholds and relative isolation move with it.
    """
    cols = dict(leptons.columns)
    factor = 1.0 + direction * np.where(cols["type"] == 11, LEPTON_SCALE["e"], LEPTON_SCALE["mu"])
    cols["pt"], cols["E"] = cols["pt"] * factor, cols["E"] * factor
    return events, LeptonTable(cols, leptons.counts, good_mask(cols))


def _sf_variation(name: str, flavour: str | None, delta: float) -> WeightVariation:
    """Return a flat relative uncertainty on ``scaleFactor_<name>``, per lepton or per event."""

    def factor(sign: int):
        def f(events: ak.Array, leptons: LeptonTable, meta: Mapping) -> np.ndarray | float:
            if flavour is None:
                return 1.0 + sign * delta
            n = leptons.good_sum(leptons.columns["type"] == (11 if flavour == "e" else 13))
            return (1.0 + sign * delta) ** n

        return f

    label = f"{delta:.1%} per {'electron' if flavour == 'e' else 'muon'}" if flavour else f"{delta:.1%}"
    return WeightVariation(f"sf_{name.lower()}", factor(+1), factor(-1), f"scaleFactor_{name} ± {label}")


WEIGHT_VARIATIONS = (
    relative_variation("lumi", "lumi_uncertainty", "integrated luminosity"),
    *(_sf_variation(name, flavour, delta) for name, (flavour, delta) in SF_PER_LEPTON.items()),
    *(_sf_variation(name, None, delta) for name, delta in SF_PER_EVENT.items()),
)


def weights(events: ak.Array, leptons: LeptonTable, meta: Mapping) -> np.ndarray:
    """Return per-event weights (the recipe in the module docstring)."""
    if meta.get("is_data"):
        return np.ones(len(events))
    if "totalWeight" in events.fields:
        return ak.to_numpy(events.totalWeight).astype(np.float64)
    sf = (
        events.scaleFactor_PILEUP
        * events.scaleFactor_ELE
        * events.scaleFactor_MUON
        * events.scaleFactor_LepTRIGGER
    )
    return (
        ak.to_numpy(events.mcWeight).astype(np.float64)
        * ak.to_numpy(sf).astype(np.float64)
        * ak.to_numpy(events.XSection).astype(np.float64)
        * meta["lumi_pb"]
        / ak.to_numpy(events.SumWeights).astype(np.float64)
    )


SELECTION = (
    Step("trigger", "trigger (e or mu)", lambda e, o: ak.to_numpy(e.trigE | e.trigM), inputs=("mini",)),
    Step("four_leptons", f"exactly {N_LEPTONS} good leptons", lambda e, o: o.good_sum(1) == N_LEPTONS),
    Step("charge", "sum charge = 0", lambda e, o: o.good_sum(o.columns["charge"]) == 0),
    Step(
        "flavour",
        f"sum type in {{{', '.join(map(str, CHANNELS))}}}",
        lambda e, o: np.isin(o.good_sum(o.columns["type"]), list(CHANNELS)),
    ),
    # 2e2mu with sum charge 0 can still be e+e+ mu-mu-: no Z candidates
    Step(
        "sfos",
        "two same-flavour opposite-sign pairs",
        lambda e, o: o.good_sum(o.columns["charge"] * (o.columns["type"] == 11)) == 0,
    ),
)


def observables(events: ak.Array, leptons: LeptonTable) -> ak.Array:
    """Return the four-lepton quantities of selected events (exactly four good leptons)."""
    index = np.flatnonzero(leptons.good).reshape(-1, N_LEPTONS)
    cols = leptons.columns
    pt_sorted = -np.sort(-cols["pt"][index].astype(np.float64), axis=1)
    z = closest_z({**cols, "flavour": cols["type"]}, index)
    return ak.zip(
        {
            **{k: z[k] for k in ("m4l", "z1_mass", "z2_mass", "pt4l")},
            **{f"lep{i + 1}_pt": pt_sorted[:, i] for i in range(N_LEPTONS)},
            "sum_type": cols["type"][index].astype(np.int64).sum(axis=1),
        }
    )


def categorize(observed: ak.Array) -> dict[str, np.ndarray]:
    """Return the channel masks (4e, 2e2mu, 4mu) of selected events."""
    sum_type = ak.to_numpy(observed.sum_type)
    return {name: sum_type == t for t, name in CHANNELS.items()}


def _columns(observed: ak.Array) -> ak.Array:
    return observed


ANALYSIS = Analysis(
    name="atlas-hzz4l",
    numba_kernels=True,
    inputs=Inputs(
        name="mini",
        event_id="eventNumber",
        branches={
            **branch_types("int", "eventNumber"),
            **branch_types("bool", "trigE", "trigM"),
            **MINI_LEPTONS,
        },
        mc_branches=MINI_MC,
    ),
    alt_inputs=(
        Inputs(
            name="flat-csv",
            event_id="eventNumber",
            branches={**branch_types("int", "eventNumber"), **FLAT_LEPTONS},
            mc_branches=branch_types("float", "totalWeight"),
        ),
    ),
    objects=objects,
    selection=SELECTION,
    weights=Weights(weights, variations=WEIGHT_VARIATIONS),
    shape_variations=(ShapeVariation("lepton_scale", lepton_scale, "lepton pT scale (0.4 % e, 0.1 % mu)"),),
    observables=observables,
    categories=Categories(tuple(CHANNELS.values()), categorize),
    features={
        "kinematic": FeatureSpec(KINEMATIC, _columns, units=("GeV",) * 7),
        "with-m4l": FeatureSpec((*KINEMATIC, "m4l"), _columns, units=("GeV",) * 8),
    },
    histograms=(
        histogram("m4l", 34, 80, 250, r"$m_{4\ell}$ [GeV]", lambda e: e.m4l),
        histogram("z1_mass", 30, 30, 120, r"$m_{Z_1}$ [GeV]", lambda e: e.z1_mass),
        histogram("z2_mass", 30, 0, 120, r"$m_{Z_2}$ [GeV]", lambda e: e.z2_mass),
        histogram("pt4l", 30, 0, 300, r"$p_T^{4\ell}$ [GeV]", lambda e: e.pt4l),
    ),
    scoring=Scoring(
        categories=tuple(CHANNELS.values()), cut_histogram="m4l", score_cut=0.6, working_point="ams"
    ),
    style=Style(experiment="ATLAS", title="ATLAS H→ZZ*→4ℓ", energy_tev=13),
    tools=Tools(
        toy_generator="hepsieve.datasets.toys.atlas_hzz4l:generate",
        flat_csv_writer="hepsieve.datasets.toys.atlas_hzz4l:write_kaggle_csv",
    ),
)
