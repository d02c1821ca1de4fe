"""Toy CMS 2018 reduced ntuples (tree ``HZZ4LeptonsAnalysisReduced``) for VBF H->ZZ->4l.

Physics per sample (all momenta in GeV), generated *before* the cms-hzz4l selection:

* production (:func:`production_jets`): VBF H has two tag jets (t-channel pT, a Gamma-
  distributed rapidity gap with a low-gap tail) plus radiation; ggH (gluon-initiated) and
  q q -> ZZ radiate jets with geometric multiplicities (ggH more); ttH has four hard central
  jets. The 4l system recoils against the jets (+ soft radiation) in the transverse plane.
* decay: X -> V V* -> 4l with pair masses from phase space x propagators, only allowed pairs
  (:func:`zz_pair_masses`), then each V -> l+ l- isotropically; X = H (125 GeV) or q q -> 4l
  over its whole m_ll > 4 GeV phase space (:data:`QQ_TO_4L`: the Z -> 4l peak, Z gamma*,
  ZZ on shell, gamma* gamma*), so the ZZ normalisation follows from its cross section.
* detector: unrecovered FSR (6 % per muon, 8 % per electron: the m4l tail), lepton pT
  resolution (mu 1.5 / 2.5 %, e 2.5 / 3.5 %, barrel / endcap), charge mis-identification
  (mu 0.05 / 0.2 %, e 0.2 / 0.8 %: no SFOS pairing -> Z masses -999), jets 10 / 15 %,
  massless, pT > 30 GeV, |eta| < 4.7.
* written ("reduced-ntuple skim"): four leptons in acceptance (mu pT > 5, |eta| < 2.4;
  e pT > 7, |eta| < 2.5), leading pT > 20, sub-leading > 10, all SFOS m_ll > 4. The
  processor's steps (Z pairing defined, m4l > 70, Z1 in 40-120, Z2 in 12-120) each remove
  events; after them the files look like the real ones (SCHEMAS.md section 7: -999 patterns,
  >= 2-jet shares, the ggH share of the 2-jet background, the VBF m4l tail).
* derived branches (f_mass4l, f_Z1mass, f_Z2mass, f_massjj, f_deltajj) are computed
  with `vector` from the *stored* float32 objects; -999 where undefined.
* f_weight sums, per file, to xsec x BR x lumi x acceptance x efficiency with the
  numbers of ``datasets/fileset_specs/cms_hzz4l.json``; acceptance (of the skim) is measured
  by the generator, efficiency is 0.95 per muon and 0.85 per electron; an event-to-event
  spread (log-normal, 10 %) mimics pile-up and scale-factor weights.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import uproot

from hepsieve.datasets.filesets import load_fileset_spec, select_datasets
from hepsieve.datasets.progress import ProgressWriter
from hepsieve.datasets.toys.kinematics import (
    ELECTRON_MASS_GEV,
    MUON_MASS_GEV,
    decay_to_four_leptons,
    final_state_radiation,
    four_lepton_system,
    p4,
    production_jets,
    recoiling_parent,
    smear_pt,
)
from hepsieve.processors.analyses.fourlepton import four_lepton_mass, z_pairing
from hepsieve.processors.analyses.hzz4l_cms import BRANCHES, TREE, UNDEFINED

log = logging.getLogger(__name__)

LEPTON_EFFICIENCY = {"mu": 0.95, "e": 0.85}
PRODUCTION = {"vbf_h": "vbf", "ggh": "ggh", "zz": "zz", "tth": "tth"}  # fileset process -> physics
# probability that a lepton radiates a photon that the FSR recovery misses (the m4l tail)
FSR_PROBABILITY = {"mu": 0.06, "e": 0.08}
# charge mis-identification per lepton, barrel / endcap (|eta| > 1.2 mu, > 1.479 e)
CHARGE_FLIP = {"mu": (0.0005, 0.002), "e": (0.002, 0.008)}


def _stored_leptons(rng: np.random.Generator, truth: list, is_mu: np.ndarray) -> list[list[np.ndarray]]:
    """Return (pt, eta, phi) per lepton as stored (float32): unrecovered FSR, then pT smearing.

    Resolution: muons 1.5 % (|eta| < 1.2) / 2.5 %, electrons 2.5 % / 3.5 % (|eta| > 1.479).
    """
    stored = []
    for lep in truth:
        radiated, _photon = final_state_radiation(
            rng, lep, np.where(is_mu, FSR_PROBABILITY["mu"], FSR_PROBABILITY["e"])
        )
        endcap = np.abs(lep.eta) > np.where(is_mu, 1.2, 1.479)
        res = np.where(is_mu, np.where(endcap, 0.025, 0.015), np.where(endcap, 0.035, 0.025))
        stored.append(
            [
                smear_pt(rng, radiated.pt, res).astype(np.float32),
                radiated.eta.astype(np.float32),
                radiated.phi.astype(np.float32),
            ]
        )
    return stored


def _measured_charges(rng: np.random.Generator, stored: list, is_mu: np.ndarray) -> np.ndarray:
    """Return the (n, 4) reconstructed charges: +-+- with per-lepton charge mis-identification."""
    eta = np.abs(np.stack([s[1] for s in stored], axis=1))
    mu = is_mu[:, None]
    endcap = eta > np.where(mu, 1.2, 1.479)
    flip = np.where(
        mu,
        np.where(endcap, CHARGE_FLIP["mu"][1], CHARGE_FLIP["mu"][0]),
        np.where(endcap, CHARGE_FLIP["e"][1], CHARGE_FLIP["e"][0]),
    )
    charge = np.tile([1, -1, 1, -1], (len(is_mu), 1))
    return np.where(rng.random(eta.shape) < flip, -charge, charge)


def _passes_skim(stored: list, is_mu: np.ndarray, min_os) -> np.ndarray:
    """Return the reduced-ntuple skim: four leptons in acceptance, pT > 20 / 10, OS m_ll > 4 GeV.

    The skim is looser than ``cms-hzz4l``: m4l, the Z windows and the Z pairing (-999 where
    mis-measured charges leave no pairing) are left to the processor, so each of its steps
    removes events.
    """
    pts = np.stack([s[0] for s in stored], axis=1)
    etas = np.abs(np.stack([s[1] for s in stored], axis=1))
    in_acc = np.where(is_mu[:, None], (pts > 5) & (etas < 2.4), (pts > 7) & (etas < 2.5))
    pt_sorted = -np.sort(-pts, axis=1)
    return in_acc.all(axis=1) & (pt_sorted[:, 0] > 20) & (pt_sorted[:, 1] > 10) & (min_os > 4)


def _jet_branches(rng: np.random.Generator, jets, out: dict) -> None:
    """Smear the jets, accept them, store the two leading and m_jj, |delta eta_jj| (-999: none).

    Jet pT resolution 10 % (|eta| < 2.5) / 15 % (forward); accepted: pT > 30 GeV, |eta| < 4.7.
    """
    jet_pt, jet_eta, jet_phi = jets
    res = np.where(np.abs(jet_eta) < 2.5, 0.10, 0.15)
    jpt = np.where(np.isnan(jet_pt), np.nan, jet_pt * (1 + res * rng.standard_normal(jet_pt.shape)))
    jpt = np.where((jpt > 30) & (np.abs(jet_eta) < 4.7), jpt, -np.inf)
    order = np.argsort(-jpt, axis=1)[:, :2]
    rows = np.arange(len(jpt))[:, None]
    jpt, jeta = jpt[rows, order], jet_eta[rows, order]
    jphi = (jet_phi[rows, order] + np.pi) % (2 * np.pi) - np.pi
    has = np.isfinite(jpt)
    for i in range(2):
        for name, arr in (("pt", jpt), ("eta", jeta), ("phi", jphi)):
            out[f"f_jet{i + 1}_{name}"] = np.where(has[:, i], arr[:, i], UNDEFINED).astype(np.float32)
    j1, j2 = (
        p4(*(out[f"f_jet{i}_{v}"].astype(np.float64) for v in ("pt", "eta", "phi")), 0.0)  # type: ignore[call-arg]
        for i in (1, 2)
    )
    two_jets = has.all(axis=1)
    out["f_massjj"] = np.where(two_jets, (j1 + j2).mass, UNDEFINED)
    out["f_deltajj"] = np.where(two_jets, np.abs(out["f_jet1_eta"] - out["f_jet2_eta"]), UNDEFINED)


def _truth_leptons(rng: np.random.Generator, production: str, channel: str, n: int):
    """Return (jets, truth leptons [a+, a-, b+, b-], is_mu, lepton mass) of ``n`` produced events."""
    jets = production_jets(rng, production, n)
    mass, photon_a, photon_b = four_lepton_system(rng, production, n)
    parent = recoiling_parent(rng, jets[0], jets[2], mass)
    flavour = np.full(n, channel)
    if channel == "4l":  # ttH file: both channels
        flavour = np.where(rng.random(n) < 0.5, "4mu", "4e")
    is_mu = flavour == "4mu"
    m_lep = np.where(is_mu, MUON_MASS_GEV, ELECTRON_MASS_GEV)
    truth = decay_to_four_leptons(rng, parent, m_lep, m_lep, photon=(photon_a, photon_b))
    return jets, truth, is_mu, m_lep


def _attempt(rng: np.random.Generator, production: str, channel: str, n: int) -> dict:
    """Generate ``n`` produced events and return the stored branches of those passing the skim."""
    jets, truth, is_mu, m_lep = _truth_leptons(rng, production, channel, n)
    # detector: FSR, smeared pT, stored as float32, everything downstream from stored values
    stored = _stored_leptons(rng, truth, is_mu)
    leptons = [
        p4(pt.astype(np.float64), eta.astype(np.float64), phi.astype(np.float64), m_lep)
        for pt, eta, phi in stored
    ]
    charge = _measured_charges(rng, stored, is_mu)
    z1, z2, min_os = z_pairing(leptons, charge, np.zeros((n, 4), int))
    keep = _passes_skim(stored, is_mu, min_os)
    out = {
        "f_mass4l": four_lepton_mass(leptons),
        "f_Z1mass": np.where(np.isfinite(z1), z1, UNDEFINED),
        "f_Z2mass": np.where(np.isfinite(z2), z2, UNDEFINED),
    }
    _jet_branches(rng, jets, out)
    lep_order = np.argsort(-np.stack([s[0] for s in stored], axis=1), axis=1)
    for i in range(4):
        for k, name in enumerate(("pt", "eta", "phi")):
            col = np.stack([s[k] for s in stored], axis=1)
            out[f"f_lept{i + 1}_{name}"] = col[np.arange(n), lep_order[:, i]]
    result: dict[str, Any] = {k: np.asarray(v, dtype=np.float32)[keep] for k, v in out.items()}
    result["_n_muon_events"] = int(np.count_nonzero(is_mu[keep]))
    return result


PRODUCED_PER_ATTEMPT = 100_000  # bounds the memory of one attempt (32 mass candidates per event)


def _acceptance(seed: int, production: str, channel: str, n: int = 100_000) -> tuple[float, float]:
    """Return (skim acceptance, lepton efficiency) from a seeded pilot run of ``n`` produced events."""
    pilot = _attempt(np.random.default_rng([seed, 7]), production, channel, n)
    n_pass = len(pilot["f_mass4l"])
    frac_mu = pilot["_n_muon_events"] / max(n_pass, 1)
    eff = frac_mu * LEPTON_EFFICIENCY["mu"] ** 4 + (1 - frac_mu) * LEPTON_EFFICIENCY["e"] ** 4
    return n_pass / n, eff


def generate_sample(
    path: Path,
    dataset: str,
    meta: dict,
    lumi_pb: float,
    n_events: int,
    seed: int,
    event_offset: int,
    progress: ProgressWriter,
) -> dict:
    """Write one toy ROOT file of ``n_events`` skimmed events; return its provenance."""
    production = PRODUCTION[meta["process"]]
    acceptance, efficiency = _acceptance(seed, production, meta["channel"])
    expected = meta["xsec_pb"] * meta["br"] * lumi_pb * acceptance * efficiency
    rng = np.random.default_rng(seed)
    batch = 100_000
    with uproot.recreate(path, compression=uproot.LZ4(1)) as fout:
        fout.mktree(
            TREE,
            {b: (np.int32 if b == "f_run" else np.int64 if b == "f_event" else np.float32) for b in BRANCHES},
        )
        written = 0
        while written < n_events:
            produced = min(
                int((n_events - written) / max(acceptance, 1e-3) * 1.1) + 1000, PRODUCED_PER_ATTEMPT
            )
            chunk = _attempt(rng, production, meta["channel"], produced)
            chunk.pop("_n_muon_events")
            take = min(len(chunk["f_mass4l"]), n_events - written, batch)
            chunk = {k: v[:take] for k, v in chunk.items()}
            spread = rng.lognormal(0.0, 0.1, take)
            chunk["f_weight"] = (expected / n_events * spread / spread.mean()).astype(np.float32)
            chunk["f_run"] = np.ones(take, np.int32)
            chunk["f_event"] = event_offset + written + np.arange(take, dtype=np.int64)
            fout[TREE].extend({b: chunk[b] for b in BRANCHES})
            written += take
            progress.advance(take)
    return {
        "file": path.name,
        "events": n_events,
        "acceptance": acceptance,
        "efficiency": efficiency,
        "expected_yield": expected,
        **meta,
    }


def generate(
    out_dir: str | Path, events: int = 20_000, seed: int = 1, datasets: list[str] | None = None
) -> Path:
    """Write the CMS toy files (``events`` per dataset) and ``toy.json`` into ``out_dir``."""
    spec = load_fileset_spec("cms-hzz4l")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = select_datasets(spec, datasets)
    provenance = {
        "analysis": "cms-hzz4l",
        "generator": __name__,
        "seed": seed,
        "events_per_dataset": events,
        "lumi_pb": spec["lumi_pb"],
        "datasets": {},
    }
    with ProgressWriter(total=events * len(names), description="generating cms-hzz4l") as progress:
        for i, name in enumerate(names):
            entry = spec["datasets"][name]
            provenance["datasets"][name] = generate_sample(
                out / entry["files"][0],
                name,
                entry["metadata"],
                spec["lumi_pb"],
                events,
                seed=seed * 1000 + i,
                event_offset=(i + 1) * 10**9,
                progress=progress,
            )
    (out / "toy.json").write_text(json.dumps(provenance, indent=2))
    log.info("wrote %d toy files to %s", len(names), out)
    return out
