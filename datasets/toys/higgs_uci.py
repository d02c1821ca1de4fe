"""Toy UCI HIGGS data: 28 features of l nu b b j j events, in the exact UCI column layout.

Background: tt -> W b W b, one W -> l nu, the other -> q q'. Signal (Baldi et al. 2014):
gg -> H0 (425 GeV) -> W H+- (325 GeV), H+- -> W h0 (125 GeV), h0 -> b b, one W -> l nu and
the other -> q q'. Objects are smeared (lepton 2 %, jets 10 %, MET 10 GeV per component),
required in acceptance (lepton and four jets pT > 20 GeV, |eta| < 2.5), jets ordered by pT and
b-tagged with three discrete levels. The 7 high-level masses are computed from the
reconstructed objects: the two most b-tagged jets are the b's, the others the W jets; the
neutrino pz comes from the W-mass constraint. Momenta and masses are divided by the fixed
constants in ``SCALE_GEV`` (background means near 1, as in the UCI file). About 53 % signal.
Files: ``HIGGS_train_<i>.root`` / ``HIGGS_test_<i>.root`` (LZ4) and/or ``.parquet`` chunks, the
last ``test_rows`` rows (500 000 of 11M; the same fraction for smaller toys) being the UCI test
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
from hepsieve.datasets.toys.kinematics import breit_wigner, decay_two_body, p4_from_rapidity
from hepsieve.processors.analyses.higgs_uci import COLUMNS

log = logging.getLogger(__name__)

BTAG_LEVELS = np.array([0.0, 1.0865380764007568, 2.1730761528015137])
SCALE_GEV = {
    "lepton_pT": 60.0,
    "missing_energy_magnitude": 60.0,
    "jet1_pt": 110.0,
    "jet2_pt": 80.0,
    "jet3_pt": 60.0,
    "jet4_pt": 40.0,
    "m_jj": 80.0,
    "m_jjj": 180.0,
    "m_lv": 80.0,
    "m_jlv": 160.0,
    "m_bb": 130.0,
    "m_wbb": 300.0,
    "m_wwbb": 420.0,
}
W_MASS, W_WIDTH, TOP_MASS, TOP_WIDTH = 80.4, 2.1, 172.5, 1.4


def _where(cond, a, b):
    """Per-event choice between two vector arrays."""
    return vector.array({c: np.where(cond, getattr(a, c), getattr(b, c)) for c in ("px", "py", "pz", "E")})


def _truth(rng, n: int):
    """Return (signal mask, lepton, neutrino, quark 1, quark 2, b 1, b 2) lab vectors."""
    signal = rng.random(n) < 0.53
    m_sys = np.where(
        signal, breit_wigner(rng, 425.0, 15.0, n, 380.0, 470.0), 2 * TOP_MASS + 20 + rng.gamma(2.0, 60.0, n)
    )
    system = p4_from_rapidity(
        rng.gamma(2.0, 25.0, n), rng.normal(0, 1.0, n), rng.uniform(-np.pi, np.pi, n), m_sys
    )
    m_w = [breit_wigner(rng, W_MASS, W_WIDTH, n, 60.0, 100.0) for _ in range(2)]
    # background: t t -> (W b)(W b)
    m_t = [breit_wigner(rng, TOP_MASS, TOP_WIDTH, n, 160.0, 185.0) for _ in range(2)]
    t1, t2 = decay_two_body(rng, system, m_t[0], np.minimum(m_t[1], m_sys - m_t[0] - 1))
    w1_b, b1_b = decay_two_body(rng, t1, np.minimum(m_w[0], t1.mass - 5), 4.8)
    w2_b, b2_b = decay_two_body(rng, t2, np.minimum(m_w[1], t2.mass - 5), 4.8)
    # signal: H0 -> W H+-, H+- -> W h0, h0 -> b b
    w1_s, h_charged = decay_two_body(rng, system, m_w[0], 325.0)
    w2_s, h0 = decay_two_body(rng, h_charged, m_w[1], 125.0)
    b1_s, b2_s = decay_two_body(rng, h0, 4.8, 4.8)
    w1, w2 = _where(signal, w1_s, w1_b), _where(signal, w2_s, w2_b)
    b1, b2 = _where(signal, b1_s, b1_b), _where(signal, b2_s, b2_b)
    leptonic_first = rng.random(n) < 0.5
    w_lep, w_had = _where(leptonic_first, w1, w2), _where(leptonic_first, w2, w1)
    lepton, nu = decay_two_body(rng, w_lep, 0.0, 0.0)
    q1, q2 = decay_two_body(rng, w_had, 0.0, 0.0)
    return signal, lepton, nu, q1, q2, b1, b2


def _neutrino(lepton: vector.MomentumNumpy4D, met_x: np.ndarray, met_y: np.ndarray):
    """Neutrino four-vector with pz from m(l nu) = m_W (smaller |pz|; real part if complex)."""
    pt_l2 = lepton.pt**2
    mu = W_MASS**2 / 2 + lepton.px * met_x + lepton.py * met_y
    a = mu * lepton.pz / pt_l2
    disc = np.clip(a**2 - (lepton.E**2 * (met_x**2 + met_y**2) - mu**2) / pt_l2, 0, None)
    pz = np.where(np.abs(a - np.sqrt(disc)) < np.abs(a + np.sqrt(disc)), a - np.sqrt(disc), a + np.sqrt(disc))
    return vector.array({"px": met_x, "py": met_y, "pz": pz, "mass": np.zeros_like(pz)})


def _smear(rng, lepton, nu, partons, n: int):
    """Return the smeared lepton, jets (10 % pT, 0.02 in eta/phi) and MET components."""
    jets = []
    for parton in partons:
        pt = parton.pt * (1 + 0.10 * rng.standard_normal(n))
        jets.append(
            vector.array(
                {
                    "pt": np.abs(pt),
                    "eta": parton.eta + rng.normal(0, 0.02, n),
                    "phi": parton.phi + rng.normal(0, 0.02, n),
                    "mass": np.zeros(n),
                }
            )
        )
    lep = vector.array(
        {
            "pt": lepton.pt * (1 + 0.02 * rng.standard_normal(n)),
            "eta": lepton.eta,
            "phi": lepton.phi,
            "mass": np.zeros(n),
        }
    )
    return lep, jets, nu.px + rng.normal(0, 10, n), nu.py + rng.normal(0, 10, n)


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


def _reconstruct(rng, n: int) -> dict[str, np.ndarray]:
    """Generate ``n`` events; return the UCI columns (unscaled, GeV) of those in acceptance."""
    signal, lepton, nu, *partons = _truth(rng, n)
    is_b = np.array([False, False, True, True])
    lep, jet_list, met_x, met_y = _smear(rng, lepton, nu, partons, n)
    jets = {c: np.stack([getattr(j, c) for j in jet_list], 1) for c in ("pt", "eta", "phi")}
    keep = (
        (lep.pt > 20)
        & (np.abs(lep.eta) < 2.5)
        & np.all((jets["pt"] > 20) & (np.abs(jets["eta"]) < 2.5), axis=1)
    )
    u = rng.random((n, 4))  # b-tag level: b jets 25/20/55 %, light jets 85/10/5 %
    b_cdf, light_cdf = np.array([0.25, 0.45]), np.array([0.85, 0.95])
    btag = np.where(is_b[None, :], (u[..., None] > b_cdf).sum(-1), (u[..., None] > light_cdf).sum(-1))
    out = {
        "label": signal.astype(np.float64),
        "lepton_pT": lep.pt,
        "lepton_eta": lep.eta,
        "lepton_phi": lep.phi,
        "missing_energy_magnitude": np.hypot(met_x, met_y),
        "missing_energy_phi": np.arctan2(met_y, met_x),
    }
    order = np.argsort(-jets["pt"], axis=1, kind="stable")
    jet_phi = (jets["phi"] + np.pi) % (2 * np.pi) - np.pi
    rows = np.arange(n)
    for i in range(4):
        col = order[:, i]
        out[f"jet{i + 1}_pt"] = jets["pt"][rows, col]
        out[f"jet{i + 1}_eta"] = jets["eta"][rows, col]
        out[f"jet{i + 1}_phi"] = jet_phi[rows, col]
        out[f"jet{i + 1}_btag"] = BTAG_LEVELS[btag[rows, col]]
    out |= _high_level(jets, btag, lep, met_x, met_y)
    return {k: np.asarray(v, dtype=np.float64)[keep] for k, v in out.items()}


def generate_rows(
    rng: np.random.Generator, n_rows: int, batch: int = 250_000
) -> Iterator[dict[str, np.ndarray]]:
    """Yield dicts of UCI columns (scaled like UCI, float64) until ``n_rows`` rows are made."""
    done = 0
    while done < n_rows:
        cols = _reconstruct(rng, int(batch * 1.6))
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
