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


def zz_pair_masses(
    rng: np.random.Generator, parent_mass: np.ndarray, m_min: float = 4.0, n_candidates: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Draw (m_Z, m_Z*) [GeV] for X -> Z(*) Z(*) from phase space x both Z propagators.

    Vectorised sampling-importance-resampling: per event, ``n_candidates`` mass pairs
    are proposed from a Breit-Wigner/uniform mixture and one is picked with
    probability proportional to target/proposal density.
    """
    n = len(parent_mass)
    hi = np.maximum(parent_mass[:, None] - m_min, m_min + 1e-3)
    size = (n, n_candidates)

    def propose():
        bw = breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, size, m_min, 1e4)
        uni = rng.uniform(m_min, hi, size)
        m = np.where(rng.random(size) < 0.5, bw, uni)
        m = np.where(m < hi, m, uni)  # BW draws beyond the kinematic limit fall back
        lo_a, hi_a = np.arctan(2 * (m_min - Z_MASS_GEV) / Z_WIDTH_GEV), np.pi / 2
        bw_pdf = (2 / Z_WIDTH_GEV) / (1 + np.square(2 * (m - Z_MASS_GEV) / Z_WIDTH_GEV)) / (hi_a - lo_a)
        q = 0.5 * bw_pdf + 0.5 / (hi - m_min)
        return m, q

    (m1, q1), (m2, q2) = propose(), propose()
    target = two_body_momentum(parent_mass[:, None], m1, m2) * _z_propagator(m1) * _z_propagator(m2)
    w = target / (q1 * q2)
    w = np.where(m1 + m2 < parent_mass[:, None], w, 0.0)
    cdf = np.cumsum(w, axis=1)
    total = cdf[:, -1:]
    pick = (cdf < rng.random((n, 1)) * total).sum(axis=1)
    pick = np.minimum(pick, n_candidates - 1)
    rows = np.arange(n)
    return m1[rows, pick], m2[rows, pick]


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
    rng: np.random.Generator, parent: vector.MomentumNumpy4D, mass_a: np.ndarray, mass_b: np.ndarray
) -> list[vector.MomentumNumpy4D]:
    """X -> Z(*)_a Z(*)_b -> (l+ l-)_a (l+ l-)_b; return [a+, a-, b+, b-] lab vectors."""
    m_za, m_zb = zz_pair_masses(rng, parent.mass)
    za, zb = decay_two_body(rng, parent, m_za, m_zb)
    return [*decay_two_body(rng, za, mass_a, mass_a), *decay_two_body(rng, zb, mass_b, mass_b)]


def production_jets(
    rng: np.random.Generator, production: str, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return jets (pt, eta, phi) [GeV] as (n, 6) arrays, pt NaN where absent.

    ``production``: ``vbf`` (two forward tag jets), ``vh`` (two central jets from the
    vector boson), ``tth`` (many central jets),
    ``ggh`` or ``zz`` (soft initial-state radiation only).
    """
    shape = (n, 6)
    pt = 20 + rng.exponential(20, shape)
    eta = rng.normal(0, 2.2, shape)
    phi = rng.uniform(-np.pi, np.pi, shape)
    if production == "vbf":
        n_jets = 2 + rng.poisson(0.3, n)
        pt[:, :2] = 15 + rng.gamma(2.0, 22.0, (n, 2))
        centre, gap = rng.normal(0, 0.8, n), 2.0 + rng.gamma(2.5, 1.0, n)
        eta[:, 0], eta[:, 1] = centre + gap / 2, centre - gap / 2
        phi[:, 1] = phi[:, 0] + np.pi + rng.normal(0, 1.0, n)
    elif production == "vh":  # W/Z -> q q' plus radiation
        n_jets = 2 + rng.poisson(0.3, n)
        pt = 20 + rng.gamma(2.0, 22.0, shape)
        eta = rng.normal(0, 1.4, shape)
    elif production == "tth":
        n_jets = 4 + rng.poisson(1.0, n)
        pt = 20 + rng.gamma(2.0, 30.0, shape)
        eta = rng.normal(0, 1.2, shape)
    else:  # ggh, zz: initial-state radiation only
        n_jets = rng.poisson(0.75 if production == "ggh" else 0.5, n)
    present = np.arange(6)[None, :] < np.minimum(n_jets, 6)[:, None]
    return np.where(present, pt, np.nan), eta, phi


def four_lepton_system_mass(rng: np.random.Generator, production: str, n: int) -> np.ndarray:
    """Return the mass [GeV] of the 4l system: the Higgs, or for ``zz`` the continuum + Z peak."""
    if production != "zz":
        return breit_wigner(rng, H_MASS_GEV, H_WIDTH_GEV, n, 120.0, 130.0)
    u = rng.random(n)
    continuum = 180 + rng.gamma(1.3, 60.0, n)
    offshell = rng.uniform(100, 180, n)
    z_peak = breit_wigner(rng, Z_MASS_GEV, Z_WIDTH_GEV, n, 80.0, 100.0)
    return np.where(u < 0.80, continuum, np.where(u < 0.88, offshell, z_peak))
