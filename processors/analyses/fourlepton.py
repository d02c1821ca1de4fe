"""Four-lepton reconstruction shared by the analyses and the toys: Z pairing, ZZ candidates, m4l."""

from __future__ import annotations

from dataclasses import dataclass

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


def _pairings(
    mass: dict, sfos: dict, pt: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (valid, m_Z1, m_Z2, Z2 pT sum) per pairing as (n, 3) arrays."""
    valid, z1, z2, z2_pt = [], [], [], []
    for a, b in PAIRINGS:
        a_first = np.abs(mass[a] - Z_MASS_GEV) <= np.abs(mass[b] - Z_MASS_GEV)
        valid.append(sfos[a] & sfos[b])
        z1.append(np.where(a_first, mass[a], mass[b]))
        z2.append(np.where(a_first, mass[b], mass[a]))
        z2_pt.append(np.where(a_first, pt[:, b[0]] + pt[:, b[1]], pt[:, a[0]] + pt[:, a[1]]))
    return tuple(np.stack(x, axis=1) for x in (valid, z1, z2, z2_pt))  # type: ignore[return-value]


def zz_candidates(
    leptons: list[vector.MomentumNumpy4D], charge: np.ndarray, flavour: np.ndarray, smart_zb_min: float
) -> ZZCandidates:
    """Return every pairing of each quadruplet as a ZZ candidate with the quantities cut on.

    ``leptons``: four (pt, eta, phi, mass) vector arrays, one per slot of the quadruplet;
    ``charge``, ``flavour``: ``(n, 4)`` arrays; ``smart_zb_min``: the m_Zb threshold [GeV] of
    the "smart cut" on the alternative pairing (4e, 4mu).
    """
    cartesian = [lep.to_xyzt() for lep in leptons]
    pt = np.stack([lep.pt for lep in leptons], axis=1)
    mass, sfos, opposite, delta_r = {}, {}, {}, []
    for i, j in LEPTON_PAIRS:
        mass[i, j] = (cartesian[i] + cartesian[j]).mass
        opposite[i, j] = charge[:, i] == -charge[:, j]
        sfos[i, j] = opposite[i, j] & (flavour[:, i] == flavour[:, j])
        delta_r.append(leptons[i].deltaR(leptons[j]))
    valid, z1, z2, z2_pt = _pairings(mass, sfos, pt)
    # the alternative pairing q of the same leptons (only 4e/4mu have two valid pairings)
    smart_fail = np.zeros_like(valid)
    for p in range(3):
        for q in range(3):
            if q != p:
                smart_fail[:, p] |= (
                    valid[:, q]
                    & (np.abs(z1[:, q] - Z_MASS_GEV) < np.abs(z1[:, p] - Z_MASS_GEV))
                    & (z2[:, q] < smart_zb_min)
                )
    pt_sorted = -np.sort(-pt, axis=1)
    return ZZCandidates(
        valid=valid,
        z1_mass=z1,
        z2_mass=z2,
        z2_sum_pt=z2_pt,
        smart_ok=~smart_fail,
        m4l=(cartesian[0] + cartesian[1] + cartesian[2] + cartesian[3]).mass,
        min_os_mass=np.min(np.stack([np.where(opposite[k], m, np.inf) for k, m in mass.items()]), axis=0),
        min_delta_r=np.min(np.stack(delta_r), axis=0),
        lead_pt=pt_sorted[:, 0],
        sublead_pt=pt_sorted[:, 1],
    )
