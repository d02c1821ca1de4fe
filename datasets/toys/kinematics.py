"""Shared toy physics: resonance line shapes, two-body decays, production and smearing.

All four-vector arithmetic goes through `vector`; every derived quantity in a toy
file is computed from the generated objects, never drawn independently.
"""

from __future__ import annotations

import numpy as np
import vector

Z_MASS_GEV = 91.1876
Z_WIDTH_GEV = 2.4952
H_MASS_GEV = 125.0
H_WIDTH_GEV = 0.0041
MUON_MASS_GEV = 0.1056584
ELECTRON_MASS_GEV = 0.000511


def p4(pt, eta, phi, mass) -> vector.MomentumNumpy4D:
    """Return a numpy four-vector array from (pt [GeV], eta, phi, mass [GeV])."""
    pt = np.asarray(pt, dtype=np.float64)
    return vector.array({"pt": pt, "eta": eta, "phi": phi, "mass": np.broadcast_to(mass, pt.shape)})


def p4_from_rapidity(pt, rapidity, phi, mass) -> vector.MomentumNumpy4D:
    """Return four-vectors of particles produced with transverse momentum and rapidity."""
    mt = np.sqrt(np.square(mass) + np.square(pt))
    return vector.array(
        {
            "px": pt * np.cos(phi),
            "py": pt * np.sin(phi),
            "pz": mt * np.sinh(rapidity),
            "mass": mass * np.ones_like(pt),
        }
    )


def breit_wigner(
    rng: np.random.Generator, mass: float, width: float, size: int | tuple[int, ...], low: float, high: float
) -> np.ndarray:
    """Draw masses [GeV] from a Breit-Wigner (Cauchy) truncated to [low, high]."""
    lo, hi = np.arctan(2 * (low - mass) / width), np.arctan(2 * (high - mass) / width)
    return mass + 0.5 * width * np.tan(rng.uniform(lo, hi, size))


def _z_propagator(m: np.ndarray) -> np.ndarray:
    """Relativistic Breit-Wigner density in m for a Z boson (times the 2m Jacobian)."""
    m2 = np.square(m)
    return 2 * m / (np.square(m2 - Z_MASS_GEV**2) + (Z_MASS_GEV * Z_WIDTH_GEV) ** 2)


def two_body_momentum(parent_mass, m1, m2) -> np.ndarray:
    """Return the daughter momentum [GeV] in the parent rest frame (0 where closed)."""
    lam = (np.square(parent_mass) - np.square(m1 + m2)) * (np.square(parent_mass) - np.square(m1 - m2))
    return np.sqrt(np.clip(lam, 0, None)) / (2 * parent_mass)


def _truncated_mixture(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, photon: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw masses [GeV] in [lo, hi] from a Breit-Wigner/uniform(/1/m^2) mixture; return (m, pdf).

    Every draw lies inside its own interval, so no proposal is ever kinematically forbidden.
    """
    f_bw = np.where(photon > 0, 0.4, 0.5)
    f_uni = np.where(photon > 0, 0.3, 0.5)
    a_lo, a_hi = (
        np.arctan(2 * (lo - Z_MASS_GEV) / Z_WIDTH_GEV),
        np.arctan(2 * (hi - Z_MASS_GEV) / Z_WIDTH_GEV),
    )
    u, which = rng.random(lo.shape), rng.random(lo.shape)
    bw = Z_MASS_GEV + 0.5 * Z_WIDTH_GEV * np.tan(a_lo + u * (a_hi - a_lo))
    uni = lo + u * (hi - lo)
    power = 1 / (1 / hi + u * (1 / lo - 1 / hi))  # density ~ 1/m^2 (the photon propagator)
    m = np.where(which < f_bw, bw, np.where(which < f_bw + f_uni, uni, power))
    m = np.clip(m, lo, hi)
    pdf = f_bw * (2 / Z_WIDTH_GEV) / (1 + np.square(2 * (m - Z_MASS_GEV) / Z_WIDTH_GEV)) / (a_hi - a_lo)
    pdf = pdf + f_uni / (hi - lo) + (1 - f_bw - f_uni) * np.power(m, -2.0) / (1 / lo - 1 / hi)
    return m, pdf


def pair_propagator(m: np.ndarray, photon: float | np.ndarray = 0.0) -> np.ndarray:
    """Return the density in m [GeV] of an l+l- pair: Z Breit-Wigner + a virtual-photon term.

    ``photon`` is the photon/Z ratio of the two terms at m = m_Z (about 0.01 for l+l-);
    the photon term falls as 1/m^3 (propagator 1/m^4 times the 2m Jacobian).
    """
    kappa = photon * (Z_MASS_GEV / Z_WIDTH_GEV) ** 2
    return _z_propagator(m) + kappa * 2 / np.power(m, 3)


def zz_pair_masses(
    rng: np.random.Generator,
    parent_mass: np.ndarray,
    m_min: float = 4.0,
    n_candidates: int = 32,
    photon: tuple[float | np.ndarray, float | np.ndarray] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (m_a, m_b) [GeV] for X -> V_a V_b -> (l+l-)(l+l-) from phase space x both propagators.

    Vectorised sampling-importance-resampling: per event, ``n_candidates`` mass pairs are
    proposed *inside the allowed region* (m_a in [m_min, M - m_min], then m_b in
    [m_min, M - m_a]) and one is picked with probability proportional to target/proposal, so
    m_a + m_b < M always. ``photon`` = (a, b): the virtual-photon admixture of each
    propagator (:func:`pair_propagator`; 0 for H -> ZZ*), scalars or per event. Where the
    target is symmetric, a and b are swapped at random.
    """
    parent_mass = np.asarray(parent_mass, dtype=np.float64)
    if np.any(parent_mass <= 2 * m_min):
        raise ValueError(f"zz_pair_masses: parent masses must exceed 2 x m_min = {2 * m_min:g} GeV")
    n = len(parent_mass)
    parent = np.broadcast_to(parent_mass[:, None], (n, n_candidates))
    low = np.full((n, n_candidates), m_min)
    ph_a, ph_b = (np.broadcast_to(np.asarray(p, dtype=np.float64), (n,))[:, None] for p in photon)
    m1, q1 = _truncated_mixture(rng, low, parent - m_min, ph_a)
    m2, q2 = _truncated_mixture(rng, low, parent - m1, ph_b)
    target = two_body_momentum(parent, m1, m2) * pair_propagator(m1, ph_a) * pair_propagator(m2, ph_b)
    cdf = np.cumsum(target / (q1 * q2), axis=1)
    pick = (cdf < rng.random((n, 1)) * cdf[:, -1:]).sum(axis=1)
    pick = np.minimum(pick, n_candidates - 1)
    rows = np.arange(n)
    m_a, m_b = m1[rows, pick], m2[rows, pick]
    swap = (rng.random(n) < 0.5) & (ph_a[:, 0] == ph_b[:, 0])
    if np.any(swap):
        m_a, m_b = np.where(swap, m_b, m_a), np.where(swap, m_a, m_b)
    return m_a, m_b


def decay_two_body(
    rng: np.random.Generator, parent: vector.MomentumNumpy4D, m1: np.ndarray | float, m2: np.ndarray | float
) -> tuple[vector.MomentumNumpy4D, vector.MomentumNumpy4D]:
    """Decay ``parent`` isotropically in its rest frame to masses (m1, m2); return lab vectors."""
    n = len(parent)
    m1 = np.broadcast_to(np.asarray(m1, dtype=np.float64), (n,))
    m2 = np.broadcast_to(np.asarray(m2, dtype=np.float64), (n,))
    p = two_body_momentum(parent.mass, m1, m2)
    cos_t = rng.uniform(-1, 1, n)
    sin_t = np.sqrt(1 - np.square(cos_t))
    phi = rng.uniform(-np.pi, np.pi, n)
    px, py, pz = p * sin_t * np.cos(phi), p * sin_t * np.sin(phi), p * cos_t
    d1 = vector.array({"px": px, "py": py, "pz": pz, "mass": m1.copy()})
    d2 = vector.array({"px": -px, "py": -py, "pz": -pz, "mass": m2.copy()})
    return d1.boost_p4(parent), d2.boost_p4(parent)


def smear_pt(rng: np.random.Generator, pt: np.ndarray, resolution: float | np.ndarray) -> np.ndarray:
    """Return pT [GeV] with Gaussian relative resolution (kept positive)."""
    return np.abs(pt * (1 + resolution * rng.standard_normal(len(pt))))


def recoiling_parent(
    rng: np.random.Generator,
    jet_pt: np.ndarray,
    jet_phi: np.ndarray,
    mass: np.ndarray,
    rapidity_sigma: float = 1.6,
) -> vector.MomentumNumpy4D:
    """Return a parent balancing the jets (+ soft radiation) in the transverse plane."""
    n = len(mass)
    px = -np.nansum(jet_pt * np.cos(jet_phi), axis=1) + rng.normal(0, 8, n)
    py = -np.nansum(jet_pt * np.sin(jet_phi), axis=1) + rng.normal(0, 8, n)
    return p4_from_rapidity(np.hypot(px, py), rng.normal(0, rapidity_sigma, n), np.arctan2(py, px), mass)


def decay_to_four_leptons(
    rng: np.random.Generator,
    parent: vector.MomentumNumpy4D,
    mass_a: np.ndarray,
    mass_b: np.ndarray,
    photon: tuple[float | np.ndarray, float | np.ndarray] = (0.0, 0.0),
) -> list[vector.MomentumNumpy4D]:
    """X -> V_a V_b -> (l+ l-)_a (l+ l-)_b; return [a+, a-, b+, b-] lab vectors.

    Every step is an exact two-body decay, so the four leptons sum to ``parent``.
    """
    m_za, m_zb = zz_pair_masses(rng, parent.mass, photon=photon)
    za, zb = decay_two_body(rng, parent, m_za, m_zb)
    return [*decay_two_body(rng, za, mass_a, mass_a), *decay_two_body(rng, zb, mass_b, mass_b)]


def final_state_radiation(
    rng: np.random.Generator,
    lepton: vector.MomentumNumpy4D,
    probability: float | np.ndarray,
    z_min: float = 0.005,
) -> tuple[vector.MomentumNumpy4D, vector.MomentumNumpy4D]:
    """Return (lepton after collinear FSR, photon); the two share the lepton's 3-momentum.

    With ``probability`` per lepton a collinear photon takes a fraction z of the momentum,
    dP/dz ~ (1 + (1 - z)^2) / z on [z_min, 1) (the q -> q gamma splitting function), drawn by
    accept-reject from 1/z. The lepton stays on shell, so energy is conserved up to
    m_l^2 z / (2 p (1 - z)) (< 1e-3 GeV for muons above 5 GeV). The photon is not
    reconstructed: it makes the low-mass tail of m_ll and m_4l.
    """
    n = len(lepton)
    z = np.exp(rng.uniform(np.log(z_min), 0, (8, n)))
    accepted = rng.random((8, n)) < (1 + np.square(1 - z)) / 2
    z = z[np.argmax(accepted, axis=0), np.arange(n)]
    z = np.where(rng.random(n) < probability, np.minimum(z, 0.95), 0.0)
    keep = 1 - z
    after = vector.array(
        {"px": lepton.px * keep, "py": lepton.py * keep, "pz": lepton.pz * keep, "mass": lepton.mass}
    )
    photon = vector.array(
        {"px": lepton.px * z, "py": lepton.py * z, "pz": lepton.pz * z, "mass": np.zeros(n)}
    )
    return after, photon


# mean number of radiated jets with pT > 20 GeV (geometric multiplicity) per production mode
RADIATION_JETS = {"vbf": 0.4, "ggh": 1.05, "zz": 0.5, "vh": 0.45, "tth": 1.2}
MAX_JETS = 6


def radiation_jets(rng: np.random.Generator, n: int, mean: float) -> tuple[np.ndarray, ...]:
    """Return (pt, eta, phi, count) of initial/final-state radiation jets, (n, MAX_JETS) each.

    Geometric multiplicity (the staircase scaling of jet counts), pT = 20 GeV + exponential
    (mean 22 GeV), rapidity broad (sigma 2.3).
    """
    shape = (n, MAX_JETS)
    count = rng.geometric(1 / (1 + mean), n) - 1
    return (
        20 + rng.exponential(22, shape),
        rng.normal(0, 2.3, shape),
        rng.uniform(-np.pi, np.pi, shape),
        count,
    )


def _vbf_tag_jets(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Return (pt, eta, phi) of the two VBF tag quarks, (n, 2) each.

    pT^2 follows the W/Z t-channel propagator, dP/dpT^2 ~ 1/(pT^2 + M^2)^2 with M = 54 GeV
    (median pT 54 GeV, capped at 600); the rapidity gap is Gamma-distributed (mean 4.5,
    with a low-gap tail) around a centre near 0; the jets are roughly back to back in phi.
    """
    u = rng.uniform(0, 0.99, (n, 2))
    pt = np.minimum(54.0 * np.sqrt(u / (1 - u)), 600.0)
    centre, gap = rng.normal(0, 0.9, n), rng.gamma(4.0, 1.3, n)
    eta = np.stack([centre + gap / 2, centre - gap / 2], axis=1)
    phi0 = rng.uniform(-np.pi, np.pi, n)
    phi = np.stack([phi0, phi0 + np.pi + rng.normal(0, 1.3, n)], axis=1)
    return pt, eta, phi


def production_jets(
    rng: np.random.Generator, production: str, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return parton-level jets (pt, eta, phi) [GeV] as (n, 6) arrays, pt NaN where absent.

    ``production``: ``vbf`` (two tag jets + radiation), ``vh`` (the two jets of V -> q q'),
    ``tth`` (four b/light jets of t t -> b q q' b q q' + radiation), ``ggh`` or ``zz``
    (initial-state radiation only; gluon-initiated ggH radiates more than q q -> ZZ).
    """
    pt, eta, phi, count = radiation_jets(rng, n, RADIATION_JETS[production])
    hard = {"vbf": 2, "vh": 2, "tth": 4}.get(production, 0)
    if production == "vbf":
        pt[:, :2], eta[:, :2], phi[:, :2] = _vbf_tag_jets(rng, n)
    elif production == "vh":
        pt[:, :2], eta[:, :2] = 15 + rng.gamma(2.0, 20.0, (n, 2)), rng.normal(0, 1.3, (n, 2))
    elif production == "tth":
        pt[:, :4], eta[:, :4] = 15 + rng.gamma(2.0, 30.0, (n, 4)), rng.normal(0, 1.2, (n, 4))
    present = np.arange(MAX_JETS)[None, :] < np.minimum(hard + count, MAX_JETS)[:, None]
    return np.where(present, pt, np.nan), eta, phi


# q q -> 4l (m_ll > 4 GeV), the cross-section shares of its regions: the single-resonant
# Z -> 4l peak, Z gamma* between the peaks, Z Z on shell (m_4l > 2 m_Z) and gamma* gamma* below
# the Z; (share, photon admixture of pair a, of pair b)
QQ_TO_4L = {
    "z_to_4l": (0.36, 0.0, 0.01),
    "z_gamma": (0.15, 0.0, 0.01),
    "zz": (0.17, 0.0, 0.0),
    "gamma_gamma": (0.32, 0.01, 0.01),
}


def _qq_to_4l_mass(rng: np.random.Generator, region: str, n: int) -> np.ndarray:
    """Return m_4l [GeV] in one region of q q -> 4l."""
    if region == "z_to_4l":
        return breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, n, 80.0, 100.0)
    if region == "z_gamma":
        return 100 + 80 * rng.power(0.7, n)
    if region == "zz":
        return 180 + rng.gamma(1.6, 55.0, n)
    return 1 / rng.uniform(1 / 80.0, 1 / 12.0, n)  # dP/dm ~ 1/m^2 from 12 to 80 GeV


def four_lepton_system(
    rng: np.random.Generator, production: str, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (m_4l [GeV], photon admixture of pair a, of pair b) per event.

    A Higgs (125 GeV, H -> Z Z*, no photon) for every production but ``zz``, which draws
    the regions of :data:`QQ_TO_4L` by their cross-section shares.
    """
    if production != "zz":
        return breit_wigner(rng, H_MASS_GEV, H_WIDTH_GEV, n, 120.0, 130.0), np.zeros(n), np.zeros(n)
    names = list(QQ_TO_4L)
    share = np.array([QQ_TO_4L[r][0] for r in names])
    region = rng.choice(len(names), size=n, p=share / share.sum())
    mass, photon_a, photon_b = np.empty(n), np.empty(n), np.empty(n)
    for i, name in enumerate(names):
        rows = region == i
        mass[rows] = _qq_to_4l_mass(rng, name, int(rows.sum()))
        photon_a[rows], photon_b[rows] = QQ_TO_4L[name][1:]
    return mass, photon_a, photon_b
