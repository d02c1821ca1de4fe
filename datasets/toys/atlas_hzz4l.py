"""Toy ATLAS Open Data 13 TeV ``4lep`` files (tree ``mini``): H->ZZ*->4l, ZZ*, Z+jets, ttbar, data.

Physics per sample (generated in GeV, written in MeV like the real files):

* H (ggH, VBF, WH, ZH) and ZZ*: the X -> V V* -> 4l chain and production jets shared with
  the CMS toy (:mod:`hepsieve.datasets.toys.kinematics`; ZZ* = q q -> 4l over its whole
  m_ll > 4 GeV phase space); 4e : 2e2mu : 4mu = 1 : 2 : 1.
* Z+jets: Z -> ll plus two non-prompt/fake leptons from soft jets (heavy-flavour decays).
* ttbar: t -> W b, W -> l nu (two prompt leptons, MET from the neutrinos) plus two
  non-prompt leptons carrying 10-55 % of the b-quark momenta.
* 10 % of events get a 5th, non-prompt lepton. Prompt leptons are isolated, have small
  impact parameters and pass the tight ID 97 % of the time; non-prompt ones carry large
  ``ptcone30``/``etcone20`` and displaced tracks, so isolation and d0 significance cut them.
* detector: unrecovered FSR of the prompt leptons (8 % e, 6 % mu) makes the m4l tail;
  resolution muons 1.8 % (+ 0.02 %/GeV) barrel, 2.5 % endcap, electrons
  16 %/sqrt(E) + 1.7 % barrel, 22 %/sqrt(E) + 2.2 % endcap: ggH m4l cores of 2.2 / 1.9 /
  1.6 GeV in 4e / 2e2mu / 4mu as in ATLAS.
* written ("4lep skim"): >= 4 leptons with pT > 5 GeV, |eta| < 2.5.
* weights: ``mcWeight`` per generator (:data:`MC_WEIGHTS`: Powheg ~ its cross section in pb,
  never negative; Sherpa llll 10 % negative, mean 0.42; Pythia 8 WH/ZH 1), scale factors near
  1, ``XSection`` from the fileset and ``SumWeights = N_written x E[mcWeight] /
  skim_efficiency``. The ``skim_efficiency`` values are calibrated so that the yields after
  the official notebook cuts match the Open Data table (SCHEMAS.md section 7); the m4l shapes
  (e.g. the yields in 80-250 GeV) are the toy's own.
* pseudo-data ``data_A..D``: per MC sample, Poisson(expected yield) events drawn (with
  probability proportional to their weight) from an independent pool of the same
  process, split into the four periods by luminosity; weight 1. (The real data exceed
  the Open Data MC by ~27 %; the toy's data follow its MC.)

Jagged branches are written as ``float[]`` with the counters ``lep_n``/``jet_n`` (uproot
cannot write ``std::vector``); readers see the same jagged arrays.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from hepsieve.datasets.filesets import load_fileset_spec, select_datasets
from hepsieve.datasets.progress import ProgressWriter
from hepsieve.datasets.toys.kinematics import (
    ELECTRON_MASS_GEV,
    MUON_MASS_GEV,
    Z_MASS_GEV,
    Z_WIDTH_GEV,
    breit_wigner,
    decay_to_four_leptons,
    decay_two_body,
    final_state_radiation,
    four_lepton_system,
    p4,
    p4_from_rapidity,
    production_jets,
    recoiling_parent,
    smear_pt,
)
from hepsieve.processors.analyses.hzz4l_atlas import MEV, TREE

log = logging.getLogger(__name__)

# mcWeight per generator: (generator, mean signed weight, log-normal spread of |w|, negative
# fraction). Powheg weights are near its cross section in pb (ggH NNLOPS: broad reweighting)
# and never negative; Sherpa 2.2 NLO merging gives ~10 % negative weights; Pythia 8 LO gives
# 1. Means of ggH, llll and Z are the real samples' sumw/events (SCHEMAS.md section 7);
# VBF and ttbar follow the Powheg convention (not checked against real files).
MC_WEIGHTS = {
    "ggh": ("Powheg NNLOPS", 28.0, 0.35, 0.0),
    "vbf": ("Powheg", 3.7, 0.05, 0.0),
    "vh": ("Pythia 8", 1.0, 0.0, 0.0),
    "zz": ("Sherpa 2.2.2", 0.42, 0.30, 0.10),
    "zjets_e": ("Powheg", 1900.0, 0.02, 0.0),
    "zjets_mu": ("Powheg", 1900.0, 0.02, 0.0),
    "ttbar": ("Powheg", 700.0, 0.02, 0.0),
}
DATA_RUNS = {"data_A": 297730, "data_B": 300908, "data_C": 304178, "data_D": 307126}
EVENT_BRANCHES = {
    "runNumber": np.int32,
    "eventNumber": np.int64,
    "channelNumber": np.int32,
    "mcWeight": np.float32,
    "scaleFactor_PILEUP": np.float32,
    "scaleFactor_ELE": np.float32,
    "scaleFactor_MUON": np.float32,
    "scaleFactor_LepTRIGGER": np.float32,
    "trigE": np.bool_,
    "trigM": np.bool_,
    "met_et": np.float32,
    "met_phi": np.float32,
    "XSection": np.float32,
    "SumWeights": np.float32,
}


def _flavour_mass(flavour: np.ndarray) -> np.ndarray:
    return np.where(flavour == 13, MUON_MASS_GEV, ELECTRON_MASS_GEV)


def _stack(leptons, charge, flavour, prompt):
    """Return padded (n, k) arrays of lepton pt, eta, phi, charge, type, prompt."""
    return {
        "pt": np.stack([v.pt for v in leptons], 1),
        "eta": np.stack([v.eta for v in leptons], 1),
        "phi": np.stack([v.phi for v in leptons], 1),
        "charge": charge,
        "type": flavour,
        "prompt": prompt,
    }


def _fake_leptons(rng, n: int, k: int, source_pt=None, source_eta=None, source_phi=None):
    """``k`` non-prompt leptons per event carrying a fraction of a jet/b-quark momentum."""
    shape = (n, k)
    src_pt = 10 + rng.exponential(20, shape) if source_pt is None else source_pt
    src_eta = rng.normal(0, 1.8, shape) if source_eta is None else source_eta
    src_phi = rng.uniform(-np.pi, np.pi, shape) if source_phi is None else source_phi
    flavour = np.where(rng.random(shape) < 0.5, 11, 13)
    return {
        "pt": rng.uniform(0.1, 0.55, shape) * src_pt,
        "eta": src_eta + rng.normal(0, 0.05, shape),
        "phi": src_phi + rng.normal(0, 0.05, shape),
        "charge": np.where(rng.random(shape) < 0.5, 1, -1),
        "type": flavour,
        "prompt": np.zeros(shape, bool),
    }


def _concat(*parts):
    return {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}


def _higgs_or_zz(rng, production: str, n: int):
    jet_pt, jet_eta, jet_phi = production_jets(rng, production, n)
    mass, photon_a, photon_b = four_lepton_system(rng, production, n)
    parent = recoiling_parent(rng, jet_pt, jet_phi, mass)
    u = rng.random(n)
    flavour_a = np.where(u < 0.25, 11, np.where(u < 0.5, 13, np.where(u < 0.75, 11, 13)))
    flavour_b = np.where(u < 0.25, 11, np.where(u < 0.5, 13, np.where(u < 0.75, 13, 11)))
    truth = decay_to_four_leptons(
        rng, parent, _flavour_mass(flavour_a), _flavour_mass(flavour_b), photon=(photon_a, photon_b)
    )
    leptons = _stack(
        truth,
        np.tile([1, -1, 1, -1], (n, 1)),
        np.stack([flavour_a, flavour_a, flavour_b, flavour_b], 1),
        np.ones((n, 4), bool),
    )
    return leptons, (jet_pt, jet_eta, jet_phi), np.zeros((2, n))


def _z_jets(rng, flavour: int, n: int):
    jet_pt, jet_eta, jet_phi = production_jets(rng, "zz", n)
    z_mass = breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, n, 60.0, 120.0)
    parent = recoiling_parent(rng, jet_pt, jet_phi, z_mass, rapidity_sigma=2.0)
    mass = _flavour_mass(np.full(n, flavour))
    pair = decay_two_body(rng, parent, mass, mass)
    prompt = _stack(pair, np.tile([1, -1], (n, 1)), np.full((n, 2), flavour), np.ones((n, 2), bool))
    return _concat(prompt, _fake_leptons(rng, n, 2)), (jet_pt, jet_eta, jet_phi), np.zeros((2, n))


def _ttbar(rng, n: int):
    system = p4_from_rapidity(
        rng.gamma(2.0, 20.0, n),
        rng.normal(0, 1.0, n),
        rng.uniform(-np.pi, np.pi, n),
        350 + rng.gamma(2.0, 60.0, n),
    )
    tops = decay_two_body(rng, system, 172.5, 172.5)
    prompt, bs, nus = [], [], []
    for top in tops:
        w, b = decay_two_body(rng, top, 80.4, 4.8)
        flavour = np.where(rng.random(n) < 0.5, 11, 13)
        lep, nu = decay_two_body(rng, w, _flavour_mass(flavour), 0.0)
        prompt.append((lep, flavour))
        bs.append(b)
        nus.append(nu)
    leptons = _stack(
        [lep for lep, _ in prompt],
        np.tile([1, -1], (n, 1)),
        np.stack([f for _, f in prompt], 1),
        np.ones((n, 2), bool),
    )
    b_pt, b_eta, b_phi = (np.stack([getattr(b, a) for b in bs], 1) for a in ("pt", "eta", "phi"))
    fakes = _fake_leptons(rng, n, 2, b_pt, b_eta, b_phi)
    met = np.array([nus[0].px + nus[1].px, nus[0].py + nus[1].py])
    pad = np.full((n, 4), np.nan)
    jets = (np.concatenate([b_pt, pad], 1), np.concatenate([b_eta, pad], 1), np.concatenate([b_phi, pad], 1))
    return _concat(leptons, fakes), jets, met


# lepton resolution: muons sigma(pT)/pT = a + b pT in quadrature [b in 1/GeV], barrel/endcap
# (|eta| > 1.05); electrons sigma(E)/E = sampling/sqrt(E [GeV]) + constant, barrel/endcap (> 1.37)
MUON_RESOLUTION = {"barrel": (0.018, 0.0002), "endcap": (0.025, 0.0003)}
ELECTRON_RESOLUTION = {"barrel": (0.16, 0.017), "endcap": (0.22, 0.022)}
FSR_PROBABILITY = {11: 0.08, 13: 0.06}  # per prompt lepton, photon not recovered


def _resolution(lep: dict) -> np.ndarray:
    """Return the relative pT resolution of each lepton (flavour, |eta| and energy dependent)."""
    pt, eta = np.nan_to_num(lep["pt"], nan=1.0), np.abs(lep["eta"])
    mu = {
        k: np.where(eta > 1.05, MUON_RESOLUTION["endcap"][i], MUON_RESOLUTION["barrel"][i])
        for i, k in enumerate("ab")
    }
    el = {
        k: np.where(eta > 1.37, ELECTRON_RESOLUTION["endcap"][i], ELECTRON_RESOLUTION["barrel"][i])
        for i, k in enumerate("sc")
    }
    energy = np.maximum(pt * np.cosh(eta), 1.0)
    muon = np.hypot(mu["a"], mu["b"] * pt)
    electron = np.hypot(el["s"] / np.sqrt(energy), el["c"])
    return np.where(lep["type"] == 13, muon, electron)


def _detector_response(rng, lep: dict) -> None:
    """Apply unrecovered FSR to the prompt leptons and smear every lepton's pT, in place."""
    shape = lep["pt"].shape
    absent = ~np.isfinite(lep["pt"])
    truth = p4(np.nan_to_num(lep["pt"]).ravel(), lep["eta"].ravel(), lep["phi"].ravel(), 0.0)
    prob = np.where(lep["prompt"], np.where(lep["type"] == 13, FSR_PROBABILITY[13], FSR_PROBABILITY[11]), 0.0)
    radiated, _photon = final_state_radiation(rng, truth, prob.ravel())
    pt = smear_pt(rng, radiated.pt, _resolution(lep).ravel()).reshape(shape)
    lep["pt"] = np.where(absent, np.nan, pt)


def _skim(rng, leptons: dict, n: int):
    """Return the skimmed leptons (pT-ordered), their acceptance mask and the kept events.

    A 5th, non-prompt lepton is added to 10 % of events, the detector response is applied and
    events with at least four leptons in the skim acceptance are kept.
    """
    extra = _fake_leptons(rng, n, 1, (7 + rng.exponential(8, (n, 1))) / 0.325)  # mean pT 7 + 8 GeV
    extra["pt"] = np.where(rng.random((n, 1)) < 0.10, extra["pt"], np.nan)
    lep = _concat(leptons, extra)
    _detector_response(rng, lep)
    ok = np.isfinite(lep["pt"]) & (lep["pt"] > 5) & (np.abs(lep["eta"]) < 2.5)
    keep = ok.sum(axis=1) >= 4
    lep = {k: v[keep] for k, v in lep.items()}
    ok = ok[keep]
    order = np.argsort(np.where(ok, -lep["pt"], np.inf), axis=1, kind="stable")
    rows = np.arange(len(ok))[:, None]
    lep = {k: v[rows, order] for k, v in lep.items()}
    lep["phi"] = (lep["phi"] + np.pi) % (2 * np.pi) - np.pi
    return lep, ok[rows, order], keep


LEPTON_DTYPES = {
    "charge": np.int32,
    "type": np.uint32,
    "isTightID": np.bool_,
    "trigMatched": np.bool_,
    "truthMatched": np.bool_,
}


def _lepton_branches(rng, lep: dict, ok: np.ndarray) -> ak.Array:
    """Return the jagged lep_* branches (MeV) with isolation, impact parameters and ID."""
    pt, prompt, shape = lep["pt"], lep["prompt"], lep["pt"].shape
    d0 = np.where(prompt, rng.normal(0, 0.015, shape), rng.normal(0, 0.12, shape))
    ptcone = np.where(prompt, rng.exponential(0.02, shape), 0.05 + rng.exponential(0.35, shape))
    etcone = np.where(prompt, rng.normal(0.01, 0.02, shape), 0.03 + rng.exponential(0.25, shape))
    energy = p4(np.nan_to_num(pt), lep["eta"], lep["phi"], _flavour_mass(lep["type"])).E
    flat = {
        "pt": pt * MEV, "E": energy * MEV, "eta": lep["eta"], "phi": lep["phi"],
        "charge": lep["charge"].astype(np.int32), "type": lep["type"].astype(np.uint32),
        "ptcone30": ptcone * pt * MEV, "etcone20": etcone * pt * MEV,
        "trackd0pvunbiased": d0, "tracksigd0pvunbiased": np.abs(d0) / 0.015,
        "z0": np.where(prompt, rng.normal(0, 0.15, shape), rng.normal(0, 0.6, shape)),
        "isTightID": rng.random(shape) < np.where(prompt, 0.97, 0.80),
        "trigMatched": pt > 25, "truthMatched": prompt,
    }  # fmt: skip
    counts = ok.sum(axis=1)
    return ak.zip(
        {k: ak.unflatten(v[ok].astype(LEPTON_DTYPES.get(k, np.float32)), counts) for k, v in flat.items()}
    )


def _jet_branches(rng, jets, keep: np.ndarray) -> ak.Array:
    """Return the jagged jet_* branches (MeV) of the kept events: smeared, in acceptance."""
    jet_pt, jet_eta, jet_phi = (a[keep] for a in jets)
    jet_pt = jet_pt * (1 + 0.1 * rng.standard_normal(jet_pt.shape))
    jet_ok = np.isfinite(jet_pt) & (jet_pt > 25) & (np.abs(jet_eta) < 4.5)
    flat = {
        "pt": jet_pt * MEV,
        "eta": jet_eta,
        "phi": (jet_phi + np.pi) % (2 * np.pi) - np.pi,
        "E": jet_pt * np.cosh(jet_eta) * MEV,
    }
    counts = jet_ok.sum(axis=1)
    return ak.zip({k: ak.unflatten(v[jet_ok].astype(np.float32), counts) for k, v in flat.items()})


def _event_branches(rng, lep: dict, ok: np.ndarray, met, keep: np.ndarray) -> dict:
    """Return triggers, MET and scale factors of the kept events."""
    m = keep.sum()
    met_x, met_y = met[0][keep] + rng.normal(0, 10, m), met[1][keep] + rng.normal(0, 10, m)
    n_e = ((lep["type"] == 11) & ok).sum(axis=1)
    n_mu = ((lep["type"] == 13) & ok).sum(axis=1)
    return {
        "trigE": ((lep["type"] == 11) & (lep["pt"] > 25) & ok).any(axis=1),
        "trigM": ((lep["type"] == 13) & (lep["pt"] > 25) & ok).any(axis=1),
        "met_et": np.hypot(met_x, met_y) * MEV, "met_phi": np.arctan2(met_y, met_x),
        "scaleFactor_PILEUP": rng.normal(1.0, 0.05, m),
        "scaleFactor_ELE": np.prod([rng.normal(1.0, 0.01, m) for _ in range(2)], axis=0) ** (n_e / 2),
        "scaleFactor_MUON": np.prod([rng.normal(1.0, 0.01, m) for _ in range(2)], axis=0) ** (n_mu / 2),
        "scaleFactor_LepTRIGGER": rng.normal(1.0, 0.01, m),
    }  # fmt: skip


def _detector(rng, leptons: dict, jets, met, n: int) -> tuple[dict, np.ndarray]:
    """Smear, add isolation/impact-parameter/ID variables, apply the 4lep skim; return jagged."""
    lep, ok, keep = _skim(rng, leptons, n)
    lep_jagged = _lepton_branches(rng, lep, ok)
    jet_jagged = _jet_branches(rng, jets, keep)
    return {"lep": lep_jagged, "jet": jet_jagged, **_event_branches(rng, lep, ok, met, keep)}, keep


def _attempt(rng, production: str, n: int) -> dict:
    """Generate ``n`` events of ``production``; return the written (skimmed) ones."""
    if production == "ttbar":
        leptons, jets, met = _ttbar(rng, n)
    elif production.startswith("zjets"):
        leptons, jets, met = _z_jets(rng, 11 if production == "zjets_e" else 13, n)
    else:
        leptons, jets, met = _higgs_or_zz(rng, production, n)
    out, _ = _detector(rng, leptons, jets, met, n)
    return out


def _mc_weight(rng, production: str, n: int) -> tuple[np.ndarray, float]:
    """Return (mcWeight per event, its expectation value) for the generator of ``production``."""
    _generator, mean, spread, f = MC_WEIGHTS[production]
    magnitude = mean / (1 - 2 * f) * rng.lognormal(-0.5 * spread**2, spread, n)
    return magnitude * np.where(rng.random(n) < f, -1.0, 1.0), mean


def _batches(rng, production: str, n_events: int, batch: int = 50_000):
    """Yield skimmed batches until ``n_events`` events are collected."""
    done = 0
    while done < n_events:
        chunk = _attempt(rng, production, batch)
        take = min(len(chunk["lep"]), n_events - done)
        chunk = {k: v[:take] for k, v in chunk.items()}
        done += take
        yield chunk


def _event_weight(chunk: dict, lumi_pb: float) -> np.ndarray:
    sf = (
        chunk["scaleFactor_PILEUP"]
        * chunk["scaleFactor_ELE"]
        * chunk["scaleFactor_MUON"]
        * chunk["scaleFactor_LepTRIGGER"]
    )
    return (
        chunk["mcWeight"].astype(np.float64)
        * sf.astype(np.float32).astype(np.float64)
        * chunk["XSection"].astype(np.float64)
        * lumi_pb
        / chunk["SumWeights"].astype(np.float64)
    )


def _finalise_mc(rng, chunk: dict, meta: dict, n_events: int, offset: int) -> dict:
    m = len(chunk["lep"])
    chunk["mcWeight"], mean_w = _mc_weight(rng, meta["production"], m)
    chunk["runNumber"] = np.full(m, 284500)
    chunk["eventNumber"] = offset + np.arange(m)
    chunk["channelNumber"] = np.full(m, meta["dsid"])
    chunk["XSection"] = np.full(m, meta["xsec_pb"])
    chunk["SumWeights"] = np.full(m, n_events * mean_w / meta["skim_efficiency"])
    return {k: (v.astype(EVENT_BRANCHES[k]) if k in EVENT_BRANCHES else v) for k, v in chunk.items()}


def _write(fout, chunk: dict, first: bool) -> None:
    if first:
        types = {k: (EVENT_BRANCHES[k] if k in EVENT_BRANCHES else chunk[k].type.content) for k in chunk}
        fout.mktree(TREE, types, counter_name=lambda counted: f"{counted}_n")
    fout[TREE].extend(chunk)


def generate(
    out_dir: str | Path, events: int = 20_000, seed: int = 1, datasets: list[str] | None = None
) -> Path:
    """Write MC toys (``events`` per sample), Poisson pseudo-data and ``toy.json`` to ``out_dir``."""
    spec = load_fileset_spec("atlas-hzz4l")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = select_datasets(spec, datasets)
    mc = [d for d in names if not spec["datasets"][d]["metadata"].get("is_data")]
    data = [d for d in names if spec["datasets"][d]["metadata"].get("is_data")]
    lumi = spec["lumi_pb"]
    provenance = {
        "analysis": "atlas-hzz4l",
        "generator": __name__,
        "seed": seed,
        "events_per_dataset": events,
        "lumi_pb": lumi,
        "datasets": {},
    }
    data_chunks = []
    with ProgressWriter(total=events * len(mc), description="generating atlas-hzz4l") as progress:
        for i, name in enumerate(mc):
            entry = spec["datasets"][name]
            meta = entry["metadata"]
            rng = np.random.default_rng([seed, i])
            expected = 0.0
            with uproot.recreate(out / entry["files"][0], compression=uproot.LZ4(1)) as fout:
                for j, raw in enumerate(_batches(rng, meta["production"], events)):
                    chunk = _finalise_mc(rng, raw, meta, events, (i + 1) * 10**9 + j * 10**6)
                    expected += _event_weight(chunk, lumi).sum()
                    _write(fout, chunk, first=j == 0)
                    progress.advance(len(chunk["lep"]))
            provenance["datasets"][name] = {
                "file": entry["files"][0],
                "events": events,
                "expected_yield": expected,
                **meta,
            }
            if data:
                data_chunks.append(
                    _pseudo_data(np.random.default_rng([seed, i, 99]), meta, events, expected, lumi)
                )
    if data:
        _write_data(np.random.default_rng([seed, 1000]), out, spec, data, data_chunks, provenance)
    (out / "toy.json").write_text(json.dumps(provenance, indent=2, default=float))
    log.info("wrote %d toy files to %s", len(names), out)
    return out


def _pseudo_data(rng, meta: dict, n_events: int, expected: float, lumi: float) -> dict:
    """Poisson(expected) events of one process, drawn from an independent pool by weight."""
    n_data = rng.poisson(expected)
    pool_size = max(3 * n_data, 300)
    pool = next(_batches(rng, meta["production"], pool_size, batch=max(pool_size * 4, 20_000)))
    pool = _finalise_mc(rng, pool, meta, n_events, 0)
    weight = np.clip(_event_weight(pool, lumi), 0, None)
    pick = rng.choice(len(weight), size=n_data, replace=False, p=weight / weight.sum())
    return {k: v[np.sort(pick)] for k, v in pool.items()}


def _write_data(rng, out: Path, spec: dict, data: list[str], chunks: list[dict], provenance: dict) -> None:
    merged = {
        k: (
            ak.concatenate([c[k] for c in chunks])
            if k in ("lep", "jet")
            else np.concatenate([c[k] for c in chunks])
        )
        for k in chunks[0]
    }
    n = len(merged["lep"])
    fractions = np.array([spec["datasets"][d]["metadata"]["lumi_fraction"] for d in data])
    period = rng.choice(len(data), size=n, p=fractions / fractions.sum())
    for i, name in enumerate(data):
        rows = np.flatnonzero(period == i)
        chunk = {k: v[rows] for k, v in merged.items()}
        m = len(rows)
        chunk |= {
            "runNumber": np.full(m, DATA_RUNS.get(name, 0), np.int32),
            "eventNumber": np.arange(m, dtype=np.int64) + (i + 1) * 10**8,
            "channelNumber": np.zeros(m, np.int32),
            "mcWeight": np.zeros(m, np.float32),
            "XSection": np.zeros(m, np.float32),
            "SumWeights": np.zeros(m, np.float32),
        }
        for sf in ("PILEUP", "ELE", "MUON", "LepTRIGGER"):
            chunk[f"scaleFactor_{sf}"] = np.ones(m, np.float32)
        entry = spec["datasets"][name]
        with uproot.recreate(out / entry["files"][0], compression=uproot.LZ4(1)) as fout:
            _write(fout, chunk, first=True)
        provenance["datasets"][name] = {"file": entry["files"][0], "events": m, **entry["metadata"]}


KAGGLE_FILES = {"llll": "llll", "ggH125_ZZ4lep": "ggH125_ZZ4lep", "data": "data"}


def _csv_row(values) -> str:
    """Return one CSV line, floats with full precision."""
    return ",".join(repr(float(v)) if isinstance(v, np.floating) else str(v) for v in values) + "\n"


def write_kaggle_csv(toy_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write Kaggle-style CSVs (llll, ggH125_ZZ4lep, data) from the toy ROOT files.

    One row per triggered event with exactly four good leptons (the analysis' object
    selection), leptons flattened as ``lep_<var>_0..3`` in GeV, ``totalWeight`` (the
    analysis weight) and ``eventNumber``; floats written with full precision.
    """
    from hepsieve.processors.analyses.hzz4l_atlas import ANALYSIS, LEPTON_FIELDS

    spec = load_fileset_spec("atlas-hzz4l")
    toy_dir, out = Path(toy_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for csv_name in KAGGLE_FILES.values():
        names = [d for d in spec["datasets"] if d.startswith("data_")] if csv_name == "data" else [csv_name]
        frames = []
        for name in names:
            entry = spec["datasets"][name]
            meta = {**entry["metadata"], "lumi_pb": spec["lumi_pb"]}
            branches = list(ANALYSIS.inputs.required(is_data=False))
            events = uproot.open(toy_dir / entry["files"][0])[TREE].arrays(branches)
            leptons = ANALYSIS.make_objects(events)
            keep = (leptons.good_sum(1) == 4) & ak.to_numpy(events.trigE | events.trigM)
            four = leptons[keep].four_good()
            columns = {f"lep_{f}_{i}": four[f][:, i] for f in LEPTON_FIELDS for i in range(4)}
            columns["totalWeight"] = ANALYSIS.weights.nominal(events, leptons, meta)[keep]
            columns["eventNumber"] = ak.to_numpy(events.eventNumber)[keep]
            frames.append(columns)
        merged = {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
        path = out / f"{csv_name}.csv"
        with path.open("w") as fout:
            fout.write(",".join(merged) + "\n")
            fout.writelines(_csv_row(row) for row in zip(*merged.values(), strict=True))
        written.append(path)
    return written


__all__ = ["generate", "write_kaggle_csv"]
