"""Four-lepton reconstruction shared by the analyses and the toys: Z pairing and m4l."""

from __future__ import annotations

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
