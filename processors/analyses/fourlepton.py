"""Four-lepton reconstruction shared by the analyses and the toys: Z pairing, ZZ candidates, m4l."""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import vector

Z_MASS_GEV = 91.1876
PAIRINGS = (((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2)))


def z_pairing(
    leptons: list[vector.MomentumNumpy4D], charge: np.ndarray, flavour: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (m_Z1, m_Z2, smallest same-flavour opposite-sign m_ll) [GeV] of 4-lepton events.

    Z1 is the same-flavour opposite-sign (SFOS) pair closest to m_Z among the pairings in
    which both pairs are SFOS; Z2 is the other pair. Events without such a pairing get NaN.
    ``leptons``: four vector arrays; ``charge``, ``flavour``: (n, 4) arrays.
    """
    n = len(charge)
    pair_mass, sfos = {}, {}
    for i in range(4):
        for j in range(i + 1, 4):
            pair_mass[i, j] = (leptons[i] + leptons[j]).mass
            sfos[i, j] = (flavour[:, i] == flavour[:, j]) & (charge[:, i] == -charge[:, j])
    z1_cand, z2_cand, dist = [], [], []
    for a, b in PAIRINGS:
        valid = sfos[a] & sfos[b]
        for first, second in ((a, b), (b, a)):
            z1_cand.append(pair_mass[first])
            z2_cand.append(pair_mass[second])
            dist.append(np.where(valid, np.abs(pair_mass[first] - Z_MASS_GEV), np.inf))
    best = np.argmin(np.stack(dist), axis=0)
    rows = np.arange(n)
    found = np.isfinite(np.stack(dist)[best, rows])
    z1 = np.where(found, np.stack(z1_cand)[best, rows], np.nan)
    z2 = np.where(found, np.stack(z2_cand)[best, rows], np.nan)
    min_sfos = np.min(np.stack([np.where(sfos[k], m, np.inf) for k, m in pair_mass.items()]), axis=0)
    return z1, z2, min_sfos


def four_lepton_mass(leptons: list[vector.MomentumNumpy4D]) -> np.ndarray:
    """Return the invariant mass [GeV] of the sum of four lepton vectors."""
    return (leptons[0] + leptons[1] + leptons[2] + leptons[3]).mass


LEPTON_PAIRS = tuple((i, j) for i in range(4) for j in range(i + 1, 4))
_LEPTON_PAIRS = np.array(LEPTON_PAIRS)
#: PAIRINGS as indices into LEPTON_PAIRS: (3 pairings, 2 pairs)
_PAIRING_PAIRS = np.array([[LEPTON_PAIRS.index(a), LEPTON_PAIRS.index(b)] for a, b in PAIRINGS])


@dataclass(frozen=True)
class ZZCandidates:
    """The three pairings of each lepton quadruplet as ZZ candidates (GeV).

    Per pairing (``(n_quads, 3)`` arrays, pairing ``p`` of :data:`PAIRINGS`): ``valid`` (both
    pairs same-flavour opposite-sign), ``z1_mass`` (the pair closer to m_Z), ``z2_mass``,
    ``z2_sum_pt`` (scalar pT sum of the Z2 leptons, a tie-breaker) and ``smart_ok`` (the
    alternative pairing Za Zb of the same four leptons, Za the closer to m_Z, does not have
    Za closer to m_Z than Z1 together with m_Zb below the threshold). Per quadruplet
    (``(n_quads,)``): ``m4l``, ``min_os_mass`` (the smallest opposite-sign pair mass of any
    flavour, inf if none), ``min_delta_r`` over the six pairs, ``lead_pt``, ``sublead_pt``.
    """

    valid: np.ndarray
    z1_mass: np.ndarray
    z2_mass: np.ndarray
    z2_sum_pt: np.ndarray
    smart_ok: np.ndarray
    m4l: np.ndarray
    min_os_mass: np.ndarray
    min_delta_r: np.ndarray
    lead_pt: np.ndarray
    sublead_pt: np.ndarray


@numba.njit(cache=True)
def _pairs(cart, direction, charge, flavour, quad, mass, sfos, opposite, with_delta_r) -> float:
    """Fill the six pairs' masses, SFOS and OS flags of one quadruplet; return their smallest ΔR.

    Without ``with_delta_r`` (``direction`` unused): no ΔR, inf returned.
    """
    k, min_dr = 0, np.inf
    for s in range(4):
        i = quad[s]
        a = vector.obj(px=cart[i, 0], py=cart[i, 1], pz=cart[i, 2], E=cart[i, 3])
        for t in range(s + 1, 4):
            j = quad[t]
            mass[k] = (a + vector.obj(px=cart[j, 0], py=cart[j, 1], pz=cart[j, 2], E=cart[j, 3])).mass
            if with_delta_r:
                da = vector.obj(rho=1.0, phi=direction[i, 1], eta=direction[i, 0])
                min_dr = min(min_dr, da.deltaR(vector.obj(rho=1.0, phi=direction[j, 1], eta=direction[j, 0])))
            opposite[k] = charge[i] == -charge[j]
            sfos[k] = opposite[k] and flavour[i] == flavour[j]
            k += 1
    return min_dr


@numba.njit(cache=True)
def _quad_level(cart, pt, quad, mass, opposite, out1, q) -> None:
    """Fill m4l, the smallest opposite-sign pair mass and the two leading pTs of quadruplet q."""
    system = vector.obj(px=0.0, py=0.0, pz=0.0, E=0.0)
    lead, sublead = -1.0, -1.0
    for s in range(4):
        i = quad[s]
        system = system + vector.obj(px=cart[i, 0], py=cart[i, 1], pz=cart[i, 2], E=cart[i, 3])
        if pt[i] > lead:
            lead, sublead = pt[i], lead
        elif pt[i] > sublead:
            sublead = pt[i]
    min_os = np.inf
    for k in range(6):
        if opposite[k]:
            min_os = min(min_os, mass[k])
    out1[0, q], out1[1, q], out1[3, q], out1[4, q] = system.mass, min_os, lead, sublead


@numba.njit(cache=True)
def _pairing_kernel(cart, direction, pt, charge, flavour, index, smart_zb_min, out3, out1) -> None:
    """Fill, per quadruplet, the (3 pairings) and quadruplet-level arrays of :class:`ZZCandidates`."""
    mass, sfos, opposite = np.empty(6), np.empty(6, np.bool_), np.empty(6, np.bool_)
    for q in range(index.shape[0]):
        quad = index[q]
        out1[2, q] = _pairs(cart, direction, charge, flavour, quad, mass, sfos, opposite, True)
        _quad_level(cart, pt, quad, mass, opposite, out1, q)
        for p in range(3):
            a, b = _PAIRING_PAIRS[p, 0], _PAIRING_PAIRS[p, 1]
            a_first = abs(mass[a] - Z_MASS_GEV) <= abs(mass[b] - Z_MASS_GEV)
            z1, z2 = (a, b) if a_first else (b, a)
            out3[0, q, p] = sfos[a] and sfos[b]
            out3[1, q, p], out3[2, q, p] = mass[z1], mass[z2]
            out3[3, q, p] = pt[quad[_LEPTON_PAIRS[z2, 0]]] + pt[quad[_LEPTON_PAIRS[z2, 1]]]
        for p in range(3):  # the smart cut: the other valid pairing of the same leptons (4e, 4mu)
            out3[4, q, p] = True
            for r in range(3):
                closer = abs(out3[1, q, r] - Z_MASS_GEV) < abs(out3[1, q, p] - Z_MASS_GEV)
                if r != p and out3[0, q, r] and out3[2, q, r] < smart_zb_min and closer:
                    out3[4, q, p] = False


@numba.njit(cache=True)
def _closest_z_kernel(cart, charge, flavour, index, out) -> None:
    """Fill m_Z1, m_Z2, m4l and pT4l of each quadruplet (:func:`closest_z`) into ``out``."""
    mass, sfos, opposite = np.empty(6), np.empty(6, np.bool_), np.empty(6, np.bool_)
    for q in range(index.shape[0]):
        quad = index[q]
        _pairs(cart, cart, charge, flavour, quad, mass, sfos, opposite, False)
        best, out[0, q], out[1, q] = np.inf, np.nan, np.nan
        for p in range(3):
            a, b = _PAIRING_PAIRS[p, 0], _PAIRING_PAIRS[p, 1]
            for first, second in ((a, b), (b, a)):
                if sfos[a] and sfos[b] and abs(mass[first] - Z_MASS_GEV) < best:
                    best, out[0, q], out[1, q] = abs(mass[first] - Z_MASS_GEV), mass[first], mass[second]
        system = vector.obj(px=0.0, py=0.0, pz=0.0, E=0.0)
        for s in range(4):
            i = quad[s]
            system = system + vector.obj(px=cart[i, 0], py=cart[i, 1], pz=cart[i, 2], E=cart[i, 3])
        out[2, q], out[3, q] = system.mass, system.pt


@numba.njit(cache=True)
def _cartesian(pt, eta, phi, fourth, fourth_is_energy) -> np.ndarray:
    """Return (px, py, pz, E) [GeV] of every lepton as an (n, 4) array, through `vector`.

    ``fourth``: the leptons' masses, or their energies when ``fourth_is_energy``.
    """
    out = np.empty((len(pt), 4))
    for i in range(len(pt)):
        if fourth_is_energy:
            v = vector.obj(pt=pt[i], eta=eta[i], phi=phi[i], E=fourth[i]).to_xyzt()
        else:
            v = vector.obj(pt=pt[i], eta=eta[i], phi=phi[i], mass=fourth[i]).to_xyzt()
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = v.px, v.py, v.pz, v.E
    return out


def closest_z(leptons: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """Return ``z1_mass``, ``z2_mass``, ``m4l`` and ``pt4l`` [GeV] of each lepton quadruplet.

    Z1 is the same-flavour opposite-sign (SFOS) pair closest to m_Z among the pairings in
    which both pairs are SFOS (ties: the first of :data:`PAIRINGS`), Z2 the other pair; NaN
    without such a pairing. ``leptons``: flat columns (pt, eta, phi, E [GeV], charge,
    flavour); ``index``: ``(n, 4)`` positions of each quadruplet's leptons in them. One numba
    pass with `vector` objects: numpy `vector` on (n, 4) structured arrays took ~3x as long.
    """
    pt, eta, phi, energy = (np.ascontiguousarray(leptons[f], np.float64) for f in ("pt", "eta", "phi", "E"))
    out = np.empty((4, len(index)))
    cart = _cartesian(pt, eta, phi, energy, True)
    _closest_z_kernel(cart, leptons["charge"], leptons["flavour"], np.ascontiguousarray(index), out)
    return dict(zip(("z1_mass", "z2_mass", "m4l", "pt4l"), out, strict=True))


def zz_candidates(leptons: dict[str, np.ndarray], index: np.ndarray, smart_zb_min: float) -> ZZCandidates:
    """Return every pairing of each lepton quadruplet as a ZZ candidate with the quantities cut on.

    ``leptons``: the chunk's leptons as flat columns (pt, eta, phi, mass [GeV], charge,
    flavour); ``index``: ``(n, 4)`` positions of each quadruplet's leptons in them;
    ``smart_zb_min``: the m_Zb threshold [GeV] of the "smart cut" (4e, 4mu). The arithmetic
    runs in numba passes with `vector` objects: the column-wise numpy-`vector` version (20
    operations over (n, 6) pairs and the structured arrays of vector's numpy backend) took
    five times as long.
    """
    pt, eta, phi = (np.ascontiguousarray(leptons[f], np.float64) for f in ("pt", "eta", "phi"))
    cart = _cartesian(pt, eta, phi, np.ascontiguousarray(leptons["mass"], np.float64), False)
    direction = np.stack([eta, phi], axis=1)
    n = len(index)
    out3, out1 = np.zeros((5, n, 3)), np.zeros((5, n))
    _pairing_kernel(
        cart,
        direction,
        pt,
        leptons["charge"],
        leptons["flavour"],
        np.ascontiguousarray(index),
        smart_zb_min,
        out3,
        out1,
    )
    return ZZCandidates(
        valid=out3[0].astype(bool),
        z1_mass=out3[1],
        z2_mass=out3[2],
        z2_sum_pt=out3[3],
        smart_ok=out3[4].astype(bool),
        m4l=out1[0],
        min_os_mass=out1[1],
        min_delta_r=out1[2],
        lead_pt=out1[3],
        sublead_pt=out1[4],
    )
