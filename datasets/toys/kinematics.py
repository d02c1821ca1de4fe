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
