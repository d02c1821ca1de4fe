"""The NanoAOD H->ZZ->4l selection against an independent, deliberately simple per-event
implementation (plain Python loops over a few dozen events): the same leptons, the same events
at every step, the same chosen candidate and jets. On the real CMS files in ../shared/data and
on toy events (whose 4-lepton events reach the later steps, which the 40 real events do not)."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from hepsieve.processors import RunConfig, executors, run
from hepsieve.processors.analyses import hzz4l_cms_nanoaod as nano
from hepsieve.processors.analysis import flat_values

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
MZ = 91.1876
N_EVENTS = 40  # a few dozen events per file
STRESS_EVENTS = 300  # hand-built events that every step cuts into


# ------------------------- the independent reference, one event at a time -------------------------
def ref_good_muon(m: dict) -> bool:
    return bool(
        m["looseId"]
        and m["pt"] > 5
        and abs(m["eta"]) < 2.4
        and abs(m["dxy"]) < 0.5
        and abs(m["dz"]) < 1
        and abs(m["sip3d"]) < 4
        and m["pfRelIso04_all"] < 0.35
    )


def ref_good_electron(e: dict) -> bool:
    return bool(
        e["cutBased"] >= 2
        and e["pt"] > 7
        and abs(e["eta"]) < 2.5
        and abs(e["dxy"]) < 0.5
        and abs(e["dz"]) < 1
        and abs(e["sip3d"]) < 4
        and e["pfRelIso03_all"] < 0.35
    )


def four_momentum(p: dict) -> tuple[float, float, float, float]:
    px, py, pz = p["pt"] * math.cos(p["phi"]), p["pt"] * math.sin(p["phi"]), p["pt"] * math.sinh(p["eta"])
    return px, py, pz, math.sqrt(px * px + py * py + pz * pz + p["mass"] ** 2)


def inv_mass(*particles: dict) -> float:
    px, py, pz, e = (sum(c) for c in zip(*(four_momentum(p) for p in particles), strict=True))
    return math.sqrt(max(e * e - px * px - py * py - pz * pz, 0.0))


def delta_r(a: dict, b: dict) -> float:
    dphi = (a["phi"] - b["phi"] + math.pi) % (2 * math.pi) - math.pi
    return math.hypot(a["eta"] - b["eta"], dphi)


def ref_candidates(leptons: list[dict]) -> list[dict]:
    """Every (four leptons, pairing) with the outcome of each cut, in the steps' order."""
    pairings = (((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2)))
    out = []
    for quad in itertools.combinations(leptons, 4):
        pairs = list(itertools.combinations(quad, 2))
        ghost = all(delta_r(a, b) > 0.02 for a, b in pairs)
        mll = all(inv_mass(a, b) > 4 for a, b in pairs if a["charge"] == -b["charge"])
        pts = sorted((lep["pt"] for lep in quad), reverse=True)
        options = []
        for p, q in pairings:
            if all(
                quad[i]["pdg"] == quad[j]["pdg"] and quad[i]["charge"] == -quad[j]["charge"]
                for i, j in (p, q)
            ):
                mp, mq = inv_mass(quad[p[0]], quad[p[1]]), inv_mass(quad[q[0]], quad[q[1]])
                z2 = q if abs(mp - MZ) <= abs(mq - MZ) else p
                z1m, z2m = (mp, mq) if z2 == q else (mq, mp)
                options.append({"z1": z1m, "z2": z2m, "z2pt": quad[z2[0]]["pt"] + quad[z2[1]]["pt"]})
        for o in options:
            smart = not any(
                abs(a["z1"] - MZ) < abs(o["z1"] - MZ) and a["z2"] < 12 for a in options if a is not o
            )
            cuts = [ghost, True, mll, 40 < o["z1"] < 120, 12 < o["z2"] < 120, pts[0] > 20 and pts[1] > 10]
            cuts += [inv_mass(*quad) > 70, smart]
            out.append({**o, "cuts": cuts, "quad": quad, "m4l": inv_mass(*quad)})
        if ghost and not options:  # a quad passing the first cut but forming no ZZ candidate
            out.append({"cuts": [True, False], "quad": quad})
    return out


def ref_event(event: dict, table: dict, is_data: bool) -> dict:
    """Return the reference's step outcomes (cumulative) and chosen candidate of one event."""
    muons = [dict(m, pdg=13) for m in event["Muon"] if ref_good_muon(m)]
    electrons = [dict(e, pdg=11) for e in event["Electron"] if ref_good_electron(e)]
    leptons = muons + electrons
    fired = {pd: any(event["HLT"][p.removeprefix("HLT_")] for p in paths) for pd, paths in table.items()}
    if is_data:
        order = list(table)
        own = event["primary_dataset"]
        trigger = fired[own] and not any(fired[pd] for pd in order[: order.index(own)])
    else:
        trigger = any(fired.values()) if table else True
    golden = (not is_data) or any(lo <= event["luminosityBlock"] <= hi for lo, hi in event["golden"])
    steps = {
        "trigger": trigger,
        "golden": trigger and golden,
        "four_leptons": trigger and golden and len(leptons) >= 4,
    }
    cands = ref_candidates(leptons)
    names = [name for name, _ in nano.CANDIDATE_STEPS]
    for k, name in enumerate(names):
        steps[name] = steps["four_leptons"] and any(
            len(c["cuts"]) > k and all(c["cuts"][: k + 1]) for c in cands
        )
    final = [c for c in cands if len(c["cuts"]) == len(names) and all(c["cuts"])]
    best = min(final, key=lambda c: (abs(c["z1"] - MZ), -c["z2pt"])) if final else None
    return {"steps": steps, "best": best, "leptons": leptons}


def ref_jets(event: dict, leptons: list[dict], has_jet_id: bool) -> list[dict]:
    jets = [
        j
        for j in event["Jet"]
        if j["pt"] > 30
        and abs(j["eta"]) < 4.7
        and (not has_jet_id or j["jetId"] & 2)
        and all(delta_r(j, lep) > 0.4 for lep in leptons)
    ]
    return sorted(jets, key=lambda j: -j["pt"])


# ------------------------------------ helpers ------------------------------------
def _events(path: Path, meta: dict, stop: int = N_EVENTS):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    with pytest.warns(RuntimeWarning) if "shared" in str(path) else _no_warning():
        return NanoEventsFactory.from_root(
            {str(path): "Events"},
            schemaclass=NanoAODSchema,
            metadata={"dataset": path.stem, **meta},
            mode="eager",
            entry_stop=stop,
        ).events()


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _python_events(events, meta: dict) -> list[dict]:
    fields = {"Muon": nano.MUON_FIELDS, "Electron": nano.ELECTRON_FIELDS, "Jet": (*nano.JET_FIELDS, "jetId")}
    cols = {
        name: ak.to_list(events[name][[f for f in fs if f in events[name].fields]])
        for name, fs in fields.items()
    }
    hlt = ak.to_list(events.HLT) if "HLT" in events.fields else [{}] * len(events)
    golden = json.loads(Path(meta["lumi_mask"]).read_text()) if meta.get("is_data") else {}
    out = []
    for i in range(len(events)):
        run_number, lumi = int(events.run[i]), int(events.luminosityBlock[i])
        out.append(
            {
                **{name: cols[name][i] for name in cols},
                "HLT": hlt[i],
                "luminosityBlock": lumi,
                "golden": golden.get(str(run_number), []),
                "primary_dataset": meta.get("primary_dataset"),
            }
        )
    return out


def _compare(path: Path, meta: dict, stop: int = N_EVENTS) -> dict[str, int]:
    """Compare every step, lepton and chosen candidate; return the reference's step counts."""
    events = _events(path, meta, stop)
    objects = nano.objects(events)
    table = nano.trigger_paths(meta)
    py_events = _python_events(events, meta)
    # object level: the same leptons pass
    mu_ref = [ref_good_muon(m) for ev in py_events for m in ev["Muon"]]
    el_ref = [ref_good_electron(e) for ev in py_events for e in ev["Electron"]]
    assert nano.good_muons(events.Muon).tolist() == mu_ref
    assert nano.good_electrons(events.Electron).tolist() == el_ref
    refs = [ref_event(ev, table, bool(meta.get("is_data"))) for ev in py_events]
    cumulative = np.ones(len(events), bool)
    counts = {}
    for step in nano.SELECTION:
        cumulative = cumulative & step.mask(events, objects)
        expected = [r["steps"][step.name] for r in refs]
        assert cumulative.tolist() == expected, f"step {step.name}: {path.name}"
        counts[step.name] = sum(expected)
    _compare_best(events, objects, refs, cumulative)
    return counts


def _compare_best(events, objects, refs, selected) -> None:
    rows = np.flatnonzero(selected)
    if not len(rows):
        return
    observed = nano.observables(events[selected], objects[selected])
    has_jet_id = "jetId" in events.Jet.fields
    py_events = _python_events(events[selected], {})
    for k, i in enumerate(rows):
        best = refs[i]["best"]
        assert observed.f_Z1mass[k] == pytest.approx(best["z1"], rel=1e-6)
        assert observed.f_Z2mass[k] == pytest.approx(best["z2"], rel=1e-6)
        assert observed.f_mass4l[k] == pytest.approx(best["m4l"], rel=1e-6)
        pts = sorted((lep["pt"] for lep in best["quad"]), reverse=True)
        assert [observed[f"f_lept{j}_pt"][k] for j in range(1, 5)] == pytest.approx(pts)
        assert observed.sum_pdg[k] == sum(lep["pdg"] for lep in best["quad"])
        jets = ref_jets(py_events[k], refs[i]["leptons"], has_jet_id)
        assert observed.n_jets[k] == len(jets)
        if len(jets) >= 2:
            assert observed.f_massjj[k] == pytest.approx(inv_mass(jets[0], jets[1]), rel=1e-5), (
                observed.f_massjj[k],
                inv_mass(jets[0], jets[1]),
                jets[:2],
            )
            assert observed.f_deltajj[k] == pytest.approx(abs(jets[0]["eta"] - jets[1]["eta"]), rel=1e-5)
        else:
            assert observed.f_massjj[k] == -999 and observed.f_deltajj[k] == -999


def _two_leptons(rng, parent, pdg: np.ndarray) -> list:
    from hepsieve.datasets.toys.kinematics import decay_two_body

    a, b = decay_two_body(rng, parent, 0.0, 0.0)
    return [
        list(zip(v.pt, v.eta, v.phi, pdg, np.full(len(pdg), q), strict=True)) for v, q in ((a, 1), (b, -1))
    ]


def _stress_columns(rng, n: int) -> dict:
    """Hand-built events that every step cuts into: a Z -> ll with 1-4 soft leptons of random
    flavour and charge and near-duplicate (ghost) leptons; X -> Z(*) Z(*) -> 4l at the edges of
    the mass cuts; Z -> ll + a low-mass pair (the smart cut; e mu: the any-flavour m(ll) cut);
    one hard and three soft leptons. Random IDs, isolation near the cut, jets on leptons."""
    from hepsieve.datasets.toys.kinematics import decay_two_body, p4_from_rapidity

    def parent(mass, pt_scale=25.0):
        return p4_from_rapidity(
            rng.exponential(pt_scale, n), rng.normal(0, 1, n), rng.uniform(-3, 3, n), mass
        )

    pdg = rng.choice([11, 13], n)
    z = _two_leptons(rng, parent(rng.uniform(20, 140, n)), pdg)
    # X -> Z(*) Z(*): (66; 46, 14) soft, some fail the lepton pT cuts; Z2 or both Zs above 120 GeV
    masses = np.array([(66.0, 46.0, 14.0), (270.0, 91.0, 135.0), (290.0, 128.0, 135.0)])[rng.choice(3, n)]
    x = parent(masses[:, 0], pt_scale=5.0)
    z1, z2 = decay_two_body(rng, x, masses[:, 1], masses[:, 2])
    low = _two_leptons(rng, z1, pdg) + _two_leptons(rng, z2, np.where(rng.random(n) < 0.5, pdg, 24 - pdg))
    pair = _two_leptons(rng, p4_from_rapidity(rng.uniform(15, 40, n), rng.normal(0, 1, n),
                                              rng.uniform(-3, 3, n), rng.uniform(1, 11, n)), pdg)  # fmt: skip
    emu = rng.random(n) < 0.4  # Z -> ll + a pair of the other flavour, one of it next to l+
    kind = rng.choice(4, n, p=[0.4, 0.2, 0.2, 0.2])
    leptons = []
    for i in range(n):
        if kind[i] == 1:
            leptons.append([low[k][i] for k in range(4)])
            continue
        if kind[i] == 3:  # one hard lepton, three soft ones: the sub-leading pT cut
            pts = [rng.uniform(25, 60), *rng.uniform(7.5, 11, 3)]
            leptons.append([(pt, rng.uniform(-2.4, 2.4), rng.uniform(-3.1, 3.1), pdg[i], q)
                            for pt, q in zip(pts, (1, -1, 1, -1), strict=True)])  # fmt: skip
            continue
        evt = [z[0][i], z[1][i]] + ([pair[0][i], pair[1][i]] if kind[i] == 2 and not emu[i] else [])
        if kind[i] == 2 and emu[i]:  # an opposite-sign e mu pair of m < 4 GeV: the any-flavour m(ll) cut
            near = (rng.uniform(8, 20), z[0][i][1] + 0.05, z[0][i][2], 24 - pdg[i], -1)
            evt += [
                near,
                (rng.uniform(10, 30), rng.uniform(-2.4, 2.4), rng.uniform(-3.1, 3.1), 24 - pdg[i], 1),
            ]
        ghost = rng.random() < 0.2
        n_soft = rng.integers(1, 3) if ghost or kind[i] == 2 else rng.integers(2, 5)
        evt.extend((4 + rng.exponential(15), rng.uniform(-2.6, 2.6), rng.uniform(-3.1, 3.1),
                    pdg[i] if rng.random() < 0.6 else 24 - pdg[i], rng.choice([-1, 1]))
                   for _ in range(n_soft))  # fmt: skip
        if ghost:  # a copy of a lepton at ΔR ~ 0.01
            pt, eta, phi, flavour, q = evt[rng.integers(len(evt))]
            evt.append((pt * 0.9, eta + 0.007, phi + 0.007, flavour, -q))
        leptons.append(evt)
    return _stress_collections(rng, leptons)


def _stress_collections(rng, leptons: list) -> dict:
    muons, electrons, jets = [], [], []
    for evt in leptons:
        mus, els, js = [], [], []
        for pt, eta, phi, pdg, q in evt:
            fail = rng.random() < 0.1  # one object variable out of range
            rec = {"pt": pt, "eta": eta, "phi": phi, "charge": q, "dxy": 0.001, "dz": 0.002,
                   "sip3d": 5.0 if fail and rng.random() < 0.5 else 1.0}  # fmt: skip
            iso = 0.38 if fail and rng.random() < 0.5 else 0.05  # just above the threshold
            if pdg == 13:
                mus.append(
                    {
                        **rec,
                        "mass": 0.1057,
                        "pfRelIso04_all": iso,
                        "looseId": not (fail and rng.random() < 0.3),
                    }
                )
            else:
                els.append(
                    {**rec, "mass": 0.0005, "pfRelIso03_all": iso, "cutBased": int(rng.choice([1, 2, 4]))}
                )
            if rng.random() < 0.3:  # the lepton is a jet too
                js.append({"pt": pt * 1.1 + 25, "eta": eta, "phi": phi, "mass": 2.0, "jetId": 6})
        js.extend({"pt": 20 + rng.exponential(40), "eta": rng.uniform(-5, 5), "phi": rng.uniform(-3, 3),
                   "mass": 5.0, "jetId": int(rng.choice([0, 2, 6]))}
                  for _ in range(rng.integers(0, 4)))  # fmt: skip
        muons.append(mus), electrons.append(els), jets.append(sorted(js, key=lambda j: -j["pt"]))
    return {"Muon": ak.Array(muons), "Electron": ak.Array(electrons), "Jet": ak.Array(jets)}


def _write_stress(path: Path, n: int, seed: int) -> Path:
    from hepsieve.datasets.toys.cms_hzz4l_nanoaod import write_nanoaod

    rng = np.random.default_rng(seed)
    cols = _stress_columns(rng, n)
    cols |= {"run": np.full(n, 315267), "luminosityBlock": rng.integers(1, 11, n), "event": np.arange(n)}
    fires = {"DoubleEG": 0.1, "DoubleMuon": 0.7, "MuonEG": 0.3}  # per path
    cols |= {p: rng.random(n) < fires[pd] for pd, paths in TRIGGERS.items() for p in paths}
    return write_nanoaod(path, cols, {"run": [315267]})


# ------------------------------------ the tests ------------------------------------
TRIGGERS = {
    "DoubleEG": ["HLT_Ele23_Ele12_CaloIdL_TrackIdL_IsoVL", "HLT_DoubleEle33_CaloIdL_MW"],
    "DoubleMuon": ["HLT_Mu17_TrkIsoVVL_Mu8_TrkIsoVVL_DZ_Mass3p8", "HLT_TripleMu_12_10_5"],
    "MuonEG": ["HLT_Mu23_TrkIsoVVL_Ele12_CaloIdL_TrackIdL_IsoVL_DZ"],
}


@pytest.fixture(scope="module")
def real_golden(tmp_path_factory) -> Path:
    """A golden JSON for the real data file's run 315267: lumi sections 1-300."""
    path = tmp_path_factory.mktemp("golden") / "golden.json"
    path.write_text(json.dumps({"315267": [[1, 300]]}))
    return path


def _real(name: str) -> Path:
    path = REAL_DATA / name
    if not path.is_file():
        pytest.skip(f"real NanoAOD file {path} not present (see ../shared/data/README.md)")
    return path


def test_real_dy_mc_every_step_matches_the_reference():
    counts = _compare(_real("nano_dy.root"), {"is_data": False, "triggers": TRIGGERS})
    assert counts["trigger"] > 0  # a real path decision was read


def test_real_dimuon_data_every_step_matches_the_reference(real_golden):
    meta = {
        "is_data": True,
        "triggers": TRIGGERS,
        "primary_dataset": "DoubleMuon",
        "lumi_mask": str(real_golden),
    }
    counts = _compare(_real("nano_dimuon.root"), meta)
    assert 0 < counts["trigger"] < N_EVENTS  # some events removed as DoubleEG's (overlap)


def test_real_files_lepton_selection_is_exercised():
    """The real events hold leptons that pass and leptons that fail (a test that checks something)."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    for name in ("nano_dy.root", "nano_dimuon.root"):
        with pytest.warns(RuntimeWarning):  # coffea: the real files lack some cross-references
            events = NanoEventsFactory.from_root(
                {str(_real(name)): "Events"}, schemaclass=NanoAODSchema, mode="eager"
            ).events()
        good = np.concatenate([nano.good_muons(events.Muon), nano.good_electrons(events.Electron)])
        assert 0 < good.sum() < len(good)


@pytest.mark.parametrize("version", ["v9", "v15"])
def test_toy_events_every_step_matches_the_reference(tmp_path, version):
    from hepsieve.datasets.toys.cms_hzz4l_nanoaod import generate

    generate(
        tmp_path,
        events=N_EVENTS,
        seed=5,
        datasets=["ZZTo4L", "DYJetsToLL_M-50", "VBF_HToZZTo4L"],
        version=version,
    )
    totals: dict[str, int] = {}
    for name in ("ZZTo4L_0", "DYJetsToLL_M-50_0", "VBF_HToZZTo4L_0"):
        counts = _compare(tmp_path / f"{name}.root", {"is_data": False, "triggers": TRIGGERS})
        totals = {k: totals.get(k, 0) + v for k, v in counts.items()}
    # every step removes something somewhere and leaves something: each comparison bites
    values = list(totals.values())
    assert values[-1] > 0 and values[0] > values[-1]
    assert totals["four_leptons"] < totals["golden"]


def test_hand_built_events_every_step_cuts_and_matches_the_reference(tmp_path):
    """Data-like: DoubleMuon events (DoubleEG's removed), lumi sections 9-10 outside the JSON."""
    path = _write_stress(tmp_path / "stress.root", STRESS_EVENTS, seed=11)
    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"315267": [[1, 8]]}))
    meta = {"is_data": True, "triggers": TRIGGERS, "primary_dataset": "DoubleMuon", "lumi_mask": str(golden)}
    counts = list(_compare(path, meta, STRESS_EVENTS).items())
    removed = [name for (_, before), (name, after) in itertools.pairwise(counts) if after < before]
    assert removed == [name for name, _ in counts[1:]], counts  # every step removes events here
    assert counts[-1][1] > 0


def test_cutflow_of_a_run_on_the_real_files_accounts_for_every_event(real_golden, tmp_path, monkeypatch):
    spec = {
        "tree": "Events",
        "lumi_pb": 1000.0,
        "lumi_uncertainty": 0.023,
        "metadata": {"triggers": TRIGGERS, "lumi_mask": str(real_golden)},
        "datasets": {
            "DY": {
                "files": ["nano_dy.root"],
                "metadata": {"role": "background", "xsec_pb": 6077.22, "is_data": False},
            },
            "DoubleMuon": {
                "files": ["nano_dimuon.root"],
                "metadata": {"role": "data", "is_data": True, "primary_dataset": "DoubleMuon"},
            },
        },
    }
    fileset = tmp_path / "real.json"
    fileset.write_text(json.dumps(spec))
    _real("nano_dy.root")
    config = RunConfig("cms-hzz4l-nanoaod", REAL_DATA, fileset=fileset, executor="iterative", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # coffea's, were NanoEvents built
        result = run(config)  # read flat, the collections as plain records
    monkeypatch.setattr(executors, "run_flat", lambda *a: None)
    with pytest.warns(RuntimeWarning):  # coffea on the real files' missing cross-references
        coffea = run(config)
    assert result.cutflow == coffea.cutflow
    for name, h in result.histograms.items():  # every variation and category, to the bit
        np.testing.assert_array_equal(h.view(flow=True), coffea.histograms[name].view(flow=True), name)
    for dataset, meta in (
        ("DY", {"is_data": False}),
        ("DoubleMuon", spec["datasets"]["DoubleMuon"]["metadata"]),
    ):
        steps = result.cutflow[dataset]
        assert steps["input"]["n"] == 40 == result.record.accounting[dataset]["processed"]
        path = _real("nano_dy.root" if dataset == "DY" else "nano_dimuon.root")
        expected = _compare(path, {**spec["metadata"], **meta})
        for step in nano.SELECTION:
            assert steps[step.label]["n"] == expected[step.name], step.name
    dy = result.record.datasets_meta["DY"]
    assert dy["genEventSumw"] == pytest.approx(1.51666867e10)  # the real Runs tree's genEventSumw_
    assert "Run 2 NanoAOD" in dy["looks_like"]


def test_flat_columns_are_the_lists_contents_however_the_lists_are_laid_out():
    """The buffer slice of lists by offsets, and ak.flatten for other layouts, give the same."""
    lists = ak.Array([[1.0, 2.0], [], [3.0], [4.0, 5.0, 6.0]])
    flags = ak.Array([[True], [False, True], []])
    masked = lists[ak.Array([True, False, True, True])]
    for x in (lists, lists[1:], lists[2:3], lists[[3, 0]], masked, flags[1:]):
        assert flat_values(x).tolist() == ak.to_list(ak.flatten(x)), ak.to_list(x)
    assert flat_values(lists[1:]).dtype == np.float64 and flat_values(flags).dtype == np.bool_
