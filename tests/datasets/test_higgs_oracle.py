"""The UCI HIGGS information-ceiling diagnostic regenerates exactly the toy's events."""

import numpy as np
import pytest

from hepsieve.datasets.toys import higgs_uci, higgs_uci_oracle
from hepsieve.processors.analyses.higgs_uci import HIGH_LEVEL


@pytest.fixture(scope="module")
def oracle_and_toy():
    cols = higgs_uci_oracle.events(np.random.default_rng(5), 20_000)
    return cols, higgs_uci._reconstruct(np.random.default_rng(5), 20_000)


def test_oracle_events_are_the_toys_events(oracle_and_toy):
    """Same seed, same rows: the oracle's reco columns equal the generator's (unscaled) columns."""
    cols, toy = oracle_and_toy
    np.testing.assert_array_equal(cols["label"], toy["label"])
    for name in ("lepton_pT", "jet1_pt", "jet4_eta", *HIGH_LEVEL):
        np.testing.assert_array_equal(cols[name], toy[name], err_msg=name)


def test_truth_assignment_and_partons(oracle_and_toy):
    """Parton level: signal m_bb is the h0 mass, background m_jlv the top mass; the assigned
    masses use only stored jets, so they are 0 where a parton has no jet among the four; with
    the true assignment the background's leptonic top is narrow (the wrong b would smear it)."""
    cols, _ = oracle_and_toy
    sig = cols["label"] == 1
    np.testing.assert_allclose(cols["parton m_bb"][sig], higgs_uci.HIGGS_MASS, rtol=1e-6)
    assert np.median(cols["parton m_jlv"][~sig]) == pytest.approx(higgs_uci.TOP_MASS, abs=1.0)
    all_four = cols["partons stored"] == 4
    assert 0.4 < all_four.mean() < 0.7
    assert np.median(cols["true-assignment m_bb"][sig & all_four]) == pytest.approx(120, abs=12)
    top = cols["true-assignment m_jlv"][~sig & all_four]
    assert np.median(top) == pytest.approx(higgs_uci.TOP_MASS, abs=8)
    assert np.mean(np.abs(top - higgs_uci.TOP_MASS) < 25) > 0.6


def test_set_changes_the_toys_knob(monkeypatch, capsys):
    """``--set ISR_JETS=0`` reaches the generator (no ISR jet displaces a parton); a name that
    is not a knob, or a value that is not a number, stops with the option named."""
    import argparse

    monkeypatch.setattr(higgs_uci, "ISR_JETS", higgs_uci.ISR_JETS)  # restored after the test
    default = higgs_uci_oracle.events(np.random.default_rng(3), 20_000)["partons stored"]
    parser = argparse.ArgumentParser()
    higgs_uci_oracle._set_knob(parser, "ISR_JETS=0")
    assert higgs_uci.ISR_JETS == 0.0 and "ISR_JETS = 0.0" in capsys.readouterr().out
    no_isr = higgs_uci_oracle.events(np.random.default_rng(3), 20_000)["partons stored"]
    assert np.mean(no_isr == 4) > np.mean(default == 4) + 0.1
    for bad, message in (("W_MASS=80", "not a knob"), ("ISR_JETS=many", "not a number")):
        with pytest.raises(SystemExit):
            higgs_uci_oracle._set_knob(parser, bad)
        assert message in capsys.readouterr().err
