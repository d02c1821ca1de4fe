"""Toy CMS NanoAOD files (trees ``Events`` and ``Runs``) for H->ZZ->4l, data and simulation.

Physics per sample, from the shared toy physics (:mod:`hepsieve.datasets.toys.kinematics`)
that the CMS reduced-ntuple and ATLAS toys use too (all momenta in GeV):

* VBF H, ggH and qq->ZZ: X -> Z(*) Z(*) -> 4l with the production jets of each process;
  4e : 2e2mu : 4mu = 1 : 2 : 1.
* Z+jets: Z -> ee/mumu plus two non-prompt leptons inside jets; ttbar: t -> W b, W -> l nu
  (two prompt leptons) plus two non-prompt leptons inside the b jets.
* 10 % of events get a further non-prompt lepton. Prompt leptons are isolated with small
  impact parameters and pass the ID 98 % of the time; non-prompt ones are not isolated,
  displaced (large SIP3D) and often fail the ID, so the lepton selection removes them.
* detector: lepton pT resolution (mu 1.5-2.5 %, e 2.5 %), jets 10 % with pT > 15 GeV,
  |eta| < 4.7 (a lepton is often also a jet: the analysis must clean jets), NanoAOD
  acceptance (mu pT > 3, |eta| < 2.4; e pT > 5, |eta| < 2.5), ``Jet_jetId`` (v9 layout only),
  emulated HLT paths of the fileset's trigger table (98 % efficient above threshold).
* written: a 4-lepton skim (>= 4 leptons in acceptance). ``Runs.genEventSumw`` holds the
  ``genWeight`` sum of all generated events of the file's block (Z+jets and ttbar: divided
  by the fileset's ``skim_efficiency``, the fraction of generated events with 4 leptons), so
  the normalised yield is xsec x br x lumi x (the fraction selected).
* ``genWeight``: Powheg-like positive weights for H, ZZ and ttbar; +-26331 with 16 %
  negative for Z+jets (as in the real DY file). ``LHEScaleWeight`` (9: muR, muF) and
  ``PSWeight`` (4: ISR, FSR) as w_var / w_nominal, a few per cent per event (simulation only;
  no ``puWeight``: NanoAOD-tools adds it, the toy does not).
* pseudo-data for the fileset's luminosity: per MC sample, Poisson(expected written yield)
  events from an independent pool, drawn by weight, in (run, lumi section) pairs of which 5 %
  lie outside the toy golden JSON the generator writes; each event is written into every
  primary dataset whose HLT paths it fires (the overlap that the analysis removes).

Layout: ``NanoAOD v9`` (``MET_*``, ``Jet_jetId``) or ``v15`` (``PFMET_*``, no ``Jet_jetId``,
``Electron_cutBased`` as uint8). Empty ``Photon``, ``FsrPhoton``, ``LowPtElectron``,
``FatJet``, ``SubJet`` and ``Tau`` collections carry the cross-reference branches that
coffea's ``NanoAODSchema`` looks for, so it reads the files without a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from hepsieve.datasets.filesets import load_fileset_spec, resolve_fileset, select_datasets
from hepsieve.datasets.progress import ProgressWriter
from hepsieve.datasets.toys.kinematics import (
    ELECTRON_MASS_GEV,
    H_MASS_GEV,
    H_WIDTH_GEV,
    MUON_MASS_GEV,
    Z_MASS_GEV,
    Z_WIDTH_GEV,
    breit_wigner,
    decay_to_four_leptons,
    decay_two_body,
    p4_from_rapidity,
    production_jets,
    recoiling_parent,
    smear_pt,
)
from hepsieve.processors.analyses.hzz4l_cms_nanoaod import TREE

log = logging.getLogger(__name__)

ANALYSIS_NAME = "cms-hzz4l-nanoaod"
VERSIONS = ("v9", "v15")
BATCH = 100_000  # written events per basket (clusters of <= 100k entries)
GEN_WEIGHT = {"vbf": 1.0, "ggh": 1.0, "zz": 1.0, "zjets": 26331.201, "ttbar": 1.0}
NEGATIVE_WEIGHT_FRACTION = {"zjets": 0.16}
TOY_RUNS = tuple(range(297050, 297060))  # 2017-like run numbers
LUMIS_PER_RUN = 200
BAD_LUMIS = (81, 90)  # per run, outside the toy golden JSON: 10 of 200 (5 %)
GOLDEN_JSON = "Cert_Collisions17_toy_GoldenJSON.json"
GOOD_LUMI_FRACTION = 1 - (BAD_LUMIS[1] - BAD_LUMIS[0] + 1) / LUMIS_PER_RUN
TRIGGER_EFFICIENCY = 0.98
MUON_ACCEPTANCE, ELECTRON_ACCEPTANCE = (3.0, 2.4), (5.0, 2.5)  # (pT min, |eta| max)
#: generator weights (w_var / w_nominal): per event, log(w) per doubling of the renormalisation
#: scale ~ N(mean, width) by production (largest for gluon-initiated ggH and ttbar), of the
#: factorisation scale ~ N(-0.02, 0.01); parton-shower ISR / FSR: log(w) ~ N(0, width), with
#: scale 2 and 1/2 reciprocal
RENORMALISATION_LOG_SLOPE = {"vbf": (-0.01, 0.01), "ggh": (-0.09, 0.03), "zz": (-0.04, 0.015),
                             "zjets": (-0.05, 0.02), "ttbar": (-0.10, 0.03)}  # fmt: skip
FACTORISATION_LOG_SLOPE = (-0.02, 0.01)
SHOWER_LOG_WIDTH = {"isr": 0.04, "fsr": 0.03}
GENERATOR_WEIGHT_BRANCHES = ("LHEScaleWeight", "PSWeight")

# --- the NanoAOD layout: collections, their fields and types ---
MUON_TYPES = {
    "pt": "f4", "eta": "f4", "phi": "f4", "mass": "f4", "charge": "i4", "pdgId": "i4",
    "dxy": "f4", "dz": "f4", "sip3d": "f4", "pfRelIso03_all": "f4", "pfRelIso04_all": "f4",
    "looseId": "?", "mediumId": "?", "tightId": "?", "jetIdx": "i4", "fsrPhotonIdx": "i4",
}  # fmt: skip
ELECTRON_TYPES = {
    "pt": "f4", "eta": "f4", "phi": "f4", "mass": "f4", "charge": "i4", "pdgId": "i4",
    "dxy": "f4", "dz": "f4", "sip3d": "f4", "pfRelIso03_all": "f4", "cutBased": "i4",
    "mvaFall17V2Iso_WP90": "?", "jetIdx": "i4", "photonIdx": "i4",
}  # fmt: skip
JET_TYPES = {
    "pt": "f4", "eta": "f4", "phi": "f4", "mass": "f4", "jetId": "i4",
    "electronIdx1": "i4", "electronIdx2": "i4", "muonIdx1": "i4", "muonIdx2": "i4",
}  # fmt: skip
#: collections the toy leaves empty but whose cross-reference branches NanoAODSchema expects
EMPTY_COLLECTIONS = {
    "Photon": {"pt": "f4", "eta": "f4", "phi": "f4", "electronIdx": "i4", "jetIdx": "i4"},
    "FsrPhoton": {"pt": "f4", "eta": "f4", "phi": "f4", "muonIdx": "i4"},
    "LowPtElectron": {
        "pt": "f4", "eta": "f4", "phi": "f4", "mass": "f4", "charge": "i4",
        "electronIdx": "i4", "photonIdx": "i4",
    },
    "FatJet": {"pt": "f4", "eta": "f4", "phi": "f4", "mass": "f4", "subJetIdx1": "i4", "subJetIdx2": "i4"},
    "SubJet": {"pt": "f4", "eta": "f4", "phi": "f4", "mass": "f4"},
    "Tau": {"pt": "f4", "eta": "f4", "phi": "f4", "mass": "f4", "charge": "i4", "jetIdx": "i4"},
}  # fmt: skip


def _flavour_mass(pdg: np.ndarray) -> np.ndarray:
    return np.where(pdg == 13, MUON_MASS_GEV, ELECTRON_MASS_GEV)


def _leptons(vectors: list, charge: np.ndarray, pdg: np.ndarray, prompt: bool) -> dict[str, np.ndarray]:
    """Return (n, k) lepton arrays (pt, eta, phi, charge, pdg, prompt) of k vector arrays."""
    return {
        "pt": np.stack([v.pt for v in vectors], 1),
        "eta": np.stack([v.eta for v in vectors], 1),
        "phi": np.stack([v.phi for v in vectors], 1),
        "charge": charge,
        "pdg": pdg,
        "prompt": np.full(charge.shape, prompt),
    }


def _concat(*parts: dict) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}


def _non_prompt(rng, src_pt, src_eta, src_phi) -> tuple[dict, tuple]:
    """Non-prompt leptons carrying a fraction of their source jets' pT, and those jets."""
    shape = src_pt.shape
    pdg = np.where(rng.random(shape) < 0.5, 11, 13)
    leptons = {
        "pt": rng.uniform(0.15, 0.7, shape) * src_pt,
        "eta": src_eta + rng.normal(0, 0.03, shape),
        "phi": src_phi + rng.normal(0, 0.03, shape),
        "charge": np.where(rng.random(shape) < 0.5, 1, -1),
        "pdg": pdg,
        "prompt": np.zeros(shape, bool),
    }
    return leptons, (src_pt, src_eta, src_phi)


def four_lepton_mass(rng: np.random.Generator, production: str, n: int) -> np.ndarray:
    """Return the mass [GeV] of the 4l system: the Higgs, or for ``zz`` the continuum + Z peak.

    On-shell ZZ continuum (80 %), off-shell 100-180 GeV (8 %) and the Z -> 4l peak (12 %): the
    4l skim of the NanoAOD samples, whose leptons mostly pass the selection's thresholds.
    """
    if production != "zz":
        return breit_wigner(rng, H_MASS_GEV, H_WIDTH_GEV, n, 120.0, 130.0)
    u = rng.random(n)
    continuum = 180 + rng.gamma(1.3, 60.0, n)
    offshell = rng.uniform(100, 180, n)
    z_peak = breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, n, 80.0, 100.0)
    return np.where(u < 0.80, continuum, np.where(u < 0.88, offshell, z_peak))


def _higgs_or_zz(rng, production: str, n: int) -> tuple[dict, tuple]:
    """H (VBF, ggH) or qq->ZZ -> 4l with the process' production jets."""
    jets = production_jets(rng, production, n)
    parent = recoiling_parent(rng, jets[0], jets[2], four_lepton_mass(rng, production, n))
    u = rng.random(n)
    pdg_a = np.where(u < 0.25, 11, np.where(u < 0.5, 13, np.where(u < 0.75, 11, 13)))
    pdg_b = np.where(u < 0.25, 11, np.where(u < 0.5, 13, np.where(u < 0.75, 13, 11)))
    truth = decay_to_four_leptons(rng, parent, _flavour_mass(pdg_a), _flavour_mass(pdg_b))
    pdg = np.stack([pdg_a, pdg_a, pdg_b, pdg_b], 1)
    return _leptons(truth, np.tile([1, -1, 1, -1], (n, 1)), pdg, True), jets


def _z_jets(rng, n: int) -> tuple[dict, tuple]:
    """Z -> ll plus two non-prompt leptons inside two further jets."""
    jets = production_jets(rng, "zz", n)
    z = recoiling_parent(rng, jets[0], jets[2], breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, n, 60.0, 120.0))
    pdg = np.where(rng.random(n) < 0.5, 11, 13)
    pair = decay_two_body(rng, z, _flavour_mass(pdg), _flavour_mass(pdg))
    prompt = _leptons(list(pair), np.tile([1, -1], (n, 1)), np.stack([pdg, pdg], 1), True)
    src = (15 + rng.exponential(25, (n, 2)), rng.normal(0, 1.8, (n, 2)), rng.uniform(-np.pi, np.pi, (n, 2)))
    fakes, fake_jets = _non_prompt(rng, *src)
    return _concat(prompt, fakes), tuple(
        np.concatenate([a, b], 1) for a, b in zip(jets, fake_jets, strict=True)
    )


def _ttbar(rng, n: int) -> tuple[dict, tuple]:
    """Top pairs, (l nu b)(l nu b): two prompt leptons, two non-prompt ones inside the b jets."""
    system = p4_from_rapidity(
        rng.gamma(2.0, 20.0, n),
        rng.normal(0, 1.0, n),
        rng.uniform(-np.pi, np.pi, n),
        350 + rng.gamma(2, 60, n),
    )
    prompt, bs = [], []
    for top in decay_two_body(rng, system, 172.5, 172.5):
        w, b = decay_two_body(rng, top, 80.4, 4.8)
        pdg = np.where(rng.random(n) < 0.5, 11, 13)
        lepton, _ = decay_two_body(rng, w, _flavour_mass(pdg), 0.0)
        prompt.append((lepton, pdg))
        bs.append(b)
    leptons = _leptons(
        [v for v, _ in prompt], np.tile([1, -1], (n, 1)), np.stack([p for _, p in prompt], 1), True
    )
    b_jets = tuple(np.stack([getattr(b, a) for b in bs], 1) for a in ("pt", "eta", "phi"))
    fakes, _ = _non_prompt(rng, *b_jets)
    isr = production_jets(rng, "zz", n)
    return _concat(leptons, fakes), tuple(np.concatenate([a, b], 1) for a, b in zip(b_jets, isr, strict=True))


def generator_level(rng, production: str, n: int) -> tuple[dict, tuple]:
    """Return the leptons ((n, k) arrays) and jets ((n, m) pt, eta, phi; NaN absent) of a process."""
    if production == "zjets":
        leptons, jets = _z_jets(rng, n)
    elif production == "ttbar":
        leptons, jets = _ttbar(rng, n)
    else:
        leptons, jets = _higgs_or_zz(rng, production, n)
    extra, extra_jet = _non_prompt(
        rng, 10 + rng.exponential(15, (n, 1)), rng.normal(0, 1.8, (n, 1)), rng.uniform(-np.pi, np.pi, (n, 1))
    )
    absent = rng.random((n, 1)) >= 0.10
    extra["pt"] = np.where(absent, np.nan, extra["pt"])
    jets = tuple(
        np.concatenate([a, np.where(absent, np.nan, b)], 1) for a, b in zip(jets, extra_jet, strict=True)
    )
    return _concat(leptons, extra), jets


def _lepton_quality(rng, lep: dict) -> dict[str, np.ndarray]:
    """Return NanoAOD isolation, impact-parameter and ID columns ((n, k)) of the leptons."""
    prompt, shape = lep["prompt"], lep["pt"].shape

    def pick(a, b):
        return np.where(prompt, a, b)

    iso = pick(rng.exponential(0.04, shape), 0.15 + rng.exponential(0.6, shape))
    sip = pick(
        np.abs(rng.normal(0, 1.3, shape)), np.abs(rng.normal(0, 3.0, shape)) + rng.exponential(4.0, shape)
    )
    good_id = rng.random(shape) < pick(0.98, 0.85)
    cut_based = np.where(good_id, rng.choice([2, 3, 4], shape, p=[0.1, 0.2, 0.7]), rng.choice([0, 1], shape))
    return {
        "pfRelIso03_all": iso * rng.uniform(0.8, 1.0, shape),
        "pfRelIso04_all": iso,
        "sip3d": sip,
        "dxy": pick(rng.normal(0, 0.003, shape), rng.normal(0, 0.08, shape)),
        "dz": pick(rng.normal(0, 0.006, shape), rng.normal(0, 0.15, shape)),
        "looseId": good_id,
        "mediumId": good_id & (rng.random(shape) < 0.95),
        "tightId": good_id & (rng.random(shape) < 0.9),
        "cutBased": cut_based,
        "mvaFall17V2Iso_WP90": good_id & (iso < 0.2),
    }


def _smear_leptons(rng, lep: dict) -> tuple[dict, np.ndarray]:
    """Smear lepton pT; return the (n, k) leptons, pT-ordered, and their NanoAOD acceptance."""
    is_mu = lep["pdg"] == 13
    res = np.where(is_mu, np.where(np.abs(lep["eta"]) > 1.2, 0.025, 0.015), 0.025)
    pt = smear_pt(rng, np.nan_to_num(lep["pt"]).ravel(), res.ravel()).reshape(is_mu.shape)
    lep = {**lep, "pt": np.where(np.isfinite(lep["pt"]), pt, np.nan)}
    lep["phi"] = (lep["phi"] + np.pi) % (2 * np.pi) - np.pi
    (mu_pt, mu_eta), (e_pt, e_eta) = MUON_ACCEPTANCE, ELECTRON_ACCEPTANCE
    ok = np.where(
        is_mu,
        (lep["pt"] > mu_pt) & (np.abs(lep["eta"]) < mu_eta),
        (lep["pt"] > e_pt) & (np.abs(lep["eta"]) < e_eta),
    )
    lep |= _lepton_quality(rng, lep)
    order = np.argsort(np.where(ok, -lep["pt"], np.inf), axis=1, kind="stable")
    rows = np.arange(len(ok))[:, None]
    return {k: v[rows, order] for k, v in lep.items()}, ok[rows, order]


def _jagged(values: Mapping[str, np.ndarray], ok: np.ndarray, types: Mapping[str, str]) -> ak.Array:
    """Return a jagged record array of the (n, k) ``values`` where ``ok``, in NanoAOD types."""
    counts = ok.sum(axis=1)
    return ak.zip(
        {
            f: ak.unflatten(np.asarray(values[f])[ok].astype(t), counts)
            for f, t in types.items()
            if f in values
        }
    )


def _lepton_collections(lep: dict, ok: np.ndarray) -> dict[str, ak.Array]:
    """Return the jagged Muon and Electron collections of the accepted leptons."""
    is_mu = lep["pdg"] == 13
    cols = {**lep, "mass": _flavour_mass(lep["pdg"]), "pdgId": -lep["charge"] * lep["pdg"]}
    cols |= {k: np.full(is_mu.shape, -1) for k in ("jetIdx", "fsrPhotonIdx", "photonIdx")}
    return {
        "Muon": _jagged(cols, ok & is_mu, MUON_TYPES),
        "Electron": _jagged(cols, ok & ~is_mu, ELECTRON_TYPES),
    }


def _jet_collection(rng, jets: tuple, lep: dict, ok: np.ndarray) -> ak.Array:
    """Return the jagged Jet collection: smeared jets plus leptons reconstructed as jets too."""
    pt, eta, phi = jets
    as_jet = (
        ok & lep["prompt"] & (lep["pt"] > 15) & (rng.random(ok.shape) < np.where(lep["pdg"] == 11, 0.6, 0.05))
    )
    pt = np.concatenate(
        [
            pt * (1 + 0.1 * rng.standard_normal(pt.shape)),
            np.where(as_jet, lep["pt"] * rng.uniform(1.0, 1.15, ok.shape), np.nan),
        ],
        1,
    )
    eta = np.concatenate([eta, lep["eta"] + rng.normal(0, 0.01, ok.shape)], 1)
    phi = (np.concatenate([phi, lep["phi"] + rng.normal(0, 0.01, ok.shape)], 1) + np.pi) % (2 * np.pi) - np.pi
    keep = np.isfinite(pt) & (pt > 15) & (np.abs(eta) < 4.7)
    order = np.argsort(np.where(keep, -pt, np.inf), axis=1, kind="stable")
    rows = np.arange(len(pt))[:, None]
    cols = {"pt": pt[rows, order], "eta": eta[rows, order], "phi": phi[rows, order]}
    cols["mass"] = np.nan_to_num(cols["pt"]) * rng.uniform(0.05, 0.15, pt.shape)
    cols["jetId"] = rng.choice([6, 2, 0], pt.shape, p=[0.95, 0.03, 0.02])
    cols |= {k: np.full(pt.shape, -1) for k in ("electronIdx1", "electronIdx2", "muonIdx1", "muonIdx2")}
    return _jagged(cols, keep[rows, order], JET_TYPES)


def _legs(lep: dict, ok: np.ndarray, pdg: int, iso_max: float) -> np.ndarray:
    """Return the (n, 3) leading pTs of accepted leptons of one flavour passing the online isolation."""
    pt = np.where(ok & (lep["pdg"] == pdg) & (lep["pfRelIso03_all"] < iso_max), lep["pt"], 0.0)
    return (
        -np.sort(-pt, axis=1)[:, :3]
        if pt.shape[1] >= 3
        else np.pad(-np.sort(-pt, axis=1), ((0, 0), (0, 3)))[:, :3]
    )


def emulate_triggers(rng, lep: dict, ok: np.ndarray) -> dict[str, np.ndarray]:
    """Return the toy HLT decisions (``HLT_<path>``) of the fileset's paths for each event."""
    e, mu = _legs(lep, ok, 11, 0.5), _legs(lep, ok, 13, 0.6)
    e_noiso = _legs(lep, ok, 11, np.inf)
    above = {
        "Ele23_Ele12_CaloIdL_TrackIdL_IsoVL": (e[:, 0] > 23) & (e[:, 1] > 12),
        "DoubleEle33_CaloIdL_MW": (e_noiso[:, 0] > 33) & (e_noiso[:, 1] > 33),
        "Mu17_TrkIsoVVL_Mu8_TrkIsoVVL_DZ_Mass3p8": (mu[:, 0] > 17) & (mu[:, 1] > 8),
        "TripleMu_12_10_5": (mu[:, 0] > 12) & (mu[:, 1] > 10) & (mu[:, 2] > 5),
        "Mu23_TrkIsoVVL_Ele12_CaloIdL_TrackIdL_IsoVL_DZ": (mu[:, 0] > 23) & (e[:, 0] > 12),
        "Mu8_TrkIsoVVL_Ele23_CaloIdL_TrackIdL_IsoVL_DZ": (mu[:, 0] > 8) & (e[:, 0] > 23),
    }
    return {f"HLT_{p}": fired & (rng.random(len(fired)) < TRIGGER_EFFICIENCY) for p, fired in above.items()}


def simulate(rng, production: str, n: int) -> tuple[dict[str, Any], np.ndarray]:
    """Generate ``n`` events; return the written (4-lepton skim) columns and which were written."""
    leptons, jets = generator_level(rng, production, n)
    lep, ok = _smear_leptons(rng, leptons)
    keep = ok.sum(axis=1) >= 4
    lep, ok, jets = {k: v[keep] for k, v in lep.items()}, ok[keep], tuple(a[keep] for a in jets)
    m = int(keep.sum())
    met = rng.exponential(25.0, m)
    out: dict[str, Any] = {
        **_lepton_collections(lep, ok),
        "Jet": _jet_collection(rng, jets, lep, ok),
        **emulate_triggers(rng, lep, ok),
        "MET_pt": met,
        "MET_phi": rng.uniform(-np.pi, np.pi, m),
        "PV_npvs": rng.poisson(30, m),
    }
    return out, keep


def gen_weights(rng, production: str, n: int) -> np.ndarray:
    """Return the signed ``genWeight`` of ``n`` generated events of ``production``."""
    w0, f = GEN_WEIGHT[production], NEGATIVE_WEIGHT_FRACTION.get(production, 0.0)
    spread = np.ones(n) if production == "zjets" else rng.lognormal(0.0, 0.05, n)
    return w0 * spread * np.where(rng.random(n) < f, -1.0, 1.0)


def generator_weights(rng, production: str, n: int) -> dict[str, ak.Array]:
    """Return ``LHEScaleWeight`` and ``PSWeight`` of ``n`` events, as NanoAOD stores them.

    ``LHEScaleWeight``: 9 per event, muR x muF in {0.5, 1, 2}^2 row-major ([4] = 1, the
    nominal); ``PSWeight``: 4, [0] ISR = 0.5, [1] FSR = 0.5, [2] ISR = 2, [3] FSR = 2.
    """
    (mean, width), (f_mean, f_width) = RENORMALISATION_LOG_SLOPE[production], FACTORISATION_LOG_SLOPE
    steps = np.log2([0.5, 1.0, 2.0])
    a_r, a_f = rng.normal(mean, width, n), rng.normal(f_mean, f_width, n)
    lhe = np.exp(a_r[:, None, None] * steps[None, :, None] + a_f[:, None, None] * steps[None, None, :])
    isr, fsr = (rng.normal(0.0, SHOWER_LOG_WIDTH[k], n) for k in ("isr", "fsr"))
    ps = np.exp(np.stack([-isr, -fsr, isr, fsr], axis=1))
    return {
        name: ak.unflatten(values.reshape(n, -1).ravel().astype(np.float32), np.full(n, values[0].size))
        for name, values in (("LHEScaleWeight", lhe), ("PSWeight", ps))
    }


def _layout(columns: dict[str, Any], version: str) -> dict[str, Any]:
    """Return the branches of one batch in the layout of NanoAOD ``version`` (v9 or v15)."""
    if version not in VERSIONS:
        raise ValueError(f"NanoAOD version {version!r}: choose one of {VERSIONS}")
    out = dict(columns)
    n = len(out["run"])
    for name, types in EMPTY_COLLECTIONS.items():
        out[name] = ak.zip({f: ak.unflatten(np.zeros(0, t), np.zeros(n, np.int64)) for f, t in types.items()})
    if version == "v15":
        out["PFMET_pt"], out["PFMET_phi"] = out.pop("MET_pt"), out.pop("MET_phi")
        out["Jet"] = out["Jet"][[f for f in out["Jet"].fields if f != "jetId"]]
        electron = out["Electron"]
        fields = {f: electron[f] for f in electron.fields if f != "mvaFall17V2Iso_WP90"}
        fields["cutBased"] = ak.values_astype(electron.cutBased, np.uint8)
        fields["mvaIso_WP90"] = electron.mvaFall17V2Iso_WP90
        out["Electron"] = ak.zip(fields)
    return out


def _branch_type(value: Any) -> Any:
    return value.type.content if isinstance(value, ak.Array) else np.asarray(value).dtype


class NanoWriter:
    """Writes NanoAOD ``Events`` batches into one file and its ``Runs`` tree when closed."""

    def __init__(self, path: Path, version: str):
        self.path, self.version = Path(path), version
        self.file = uproot.recreate(self.path, compression=uproot.LZ4(1))
        self.entries = 0

    def extend(self, columns: dict[str, Any]) -> None:
        """Append one batch (``run``, ``luminosityBlock``, ``event``, collections, ...)."""
        branches = _layout(columns, self.version)
        if self.entries == 0:
            self.file.mktree(TREE, {k: _branch_type(v) for k, v in branches.items()})
        self.file[TREE].extend(branches)
        self.entries += len(branches["run"])

    def close(self, runs: Mapping[str, Any]) -> None:
        """Write the ``Runs`` tree (e.g. ``run``, ``genEventSumw``) and close the file."""
        self.file["Runs"] = {k: np.asarray(v) for k, v in runs.items()}
        self.file.close()


def write_nanoaod(
    path: str | Path, columns: dict[str, Any], runs: Mapping[str, Any], version: str = "v9"
) -> Path:
    """Write one NanoAOD file of explicit events (e.g. hand-built ones in a test); return its path.

    ``columns``: ``run``, ``luminosityBlock``, ``event``, jagged ``Muon``/``Electron``/``Jet``
    records (the fields the analysis reads; the other NanoAOD fields get defaults), flat
    ``HLT_*``, optional ``genWeight``; ``runs``: the ``Runs`` tree's columns.
    """
    n = len(columns["run"])
    full = {"MET_pt": np.zeros(n, "f4"), "MET_phi": np.zeros(n, "f4"), "PV_npvs": np.ones(n, "i4"), **columns}
    for name, types in (("Muon", MUON_TYPES), ("Electron", ELECTRON_TYPES), ("Jet", JET_TYPES)):
        coll = columns[name]
        defaults = {
            f: ak.values_astype(ak.zeros_like(coll.pt) - (1 if "Idx" in f else 0), t)
            for f, t in types.items()
        }
        full[name] = ak.zip(
            {f: ak.values_astype(coll[f], t) if f in coll.fields else defaults[f] for f, t in types.items()}
        )
    full["run"] = np.asarray(columns["run"], np.uint32)
    full["luminosityBlock"] = np.asarray(columns["luminosityBlock"], np.uint32)
    full["event"] = np.asarray(columns["event"], np.uint64)
    writer = NanoWriter(Path(path), version)
    writer.extend(full)
    writer.close(runs)
    return Path(path)


def _take(columns: dict[str, Any], rows: slice | np.ndarray) -> dict[str, Any]:
    return {k: v[rows] for k, v in columns.items()}


def _mc_batches(rng, production: str, n_events: int, skim_efficiency: float):
    """Yield (columns, cumulative generated Σ genWeight and count at each written event)."""
    done, gen_sumw, gen_count = 0, 0.0, 0
    while done < n_events:
        n_try = int(min(BATCH, n_events - done) * 1.6) + 100
        columns, keep = simulate(rng, production, n_try)
        w = gen_weights(rng, production, n_try).astype(np.float32)
        rows = np.flatnonzero(keep)[: n_events - done]
        cum_w = gen_sumw + np.cumsum(w.astype(np.float64))[rows] / skim_efficiency
        cum_n = gen_count + (rows + 1) / skim_efficiency
        columns = _take(columns, slice(0, len(rows)))
        columns["genWeight"] = w[rows]
        # a spawned stream: the events of a seed stay those of the toys without these branches
        columns |= generator_weights(rng.spawn(1)[0], production, len(rows))
        gen_sumw, gen_count = cum_w[-1], cum_n[-1]
        done += len(rows)
        yield columns, cum_w, cum_n


def _file_names(dataset: str, n_files: int) -> list[str]:
    return [f"{dataset}_{k}.root" for k in range(n_files)]


def _write_mc(out: Path, name: str, meta: dict, options: dict, rng, progress: ProgressWriter) -> dict:
    """Write one MC dataset into ``files_per_dataset`` files; return its provenance."""
    n_events, n_files = options["events"], options["files_per_dataset"]
    bounds = np.linspace(0, n_events, n_files + 1).astype(int)
    names = _file_names(name, n_files)
    skim = float(meta.get("skim_efficiency", 1.0))
    k, written, start_w, start_n, written_w = 0, 0, 0.0, 0.0, 0.0
    writer = NanoWriter(out / names[0], options["version"])
    for columns, cum_w, cum_n in _mc_batches(rng, meta["production"], n_events, skim):
        n = len(cum_w)
        written_w += float(columns["genWeight"].astype(np.float64).sum())
        columns |= {
            "run": np.ones(n, np.uint32),
            "luminosityBlock": (1 + (written + np.arange(n)) // 1000).astype(np.uint32),
            "event": (options["event_offset"] + written + np.arange(n)).astype(np.uint64),
        }
        lo = 0
        while lo < n:
            hi = min(n, lo + bounds[k + 1] - written)
            writer.extend(_take(columns, slice(lo, hi)))
            written += hi - lo
            if written == bounds[k + 1]:
                runs = {"run": [1], "genEventCount": [round(cum_n[hi - 1] - start_n)]}
                writer.close(runs | {"genEventSumw": [cum_w[hi - 1] - start_w]})
                start_w, start_n, k = cum_w[hi - 1], cum_n[hi - 1], k + 1
                if k < n_files:
                    writer = NanoWriter(out / names[k], options["version"])
            lo = hi
        progress.advance(n)
    expected = meta["xsec_pb"] * meta.get("br", 1.0) * options["lumi_pb"] * written_w / start_w
    return {
        "files": names,
        "events": n_events,
        "genEventSumw": start_w,
        "expected_written_yield": expected,
        **meta,
    }


def _pseudo_data(rng, meta: dict, expected: float) -> dict[str, Any] | None:
    """Poisson(expected) events of one process, drawn by weight from an independent pool.

    ``expected`` is for the fileset's luminosity, the certified one: the toy records
    1 / (good fraction) as much, the lumi sections outside its golden JSON included.
    """
    n_data = int(rng.poisson(expected / GOOD_LUMI_FRACTION))
    if n_data == 0:
        return None
    pool, _, _ = next(_mc_batches(rng, meta["production"], max(3 * n_data, 300), 1.0))
    weight = np.clip(pool.pop("genWeight").astype(np.float64), 0, None)
    for name in GENERATOR_WEIGHT_BRANCHES:  # simulation only
        pool.pop(name)
    pick = rng.choice(len(weight), size=min(n_data, len(weight)), replace=False, p=weight / weight.sum())
    return _take(pool, np.sort(pick))


def golden_json() -> dict[str, list[list[int]]]:
    """Return the toy golden JSON: every toy run, lumi sections 1-200 without 81-90."""
    good = [[1, BAD_LUMIS[0] - 1], [BAD_LUMIS[1] + 1, LUMIS_PER_RUN]]
    return {str(run): good for run in TOY_RUNS}


def _merge(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        k: ak.concatenate([c[k] for c in chunks])
        if isinstance(chunks[0][k], ak.Array)
        else np.concatenate([c[k] for c in chunks])
        for k in chunks[0]
    }


def _write_data(rng, out: Path, spec: dict, data: list[str], chunks: list[dict], options: dict) -> dict:
    """Write each primary dataset's file: every pseudo-data event that fires its HLT paths."""
    merged = _merge(chunks)
    n = len(merged["MET_pt"])
    run = rng.choice(TOY_RUNS, n).astype(np.uint32)
    lumi = rng.integers(1, LUMIS_PER_RUN + 1, n).astype(np.uint32)
    order = np.lexsort((lumi, run))
    merged = _take(merged, order) | {"run": run[order], "luminosityBlock": lumi[order]}
    merged["event"] = (10**8 + np.arange(n)).astype(np.uint64)
    triggers = spec["metadata"]["triggers"]
    provenance: dict[str, Any] = {}
    for name in data:
        meta = spec["datasets"][name]["metadata"]
        fired = np.logical_or.reduce([merged[p] for p in triggers[meta["primary_dataset"]]])
        writer = NanoWriter(out / _file_names(name, 1)[0], options["version"])
        writer.extend(_take(merged, fired))
        writer.close({"run": np.asarray(TOY_RUNS, np.uint32)})
        provenance[name] = {"files": _file_names(name, 1), "events": int(fired.sum()), **meta}
    provenance["pseudo_data_events"] = n
    return provenance


def generate(
    out_dir: str | Path,
    events: int = 20_000,
    seed: int = 1,
    datasets: list[str] | None = None,
    version: str = "v9",
    files_per_dataset: int = 1,
) -> Path:
    """Write the NanoAOD toys (``events`` per MC dataset), pseudo-data, golden JSON, ``toy.json``."""
    spec = load_fileset_spec(ANALYSIS_NAME)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = select_datasets(spec, datasets)
    mc = [d for d in names if not spec["datasets"][d]["metadata"].get("is_data")]
    data = [d for d in names if spec["datasets"][d]["metadata"].get("is_data")]
    options = {"events": events, "files_per_dataset": files_per_dataset, "version": version}
    options["lumi_pb"] = spec["lumi_pb"]
    provenance: dict[str, Any] = {
        "analysis": ANALYSIS_NAME,
        "generator": __name__,
        "seed": seed,
        "version": version,
        "events_per_dataset": events,
        "lumi_pb": spec["lumi_pb"],
        "datasets": {},
    }
    chunks = []
    with ProgressWriter(total=events * len(mc), description=f"generating {ANALYSIS_NAME}") as progress:
        for i, name in enumerate(mc):
            meta = spec["datasets"][name]["metadata"]
            options["event_offset"] = (i + 1) * 10**9
            provenance["datasets"][name] = info = _write_mc(
                out, name, meta, options, np.random.default_rng([seed, i]), progress
            )
            if data and (
                chunk := _pseudo_data(
                    np.random.default_rng([seed, i, 99]), meta, info["expected_written_yield"]
                )
            ):
                chunks.append(chunk)
    (out / GOLDEN_JSON).write_text(json.dumps(golden_json()))  # the fileset names it for every dataset
    if data and chunks:
        provenance["datasets"] |= _write_data(
            np.random.default_rng([seed, 1000]), out, spec, data, chunks, options
        )
    (out / "toy.json").write_text(json.dumps(provenance, indent=2, default=float))
    log.info("wrote %d toy datasets to %s", len(names), out)
    return out


def _selected_reduced(path: str, tree: str, dataset: str, meta: dict) -> dict[str, np.ndarray]:
    """Return the cms-hzz4l branches of the events of one file that the NanoAOD selection keeps."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    from hepsieve.processors.analyses.hzz4l_cms import BRANCHES
    from hepsieve.processors.analyses.hzz4l_cms_nanoaod import ANALYSIS

    events = NanoEventsFactory.from_root(
        {path: tree}, schemaclass=NanoAODSchema, metadata={"dataset": dataset, **meta}, mode="virtual"
    ).events()
    objects = ANALYSIS.make_objects(events)
    weight = ANALYSIS.weights.nominal(events, objects, meta)
    mask = np.logical_and.reduce([step.mask(events, objects) for step in ANALYSIS.selection])
    observed = ANALYSIS.make_observables(events[mask], objects[mask])
    out = {b: ak.to_numpy(observed[b]).astype(np.float32) for b in BRANCHES if b in observed.fields}
    out["f_run"] = ak.to_numpy(events.run[mask]).astype(np.int32)
    out["f_event"] = ak.to_numpy(events.event[mask]).astype(np.int64)
    out["f_weight"] = weight[mask].astype(np.float32)
    return {b: out[b] for b in BRANCHES}


def write_reduced(nano_dir: str | Path, out_dir: str | Path, datasets: list[str] | None = None) -> Path:
    """Write the MC events the NanoAOD selection keeps as cms-hzz4l reduced ntuples.

    The same events in the other format (``HZZ4LeptonsAnalysisReduced``, the 26 branches,
    float32), one file per dataset, and a fileset JSON for ``cms-hzz4l``; return its path.
    """
    from hepsieve.processors.analyses.hzz4l_cms import TREE as REDUCED_TREE
    from hepsieve.processors.analyses.hzz4l_cms_nanoaod import INPUTS

    spec = load_fileset_spec(ANALYSIS_NAME)
    names = [d for d in select_datasets(spec, datasets) if not spec["datasets"][d]["metadata"].get("is_data")]
    resolved = resolve_fileset(spec, nano_dir, INPUTS, datasets=names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reduced: dict[str, Any] = {"analysis": "cms-hzz4l", "tree": REDUCED_TREE, "datasets": {}}
    reduced |= {k: spec[k] for k in ("lumi_pb", "lumi_uncertainty", "processes")}
    for name, entry in resolved.fileset.items():
        parts = [_selected_reduced(p, t, name, entry["metadata"]) for p, t in entry["files"].items()]
        with uproot.recreate(out / f"{name}.root") as fout:
            fout[REDUCED_TREE] = {b: np.concatenate([p[b] for p in parts]) for b in parts[0]}
        meta = {k: entry["metadata"][k] for k in ("role", "process", "is_data")}
        reduced["datasets"][name] = {"files": [f"{name}.root"], "metadata": meta}
    path = out / "cms_hzz4l_from_nanoaod.json"
    path.write_text(json.dumps(reduced, indent=1))
    return path
