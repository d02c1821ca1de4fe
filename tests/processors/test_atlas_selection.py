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


def test_the_z0_cut_is_on_z0_sin_theta_for_every_lepton_of_every_event():
    """|z0| above the 0.5 mm maximum passes where sin(theta) = 1 / cosh(eta) brings it below."""
    far_forward = lepton(20, -1.2, 1.0, 13, -1, z0=0.7)  # 0.7 / cosh(1.2) = 0.39 mm
    far_central = lepton(20, -0.1, 1.0, 13, -1, z0=0.7)  # 0.70 mm
    events = build(two_e_two_mu(), [*two_e_two_mu()[:3], far_central], [*two_e_two_mu()[:3], far_forward])
    good = objects(events).good.reshape(3, 4)
    assert good[:, 3].tolist() == [True, False, True] and good[:, :3].all()


def test_good_lepton_sums_are_per_event_over_the_good_leptons_only():
    bad = {"ptcone": 0.8}
    events = build(
        [lepton(30, 0.1, 0.0, 11, 1)],
        [],
        [lepton(30, 0.1, 0.0, 13, -1), lepton(25, 0.2, 1.0, 11, 1, **bad), lepton(20, 0.3, 2.0, 11, 1)],
        [lepton(30, 0.1, 0.0, 13, 1, **bad)],
    )
    table = objects(events)
    assert table.good.tolist() == [True, True, False, True, False]
    assert table.good_sum(1).tolist() == [1, 0, 2, 0]
    assert table.good_sum(table.columns["charge"]).tolist() == [1, 0, 0, 0]
    assert table.good_sum(table.columns["type"] == 11).tolist() == [1, 0, 1, 0]


def test_z_pairs_and_m4l_agree_with_numpy_vector_on_random_quadruplets():
    """closest_z's numba pass against fourlepton.z_pairing (numpy `vector`), ties and no-pairing included."""
    import vector

    from hepsieve.processors.analyses.fourlepton import closest_z, z_pairing

    rng = np.random.default_rng(3)
    n = 2000
    pt, eta, phi = rng.uniform(5, 80, (n, 4)), rng.uniform(-2.5, 2.5, (n, 4)), rng.uniform(-3, 3, (n, 4))
    energy = np.sqrt((pt * np.cosh(eta)) ** 2 + 0.1**2)
    charge = rng.choice([-1, 1], (n, 4)).astype(np.int32)
    flavour = rng.choice([11, 13], (n, 4)).astype(np.uint32)
    # event 0: 4e, leptons 2 and 3 copies of 0 and 1: two valid pairings with one Z1 mass (a tie)
    charge[0], flavour[0] = [1, -1, 1, -1], [11] * 4
    for x in (pt, eta, phi, energy):
        x[0, 2:] = x[0, :2]
    vecs = [
        vector.array({"pt": pt[:, i], "eta": eta[:, i], "phi": phi[:, i], "E": energy[:, i]})
        for i in range(4)
    ]
    z1, z2, _ = z_pairing(vecs, charge, flavour)
    got = closest_z(
        {
            "pt": pt.ravel(),
            "eta": eta.ravel(),
            "phi": phi.ravel(),
            "E": energy.ravel(),
            "charge": charge.ravel(),
            "flavour": flavour.ravel(),
        },
        np.arange(4 * n).reshape(n, 4),
    )
    system = vecs[0] + vecs[1] + vecs[2] + vecs[3]
    assert np.isnan(z1).any() and np.isfinite(z1).any()
    np.testing.assert_allclose(got["z1_mass"], z1, rtol=1e-12)
    np.testing.assert_allclose(got["z2_mass"], z2, rtol=1e-12)
    np.testing.assert_allclose(got["m4l"], system.mass, rtol=1e-12)
    np.testing.assert_allclose(got["pt4l"], system.pt, rtol=1e-12)


def test_weight_recipe_and_data_weight():
    events = build(two_e_two_mu(), two_e_two_mu())
    events["mcWeight"] = np.array([2.0, -1.0])
    events["XSection"] = np.array([0.5, 0.5])
    events["SumWeights"] = np.array([4.0, 4.0])
    np.testing.assert_allclose(weights(events, None, {"lumi_pb": 10.0}), [2.5, -1.25])
    np.testing.assert_allclose(weights(events, None, {"is_data": True}), [1.0, 1.0])
