"""ATLAS H->ZZ*->4l selection on hand-built events: one test per rule."""

import awkward as ak
import numpy as np
import pytest

from hepsieve.processors.analyses.hzz4l_atlas import ANALYSIS, categorize, objects, observables, weights

MEV = 1000.0
GOOD = {"tight": True, "ptcone": 0.05, "etcone": 0.05, "sigd0": 1.0, "z0": 0.1}


def lepton(pt, eta, phi, flavour, charge, **kw):
    return dict(pt=pt, eta=eta, phi=phi, type=flavour, charge=charge, **(GOOD | kw))


def build(*events, trig=True):
    """Events in the mini-tree schema (MeV) from lists of lepton dicts (GeV)."""

    def jag(key, scale=1.0, dtype=np.float32):
        return ak.values_astype(ak.Array([[lp[key] * scale for lp in ev] for ev in events]), dtype)

    mass = {11: 0.000511, 13: 0.10566}
    energy = ak.Array(
        [
            [float(np.sqrt((lp["pt"] * np.cosh(lp["eta"])) ** 2 + mass[lp["type"]] ** 2)) * MEV for lp in ev]
            for ev in events
        ]
    )
    n = len(events)
    return ak.zip(
        {
            "lep_pt": jag("pt", MEV),
            "lep_eta": jag("eta"),
            "lep_phi": jag("phi"),
            "lep_E": ak.values_astype(energy, np.float32),
            "lep_charge": jag("charge", dtype=np.int32),
            "lep_type": jag("type", dtype=np.uint32),
            "lep_ptcone30": ak.Array([[lp["ptcone"] * lp["pt"] * MEV for lp in ev] for ev in events]),
            "lep_etcone20": ak.Array([[lp["etcone"] * lp["pt"] * MEV for lp in ev] for ev in events]),
            "lep_tracksigd0pvunbiased": jag("sigd0"),
            "lep_z0": jag("z0"),
            "lep_isTightID": jag("tight", dtype=bool),
            "trigE": np.full(n, trig),
            "trigM": np.full(n, trig),
            "eventNumber": np.arange(n),
            "mcWeight": np.ones(n),
            "scaleFactor_PILEUP": np.ones(n),
            "scaleFactor_ELE": np.ones(n),
            "scaleFactor_MUON": np.ones(n),
            "scaleFactor_LepTRIGGER": np.ones(n),
            "XSection": np.ones(n),
            "SumWeights": np.ones(n),
        },
        depth_limit=1,
    )


def selection(events):
    """{step label: mask} of the analysis' steps for the mini-tree flavour."""
    leptons = objects(events)
    return {s.label: s.mask(events, leptons) for s in ANALYSIS.steps("mini")}


def derive(events):
    """The observables of events that pass the selection."""
    return observables(events, objects(events))


def channels(events):
    masks = categorize(derive(events))
    return [next(name for name, m in masks.items() if m[i]) for i in range(len(events))]


def passes(events):
    return np.logical_and.reduce(list(selection(events).values()))


def two_e_two_mu(**last):
    return [
        lepton(60, 0.1, 0.0, 11, 1),
        lepton(45, -0.5, 2.5, 11, -1),
        lepton(30, 1.2, -1.5, 13, 1),
        lepton(20, -1.0, 1.0, 13, -1, **last),
    ]


def test_sum_type_48_is_accepted_as_2e2mu():
    events = build(two_e_two_mu())
    assert passes(events).tolist() == [True]
    assert channels(events) == ["2e2mu"]


def test_five_lepton_event_with_non_isolated_extra_lepton_is_kept():
    extra = lepton(15, 0.3, 0.7, 13, 1, ptcone=0.8)
    assert passes(build([*two_e_two_mu(), extra])).tolist() == [True]
    isolated_extra = lepton(15, 0.3, 0.7, 13, 1)
    assert passes(build([*two_e_two_mu(), isolated_extra])).tolist() == [False]


def test_2e2mu_with_nonzero_charge_sum_is_rejected():
    leps = two_e_two_mu()
    leps[3]["charge"] = 1
    steps = selection(build(leps))
    assert steps["exactly 4 good leptons"].tolist() == [True]
    assert steps["sum charge = 0"].tolist() == [False]


def test_sum_types_44_and_52_accepted_46_and_50_rejected():
    def flavours(types):
        return [lepton(50 - 5 * i, 0.2 * i, i, t, (-1) ** i) for i, t in enumerate(types)]

    events = build(
        flavours([11] * 4), flavours([13] * 4), flavours([11, 11, 11, 13]), flavours([13, 13, 13, 11])
    )
    assert selection(events)["sum type in {44, 48, 52}"].tolist() == [True, True, False, False]
    assert passes(events).tolist() == [True, True, False, False]
    assert channels(events[:2]) == ["4e", "4mu"]


def test_same_sign_same_flavour_2e2mu_has_no_z_pairs():
    leps = two_e_two_mu()
    leps[1]["charge"], leps[2]["charge"] = 1, -1  # e+ e+ mu- mu-: sum 0, type 48
    steps = selection(build(leps))
    assert steps["sum charge = 0"].tolist() == [True]
    assert steps["two same-flavour opposite-sign pairs"].tolist() == [False]


@pytest.mark.parametrize(
    "failure",
    [
        {"tight": False},
        {"ptcone": 0.31},
        {"etcone": 0.31},
        {"sigd0": 3.5},
        {"z0": 0.9},
        {"pt": 4.0},
        {"eta": 2.6},
    ],
)
def test_each_object_rule_rejects_a_lepton(failure):
    leps = two_e_two_mu()
    leps[3] |= failure  # the 4th lepton is a muon
    assert selection(build(leps))["exactly 4 good leptons"].tolist() == [False]


def test_electron_rules_differ_from_muon_rules():
    leps = two_e_two_mu()
    leps[1] |= {"sigd0": 4.0}  # electrons allow |d0/sigma| < 5
    assert passes(build(leps)).tolist() == [True]
    leps[1] |= {"pt": 6.0}  # ...but need pT > 7 GeV
    assert passes(build(leps)).tolist() == [False]


def test_trigger_is_required():
    assert passes(build(two_e_two_mu(), trig=False)).tolist() == [False]


def test_z1_is_the_sfos_pair_closest_to_mz_and_m4l_from_vectors():
    import vector

    events = build(two_e_two_mu())
    d = derive(events)
    leps = [
        vector.obj(pt=lp["pt"], eta=lp["eta"], phi=lp["phi"], E=float(events.lep_E[0][i]) / MEV)
        for i, lp in enumerate(two_e_two_mu())
    ]
    ee, mumu = (leps[0] + leps[1]).mass, (leps[2] + leps[3]).mass
    z1, z2 = sorted([ee, mumu], key=lambda m: abs(m - 91.1876))
    assert float(d.z1_mass[0]) == pytest.approx(z1, rel=1e-5)
    assert float(d.z2_mass[0]) == pytest.approx(z2, rel=1e-5)
    assert float(d.m4l[0]) == pytest.approx((leps[0] + leps[1] + leps[2] + leps[3]).mass, rel=1e-5)


def test_weight_recipe_and_data_weight():
    events = build(two_e_two_mu(), two_e_two_mu())
    events["mcWeight"] = np.array([2.0, -1.0])
    events["XSection"] = np.array([0.5, 0.5])
    events["SumWeights"] = np.array([4.0, 4.0])
    np.testing.assert_allclose(weights(events, None, {"lumi_pb": 10.0}), [2.5, -1.25])
    np.testing.assert_allclose(weights(events, None, {"is_data": True}), [1.0, 1.0])
