"""Shared toy physics: energy-momentum conservation of the 4l chain, allowed mass pairs, FSR."""

import numpy as np
import pytest

from hepsieve.datasets.toys.kinematics import (
    MUON_MASS_GEV,
    Z_MASS_GEV,
    decay_to_four_leptons,
    final_state_radiation,
    four_lepton_system,
    p4,
    production_jets,
    recoiling_parent,
    zz_pair_masses,
)

N_EVENTS = 200_000  # the bug hit 0.8 % of H -> 4l events: ~1600 here


@pytest.mark.parametrize("production", ["vbf", "zz"])
def test_four_lepton_chain_conserves_energy_and_momentum(production):
    """Sum of the four leptons = the parent four-vector, to 1e-9 of its energy (float64 boosts)."""
    rng = np.random.default_rng(11)
    jets = production_jets(rng, production, N_EVENTS)
    mass, photon_a, photon_b = four_lepton_system(rng, production, N_EVENTS)
    parent = recoiling_parent(rng, jets[0], jets[2], mass)
    leptons = decay_to_four_leptons(rng, parent, MUON_MASS_GEV, MUON_MASS_GEV, photon=(photon_a, photon_b))
    total = leptons[0] + leptons[1] + leptons[2] + leptons[3]
    tolerance = 1e-9 * parent.E
    for component in ("px", "py", "pz", "E"):
        worst = np.max(np.abs(getattr(total, component) - getattr(parent, component)) / tolerance)
        assert worst < 1, f"{component} not conserved: {worst:.3g} x tolerance"
    # m4l is the parent's mass: the bug put 0.8 % of H(125) events at 175-210 GeV
    np.testing.assert_allclose(total.mass, parent.mass, rtol=1e-6)


def test_pair_masses_are_always_allowed_and_peak_at_the_z():
    rng = np.random.default_rng(3)
    parent = np.full(N_EVENTS, 125.0)
    m_a, m_b = zz_pair_masses(rng, parent)
    assert np.all(m_a + m_b < parent) and np.all(np.minimum(m_a, m_b) >= 4.0)
    on_shell = np.maximum(m_a, m_b)
    assert abs(np.median(on_shell) - Z_MASS_GEV) < 1.5  # H -> Z Z*: one Z on shell
    assert np.mean(np.minimum(m_a, m_b) < 12) > 0.05  # ... and a Z* tail that Z2 > 12 GeV cuts
    # symmetric target (H -> ZZ*): the two pairs are equally often the on-shell Z (binomial
    # sigma of the difference 0.0016)
    assert np.mean(m_a > 60) == pytest.approx(np.mean(m_b > 60), abs=0.008)
    # a virtual photon in pair b pulls it below 12 GeV, pair a stays near the Z
    m_a, m_b = zz_pair_masses(rng, np.full(50_000, 150.0), photon=(0.0, 0.01))
    assert np.median(m_b) < 12 and abs(np.median(m_a) - Z_MASS_GEV) < 1.5


def test_zz_pair_masses_refuses_a_closed_phase_space():
    with pytest.raises(ValueError, match="exceed 2 x m_min"):
        zz_pair_masses(np.random.default_rng(0), np.array([125.0, 7.0]))


def test_fsr_shares_the_lepton_momentum_and_radiates_at_the_given_rate():
    """Lepton after FSR + photon = lepton before (3-momentum exact, energy to m^2 z / 2p)."""
    rng = np.random.default_rng(5)
    n = 100_000
    lepton = p4(
        rng.uniform(5, 100, n), rng.uniform(-2.5, 2.5, n), rng.uniform(-np.pi, np.pi, n), MUON_MASS_GEV
    )
    after, photon = final_state_radiation(rng, lepton, 0.1)
    for component in ("px", "py", "pz"):
        np.testing.assert_allclose(
            getattr(after, component) + getattr(photon, component), getattr(lepton, component), atol=1e-9
        )
    z = photon.E / lepton.p
    bound = MUON_MASS_GEV**2 * z / (2 * lepton.p * (1 - np.minimum(z, 0.95))) + 1e-9
    assert np.all(np.abs(after.E + photon.E - lepton.E) <= bound)
    assert np.mean(z > 0) == pytest.approx(0.1, abs=0.005)  # binomial sigma 0.001
    assert np.all(after.pt <= lepton.pt + 1e-12)
