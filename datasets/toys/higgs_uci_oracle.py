"""Information ceiling of the UCI HIGGS toy: classifiers given the generator's truth (issue 15).

Diagnostic, not part of the toy: it regenerates events with ``higgs_uci``'s own physics but
keeps the truth (which parton each stored jet comes from, which W decayed to l nu) and
measures the held-out AUC of a HistGradientBoosting BDT on

* ``reco``: the 28 UCI features (what the analysis sees);
* ``reco+assignment``: the 28 features plus the 7 masses recomputed from the *same*
  reconstructed objects with the true jet-parton assignment (an upper bound on what any
  classifier can gain by solving the combinatorics; where a parton has no stored jet its
  part is missing);
* ``reco+permutations``: the 28 features plus, from the same objects and *no* truth, the
  best chi^2 over the 12 jet assignments under the t t hypothesis (m_jj = m_W, both
  m_jjj and m_jlv = m_t) and under the signal one (m_jj = m_W, m_bb = m_h, m(W b b) = m_H+-,
  m_wwbb = m_H0), and the masses of each hypothesis' best assignment: a kinematic fit a
  physicist would add, so a lower bound on what a classifier of the observables alone can
  gain from solving the combinatorics;
* ``partons``: the 7 masses from the true partons and neutrino (the physics ceiling before
  the detector, the selection of four jets and the assignment).

``python -m hepsieve.datasets.toys.higgs_uci_oracle --batches 4 --seed 7``; ``--set ISR_JETS=0.3``
reruns it with one of the toy's knobs changed (what the choice of that knob costs or buys).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import vector

from hepsieve.datasets.toys import higgs_uci as toy
from hepsieve.datasets.toys.kinematics import p4

MASSES = ("m_jj", "m_jjj", "m_lv", "m_jlv", "m_bb", "m_wbb", "m_wwbb")
W_MASS, TOP, HIGGS, HPLUS, H0 = toy.W_MASS, toy.TOP_MASS, toy.HIGGS_MASS, toy.HPLUS_MASS, toy.H0_MASS


def _leading(rng, n: int, partons: list, isr) -> tuple[dict, dict, dict, np.ndarray, vector.MomentumNumpy4D]:
    """``higgs_uci._leading_jets`` that also returns each stored jet's column (its origin).

    Columns 2k / 2k + 1 are parton k's jet / its FSR gluon (k = 0, 1: the W quarks, 2, 3: the
    b quarks); columns >= 8 are ISR jets.
    """
    true, b_nu = toy._shower(rng, partons)
    isr_jets = {"pt": isr[0], "eta": isr[1], "phi": isr[2], "flavour": np.zeros(isr[0].shape, int)}
    true = {k: np.concatenate([true[k], isr_jets[k]], axis=1) for k in true}
    reco = toy._measure_jets(rng, true)
    accepted = (np.nan_to_num(reco["pt"]) > 20) & (np.abs(reco["eta"]) < 2.5)
    order = np.argsort(np.where(accepted, -reco["pt"], np.inf), axis=1, kind="stable")[:, :4]
    rows = np.arange(n)[:, None]
    leading = {k: v[rows, order] for k, v in reco.items()}
    leading["accepted"] = accepted[rows, order]
    return true, reco, leading, order, b_nu


def _sum_of(jets: dict, origin: np.ndarray, parton: int) -> vector.MomentumNumpy4D:
    """Four-momentum sum of the stored jets that come from ``parton`` (its jet and its gluon)."""
    mine = (origin // 2 == parton) & (origin < 8)
    px = np.sum(np.where(mine, jets["pt"] * np.cos(jets["phi"]), 0.0), axis=1)
    py = np.sum(np.where(mine, jets["pt"] * np.sin(jets["phi"]), 0.0), axis=1)
    pz = np.sum(np.where(mine, jets["pt"] * np.sinh(jets["eta"]), 0.0), axis=1)
    e = np.sum(np.where(mine, jets["pt"] * np.cosh(jets["eta"]), 0.0), axis=1)
    return vector.array({"px": px, "py": py, "pz": pz, "E": e})


CHI2_WIDTHS = {"W": 10.0, "t": 18.0, "h": 16.0, "H+": 25.0, "H0": 30.0}  # GeV, ~ the resolutions


def _jet(jets: dict, i: int) -> vector.MomentumNumpy4D:
    return vector.array(
        {c: jets[c][:, i] for c in ("pt", "eta", "phi")} | {"mass": np.zeros(len(jets["pt"]))}
    )


def _best_chi2(jets: dict, w_lep) -> dict[str, np.ndarray]:
    """Return the best t t and signal chi^2 over the 12 jet assignments, and their masses.

    An assignment is (the b b pair, which b is on the leptonic side); the other two jets are
    the W. Events without four jets (dropped later) keep chi^2 1e300.
    """
    j = [_jet(jets, i) for i in range(4)]
    w = CHI2_WIDTHS
    n = len(jets["pt"])
    best: dict[str, np.ndarray] = {"chi2 tt": np.full(n, 1e300), "chi2 signal": np.full(n, 1e300)}
    for a, b in ((a, b) for a in range(4) for b in range(4) if a != b):
        q1, q2 = (j[k] for k in range(4) if k not in (a, b))
        w_had, bb = q1 + q2, j[a] + j[b]
        m = {"tt m_jjj": (w_had + j[b]).mass, "tt m_jlv": (w_lep + j[a]).mass, "m_bb": bb.mass,
             "m_wbb": np.where(np.abs((w_had + bb).mass - HPLUS) < np.abs((w_lep + bb).mass - HPLUS),
                               (w_had + bb).mass, (w_lep + bb).mass),
             "m_wwbb": (w_had + w_lep + bb).mass, "m_jj": w_had.mass}  # fmt: skip
        dw = np.square((m["m_jj"] - W_MASS) / w["W"])
        tt = dw + np.square((m["tt m_jjj"] - TOP) / w["t"]) + np.square((m["tt m_jlv"] - TOP) / w["t"])
        sig = dw + np.square((m["m_bb"] - HIGGS) / w["h"]) + np.square((m["m_wbb"] - HPLUS) / w["H+"])
        sig = sig + np.square((m["m_wwbb"] - H0) / w["H0"])
        for hyp, chi2, keys in (
            ("tt", tt, ("tt m_jjj", "tt m_jlv")),
            ("signal", sig, ("m_bb", "m_wbb", "m_wwbb")),
        ):
            better = chi2 < best[f"chi2 {hyp}"]
            best[f"chi2 {hyp}"] = np.where(better, chi2, best[f"chi2 {hyp}"])
            for k in keys:
                best[f"{hyp} best {k}"] = np.where(better, m[k], best.get(f"{hyp} best {k}", np.zeros(n)))
    return best | {"chi2 difference": best["chi2 signal"] - best["chi2 tt"]}


def _masses(q1, q2, b_lep, b_had, b_a, b_b, w_lep) -> dict[str, np.ndarray]:
    """Return the 7 UCI masses of the given objects (m_bb, m_wbb, m_wwbb use both b's)."""
    w_had = q1 + q2
    return {"m_jj": w_had.mass, "m_jjj": (w_had + b_had).mass, "m_lv": w_lep.mass,
            "m_jlv": (w_lep + b_lep).mass, "m_bb": (b_a + b_b).mass, "m_wbb": (w_had + b_a + b_b).mass,
            "m_wwbb": (w_lep + w_had + b_a + b_b).mass}  # fmt: skip


def _truth(rng, n: int) -> dict:
    """``higgs_uci._truth`` (the same draws in the same order) that also returns which W is leptonic."""
    signal = rng.random(n) < toy.PRODUCED_SIGNAL_FRACTION
    system, isr, m_t = toy._system(rng, signal, n)
    m_w = [toy.breit_wigner(rng, toy.W_MASS, toy.W_WIDTH, n, 60.0, 100.0) for _ in range(2)]
    t1, t2 = toy.decay_two_body(rng, system, np.minimum(m_t[0], system.mass - m_t[1]), m_t[1])
    w1_b, b1_b = toy.decay_two_body(rng, t1, np.minimum(m_w[0], t1.mass - 5), 4.8)
    w2_b, b2_b = toy.decay_two_body(rng, t2, np.minimum(m_w[1], t2.mass - 5), 4.8)
    m_hplus = toy.breit_wigner(rng, toy.HPLUS_MASS, toy.HPLUS_WIDTH, n, 300.0, 340.0)
    hplus_mass = np.minimum(m_hplus, system.mass - m_w[0] - 1)
    w1_s, h_charged = toy.decay_two_body(rng, system, m_w[0], hplus_mass)
    w2_s, h0 = toy.decay_two_body(rng, h_charged, m_w[1], toy.HIGGS_MASS)
    b1_s, b2_s = toy.decay_two_body(rng, h0, 4.8, 4.8)
    w1, w2 = toy._where(signal, w1_s, w1_b), toy._where(signal, w2_s, w2_b)
    b1, b2 = toy._where(signal, b1_s, b1_b), toy._where(signal, b2_s, b2_b)
    leptonic_first = rng.random(n) < 0.5
    w_lep, w_had = toy._where(leptonic_first, w1, w2), toy._where(leptonic_first, w2, w1)
    lepton, nu = toy.decay_two_body(rng, w_lep, 0.0, 0.0)
    q1, q2 = toy.decay_two_body(rng, w_had, 0.0, 0.0)
    return {"signal": signal, "lepton": lepton, "nu": nu, "partons": [q1, q2, b1, b2], "isr": isr,
            "leptonic_first": leptonic_first}  # fmt: skip


def events(rng, n: int) -> dict[str, np.ndarray]:
    """Generate ``n`` events; return the selected ones' reco, reco+assignment and parton features."""
    truth = _truth(rng, n)
    partons, lep_first = truth["partons"], truth["leptonic_first"]
    true, reco, jets, order, b_nu = _leading(rng, n, partons, truth["isr"])
    lepton, nu = truth["lepton"], truth["nu"]
    lep = p4(lepton.pt * (1 + 0.015 * rng.standard_normal(n)), lepton.eta, lepton.phi, 0.0)
    met_x, met_y = toy._missing_et(rng, nu, b_nu, true, reco, n)
    keep = (lep.pt > 20) & (np.abs(lep.eta) < 2.5) & jets["accepted"].all(axis=1)
    btag = toy._btags(rng, np.nan_to_num(jets["pt"]), jets["flavour"])
    out = {"label": truth["signal"].astype(float), "lepton_pT": lep.pt, "lepton_eta": lep.eta,
           "lepton_phi": lep.phi, "met": np.hypot(met_x, met_y),
           "met_phi": np.arctan2(met_y, met_x)}  # fmt: skip
    for i in range(4):
        for c in ("pt", "eta", "phi"):
            out[f"jet{i + 1}_{c}"] = jets[c][:, i]
        out[f"jet{i + 1}_btag"] = btag[:, i]
    out |= toy._high_level(jets, btag, lep, met_x, met_y)
    q1, q2, b1, b2 = (_sum_of(jets, order, k) for k in range(4))
    b_lep, b_had = toy._where(lep_first, b1, b2), toy._where(lep_first, b2, b1)
    w_lep = lep + toy._neutrino(lep, met_x, met_y)
    assigned = _masses(q1, q2, b_lep, b_had, b1, b2, w_lep)
    out |= {f"true-assignment {k}": v for k, v in assigned.items()}
    out |= {f"permutations {k}": v for k, v in _best_chi2(jets, w_lep).items()}
    out["partons stored"] = sum(((order // 2 == k) & (order < 8)).any(axis=1) for k in range(4))
    p_blep = toy._where(lep_first, partons[2], partons[3])
    p_bhad = toy._where(lep_first, partons[3], partons[2])
    parton = _masses(partons[0], partons[1], p_blep, p_bhad, partons[2], partons[3], lepton + nu)
    out |= {f"parton {k}": v for k, v in parton.items()}
    return {k: np.asarray(v, dtype=np.float64)[keep] for k, v in out.items()}


FEATURE_SETS = {
    "reco": lambda k: not k.startswith(("true-assignment", "parton", "permutations")),
    "reco low-level": lambda k: k.startswith(("lepton", "met", "jet")),
    "reco high-level": lambda k: k in MASSES,
    "reco+permutations": lambda k: not k.startswith(("true-assignment", "parton")),
    "reco+assignment": lambda k: not k.startswith(("parton", "permutations")),
    "partons": lambda k: k.startswith("parton "),
}


def held_out_aucs(cols: dict[str, np.ndarray], max_iter: int = 300) -> dict[str, float]:
    """HistGradientBoosting AUC per ``FEATURE_SETS`` entry: fit on even rows, score odd rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    y = cols["label"]
    fit = np.arange(len(y)) % 2 == 0
    out = {}
    for name, wanted in FEATURE_SETS.items():
        x = np.stack([v for k, v in cols.items() if k != "label" and wanted(k)], axis=1)
        bdt = HistGradientBoostingClassifier(max_iter=max_iter, random_state=1).fit(x[fit], y[fit])
        out[name] = float(roc_auc_score(y[~fit], bdt.predict_proba(x[~fit])[:, 1]))
    return out


KNOBS = ("ISR_JETS", "FSR_EMISSION", "CHARM_FRACTION")


def _set_knob(parser: argparse.ArgumentParser, item: str) -> None:
    """Set ``higgs_uci.KNOB`` to the float of ``KNOB=VALUE`` (the toy's functions read it)."""
    name, _, value = item.partition("=")
    if name not in KNOBS:
        parser.error(f"--set {item}: not a knob of the toy (choose from {', '.join(KNOBS)})")
    try:
        setattr(toy, name, float(value))
    except ValueError:
        parser.error(f"--set {item}: {value!r} is not a number")
    sys.stdout.write(f"{name} = {getattr(toy, name)}\n")


def main(argv: list[str] | None = None) -> int:
    """Print the held-out BDT AUC of each feature set on a fresh toy with truth."""
    parser = argparse.ArgumentParser(prog="python -m hepsieve.datasets.toys.higgs_uci_oracle")
    parser.add_argument("--batches", type=int, default=4, help="of 250 000 events (~146 000 selected)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KNOB=VALUE",
        help=f"change one of the toy's knobs for this run ({', '.join(KNOBS)})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for item in args.set:
        _set_knob(parser, item)
    rng = np.random.default_rng(args.seed)
    batches = [events(rng, 250_000) for _ in range(args.batches)]
    cols = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    sys.stdout.write(f"rows {len(cols['label'])}, signal fraction {cols['label'].mean():.3f}\n")
    for name, auc in held_out_aucs(cols).items():
        sys.stdout.write(f"BDT AUC {name}: {auc:.4f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
