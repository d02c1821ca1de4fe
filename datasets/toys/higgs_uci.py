"""Toy UCI HIGGS data: 28 features of l nu b b j j events, in the exact UCI column layout.

Background: t t -> W b W b, one W -> l nu, the other -> q q' (m_tt from threshold with a
falling tail, top and W Breit-Wigners). Signal (Baldi et al. 2014): gg -> H0 (425 GeV) ->
W H+- (325 GeV), H+- -> W h0 (125 GeV), h0 -> b b, one W -> l nu, the other -> q q'. Both
systems recoil against initial-state radiation jets (8 TeV).

Detector, close to the Delphes samples of the real file:

* final-state radiation: each quark emits a gluon (probability 0.35, z ~ 1/z) at
  Delta R ~ 1/Delta R in [0.05, 1.5]; within Delta R 0.4 it stays in the jet, beyond it
  the quark jet loses z and the gluon is a jet of its own;
* semileptonic b decays (20 %) give a neutrino a fraction of the b-jet momentum;
* jets: sigma(E)/E = 50 %/sqrt(E) + 3 % (quadrature), 0.02 in eta and phi; lepton pT
  1.5 %; MET = the neutrinos + the jets' mismeasurement + a 10 GeV soft term per
  component;
* selection: the lepton with pT > 20 GeV, |eta| < 2.5 and at least four jets with
  pT > 20 GeV, |eta| < 2.5; the four leading jets are stored;
* b-tagging: three levels (0 none, 1 loose, 2 tight); tight: b jets 70 % x tanh((pT/45 GeV)^2)
  / (1 + pT/300 GeV), c jets (W -> c s, half of the hadronic W decays) 20 % x the same turn-on,
  light jets (W, ISR, FSR) 2 %; loose: b 10 %, c 15 %, light 6 %. Both classes have two b
  quarks, so the b-tags alone hardly separate them.

The 7 high-level masses are computed from the stored objects with the fixed assignment
a physicist would use (so wrong whenever the b-tags or ISR/FSR jets mislead it): the two
most b-tagged jets (pT breaks ties) are the b's, the other two the W jets, the b nearer the
lepton belongs to the leptonic side; the neutrino pz comes from the W-mass constraint.

UCI conventions: every phi column is standardised (phi / (pi / sqrt 3), range +-1.73);
b-tags are divided by the standard deviation of each jet's column (``BTAG_STD``), so each
jet has its own three levels; momenta and masses are divided by their mean over the toy
(``SCALE_GEV``, means near 1 as in the UCI file). About 53 % signal. Files:
``HIGGS_train_<i>.root`` / ``HIGGS_test_<i>.root`` (LZ4) and/or ``.parquet`` chunks, the last
``test_rows`` rows (500 000 of 11M; the same fraction for smaller toys) being the UCI test
split, and/or ``HIGGS.csv.gz`` in the UCI text format. Column ``event`` is the row number.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import vector

from hepsieve.datasets.converters import uci_test_rows, write_higgs_chunks
from hepsieve.datasets.filesets import load_fileset_spec, select_datasets
from hepsieve.datasets.progress import ProgressWriter
from hepsieve.datasets.toys.kinematics import (
    breit_wigner,
    decay_two_body,
    final_state_radiation,
    p4,
    radiation_jets,
    recoiling_parent,
)
from hepsieve.processors.analyses.higgs_uci import COLUMNS

log = logging.getLogger(__name__)

PHI_SCALE = np.pi / np.sqrt(3)  # UCI: phi / (pi / sqrt 3), the standard deviation of U(-pi, pi)
# standard deviation of the raw b-tag (0, 1, 2) of jets 1-4 (measured on a 1M-row toy, seed 1)
BTAG_STD = (0.9338, 0.8778, 0.8117, 0.6721)
# mean of each momentum/mass column [GeV] over signal and background (1M-row toy, seed 1)
SCALE_GEV = {
    "lepton_pT": 57.5,
    "missing_energy_magnitude": 49.8,
    "jet1_pt": 98.3,
    "jet2_pt": 67.5,
    "jet3_pt": 48.0,
    "jet4_pt": 34.7,
    "m_jj": 92.7,
    "m_jjj": 195.3,
    "m_lv": 85.8,
    "m_jlv": 177.1,
    "m_bb": 140.9,
    "m_wbb": 302.4,
    "m_wwbb": 457.3,
}
W_MASS, W_WIDTH, TOP_MASS, TOP_WIDTH = 80.4, 2.1, 172.5, 1.4
H0_MASS, H0_WIDTH, HPLUS_MASS, HPLUS_WIDTH, HIGGS_MASS = 425.0, 10.0, 325.0, 5.0, 125.0
PRODUCED_SIGNAL_FRACTION = 0.535  # before the selection (tuned: about 53 % signal after it)
ISR_JETS = 0.8  # mean number of ISR jets above 20 GeV (gluon-initiated, 8 TeV)
# b-tag (loose, tight) probabilities per jet flavour; tight falls to zero at low pT
# (x tanh((pT / 45 GeV)^2)) and, for b jets, slowly at high pT (/ (1 + pT / 300 GeV))
BTAG_RATES = {"b": (0.10, 0.70), "c": (0.15, 0.20), "light": (0.06, 0.02)}
CHARM_FRACTION = 0.5  # W -> c s among hadronic W decays
JET_RESOLUTION = (0.5, 0.03)  # sigma(E)/E = a / sqrt(E [GeV]) + b (in quadrature)
FSR_EMISSION = 0.35  # probability that a quark radiates a gluon with z > 0.02


def _where(cond, a, b):
    """Per-event choice between two vector arrays."""
    return vector.array({c: np.where(cond, getattr(a, c), getattr(b, c)) for c in ("px", "py", "pz", "E")})


def _system(rng, signal: np.ndarray, n: int):
    """Return (the H0 or t t system recoiling against the ISR jets, ISR (pt, eta, phi), top masses)."""
    pt, eta, phi, count = radiation_jets(rng, n, ISR_JETS)
    pt = np.where(np.arange(pt.shape[1])[None, :] < count[:, None], pt, np.nan)
    m_t = [breit_wigner(rng, TOP_MASS, TOP_WIDTH, n, 160.0, 185.0) for _ in range(2)]
    m_tt = m_t[0] + m_t[1] + rng.gamma(1.8, 55.0, n)  # threshold rise and falling tail
    mass = np.where(signal, breit_wigner(rng, H0_MASS, H0_WIDTH, n, 380.0, 470.0), m_tt)
    system = recoiling_parent(rng, pt, phi, mass, rapidity_sigma=0.8)
    return system, (pt, eta, phi), m_t


def _truth(rng, n: int):
    """Return (signal mask, lepton, neutrino, [q, q', b, b] partons, ISR jets) lab vectors."""
    signal = rng.random(n) < PRODUCED_SIGNAL_FRACTION
    system, isr, m_t = _system(rng, signal, n)
    m_w = [breit_wigner(rng, W_MASS, W_WIDTH, n, 60.0, 100.0) for _ in range(2)]
    # background: t t -> (W b)(W b)
    t1, t2 = decay_two_body(rng, system, np.minimum(m_t[0], system.mass - m_t[1]), m_t[1])
    w1_b, b1_b = decay_two_body(rng, t1, np.minimum(m_w[0], t1.mass - 5), 4.8)
    w2_b, b2_b = decay_two_body(rng, t2, np.minimum(m_w[1], t2.mass - 5), 4.8)
    # signal: H0 -> W H+-, H+- -> W h0, h0 -> b b
    m_hplus = breit_wigner(rng, HPLUS_MASS, HPLUS_WIDTH, n, 300.0, 340.0)
    w1_s, h_charged = decay_two_body(rng, system, m_w[0], np.minimum(m_hplus, system.mass - m_w[0] - 1))
    w2_s, h0 = decay_two_body(rng, h_charged, m_w[1], HIGGS_MASS)
    b1_s, b2_s = decay_two_body(rng, h0, 4.8, 4.8)
    w1, w2 = _where(signal, w1_s, w1_b), _where(signal, w2_s, w2_b)
    b1, b2 = _where(signal, b1_s, b1_b), _where(signal, b2_s, b2_b)
    leptonic_first = rng.random(n) < 0.5
    w_lep, w_had = _where(leptonic_first, w1, w2), _where(leptonic_first, w2, w1)
    lepton, nu = decay_two_body(rng, w_lep, 0.0, 0.0)
    q1, q2 = decay_two_body(rng, w_had, 0.0, 0.0)
    return signal, lepton, nu, [q1, q2, b1, b2], isr


def _shower(rng, partons: list) -> tuple[dict, vector.MomentumNumpy4D]:
    """Return jets (pt, eta, phi, flavour 5/4/0 as (n, k) arrays) of partons + FSR, b-decay neutrinos.

    A gluon beyond Delta R 0.4 leaves its quark's jet and makes a jet of its own; 20 % of b
    jets give a neutrino a fraction U(0.1, 0.5) of their momentum.
    """
    n = len(partons[0])
    cols: dict[str, list] = {"pt": [], "eta": [], "phi": [], "flavour": []}
    nu_px, nu_py = np.zeros(n), np.zeros(n)
    charm = rng.random(n) < CHARM_FRACTION  # the first W quark is a c
    for k, parton in enumerate(partons):
        is_b = k >= 2
        flavour = np.full(n, 5) if is_b else np.where(charm & (k == 0), 4, 0)
        after, gluon = final_state_radiation(rng, parton, FSR_EMISSION, z_min=0.02)
        dr = np.exp(rng.uniform(np.log(0.05), np.log(1.5), n))
        out = dr > 0.4
        angle = rng.uniform(0, 2 * np.pi, n)
        quark = _where(out, after, parton)
        if is_b:
            f = np.where(rng.random(n) < 0.2, rng.uniform(0.1, 0.5, n), 0.0)
            nu_px, nu_py = nu_px + f * quark.px, nu_py + f * quark.py
            quark = p4(quark.pt * (1 - f), quark.eta, quark.phi, 0.0)
        for name, arr in (("pt", quark.pt), ("eta", quark.eta), ("phi", quark.phi)):
            cols[name].append(arr)
        cols["flavour"].append(flavour)
        cols["pt"].append(np.where(out, gluon.pt, np.nan))
        cols["eta"].append(gluon.eta + dr * np.cos(angle))
        cols["phi"].append(gluon.phi + dr * np.sin(angle))
        cols["flavour"].append(np.zeros(n, int))
    jets = {k: np.stack(v, axis=1) for k, v in cols.items()}
    return jets, vector.array({"px": nu_px, "py": nu_py, "pz": np.zeros(n), "mass": np.zeros(n)})


def _measure_jets(rng, true: dict) -> dict:
    """Return the reconstructed jets: energy resolution ``JET_RESOLUTION``, 0.02 in eta and phi.

    Jets below 20 GeV (the soft term) are measured with half the response.
    """
    pt, eta = true["pt"], true["eta"] + rng.normal(0, 0.02, true["pt"].shape)
    energy = np.maximum(np.nan_to_num(pt) * np.cosh(eta), 1.0)
    resolution = np.hypot(JET_RESOLUTION[0] / np.sqrt(energy), JET_RESOLUTION[1])
    response = np.where(pt > 20, 1.0, 0.5)
    reco_pt = np.abs(pt * response * (1 + resolution * rng.standard_normal(pt.shape)))
    phi = (true["phi"] + rng.normal(0, 0.02, pt.shape) + np.pi) % (2 * np.pi) - np.pi
    return {"pt": reco_pt, "eta": eta, "phi": phi, "flavour": true["flavour"]}


def _missing_et(rng, nu, b_nu, true: dict, reco: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return MET (x, y) [GeV]: neutrinos + what the jets (|eta| < 4.9) mismeasure + soft term."""
    measured = np.abs(true["eta"]) < 4.9
    dpt = np.where(measured, np.nan_to_num(true["pt"] - reco["pt"]), np.nan_to_num(true["pt"]))
    met_x = nu.px + b_nu.px + np.sum(dpt * np.cos(true["phi"]), axis=1) + rng.normal(0, 10, n)
    met_y = nu.py + b_nu.py + np.sum(dpt * np.sin(true["phi"]), axis=1) + rng.normal(0, 10, n)
    return met_x, met_y


def _btags(rng, pt: np.ndarray, flavour: np.ndarray) -> np.ndarray:
    """Return raw b-tag levels 0 / 1 / 2 (none, loose, tight) of the stored jets."""
    turn_on = np.tanh(np.square(pt / 45.0))
    b, c, light = (BTAG_RATES[f] for f in ("b", "c", "light"))
    tight = np.where(
        flavour == 5, b[1] * turn_on / (1 + pt / 300), np.where(flavour == 4, c[1] * turn_on, light[1])
    )
    loose = np.where(flavour == 5, b[0], np.where(flavour == 4, c[0], light[0]))
    u = rng.random(pt.shape)
    return np.where(u < tight, 2, np.where(u < tight + loose, 1, 0))


def _neutrino(lepton: vector.MomentumNumpy4D, met_x: np.ndarray, met_y: np.ndarray):
    """Neutrino four-vector with pz from m(l nu) = m_W (smaller |pz|; real part if complex)."""
    pt_l2 = lepton.pt**2
    mu = W_MASS**2 / 2 + lepton.px * met_x + lepton.py * met_y
    a = mu * lepton.pz / pt_l2
    disc = np.clip(a**2 - (lepton.E**2 * (met_x**2 + met_y**2) - mu**2) / pt_l2, 0, None)
    pz = np.where(np.abs(a - np.sqrt(disc)) < np.abs(a + np.sqrt(disc)), a - np.sqrt(disc), a + np.sqrt(disc))
    return vector.array({"px": met_x, "py": met_y, "pz": pz, "mass": np.zeros_like(pz)})


def _high_level(jets: dict, btag: np.ndarray, lep, met_x, met_y) -> dict[str, np.ndarray]:
    """Return the 7 masses: the two most b-tagged jets (pT breaks ties) are the b's."""
    n = len(btag)
    rank = np.argsort(-(btag * 1e4 + jets["pt"]), axis=1, kind="stable")

    def pick(k):
        idx = rank[:, k]
        return vector.array(
            {c: jets[c][np.arange(n), idx] for c in ("pt", "eta", "phi")} | {"mass": np.zeros(n)}
        )

    b_a, b_b, w_j1, w_j2 = (pick(k) for k in range(4))
    w_lep = lep + _neutrino(lep, met_x, met_y)
    b_lep_first = b_a.deltaR(lep) < b_b.deltaR(lep)
    b_lep, b_had = _where(b_lep_first, b_a, b_b), _where(b_lep_first, b_b, b_a)
    w_had = w_j1 + w_j2
    return {"m_jj": w_had.mass, "m_jjj": (w_had + b_had).mass, "m_lv": w_lep.mass,
            "m_jlv": (w_lep + b_lep).mass, "m_bb": (b_a + b_b).mass, "m_wbb": (w_had + b_a + b_b).mass,
            "m_wwbb": (w_lep + w_had + b_a + b_b).mass}  # fmt: skip


def _leading_jets(rng, n: int, partons: list, isr) -> tuple[dict, dict, dict, vector.MomentumNumpy4D]:
    """Return (all true jets, all reco jets, the four leading accepted reco jets, b-decay neutrinos)."""
    true, b_nu = _shower(rng, partons)
    isr_jets = {"pt": isr[0], "eta": isr[1], "phi": isr[2], "flavour": np.zeros(isr[0].shape, int)}
    true = {k: np.concatenate([true[k], isr_jets[k]], axis=1) for k in true}
    reco = _measure_jets(rng, true)
    accepted = (np.nan_to_num(reco["pt"]) > 20) & (np.abs(reco["eta"]) < 2.5)
    order = np.argsort(np.where(accepted, -reco["pt"], np.inf), axis=1, kind="stable")[:, :4]
    rows = np.arange(n)[:, None]
    leading = {k: v[rows, order] for k, v in reco.items()}
    leading["accepted"] = accepted[rows, order]
    return true, reco, leading, b_nu


def _reconstruct(rng, n: int) -> dict[str, np.ndarray]:
    """Generate ``n`` events; return the UCI columns (unscaled, GeV) of the selected ones."""
    signal, lepton, nu, partons, isr = _truth(rng, n)
    true, reco, jets, b_nu = _leading_jets(rng, n, partons, isr)
    lep = p4(lepton.pt * (1 + 0.015 * rng.standard_normal(n)), lepton.eta, lepton.phi, 0.0)
    met_x, met_y = _missing_et(rng, nu, b_nu, true, reco, n)
    keep = (lep.pt > 20) & (np.abs(lep.eta) < 2.5) & jets["accepted"].all(axis=1)
    btag = _btags(rng, np.nan_to_num(jets["pt"]), jets["flavour"])
    out = {
        "label": signal.astype(np.float64),
        "lepton_pT": lep.pt,
        "lepton_eta": lep.eta,
        "lepton_phi": lep.phi / PHI_SCALE,
        "missing_energy_magnitude": np.hypot(met_x, met_y),
        "missing_energy_phi": np.arctan2(met_y, met_x) / PHI_SCALE,
    }
    for i in range(4):
        out[f"jet{i + 1}_pt"] = jets["pt"][:, i]
        out[f"jet{i + 1}_eta"] = jets["eta"][:, i]
        out[f"jet{i + 1}_phi"] = jets["phi"][:, i] / PHI_SCALE
        out[f"jet{i + 1}_btag"] = btag[:, i] / BTAG_STD[i]
    out |= _high_level(jets, btag, lep, met_x, met_y)
    return {k: np.asarray(v, dtype=np.float64)[keep] for k, v in out.items()}


def generate_rows(
    rng: np.random.Generator, n_rows: int, batch: int = 50_000
) -> Iterator[dict[str, np.ndarray]]:
    """Yield dicts of UCI columns (scaled like UCI, float64) until ``n_rows`` rows are made."""
    done = 0
    while done < n_rows:
        cols = _reconstruct(rng, int(batch * 2.5))
        take = min(len(cols["label"]), n_rows - done, batch)
        cols = {k: v[:take] / SCALE_GEV.get(k, 1.0) for k, v in cols.items()}
        done += take
        yield cols


def write_uci_csv(path: Path, rows) -> int:
    """Write rows in the UCI text format (no header, label first, ``%.18e``); return the rows."""
    n = 0
    with gzip.open(path, "wt", compresslevel=1) as fout:
        for cols in rows:
            matrix = np.column_stack([cols[c] for c in COLUMNS])
            np.savetxt(fout, matrix, fmt="%.18e", delimiter=",")
            n += len(matrix)
    return n


def _counted(rows, bar: ProgressWriter):
    """Yield ``rows`` batches, advancing ``bar`` by each one's rows."""
    for batch in rows:
        bar.advance(len(batch["label"]))
        yield batch


def generate(
    out_dir: str | Path,
    events: int = 100_000,
    seed: int = 1,
    datasets: list[str] | None = None,
    formats: tuple[str, ...] = ("root",),
    chunk_rows: int = 1_000_000,
) -> Path:
    """Write ``events`` toy rows as ROOT/Parquet chunks and/or ``HIGGS.csv.gz`` to ``out_dir``.

    ``datasets`` (``train``, ``test``) selects the chunk files written; the rows are those of the
    whole toy either way. ``HIGGS.csv.gz`` always holds every row, like the UCI file.
    """
    splits = tuple(select_datasets(load_fileset_spec("higgs-uci"), datasets))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    with ProgressWriter(total=events * len(formats), description="generating higgs-uci") as bar:
        for fmt in formats:
            rows = generate_rows(np.random.default_rng(seed), events)
            if fmt == "csv":
                write_uci_csv(out / "HIGGS.csv.gz", _counted(rows, bar))
                files["csv"] = ["HIGGS.csv.gz"]
            else:
                files[fmt] = write_higgs_chunks(out, rows, events, fmt, chunk_rows, bar, splits)
    (out / "toy.json").write_text(
        json.dumps(
            {
                "analysis": "higgs-uci",
                "generator": __name__,
                "seed": seed,
                "events": events,
                "test_rows": uci_test_rows(events),
                "scale_gev": SCALE_GEV,
                "files": files,
            },
            indent=2,
        )
    )
    log.info("wrote %d toy rows to %s", events, out)
    return out
