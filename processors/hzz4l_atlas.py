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
opposite-sign (SFOS) pairs. Z1 is the same-flavour
opposite-sign pair closest to m_Z, Z2 the other pair.
"""

from __future__ import annotations

from collections.abc import Mapping

import awkward as ak
import numpy as np
import vector

from hepsieve.processors.analysis import Analysis, FeatureSpec, HistogramSpec, regular_axis
from hepsieve.processors.fourlepton import z_pairing

MEV = 1000.0
CHANNELS = {44: "4e", 48: "2e2mu", 52: "4mu"}
LEPTON_FIELDS = ("pt", "eta", "phi", "E", "charge", "type")
KINEMATIC = ("lep1_pt", "lep2_pt", "lep3_pt", "lep4_pt", "z1_mass", "z2_mass", "pt4l")


def lepton_table(events: ak.Array) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Return flat per-lepton numpy columns (GeV) and the leptons per event, for either flavour.

    The object selection needs no jagged structure, only per-event sums at the end, so it
    runs on flat arrays (several times faster than jagged ``ak.where`` chains).
    """
    if "lep_pt" in events.fields:  # ROOT mini tree, MeV
        counts = ak.to_numpy(ak.num(events.lep_pt))

        def flat(branch):
            return ak.to_numpy(ak.flatten(events[branch]))

        cols = {f: flat(f"lep_{f}") for f in LEPTON_FIELDS}
        for f in ("pt", "E"):
            cols[f] = cols[f] / MEV
        cols |= {"ptcone30": flat("lep_ptcone30") / MEV, "etcone20": flat("lep_etcone20") / MEV,
                 "sigd0": flat("lep_tracksigd0pvunbiased"), "z0": flat("lep_z0"),
                 "tight": flat("lep_isTightID")}
        return cols, counts
    # flat Kaggle-style columns lep_<var>_0..3 (GeV): four selected leptons per row
    n_lep = sum(1 for f in events.fields if f.startswith("lep_pt_"))
    cols = {f: np.stack([ak.to_numpy(events[f"lep_{f}_{i}"]) for i in range(n_lep)], axis=1).ravel()
            for f in LEPTON_FIELDS}
    return cols, np.full(len(events), n_lep)


def good_mask(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Return the object selection per lepton (all True where the input lacks ID variables)."""
    if "ptcone30" not in cols:
        return np.ones(len(cols["pt"]), dtype=bool)
    pt, eta, electron = cols["pt"], cols["eta"], cols["type"] == 11
    theta = 2 * np.arctan(np.exp(-eta))
    return (cols["tight"] & (cols["ptcone30"] < 0.3 * pt) & (cols["etcone20"] < 0.3 * pt)
            & (np.abs(cols["sigd0"]) < np.where(electron, 5.0, 3.0))
            & (np.abs(cols["z0"] * np.sin(theta)) < 0.5)
            & (pt > np.where(electron, 7.0, 5.0)) & (np.abs(eta) < np.where(electron, 2.47, 2.5)))


def per_event_sum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Return the sum of per-lepton ``values`` in each event."""
    owner = np.repeat(np.arange(len(counts)), counts)
    return np.bincount(owner, weights=values, minlength=len(counts))


def four_good_leptons(cols: dict[str, np.ndarray], good: np.ndarray, counts: np.ndarray,
                      events_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Return (n, 4) columns of the good leptons of events with exactly four of them."""
    keep = good & np.repeat(events_mask, counts)
    return {f: cols[f][keep].reshape(-1, 4) for f in LEPTON_FIELDS}


def weights(events: ak.Array, meta: Mapping) -> np.ndarray:
    """Return per-event weights (the recipe in the module docstring)."""
    if meta.get("is_data"):
        return np.ones(len(events))
    if "totalWeight" in events.fields:
        return ak.to_numpy(events.totalWeight).astype(np.float64)
    sf = (events.scaleFactor_PILEUP * events.scaleFactor_ELE * events.scaleFactor_MUON
          * events.scaleFactor_LepTRIGGER)
    return (ak.to_numpy(events.mcWeight).astype(np.float64) * ak.to_numpy(sf).astype(np.float64)
            * ak.to_numpy(events.XSection).astype(np.float64) * meta["lumi_pb"]
            / ak.to_numpy(events.SumWeights).astype(np.float64))


def selection(events: ak.Array) -> dict[str, np.ndarray]:
    """Return the ordered event selection steps."""
    cols, counts = lepton_table(events)
    good = good_mask(cols)

    def good_sum(values):
        return per_event_sum(np.where(good, values, 0), counts)

    steps = {}
    if "trigE" in events.fields:
        steps["trigger (e or mu)"] = ak.to_numpy(events.trigE | events.trigM)
    steps["exactly 4 good leptons"] = good_sum(1) == 4
    steps["sum charge = 0"] = good_sum(cols["charge"]) == 0
    steps["sum type in {44, 48, 52}"] = np.isin(good_sum(cols["type"]), list(CHANNELS))
    # 2e2mu with sum charge 0 can still be e+e+ mu-mu-: no Z candidates
    steps["two same-flavour opposite-sign pairs"] = good_sum(cols["charge"] * (cols["type"] == 11)) == 0
    return steps


def derive(events: ak.Array) -> ak.Array:
    """Return the four-lepton quantities of selected events (exactly four good leptons)."""
    cols, counts = lepton_table(events)
    four = four_good_leptons(cols, good_mask(cols), counts, np.ones(len(counts), bool))
    # Cartesian once: the six pair sums below are then cheap
    vecs = [vector.array({c: four[c][:, i].astype(np.float64) for c in ("pt", "eta", "phi", "E")})
            .to_xyzt() for i in range(4)]
    z1, z2, _ = z_pairing(vecs, four["charge"], four["type"])
    system = vecs[0] + vecs[1] + vecs[2] + vecs[3]
    pt_sorted = -np.sort(-four["pt"].astype(np.float64), axis=1)
    return ak.zip({
        "m4l": system.mass, "z1_mass": z1, "z2_mass": z2, "pt4l": system.pt,
        **{f"lep{i + 1}_pt": pt_sorted[:, i] for i in range(4)},
        "sum_type": four["type"].astype(np.int64).sum(axis=1),
        "eventNumber": ak.to_numpy(events.eventNumber),
    })


def categorize(derived: ak.Array) -> np.ndarray:
    """Return the channel (4e, 2e2mu, 4mu) of each selected event."""
    sum_type = ak.to_numpy(derived.sum_type)
    return np.select([sum_type == t for t in CHANNELS], list(CHANNELS.values()), default="other")


def _columns(derived: ak.Array) -> dict[str, ak.Array]:
    return {f: derived[f] for f in (*KINEMATIC, "m4l")}


ANALYSIS = Analysis(
    name="atlas-hzz4l",
    title="ATLAS H→ZZ*→4ℓ",
    experiment="ATLAS",
    tree="mini",
    fileset="atlas_hzz4l.json",
    event_id="eventNumber",
    required_branches=(
        "eventNumber", "mcWeight", "scaleFactor_PILEUP", "scaleFactor_ELE", "scaleFactor_MUON",
        "scaleFactor_LepTRIGGER", "XSection", "SumWeights", "trigE", "trigM", "lep_pt", "lep_eta",
        "lep_phi", "lep_E", "lep_charge", "lep_type", "lep_ptcone30", "lep_etcone20",
        "lep_tracksigd0pvunbiased", "lep_z0", "lep_isTightID"),
    weights=weights,
    selection=selection,
    categorize=categorize,
    categories=tuple(CHANNELS.values()),
    scored_categories=tuple(CHANNELS.values()),
    features={
        "kinematic": FeatureSpec(KINEMATIC, _columns, units=("GeV",) * 7),
        "with-m4l": FeatureSpec((*KINEMATIC, "m4l"), _columns, units=("GeV",) * 8),
    },
    default_features="kinematic",
    histograms=(
        HistogramSpec("m4l", regular_axis(34, 80, 250, "m4l", r"$m_{4\ell}$ [GeV]"), lambda e: e.m4l),
        HistogramSpec("z1_mass", regular_axis(30, 30, 120, "z1_mass", r"$m_{Z_1}$ [GeV]"),
                      lambda e: e.z1_mass),
        HistogramSpec("z2_mass", regular_axis(30, 0, 120, "z2_mass", r"$m_{Z_2}$ [GeV]"),
                      lambda e: e.z2_mass),
        HistogramSpec("pt4l", regular_axis(30, 0, 300, "pt4l", r"$p_T^{4\ell}$ [GeV]"), lambda e: e.pt4l),
    ),
    cut_histogram="m4l",
    score_cut=0.6,
    lumi_pb=10064.0,
    toy_generator="hepsieve.datasets.toys.atlas_hzz4l:generate",
    derive=derive,
    meta={"energy_tev": 13, "working_point": "ams",
          "flat_csv_writer": "hepsieve.datasets.toys.atlas_hzz4l:write_kaggle_csv"},
)
