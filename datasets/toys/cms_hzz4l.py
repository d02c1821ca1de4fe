"""Toy CMS 2018 reduced ntuples (tree ``HZZ4LeptonsAnalysisReduced``) for VBF H->ZZ->4l.

Physics per sample (all momenta in GeV):

* production: VBF H has two forward tag jets (large Delta eta_jj and m_jj); ggH and
  qq->ZZ have few, soft, central jets; ttH has many central jets. The 4l system
  recoils against the generated jets (+ soft radiation) in the transverse plane.
* decay: X -> Z(*) Z(*) with masses from phase space x Z propagators
  (:func:`zz_pair_masses`), then each Z -> l+ l- isotropically; X = H (125 GeV), a
  ZZ continuum (mostly m_4l > 180 GeV) or a Z (the Z -> 4l peak at 91 GeV).
* detector: lepton pT resolution (mu 1.5-2.5 %, e 2.5 %), jet pT 10 %, acceptance
  (mu pT > 5, |eta| < 2.4; e pT > 7, |eta| < 2.5; jets pT > 30, |eta| < 4.7, massless)
  and the CMS selection of the real ntuples (Z1 closest to m_Z in 40-120, Z2 12-120,
  leading pT > 20, sub-leading > 10, all opposite-sign m_ll > 4, m_4l > 70).
* derived branches (f_mass4l, f_Z1mass, f_Z2mass, f_massjj, f_deltajj) are computed
  with `vector` from the *stored* float32 objects; -999 where undefined.
* f_weight sums, per file, to xsec x BR x lumi x acceptance x efficiency with the
  numbers of ``datasets/fileset_specs/cms_hzz4l.json``; acceptance is measured by the
  generator, efficiency is 0.95 per muon and 0.85 per electron; an event-to-event
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
    four_lepton_system_mass,
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


def _stored_leptons(rng: np.random.Generator, truth: list, is_mu: np.ndarray) -> list[list[np.ndarray]]:
    """Return (pt, eta, phi) per lepton as stored (float32): pT smeared (mu 1.5-2.5 %, e 2.5 %)."""
    stored = []
    for lep in truth:
        res = np.where(is_mu, np.where(np.abs(lep.eta) > 1.2, 0.025, 0.015), 0.025)
        stored.append(
            [
                smear_pt(rng, lep.pt, res).astype(np.float32),
                lep.eta.astype(np.float32),
                lep.phi.astype(np.float32),
            ]
        )
    return stored


def _passes_selection(stored: list, is_mu: np.ndarray, m4l, z1, z2, min_os) -> np.ndarray:
    """Return the acceptance and the CMS selection of the real ntuples, per event."""
    pts = np.stack([s[0] for s in stored], axis=1)
    etas = np.abs(np.stack([s[1] for s in stored], axis=1))
    in_acc = np.where(is_mu[:, None], (pts > 5) & (etas < 2.4), (pts > 7) & (etas < 2.5))
    pt_sorted = -np.sort(-pts, axis=1)
    return (in_acc.all(axis=1) & (pt_sorted[:, 0] > 20) & (pt_sorted[:, 1] > 10) & (z1 > 40) & (z1 < 120)
            & (z2 > 12) & (z2 < 120) & (min_os > 4) & (m4l > 70))  # fmt: skip


def _jet_branches(rng: np.random.Generator, jets, out: dict) -> None:
    """Smear the jets, accept them, store the two leading and m_jj, |delta eta_jj| (-999: none)."""
    jet_pt, jet_eta, jet_phi = jets
    jpt = np.where(np.isnan(jet_pt), np.nan, jet_pt * (1 + 0.1 * rng.standard_normal(jet_pt.shape)))
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


def _attempt(rng: np.random.Generator, production: str, channel: str, n: int) -> dict:
    """Generate ``n`` events and return the stored branches of those passing the selection."""
    jets = production_jets(rng, production, n)
    parent = recoiling_parent(rng, jets[0], jets[2], four_lepton_system_mass(rng, production, n))
    flavour = np.full(n, channel)
    if channel == "4l":  # ttH file: both channels
        flavour = np.where(rng.random(n) < 0.5, "4mu", "4e")
    is_mu = flavour == "4mu"
    m_lep = np.where(is_mu, MUON_MASS_GEV, ELECTRON_MASS_GEV)
    truth = decay_to_four_leptons(rng, parent, m_lep, m_lep)
    # detector: smeared pT, stored as float32, everything downstream from stored values
    stored = _stored_leptons(rng, truth, is_mu)
    leptons = [
        p4(pt.astype(np.float64), eta.astype(np.float64), phi.astype(np.float64), m_lep)
        for pt, eta, phi in stored
    ]
    m4l = four_lepton_mass(leptons)
    z1, z2, min_os = z_pairing(leptons, np.tile([1, -1, 1, -1], (n, 1)), np.zeros((n, 4), int))
    keep = _passes_selection(stored, is_mu, m4l, z1, z2, min_os)
    out = {"f_mass4l": m4l, "f_Z1mass": z1, "f_Z2mass": z2}
    _jet_branches(rng, jets, out)
    lep_order = np.argsort(-np.stack([s[0] for s in stored], axis=1), axis=1)
    for i in range(4):
        for k, name in enumerate(("pt", "eta", "phi")):
            col = np.stack([s[k] for s in stored], axis=1)
            out[f"f_lept{i + 1}_{name}"] = col[np.arange(n), lep_order[:, i]]
    result: dict[str, Any] = {k: np.asarray(v, dtype=np.float32)[keep] for k, v in out.items()}
    result["_n_muon_events"] = int(np.count_nonzero(is_mu[keep]))
    return result


def _acceptance(seed: int, production: str, channel: str, n: int = 50_000) -> tuple[float, float]:
    """Return (acceptance, efficiency) from a seeded pilot run of ``n`` events."""
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
    """Write one toy ROOT file of ``n_events`` selected events; return its provenance."""
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
            chunk = _attempt(rng, production, meta["channel"], int(batch / max(acceptance, 0.05)))
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
