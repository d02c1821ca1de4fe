"""Toy ATLAS Open Data ``DM_ML_notebook`` CSVs: the mono-Z signal and its four backgrounds.

Writes the five files of the real data (``DM_300.csv``, ``ZZ.csv``, ``WZ.csv``, ``Z+jets.csv``,
``Non-resonant_ll.csv``) with the exact header and column order of the real ones, in GeV, and
the same rows converted to Parquet by the schema-aware converter (``hepsieve convert
--analysis atlas-dm``). Physics per file (13 TeV, four-vectors via ``vector``):

* ``DM_300``: qq -> Z Z'(-> chi chi), vector mediator m_Z' = 300 GeV (Breit-Wigner, 15 GeV wide),
  m_chi = 1 GeV; Z -> ee, mumu or tautau (tau pairs are generated, counted in the sum of
  weights, and never pass the two-electron/two-muon preselection); the generator filter of
  DSID 303513 (true ETmiss > 40 GeV) defines the generated sample. The Z recoils against the
  invisible mediator: large ETmiss, dphi(pT_ll, ETmiss) near pi.
* ``ZZ``: ZZ -> ll nu nu, irreducible (the second Z is invisible).
* ``WZ``: WZ -> l nu ll; it enters when one of the three leptons is lost (outside the
  acceptance or failing the identification), whose momentum then adds to ETmiss; the two
  leptons left may be the W's and one of the Z's (often same-sign or off the Z peak).
* ``Z+jets``: Z -> ee, mumu recoiling against one or two jets; its ETmiss is fake, from a jet
  measured far below its energy. The Z pT spectrum (``_draw_z_pt``) and the rate of such jets (1 %)
  are importance-sampled (half the events from a harder spectrum; 25 %) with compensating
  generator weights, as sliced or biased simulation is.
* ``Non-resonant_ll``: ttbar -> WbWb, Wt and WW, each W -> l nu: two uncorrelated lepton
  flavours (ee : mumu : emu = 1 : 1 : 2, so the same-flavour preselection keeps half) and a
  flat m_ll; ETmiss from the two neutrinos.

Detector: lepton pT resolution (e 2 %, mu 1.5 % + 0.02 % x pT), efficiency 0.90 (e) / 0.95 (mu),
acceptance pT > 7 GeV, |eta| < 2.47 (e) / 2.5 (mu); electron charge flips (0.2 % + 0.3 % x
|eta|); jets with a 0.8/sqrt(pT) (+) 5 % response and a 1 % tail measured at 30-80 %, kept above
20 GeV in |eta| < 4.5; b-tagging at 77 % (1 % for light jets) in |eta| < 2.5; ETmiss = the true
invisible momentum + lost leptons + every mismeasurement + an 8 GeV soft term.

Every derived column is computed from these reconstructed objects (``derived_columns``).
The files' preselection: exactly two leptons, same flavour, leading pT > 25 GeV (single-lepton
trigger), ETmiss > 80 GeV, 60 < m_ll < 120 GeV, at most one b-jet; same-sign pairs are kept.
Weights: the generator weight is negative for a fraction of events (ZZ, WZ 12 %, Z+jets 5 %,
WW 10 %); ``totalWeight = xsec x lumi x generator weight x scale factors / (sum of the
generator weights of every generated event)``, so that the sum of ``totalWeight`` over a file
is xsec x lumi x the preselection efficiency (scale factors included).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import vector

from hepsieve.datasets.converters import csv_schema, csv_to_parquet
from hepsieve.datasets.filesets import load_fileset_spec, select_datasets
from hepsieve.datasets.progress import ProgressWriter
from hepsieve.datasets.toys.kinematics import (
    ELECTRON_MASS_GEV,
    MUON_MASS_GEV,
    Z_MASS_GEV,
    Z_WIDTH_GEV,
    breit_wigner,
    decay_two_body,
    p4,
    p4_from_rapidity,
    production_jets,
    recoiling_parent,
    smear_pt,
)
from hepsieve.processors.analyses.atlas_dm import (
    ANALYSIS,
    CSV_COLUMNS,
    INT_COLUMNS,
    PRESELECTION_ETMISS_MIN,
    PRESELECTION_MLL,
    PRESELECTION_N_BJETS_MAX,
)

log = logging.getLogger(__name__)

W_MASS_GEV, W_WIDTH_GEV = 80.379, 2.085
TOP_MASS_GEV = 172.5
MEDIATOR_MASS_GEV, MEDIATOR_WIDTH_GEV = 300.0, 15.0
BR_W_TO_E_OR_MU = 0.1071 + 0.1063  # PDG: W -> e nu, W -> mu nu
BR_Z_TO_E_OR_MU = 0.033632 + 0.033662  # PDG: Z -> ee, Z -> mumu
BR_Z_TO_INVISIBLE = 0.2000  # PDG
TRIGGER_PT_MIN = 25.0  # GeV, leading lepton (single-lepton trigger plateau)
LEPTON_PT_MIN = 7.0  # GeV
LEPTON_ETA_MAX = {11: 2.47, 13: 2.5}
LEPTON_EFFICIENCY = {11: 0.90, 13: 0.95}
JET_PT_MIN, JET_ETA_MAX, BTAG_ETA_MAX = 20.0, 4.5, 2.5
BTAG_EFFICIENCY, MISTAG_RATE = 0.77, 0.01
JET_TAIL_RATE, JET_TAIL_RESPONSE = 0.01, (0.3, 0.8)
SOFT_TERM_GEV = 8.0
Z_PT_SCALE_GEV, Z_PT_BIASED_SCALE_GEV = 35.0, 60.0  # Z+jets: Z pT spectrum and its biased proposal
BATCH = 100_000  # generated events per batch
MAX_BATCHES = 5_000


@dataclass(frozen=True)
class Component:
    """One simulated process of a file: cross section, its source, generator, weights."""

    name: str
    xsec_pb: float
    reference: str
    make: Callable[[np.random.Generator, int], dict]
    negative_fraction: float = 0.0
    share: float = 1.0  # fraction of the file's rows


def _flavour_mass(flavour: np.ndarray) -> np.ndarray:
    return np.where(flavour == 13, MUON_MASS_GEV, ELECTRON_MASS_GEV)


def _flavours(rng: np.random.Generator, n: int, tau_fraction: float = 0.0) -> np.ndarray:
    """Return 11 (e) or 13 (mu) per event, 15 (tau, never reconstructed) with ``tau_fraction``."""
    u = rng.random(n)
    return np.where(u < tau_fraction, 15, np.where(u < tau_fraction + (1 - tau_fraction) / 2, 11, 13))


def _z_to_leptons(rng, z: vector.MomentumNumpy4D, flavour: np.ndarray) -> list:
    """Return [l+, l-] of Z -> ll decays (isotropic in the Z rest frame)."""
    mass = _flavour_mass(flavour)
    return list(decay_two_body(rng, z, mass, mass))


def _w_to_lepton(rng, w: vector.MomentumNumpy4D, flavour: np.ndarray) -> tuple:
    """Return (lepton, neutrino) of W -> l nu decays."""
    return decay_two_body(rng, w, _flavour_mass(flavour), 0.0)


def _truth(leptons, charges, flavours, invisible, jets=None, is_b=None, weight=None, response=None) -> dict:
    """Collect the generated objects of ``n`` events into one record."""
    n = len(invisible[0])
    pt, eta, phi = jets if jets is not None else (np.full((n, 1), np.nan),) * 3
    return {
        "lep": leptons,
        "charge": np.stack(charges, axis=1),
        "flavour": np.stack(flavours, axis=1),
        "inv_px": invisible[0],
        "inv_py": invisible[1],
        "jet_pt": pt,
        "jet_eta": eta,
        "jet_phi": phi,
        "jet_b": np.zeros(pt.shape, bool) if is_b is None else is_b,
        "jet_response": np.full(pt.shape, np.nan) if response is None else response,
        "weight": np.ones(n) if weight is None else weight,
    }


def _isr(rng, n: int, production: str = "zz"):
    """Initial-state jets (pt, eta, phi) and a parent system recoiling against them."""
    return production_jets(rng, production, n)


def _mono_z(rng: np.random.Generator, n: int) -> dict:
    """Mono-Z signal qq -> Z Z'(-> chi chi), with the MET > 40 GeV generator filter."""
    jets = _isr(rng, n)
    m_z = breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, n, 66.0, 116.0)
    m_med = breit_wigner(rng, MEDIATOR_MASS_GEV, MEDIATOR_WIDTH_GEV, n, 200.0, 400.0)
    system = recoiling_parent(rng, jets[0], jets[2], m_z + m_med + rng.gamma(1.5, 70.0, n), 1.0)
    z, mediator = decay_two_body(rng, system, m_z, m_med)
    flavour = _flavours(rng, n, tau_fraction=1 / 3)
    leptons = _z_to_leptons(rng, z, flavour)
    keep = mediator.pt > 40.0  # DSID 303513: dmV_Zll_MET40
    truth = _truth(
        leptons, (np.ones(n, int), -np.ones(n, int)), (flavour, flavour), (mediator.px, mediator.py), jets
    )
    return _take(truth, keep)


def _zz(rng: np.random.Generator, n: int) -> dict:
    """ZZ -> ll nu nu."""
    jets = _isr(rng, n)
    m1 = breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, n, 66.0, 116.0)
    m2 = breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, n, 66.0, 116.0)
    system = recoiling_parent(rng, jets[0], jets[2], m1 + m2 + rng.gamma(1.2, 55.0, n), 1.2)
    z_ll, z_nunu = decay_two_body(rng, system, m1, m2)
    flavour = _flavours(rng, n)
    leptons = _z_to_leptons(rng, z_ll, flavour)
    return _truth(
        leptons, (np.ones(n, int), -np.ones(n, int)), (flavour, flavour), (z_nunu.px, z_nunu.py), jets
    )


def _wz(rng: np.random.Generator, n: int) -> dict:
    """W(-> l nu) Z(-> ll): three leptons, W+ : W- = 1.5 : 1."""
    jets = _isr(rng, n)
    m_w = breit_wigner(rng, W_MASS_GEV, W_WIDTH_GEV, n, 60.0, 100.0)
    m_z = breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, n, 66.0, 116.0)
    system = recoiling_parent(rng, jets[0], jets[2], m_w + m_z + rng.gamma(1.2, 65.0, n), 1.2)
    w, z = decay_two_body(rng, system, m_w, m_z)
    w_flavour, z_flavour = _flavours(rng, n), _flavours(rng, n)
    w_lepton, nu = _w_to_lepton(rng, w, w_flavour)
    w_charge = np.where(rng.random(n) < 0.6, 1, -1)
    leptons = [w_lepton, *_z_to_leptons(rng, z, z_flavour)]
    charges = (w_charge, np.ones(n, int), -np.ones(n, int))
    return _truth(leptons, charges, (w_flavour, z_flavour, z_flavour), (nu.px, nu.py), jets)


def z_pt_density(z_pt: np.ndarray, a: float, power: int) -> np.ndarray:
    """Return the density of P(pT > x) = (a^2/(x^2 + a^2))^power [1/GeV]."""
    x2 = np.square(z_pt)
    return 2 * power * a ** (2 * power) * z_pt / (x2 + a**2) ** (power + 1)


def _draw_z_pt(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return Z pT [GeV] and the importance weights p/q of a defensive mixture q = (p + q_hard)/2.

    p, the spectrum: P(pT > x) = (a^2/(x^2 + a^2))^2 with a = 35 GeV (about 1.5e-2, 2e-5 and
    1.5e-6 of Z bosons above 100, 500 and 1000 GeV at 13 TeV); q_hard: a^2/(x^2 + a^2) with
    a = 60 GeV. Half the events come from each, so every weight is at most 2.
    """
    u, hard = rng.random(n), rng.random(n) < 0.5
    soft_pt = Z_PT_SCALE_GEV * np.sqrt(1 / np.sqrt(1 - u) - 1)
    hard_pt = Z_PT_BIASED_SCALE_GEV * np.sqrt(u / (1 - u))
    z_pt = np.where(hard, hard_pt, soft_pt)
    p = z_pt_density(z_pt, Z_PT_SCALE_GEV, 2)
    q = 0.5 * p + 0.5 * z_pt_density(z_pt, Z_PT_BIASED_SCALE_GEV, 1)
    return z_pt, p / q


def _recoil_jets(rng: np.random.Generator, recoil_pt: np.ndarray, recoil_phi: np.ndarray) -> tuple:
    """Return one or (40 %) two jets (pt, eta, phi) whose transverse momenta sum to the recoil."""
    n = len(recoil_pt)
    share = np.where(rng.random(n) < 0.4, rng.uniform(0.5, 0.9, n), 1.0)
    kick = rng.normal(0, 15.0, n) * (share < 1)  # perpendicular to the recoil, opposite in the two jets
    along, across = (
        np.array([np.cos(recoil_phi), np.sin(recoil_phi)]),
        np.array([-np.sin(recoil_phi), np.cos(recoil_phi)]),
    )
    j1 = share * recoil_pt * along + kick * across
    j2 = (1 - share) * recoil_pt * along - kick * across
    pt = np.stack([np.hypot(*j1), np.where(share < 1, np.hypot(*j2), np.nan)], axis=1)
    phi = np.stack([np.arctan2(j1[1], j1[0]), np.arctan2(j2[1], j2[0])], axis=1)
    return pt, rng.normal(0, 1.8, (n, 2)), phi


def _z_jets(rng: np.random.Generator, n: int) -> dict:
    """Z -> ll recoiling against jets, importance-sampled in Z pT and in the jet response tail."""
    tail_biased = 0.25
    z_pt, weight = _draw_z_pt(rng, n)
    z_phi = rng.uniform(-np.pi, np.pi, n)
    m_z = breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, n, 60.0, 120.0)
    z = p4_from_rapidity(z_pt, rng.normal(0, 1.8, n), z_phi, m_z)
    jets = _recoil_jets(rng, z_pt * np.abs(1 + 0.1 * rng.standard_normal(n)), z_phi + np.pi)
    # every jet's response: the tail drawn at 25 % instead of 1 %, weighted back
    tail = rng.random(jets[0].shape) < tail_biased
    present = np.isfinite(jets[0])
    factor = np.where(tail, JET_TAIL_RATE / tail_biased, (1 - JET_TAIL_RATE) / (1 - tail_biased))
    weight = weight * np.prod(np.where(present, factor, 1.0), axis=1)
    response = np.where(tail, rng.uniform(*JET_TAIL_RESPONSE, tail.shape), _core_response(rng, jets[0]))
    flavour = _flavours(rng, n)
    leptons = _z_to_leptons(rng, z, flavour)
    is_b = rng.random(jets[0].shape) < 0.03
    zero = np.zeros(n)
    return _truth(
        leptons,
        (np.ones(n, int), -np.ones(n, int)),
        (flavour, flavour),
        (zero, zero),
        jets,
        is_b,
        weight,
        response,
    )


def _top_to_lepton(rng, top: vector.MomentumNumpy4D, n: int):
    """Return (lepton, neutrino, b quark, flavour) of t -> W b, W -> l nu."""
    w, b = decay_two_body(rng, top, breit_wigner(rng, W_MASS_GEV, W_WIDTH_GEV, n, 60.0, 100.0), 4.8)
    flavour = _flavours(rng, n)
    lepton, nu = _w_to_lepton(rng, w, flavour)
    return lepton, nu, b, flavour


def _with_b_jets(jets, bs: list) -> tuple:
    """Return ISR jets with the b quarks added as jets, and the true-b mask."""
    b_cols = [np.stack([getattr(b, a) for b in bs], axis=1) for a in ("pt", "eta", "phi")]
    merged = tuple(np.concatenate([b_col, j], axis=1) for b_col, j in zip(b_cols, jets, strict=True))
    is_b = np.zeros(merged[0].shape, bool)
    is_b[:, : len(bs)] = True
    return merged, is_b


def _ttbar(rng: np.random.Generator, n: int) -> dict:
    """Top pairs, ttbar -> W+ b W- b, both W -> l nu."""
    jets = _isr(rng, n, "ggh")
    system = recoiling_parent(rng, jets[0], jets[2], 2 * TOP_MASS_GEV + rng.gamma(2.0, 60.0, n), 1.0)
    top, antitop = decay_two_body(rng, system, TOP_MASS_GEV, TOP_MASS_GEV)
    l1, nu1, b1, f1 = _top_to_lepton(rng, top, n)
    l2, nu2, b2, f2 = _top_to_lepton(rng, antitop, n)
    merged, is_b = _with_b_jets(jets, [b1, b2])
    charges = (np.ones(n, int), -np.ones(n, int))
    return _truth([l1, l2], charges, (f1, f2), (nu1.px + nu2.px, nu1.py + nu2.py), merged, is_b)


def _wt(rng: np.random.Generator, n: int) -> dict:
    """Single top Wt: t -> W b, both W -> l nu."""
    jets = _isr(rng, n)
    m_w = breit_wigner(rng, W_MASS_GEV, W_WIDTH_GEV, n, 60.0, 100.0)
    system = recoiling_parent(rng, jets[0], jets[2], TOP_MASS_GEV + m_w + rng.gamma(1.5, 60.0, n), 1.0)
    top, w = decay_two_body(rng, system, TOP_MASS_GEV, m_w)
    l1, nu1, b, f1 = _top_to_lepton(rng, top, n)
    f2 = _flavours(rng, n)
    l2, nu2 = _w_to_lepton(rng, w, f2)
    merged, is_b = _with_b_jets(jets, [b])
    charges = (np.ones(n, int), -np.ones(n, int))
    return _truth([l1, l2], charges, (f1, f2), (nu1.px + nu2.px, nu1.py + nu2.py), merged, is_b)


def _ww(rng: np.random.Generator, n: int) -> dict:
    """W+ W- -> l nu l nu."""
    jets = _isr(rng, n)
    m1 = breit_wigner(rng, W_MASS_GEV, W_WIDTH_GEV, n, 60.0, 100.0)
    m2 = breit_wigner(rng, W_MASS_GEV, W_WIDTH_GEV, n, 60.0, 100.0)
    system = recoiling_parent(rng, jets[0], jets[2], m1 + m2 + rng.gamma(1.2, 60.0, n), 1.2)
    w1, w2 = decay_two_body(rng, system, m1, m2)
    f1, f2 = _flavours(rng, n), _flavours(rng, n)
    (l1, nu1), (l2, nu2) = _w_to_lepton(rng, w1, f1), _w_to_lepton(rng, w2, f2)
    charges = (np.ones(n, int), -np.ones(n, int))
    return _truth([l1, l2], charges, (f1, f2), (nu1.px + nu2.px, nu1.py + nu2.py), jets)


#: per file (dataset of the fileset): its simulated processes and their published cross sections
COMPONENTS: dict[str, tuple[Component, ...]] = {
    "DM_300": (
        Component(
            "dmV_Zll_MET40_DM1_MM300", 0.063965, "ATLAS Open Data DSID 303513 (SCHEMAS.md section 4)", _mono_z
        ),
    ),
    "ZZ": (
        Component(
            "ZZ_llvv",
            17.3 * 2 * BR_Z_TO_E_OR_MU * BR_Z_TO_INVISIBLE,
            "sigma(pp -> ZZ) = 17.3 pb (ATLAS, PRD 97 (2018) 032005) x 2 BR(Z -> ee, mumu) BR(Z -> inv)",
            _zz,
            0.12,
        ),
    ),
    "WZ": (
        Component(
            "WZ_lvll",
            51.0 * BR_W_TO_E_OR_MU * BR_Z_TO_E_OR_MU,
            "sigma(pp -> WZ) = 51.0 pb (ATLAS, EPJC 79 (2019) 535) x BR(W -> e, mu nu) BR(Z -> ee, mumu)",
            _wz,
            0.12,
        ),
    ),
    "Zjets": (
        Component(
            "Zee_Zmumu",
            1950.5295 + 1950.6321,
            "ATLAS Open Data 13 TeV Zee and Zmumu (DSID 361106, 361107) cross sections",
            _z_jets,
            0.05,
        ),
    ),
    "Non_resonant_ll": (
        Component(
            "ttbar_dilepton",
            831.76 * BR_W_TO_E_OR_MU**2,
            "sigma(ttbar) = 831.76 pb (Top++ NNLO+NNLL, m_t = 172.5 GeV) x BR(W -> e, mu nu)^2",
            _ttbar,
            0.0,
            0.6,
        ),
        Component(
            "Wt_dilepton",
            71.7 * BR_W_TO_E_OR_MU**2,
            "sigma(Wt) = 71.7 pb (NLO+NNLL, Kidonakis) x BR(W -> e, mu nu)^2",
            _wt,
            0.0,
            0.15,
        ),
        Component(
            "WW_lvlv",
            118.7 * BR_W_TO_E_OR_MU**2,
            "sigma(WW) = 118.7 pb (NNLO, PRL 113 (2014) 212001) x BR(W -> e, mu nu)^2",
            _ww,
            0.10,
            0.25,
        ),
    ),
}


def _take(truth: dict, keep: np.ndarray) -> dict:
    """Return the events of a truth record where ``keep`` is True."""
    return {k: [v[keep] for v in val] if k == "lep" else val[keep] for k, val in truth.items()}


def _core_response(rng: np.random.Generator, pt: np.ndarray) -> np.ndarray:
    """Return jet responses reco/true from the Gaussian core (0.8/sqrt(pT) (+) 5 %)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma = np.hypot(0.8 / np.sqrt(pt), 0.05)
    return np.abs(1 + sigma * rng.standard_normal(np.shape(pt)))


def _reconstruct_leptons(rng: np.random.Generator, truth: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """Return the two leading reconstructed leptons and the (px, py) they add to ETmiss."""
    flavour, n_true = truth["flavour"], truth["flavour"].shape[1]
    true_pt, eta, phi = (
        np.stack([getattr(v, a) for v in truth["lep"]], axis=1) for a in ("pt", "eta", "phi")
    )
    is_mu = flavour == 13
    pt = smear_pt(rng, true_pt.ravel(), np.where(is_mu, 0.015 + 0.0002 * true_pt, 0.02).ravel())
    pt = pt.reshape(true_pt.shape)
    ok = (
        (flavour != 15)
        & (pt > LEPTON_PT_MIN)
        & (np.abs(eta) < np.where(is_mu, LEPTON_ETA_MAX[13], LEPTON_ETA_MAX[11]))
        & (rng.random(pt.shape) < np.where(is_mu, LEPTON_EFFICIENCY[13], LEPTON_EFFICIENCY[11]))
    )
    flip = (flavour == 11) & (rng.random(pt.shape) < 0.002 + 0.003 * np.abs(eta))
    charge = np.where(flip, -truth["charge"], truth["charge"])
    # a lost lepton is missing momentum; a measured one adds its mismeasurement
    lost_pt = np.where(ok, true_pt - pt, true_pt)
    miss = (np.sum(lost_pt * np.cos(phi), axis=1), np.sum(lost_pt * np.sin(phi), axis=1))
    order = np.argsort(np.where(ok, -pt, np.inf), axis=1, kind="stable")[:, : min(2, n_true)]

    def lead(a):
        return np.take_along_axis(a, order, axis=1)

    found = lead(ok)
    leptons = {
        "lep_pt": np.where(found, lead(pt), np.nan),
        "lep_eta": np.where(found, lead(eta), np.nan),
        "lep_phi": np.where(found, lead(phi), np.nan),
        "lep_charge": np.where(found, lead(charge), 0),
        "lep_flavour": np.where(found, lead(flavour), 0),
        "n_leptons": ok.sum(axis=1),
    }
    leptons["lep_mass"] = _flavour_mass(leptons["lep_flavour"])
    return leptons, miss[0], miss[1]


def _reconstruct_jets(rng: np.random.Generator, truth: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """Return the reconstructed jets (pT NaN where not reconstructed) and their ETmiss (px, py)."""
    true_pt, eta, phi = truth["jet_pt"], truth["jet_eta"], truth["jet_phi"]
    shape = true_pt.shape
    drawn = np.where(
        rng.random(shape) < JET_TAIL_RATE,
        rng.uniform(*JET_TAIL_RESPONSE, shape),
        _core_response(rng, true_pt),
    )
    response = np.where(np.isfinite(truth["jet_response"]), truth["jet_response"], drawn)
    pt = true_pt * response
    lost = np.nan_to_num(true_pt - pt)
    miss = (np.sum(lost * np.cos(phi), axis=1), np.sum(lost * np.sin(phi), axis=1))
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(pt) & (pt > JET_PT_MIN) & (np.abs(eta) < JET_ETA_MAX)
        tag_rate = np.where(truth["jet_b"], BTAG_EFFICIENCY, MISTAG_RATE)
        btag = ok & (np.abs(eta) < BTAG_ETA_MAX) & (rng.random(shape) < tag_rate)
    jets = {"jet_pt": np.where(ok, pt, np.nan), "jet_eta": eta, "jet_phi": phi, "jet_btag": btag}
    return jets, miss[0], miss[1]


def reconstruct(rng: np.random.Generator, truth: dict) -> dict:
    """Return the reconstructed objects: two leading leptons, jets, b-tags and ETmiss (px, py)."""
    leptons, lep_px, lep_py = _reconstruct_leptons(rng, truth)
    jets, jet_px, jet_py = _reconstruct_jets(rng, truth)
    n = len(truth["inv_px"])
    met_px = truth["inv_px"] + lep_px + jet_px + rng.normal(0, SOFT_TERM_GEV, n)
    met_py = truth["inv_py"] + lep_py + jet_py + rng.normal(0, SOFT_TERM_GEV, n)
    return {**leptons, **jets, "met_px": met_px, "met_py": met_py}


def derived_columns(objects: dict) -> dict[str, np.ndarray]:
    """Return the CSV columns (all but totalWeight) computed from the reconstructed objects."""
    lep = [
        p4(
            objects["lep_pt"][:, i],
            objects["lep_eta"][:, i],
            objects["lep_phi"][:, i],
            objects["lep_mass"][:, i],
        )
        for i in range(2)
    ]
    with np.errstate(invalid="ignore", divide="ignore"):
        dilepton = lep[0] + lep[1]
        met = vector.array({"px": objects["met_px"], "py": objects["met_py"]})
        pt_ll = vector.array({"px": dilepton.px, "py": dilepton.py})
        etmiss = met.rho
        jet_pt = np.nan_to_num(objects["jet_pt"])
        ht = lep[0].pt + lep[1].pt + jet_pt.sum(axis=1)
        return {
            "sum_lep_charge": objects["lep_charge"].sum(axis=1).astype(np.int64),
            "lead_lep_pt": lep[0].pt,
            "sublead_lep_pt": lep[1].pt,
            "mll": dilepton.mass,
            "ETmiss": etmiss,
            "dRll": lep[0].deltaR(lep[1]),
            "dphi_pTll_ETmiss": np.abs(pt_ll.deltaphi(met)),
            "fractional_pT_difference": np.abs(pt_ll.rho - etmiss) / pt_ll.rho,
            "ETmiss_over_HT": etmiss / ht,
            "N_bjets": objects["jet_btag"].sum(axis=1).astype(np.int64),
        }


def preselected(columns: dict[str, np.ndarray], objects: dict) -> np.ndarray:
    """Return the files' preselection (module docstring); same-sign pairs pass."""
    flavour = objects["lep_flavour"]
    with np.errstate(invalid="ignore"):
        return (
            (objects["n_leptons"] == 2)
            & (flavour[:, 0] == flavour[:, -1])
            & (columns["lead_lep_pt"] > TRIGGER_PT_MIN)
            & (columns["ETmiss"] > PRESELECTION_ETMISS_MIN)
            & (columns["mll"] > PRESELECTION_MLL[0])
            & (columns["mll"] < PRESELECTION_MLL[1])
            & (columns["N_bjets"] <= PRESELECTION_N_BJETS_MAX)
        )


def scale_factors(rng: np.random.Generator, objects: dict) -> np.ndarray:
    """Return per-event scale factors: pile-up, trigger, b-tagging and the two leptons'."""
    n = len(objects["met_px"])
    lepton = np.where(
        objects["lep_flavour"] == 13, rng.normal(0.99, 0.01, (n, 2)), rng.normal(0.97, 0.02, (n, 2))
    )
    pileup = np.clip(rng.normal(1.0, 0.1, n), 0.3, 2.0)
    return pileup * rng.normal(0.99, 0.01, n) * rng.normal(1.0, 0.03, n) * lepton.prod(axis=1)


@dataclass(frozen=True)
class Batch:
    """Generated events: reconstructed objects, CSV columns, signed generator weights, preselection."""

    objects: dict
    columns: dict
    gen_weight: np.ndarray
    sf: np.ndarray
    passed: np.ndarray

    def __len__(self) -> int:
        return len(self.gen_weight)

    def head(self, stop: int) -> Batch:
        """Return the first ``stop`` events."""
        return Batch(
            {k: v[:stop] for k, v in self.objects.items()},
            {k: v[:stop] for k, v in self.columns.items()},
            self.gen_weight[:stop],
            self.sf[:stop],
            self.passed[:stop],
        )


def simulate(rng: np.random.Generator, component: Component, n: int) -> Batch:
    """Generate ``n`` events of ``component`` (fewer after a generator filter) and reconstruct them."""
    truth = component.make(rng, n)
    m = len(truth["weight"])
    sign = np.where(rng.random(m) < component.negative_fraction, -1.0, 1.0)
    objects = reconstruct(rng, truth)
    columns = derived_columns(objects)
    return Batch(
        objects, columns, truth["weight"] * sign, scale_factors(rng, objects), preselected(columns, objects)
    )


def simulate_batches(component: Component, rows: int, seed_key: tuple[int, ...]) -> Iterator[Batch]:
    """Yield generated batches until ``rows`` events passed the preselection.

    Batch ``i`` uses its own generator ``default_rng([*seed_key, i])``; the last batch ends at
    the ``rows``-th passing event, so the generated sample (whose weights normalise the file)
    is exactly the events up to there.
    """
    done = 0
    for i in range(MAX_BATCHES):
        if done >= rows:
            return
        batch = simulate(np.random.default_rng([*seed_key, i]), component, BATCH)
        passing = np.cumsum(batch.passed)
        if passing.size and done + passing[-1] >= rows:
            batch = batch.head(int(np.searchsorted(passing, rows - done)) + 1)
        done += int(batch.passed.sum())
        yield batch
    raise RuntimeError(f"{component.name}: fewer than {rows} events passed in {MAX_BATCHES} batches")


def _component_rows(
    component: Component, rows: int, seed_key: tuple[int, ...], lumi_pb: float, progress
) -> tuple:
    """Return the CSV columns of one component's passing events (with totalWeight) and its record."""
    parts, sum_w, generated = [], 0.0, 0
    for batch in simulate_batches(component, rows, seed_key):
        sum_w += float(batch.gen_weight.sum())
        generated += len(batch)
        keep = batch.passed
        part = {c: batch.columns[c][keep] for c in CSV_COLUMNS if c != "totalWeight"}
        part["totalWeight"] = (batch.gen_weight * batch.sf)[keep]
        parts.append(part)
        progress.advance(int(keep.sum()))
    cols = {c: np.concatenate([p[c] for p in parts]) for c in CSV_COLUMNS}
    cols["totalWeight"] = component.xsec_pb * lumi_pb * cols["totalWeight"] / sum_w
    record = {
        "xsec_pb": component.xsec_pb,
        "xsec_reference": component.reference,
        "generated_events": generated,
        "sum_generator_weights": sum_w,
        "rows": rows,
        "negative_weight_rows": int((cols["totalWeight"] < 0).sum()),
        "expected_yield": float(cols["totalWeight"].sum()),
        "efficiency": float(cols["totalWeight"].sum() / (component.xsec_pb * lumi_pb)),
    }
    return cols, record


def component_rows(dataset: str, events: int) -> list[int]:
    """Return the rows of each component of ``dataset`` (by share; they sum to ``events``)."""
    shares = [c.share for c in COMPONENTS[dataset]]
    rows = [max(1, round(events * s / sum(shares))) for s in shares[:-1]]
    return [*rows, max(1, events - sum(rows))]


def write_csv(path: Path, cols: dict[str, np.ndarray]) -> None:
    """Write the columns with the real files' header (unquoted), ints as integers, floats exact."""
    table = pa.table({c: cols[c].astype(np.int64 if c in INT_COLUMNS else np.float64) for c in CSV_COLUMNS})
    with path.open("wb") as fout:
        fout.write((",".join(CSV_COLUMNS) + "\n").encode())
        pacsv.write_csv(table, fout, write_options=pacsv.WriteOptions(include_header=False))


def _write_dataset(out: Path, spec: dict, name: str, events: int, seed: int, progress) -> dict:
    """Write one file's CSV and Parquet; return its provenance record."""
    index = list(spec["datasets"]).index(name)
    parts, records = [], {}
    for j, (component, rows) in enumerate(zip(COMPONENTS[name], component_rows(name, events), strict=True)):
        cols, records[component.name] = _component_rows(
            component, rows, (seed, index, j), spec["lumi_pb"], progress
        )
        parts.append(cols)
    merged = {c: np.concatenate([p[c] for p in parts]) for c in CSV_COLUMNS}
    parquet = spec["datasets"][name]["files"][0]
    csv_path = out / parquet.replace(".parquet", ".csv")
    write_csv(csv_path, merged)
    rows = csv_to_parquet(csv_path, out / parquet, schema=csv_schema(ANALYSIS.inputs, "analysis 'atlas-dm'"))
    return {"csv": csv_path.name, "parquet": parquet, "rows": rows, "components": records}


def generate(
    out_dir: str | Path, events: int = 20_000, seed: int = 1, datasets: list[str] | None = None
) -> Path:
    """Write the five toy CSVs (``events`` rows each), their Parquet and ``toy.json`` to ``out_dir``."""
    spec = load_fileset_spec("atlas-dm")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = select_datasets(spec, datasets)
    provenance: dict = {
        "analysis": "atlas-dm",
        "generator": __name__,
        "seed": seed,
        "events_per_dataset": events,
        "lumi_pb": spec["lumi_pb"],
        "datasets": {},
    }
    with ProgressWriter(total=events * len(names), description="generating atlas-dm") as progress:
        for name in names:
            provenance["datasets"][name] = _write_dataset(out, spec, name, events, seed, progress)
    (out / "toy.json").write_text(json.dumps(provenance, indent=2))
    log.info("wrote %d toy files (CSV and Parquet) to %s", len(names), out)
    return out


__all__ = ["COMPONENTS", "derived_columns", "generate", "preselected", "simulate_batches"]
