"""cms-hzz4l-nanoaod through the runner: Σ genEventSumw normalisation over a dataset's files,
MC-only branches, NanoAOD versions, the golden JSON and the trigger overlap between primary
datasets (hand-built events), and the cms-hzz4l models on NanoAOD."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hepsieve.datasets.toys import cms_hzz4l_nanoaod as toy
from hepsieve.processors import (
    ConfigurationError,
    DataValueError,
    InputFileError,
    ModelCardError,
    RunConfig,
    run,
)
from hepsieve.processors.analyses import hzz4l_cms_nanoaod as nano
from hepsieve.processors.analysis import nominal

SPEC = json.loads((Path(toy.__file__).parents[1] / "fileset_specs" / "cms_hzz4l_nanoaod.json").read_text())


#: the datasets of conftest's nano_toy_dir (no pseudo-data)
MC = ["VBF_HToZZTo4L", "GluGluHToZZTo4L", "ZZTo4L", "DYJetsToLL_M-50", "TTTo2L2Nu"]


def _run(data_dir, **kw):
    kw.setdefault("executor", "iterative")
    return run(RunConfig("cms-hzz4l-nanoaod", data_dir, progress=False, **kw))


def _fileset(tmp_path: Path, datasets: dict, **top) -> Path:
    spec = {
        "tree": "Events",
        "lumi_pb": SPEC["lumi_pb"],
        "lumi_uncertainty": SPEC["lumi_uncertainty"],
        "metadata": SPEC["metadata"] | top,
        "datasets": datasets,
    }
    path = tmp_path / "fileset.json"
    path.write_text(json.dumps(spec))
    return path


# ------------------------------- normalisation -------------------------------
@pytest.fixture(scope="module")
def one_and_two_files(tmp_path_factory):
    """The same toy events of two datasets in one file each, and split over two files each."""
    base = tmp_path_factory.mktemp("split")
    one = toy.generate(base / "one", events=1200, seed=8, datasets=["VBF_HToZZTo4L", "DYJetsToLL_M-50"])
    two = toy.generate(
        base / "two", events=1200, seed=8, datasets=["VBF_HToZZTo4L", "DYJetsToLL_M-50"], files_per_dataset=2
    )
    datasets = ["VBF_HToZZTo4L", "DYJetsToLL_M-50"]
    return _run(one, datasets=datasets, models=[]), _run(two, datasets=datasets, models=[]), one, two


def test_split_dataset_gives_the_same_normalised_histograms(one_and_two_files):
    single, split, _, _ = one_and_two_files
    assert len(split.record.fileset["VBF_HToZZTo4L"]) == 2
    for name, h in single.histograms.items():
        assert np.allclose(h.values(), split.histograms[name].values(), rtol=1e-10, atol=0), name
        assert np.allclose(h.variances(), split.histograms[name].variances(), rtol=1e-10, atol=0), name
    assert nominal(single.histograms["m4l"]).sum().value > 0
    for ds in ("VBF_HToZZTo4L", "DYJetsToLL_M-50"):
        total = split.record.datasets_meta[ds]["genEventSumw"]
        per_file = [
            uproot.open(f)["Runs"]["genEventSumw"].array(library="np").sum() for f in split.record.fileset[ds]
        ]
        assert total == pytest.approx(sum(per_file), rel=1e-12) and max(per_file) < 0.7 * total


def test_weights_are_genweight_xsec_lumi_over_the_datasets_sumw(one_and_two_files):
    _, split, _, _ = one_and_two_files
    for ds in ("VBF_HToZZTo4L", "DYJetsToLL_M-50"):
        meta = split.record.datasets_meta[ds]
        gen = np.concatenate(
            [uproot.open(f)["Events"]["genWeight"].array(library="np") for f in split.record.fileset[ds]]
        ).astype(np.float64)
        expected = gen * meta["xsec_pb"] * meta.get("br", 1.0) * SPEC["lumi_pb"] / meta["genEventSumw"]
        assert split.cutflow[ds]["input"]["sumw"] == pytest.approx(expected.sum(), rel=1e-9)
        assert split.cutflow[ds]["input"]["sumw2"] == pytest.approx(np.square(expected).sum(), rel=1e-9)
    assert (gen < 0).any()  # Z+jets: signed weights stay signed


def _assert_same_normalised(result, reference, datasets=("VBF_HToZZTo4L", "DYJetsToLL_M-50")):
    """The same Σ genEventSumw per dataset and the same histograms (sums to 1e-10: other chunks)."""
    for ds in datasets:
        assert result.record.datasets_meta[ds]["genEventSumw"] == pytest.approx(
            reference.record.datasets_meta[ds]["genEventSumw"], rel=1e-12
        )
    assert result.histograms.keys() == reference.histograms.keys()
    for name, h in reference.histograms.items():
        assert np.allclose(h.values(), result.histograms[name].values(), rtol=1e-10, atol=0), name


def test_nanoaod_over_http_is_normalised_from_the_remote_runs_trees(
    one_and_two_files, file_server, tmp_path, monkeypatch
):
    _, split, _, two = one_and_two_files
    opened = _count_preflight_opens(monkeypatch)
    with file_server(two) as server:
        datasets = {
            ds: SPEC["datasets"][ds]
            | {"files": [f"{server.url}/{Path(f).name}" for f in split.record.fileset[ds]]}
            for ds in ("VBF_HToZZTo4L", "DYJetsToLL_M-50")
        }
        remote = _run(two, fileset=_fileset(tmp_path, datasets), models=[])
        assert {f for fs in remote.record.fileset.values() for f in fs} == {
            f for d in datasets.values() for f in d["files"]
        }
    _assert_same_normalised(remote, split)
    urls = [f for d in datasets.values() for f in d["files"]]
    assert sorted(opened) == sorted(urls)  # the preflight opens each URL once: checks and Runs sums


def _count_preflight_opens(monkeypatch) -> list:
    """Record every file the preflight (``datasets.filesets``) opens with uproot."""
    import uproot

    from hepsieve.datasets import filesets

    opened: list = []

    class Counting:
        def __getattr__(self, name):
            return getattr(uproot, name)

        def open(self, path, *args, **kwargs):
            opened.append(str(path))
            return uproot.open(path, *args, **kwargs)

    monkeypatch.setattr(filesets, "uproot", Counting())
    return opened


def test_coffea_preprocess_output_is_normalised_from_its_files_runs_trees(one_and_two_files, tmp_path):
    import warnings

    from coffea.dataset_tools import preprocess

    _, split, _, two = one_and_two_files
    fileset = {
        ds: {
            "files": dict.fromkeys(split.record.fileset[ds], "Events"),
            "metadata": SPEC["datasets"][ds]["metadata"]
            | {k: SPEC[k] for k in ("lumi_pb", "lumi_uncertainty")}
            | {"triggers": SPEC["metadata"]["triggers"]},  # a coffea fileset has no top-level metadata
        }
        for ds in ("VBF_HToZZTo4L", "DYJetsToLL_M-50")
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coffea's advice to use its pydantic classes
        available, _ = preprocess(fileset, step_size=250, scheduler="sync")
    path = tmp_path / "preprocessed.json"
    path.write_text(json.dumps(available, default=str))
    result = _run(two, fileset=path, models=[])
    assert all(info.get("steps") for v in available.values() for info in v["files"].values())
    _assert_same_normalised(result, split)


# ------------------------------- inputs: MC-only branches, versions -------------------------------
def _strip(src: Path, dst: Path, drop: tuple[str, ...] = (), runs: dict | None = None) -> Path:
    """Copy a toy NanoAOD file without the branches ``drop`` (and with other Runs columns)."""
    with uproot.open(src) as fin:
        events = fin["Events"].arrays(
            [b for b in fin["Events"].keys() if b not in drop and not b.startswith("n")]  # noqa: SIM118 (names)
        )
        runs = runs if runs is not None else fin["Runs"].arrays(library="np")
    columns = {name: events[name] for name in events.fields}
    groups: dict[str, dict] = {}
    for name in list(columns):
        prefix, _, field = name.partition("_")
        if field and prefix in ("Muon", "Electron", "Jet", *toy.EMPTY_COLLECTIONS):
            groups.setdefault(prefix, {})[field] = columns.pop(name)
    columns |= {prefix: ak.zip(fields) for prefix, fields in groups.items()}
    writer = toy.NanoWriter(dst, "v9")  # mktree + extend: collections as n<Name> + <Name>_<field>
    writer.extend(columns)
    writer.close(runs)
    return dst


def test_data_needs_no_mc_branches_and_mc_files_fail_naming_them(nano_toy_dir, tmp_path):
    src = nano_toy_dir / "ZZTo4L_0.root"
    _strip(src, tmp_path / "data_0.root", drop=("genWeight",), runs={"run": np.array([1], np.uint32)})
    _strip(src, tmp_path / "mc_nogen_0.root", drop=("genWeight",))
    _strip(src, tmp_path / "mc_noruns_0.root", runs={"run": np.array([1], np.uint32)})
    (tmp_path / toy.GOLDEN_JSON).write_text(json.dumps({"1": [[1, 100000]]}))
    data = {
        "files": ["data_0.root"],
        "metadata": {"is_data": True, "role": "data", "primary_dataset": "DoubleMuon"},
    }
    result = _run(tmp_path, fileset=_fileset(tmp_path, {"data": data}))
    assert (
        result.cutflow["data"]["input"]["n"] == 1500
        and "genEventSumw" not in result.record.datasets_meta["data"]
    )
    for name, missing in (("mc_nogen", "genWeight"), ("mc_noruns", "genEventSumw")):
        mc = {
            "files": [f"{name}_0.root"],
            "metadata": {"is_data": False, "role": "background", "xsec_pb": 1.0},
        }
        with pytest.raises(InputFileError, match=missing):
            _run(tmp_path, fileset=_fileset(tmp_path, {"mc": mc}))


def test_a_missing_needed_branch_is_named_with_the_files_nanoaod_version(tmp_path):
    toy.generate(tmp_path, events=200, seed=1, datasets=["ZZTo4L"], version="v15")
    _strip(tmp_path / "ZZTo4L_0.root", tmp_path / "broken_0.root", drop=("Muon_sip3d",))
    mc = {"files": ["broken_0.root"], "metadata": {"is_data": False, "role": "background", "xsec_pb": 1.0}}
    with pytest.raises(
        InputFileError, match=r"lacks branch\(es\) Muon_sip3d; the file looks like NanoAOD >= v15"
    ):
        _run(tmp_path, fileset=_fileset(tmp_path, {"mc": mc}))


def test_v15_files_run_without_jet_id_and_say_so(tmp_path):
    toy.generate(tmp_path, events=400, seed=6, datasets=["VBF_HToZZTo4L"], version="v15")
    result = _run(tmp_path, datasets=["VBF_HToZZTo4L"], models=[])
    meta = result.record.datasets_meta["VBF_HToZZTo4L"]
    assert meta["looks_like"] == "NanoAOD >= v15 (PFMET_*, no Jet_jetId (jets taken without ID))"
    assert sum(result.cutflow["VBF_HToZZTo4L"][f"category {c}"]["n"] for c in nano.VBF_CATEGORIES) > 0


# ------------------------------- data: golden JSON, trigger overlap -------------------------------
def _lepton(pt, eta, phi, charge, **kw) -> dict:
    return {"pt": pt, "eta": eta, "phi": phi, "charge": charge, "mass": 0.1057, "dxy": 0.001, "dz": 0.002,
            "sip3d": 1.0, "pfRelIso04_all": 0.05, "looseId": True, **kw}  # fmt: skip


#: a clean 4mu event (Z1 ~ 91, Z2 ~ 30 GeV), every selection step passed
GOOD_4MU = [
    _lepton(50, 0.1, 0.2, 1),
    _lepton(45, -0.4, 2.9, -1),
    _lepton(25, 1.2, -1.5, 1),
    _lepton(15, 0.6, -2.4, -1),
]


def _hand_built(path: Path, ids: list[tuple[int, int, int]], fired: dict[str, list[bool]]) -> Path:
    """Data events: the same good 4mu event with given (run, lumi, event) and HLT decisions."""
    n = len(ids)
    columns = {
        "run": [i[0] for i in ids],
        "luminosityBlock": [i[1] for i in ids],
        "event": [i[2] for i in ids],
        "Muon": ak.Array([GOOD_4MU] * n),
        "Electron": _empty_electrons(n),
        "Jet": ak.Array([[{"pt": 40.0, "eta": 3.0, "phi": 1.0, "mass": 5.0, "jetId": 6}]] * n),
    }
    for pd, paths in SPEC["metadata"]["triggers"].items():
        columns |= {p: np.asarray(fired.get(pd, [False] * n)) for p in paths}
    return toy.write_nanoaod(path, columns, {"run": np.unique([i[0] for i in ids]).astype(np.uint32)})


def _empty_electrons(n: int) -> ak.Array:
    fields = {f: ak.unflatten(np.zeros(0, "f4"), np.zeros(n, np.int64)) for f in nano.ELECTRON_FIELDS}
    return ak.zip(fields)


def test_golden_json_keeps_exactly_the_certified_lumi_sections(tmp_path):
    ids = [(297050, 1, 1), (297050, 80, 2), (297050, 81, 3), (297050, 90, 4), (297050, 91, 5), (297051, 5, 6),
           (297999, 1, 7)]  # fmt: skip
    _hand_built(tmp_path / "DoubleMuon_0.root", ids, {"DoubleMuon": [True] * len(ids)})
    (tmp_path / "golden.json").write_text(json.dumps({"297050": [[1, 80], [91, 200]], "297051": [[1, 4]]}))
    data = {
        "files": ["DoubleMuon_0.root"],
        "metadata": {"is_data": True, "role": "data", "primary_dataset": "DoubleMuon"},
    }
    result = _run(tmp_path, fileset=_fileset(tmp_path, {"DoubleMuon": data}, lumi_mask="golden.json"))
    steps = result.cutflow["DoubleMuon"]
    assert steps["input"]["n"] == 7 and steps["golden JSON (data)"]["n"] == 3  # lumis 1, 80, 91 of run 297050
    assert steps[nano.SELECTION[-1].label]["n"] == 3  # the rest of the selection keeps the good event
    with pytest.raises(ConfigurationError, match=r"metadata 'lumi_mask': file .*nowhere\.json not found"):
        _run(tmp_path, fileset=_fileset(tmp_path, {"DoubleMuon": data}, lumi_mask="nowhere.json"))


def test_golden_json_lookup_agrees_with_coffea_lumimask(tmp_path):
    # the numpy lookup replaces coffea's LumiMask (whose import compiles numba kernels for 6 s):
    # the same pairs pass, at range edges, lumi section 0, unsorted runs and runs not in the JSON
    from coffea.lumi_tools import LumiMask

    golden = {"297050": [[1, 80], [91, 200]], "297051": [[1, 4]], "297100": [[0, 3], [5, 5], [7, 100]]}
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(golden))
    rng = np.random.default_rng(3)
    runs = rng.choice([297049, 297050, 297051, 297100, 297101], 20_000).astype(np.uint32)
    lumis = rng.integers(0, 210, 20_000).astype(np.uint32)
    expected = LumiMask(str(path))(runs, lumis)
    assert 0 < expected.sum() < len(runs)
    np.testing.assert_array_equal(nano.lumi_mask(str(path), runs, lumis), expected)


def test_an_event_in_two_primary_datasets_is_counted_once(tmp_path):
    # events 1, 2 fire DoubleEG and DoubleMuon paths (so they are in both files); 3 only DoubleMuon;
    # 4 only DoubleEG; 5 DoubleMuon and MuonEG (so it is in both of those files)
    doubleeg = [(297050, 1, 1), (297050, 1, 2), (297050, 1, 4)]
    doublemu = [(297050, 1, 1), (297050, 1, 2), (297050, 1, 3), (297050, 1, 5)]
    muoneg = [(297050, 1, 5)]
    _hand_built(
        tmp_path / "DoubleEG_0.root", doubleeg, {"DoubleEG": [True] * 3, "DoubleMuon": [True, True, False]}
    )
    fired = {"DoubleEG": [True, True, False, False], "DoubleMuon": [True] * 4, "MuonEG": [False] * 3 + [True]}
    _hand_built(tmp_path / "DoubleMuon_0.root", doublemu, fired)
    _hand_built(tmp_path / "MuonEG_0.root", muoneg, {"DoubleMuon": [True], "MuonEG": [True]})
    (tmp_path / "golden.json").write_text(json.dumps({"297050": [[1, 10]]}))
    datasets = {
        pd: {"files": [f"{pd}_0.root"], "metadata": {"is_data": True, "role": "data", "primary_dataset": pd}}
        for pd in ("DoubleEG", "DoubleMuon", "MuonEG")
    }
    result = _run(tmp_path, fileset=_fileset(tmp_path, datasets, lumi_mask="golden.json"))
    passed = {pd: result.cutflow[pd]["HLT (primary-dataset overlap removed)"]["n"] for pd in datasets}
    assert passed == {"DoubleEG": 3, "DoubleMuon": 2, "MuonEG": 0}  # 1, 2, 4 | 3, 5 | -
    assert sum(passed.values()) == len(set(doubleeg + doublemu + muoneg))
    assert nominal(result.histograms["m4l"]).sum().value == 5  # MuonEG: no event, not on the axis
    bad = {"DoubleEG": {**datasets["DoubleEG"], "metadata": {"is_data": True, "role": "data"}}}
    with pytest.raises(ConfigurationError, match="primary_dataset"):
        _run(tmp_path, fileset=_fileset(tmp_path, bad, lumi_mask="golden.json"))


# ------------------------------- models: the reduced-ntuple ones on NanoAOD -------------------------------
@pytest.fixture(scope="module")
def nano_scored(nano_toy_dir):
    """A histograms run of the NanoAOD toy with the shipped cms-hzz4l models (the default)."""
    return _run(nano_toy_dir, datasets=MC)


def test_the_reduced_ntuple_models_score_the_nanoaod_vbf_category(nano_scored):
    from hepsieve.processors.metrics import roc_from_counts

    models = nano_scored.record.models
    assert set(models) == {"mlp", "rf"} and all("cms_hzz4l" in m["card"] for m in models.values())
    h = nominal(nano_scored.histograms["score_mlp"])
    sig = sum(h[{"dataset": "VBF_HToZZTo4L", "category": c}].values() for c in nano.VBF_CATEGORIES)
    bkg = sum(
        h[{"dataset": d, "category": c}].values()
        for d in ("GluGluHToZZTo4L", "ZZTo4L")
        for c in nano.VBF_CATEGORIES
    )
    _, _, auc = roc_from_counts(sig, bkg)
    assert auc > 0.85, auc  # a model trained on reduced-ntuple toys separates VBF on NanoAOD
    for c in nano.CATEGORIES:
        assert h[{"dataset": "VBF_HToZZTo4L", "category": c}].sum().value == 0 or c.startswith("vbf")


def test_the_same_events_in_both_formats_give_the_same_scores(nano_toy_dir, nano_scored, tmp_path):
    fileset = toy.write_reduced(
        nano_toy_dir, tmp_path, datasets=["VBF_HToZZTo4L", "GluGluHToZZTo4L", "ZZTo4L"]
    )
    reduced = run(RunConfig("cms-hzz4l", tmp_path, fileset=fileset, executor="iterative", progress=False))
    for ds in ("VBF_HToZZTo4L", "GluGluHToZZTo4L", "ZZTo4L"):
        n_selected = nano_scored.cutflow[ds][nano.SELECTION[-1].label]["n"]
        assert reduced.cutflow[ds]["input"]["n"] == n_selected > 0
        for model in ("mlp", "rf"):
            h_red = reduced.histograms[f"score_{model}"][
                {"dataset": ds, "category": "vbf", "variation": "nominal"}
            ]
            h_nano = sum(
                nano_scored.histograms[f"score_{model}"][
                    {"dataset": ds, "category": c, "variation": "nominal"}
                ]
                for c in nano.VBF_CATEGORIES
            )
            assert h_red.sum().value > 0
            assert np.allclose(h_red.values(), h_nano.values(), rtol=1e-6)  # f_weight is float32 there
            counts_red = h_red.values() ** 2 / np.where(h_red.variances() > 0, h_red.variances(), 1)
            counts_nano = h_nano.values() ** 2 / np.where(h_nano.variances() > 0, h_nano.variances(), 1)
            assert np.allclose(counts_red, counts_nano, rtol=1e-4)


def test_cards_of_other_analyses_are_refused_and_units_are_checked(nano_toy_dir, tmp_path):
    from hepsieve.models.scorer import MODELS_DIR

    with pytest.raises(
        ModelCardError,
        match=r"is for analysis 'atlas-hzz4l'.*applies models of 'cms-hzz4l-nanoaod', 'cms-hzz4l'",
    ):
        _run(nano_toy_dir, models_dir=MODELS_DIR / "atlas_hzz4l", datasets=["VBF_HToZZTo4L"])
    card = json.loads((MODELS_DIR / "cms_hzz4l" / "mlp.json").read_text())
    card["features"][0]["unit"] = "TeV"
    (tmp_path / "mlp.json").write_text(json.dumps(card))
    for f in card["folds"]:
        (tmp_path / f["file"]).write_bytes((MODELS_DIR / "cms_hzz4l" / f["file"]).read_bytes())
    with pytest.raises(ModelCardError, match="feature units differ: f_massjj 'TeV' vs 'GeV'"):
        _run(nano_toy_dir, models_dir=tmp_path, datasets=["VBF_HToZZTo4L"])


def test_features_export_train_and_evaluate_on_nanoaod(nano_toy_dir, tmp_path):
    from hepsieve.training.evaluate import evaluate
    from hepsieve.training.train import train

    out = tmp_path / "features"
    datasets = ["VBF_HToZZTo4L", "GluGluHToZZTo4L", "ZZTo4L"]
    result = _run(nano_toy_dir, out_dir=out, mode="features", datasets=datasets)
    for ds in datasets:  # every event of the scored categories exported once
        scored = sum(result.cutflow[ds][f"category {c}"]["n"] for c in nano.VBF_CATEGORIES)
        assert sum(f["events"] for f in result.record.feature_files[ds]) == scored > 0
    card = train(
        "cms-hzz4l-nanoaod", out / "features", "mlp", tmp_path / "models", progress=False, hyper={"epochs": 6}
    )
    assert json.loads(Path(card).read_text())["analysis"] == "cms-hzz4l-nanoaod"
    metrics = evaluate("cms-hzz4l-nanoaod", out / "features", tmp_path / "models", tmp_path / "evaluation")
    assert metrics["models"]["mlp"]["auc_test"] > 0.8


# ------------------------------- variations: generator, pile-up, lumi, lepton scale ---------------
def _hand_built_mc(path: Path, rng, n: int, extra: dict) -> np.ndarray:
    """Simulated copies of the good 4mu event with random signed genWeights; return them."""
    (path.parent / toy.GOLDEN_JSON).write_text(json.dumps(toy.golden_json()))  # the fileset names it
    gen = rng.normal(1.0, 0.5, n).astype(np.float32)
    columns = {
        "run": [1] * n,
        "luminosityBlock": [1] * n,
        "event": list(range(n)),
        "Muon": ak.Array([GOOD_4MU] * n),
        "Electron": _empty_electrons(n),
        "Jet": ak.Array([[{"pt": 40.0, "eta": 3.0, "phi": 1.0, "mass": 5.0, "jetId": 6}]] * n),
        "genWeight": gen,
        **{p: np.ones(n, bool) for paths in SPEC["metadata"]["triggers"].values() for p in paths},
        **extra,
    }
    toy.write_nanoaod(path, columns, {"run": np.array([1], np.uint32), "genEventSumw": [2.0 * n]})
    return gen.astype(np.float64)


def _ragged(rng, lengths: list[int]) -> ak.Array:
    return ak.Array([rng.uniform(0.5, 1.5, k).astype(np.float32) for k in lengths])


def test_generator_and_pileup_weight_variations_are_the_files_weights(tmp_path):
    rng = np.random.default_rng(3)
    lengths = [9, 8] * 10  # NanoAOD writes 9 scale weights, or 8 without the nominal [4]
    scale, ps = _ragged(rng, lengths), _ragged(rng, [4] * 20)
    pu = {k: rng.uniform(0.5, 1.5, 20).astype(np.float32) for k in ("puWeight", "puWeightUp", "puWeightDown")}
    gen = _hand_built_mc(tmp_path / "with_0.root", rng, 20, {"LHEScaleWeight": scale, "PSWeight": ps, **pu})
    gen_none = _hand_built_mc(tmp_path / "without_0.root", rng, 5, {})
    meta = {"is_data": False, "role": "background", "xsec_pb": 2.0, "lumi_uncertainty": 0.025}
    datasets = {ds: {"files": [f"{ds}_0.root"], "metadata": meta} for ds in ("with", "without")}
    result = _run(tmp_path, fileset=_fileset(tmp_path, datasets))
    h = result.histograms["m4l"]

    def total(ds, variation):
        return h[{"dataset": ds, "variation": variation}].sum(flow=True).value

    w_nominal = gen * pu["puWeight"] * 2.0 * SPEC["lumi_pb"] / 40.0  # puWeight is part of the nominal
    assert total("with", "nominal") == pytest.approx(w_nominal.sum(), rel=1e-9)
    nine = np.array(lengths) == 9
    # the branch titles: [k] is muR x muF in {0.5, 1, 2}^2 row-major (8 weights: [4] left out);
    # PSWeight [0] ISR=0.5, [1] FSR=0.5, [2] ISR=2, [3] FSR=2
    where = {"muRUp": (7, 6), "muRDown": (1, 1), "muFUp": (5, 4), "muFDown": (3, 3)}
    rows = ak.to_list(scale)
    col = {k: np.array([w[i if nine[j] else i8] for j, w in enumerate(rows)]) for k, (i, i8) in where.items()}
    col |= {
        f"{v}{d}": ak.to_numpy(ps[:, i])
        for v, d, i in (("isr", "Up", 2), ("isr", "Down", 0), ("fsr", "Up", 3), ("fsr", "Down", 1))
    }
    col |= {f"pileup{d}": pu[f"puWeight{d}"] / pu["puWeight"] for d in ("Up", "Down")}
    col |= {"lumiUp": np.full(20, 1.025), "lumiDown": np.full(20, 0.975)}
    for variation, factor in col.items():
        assert total("with", variation) == pytest.approx((w_nominal * factor).sum(), rel=1e-6), variation
        expected_none = 1.0 + {"lumiUp": 0.025, "lumiDown": -0.025}.get(variation, 0.0)
        assert total("without", variation) == pytest.approx(
            total("without", "nominal") * expected_none, rel=1e-9
        )
    assert total("without", "nominal") == pytest.approx(
        gen_none.sum() * 2.0 * SPEC["lumi_pb"] / 10.0, rel=1e-9
    )
    assert result.cutflow["with"]["input"]["sumw"] == pytest.approx(w_nominal.sum(), rel=1e-9)  # nominal


def test_an_unexpected_number_of_generator_weights_is_an_error_naming_the_branch(tmp_path):
    rng = np.random.default_rng(4)
    _hand_built_mc(tmp_path / "odd_0.root", rng, 4, {"PSWeight": _ragged(rng, [4, 4, 5, 4])})
    meta = {"is_data": False, "role": "background", "xsec_pb": 2.0, "lumi_uncertainty": 0.025}
    with pytest.raises(DataValueError, match="PSWeight has 5 weights per event; the isr variation reads 4"):
        _run(tmp_path, fileset=_fileset(tmp_path, {"odd": {"files": ["odd_0.root"], "metadata": meta}}))


def test_lepton_scale_moves_each_channels_m4l_by_its_scale(nano_toy_dir):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    path = str(nano_toy_dir / "VBF_HToZZTo4L_0.root")
    events = NanoEventsFactory.from_root({path: "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
    nom = nano.objects(events)
    for direction in (+1, -1):
        _, varied = nano.lepton_scale(events, nom, {}, direction)
        both = np.isfinite(nom.best["m4l"]) & np.isfinite(varied.best["m4l"])
        same_leptons = both & (varied.best["lep4_eta"] == nom.best["lep4_eta"])
        ratio = varied.best["m4l"][same_leptons] / nom.best["m4l"][same_leptons]
        for code, delta in ((52, nano.LEPTON_SCALE[13]), (44, nano.LEPTON_SCALE[11])):
            rows = nom.best["sum_pdg"][same_leptons] == code
            assert rows.sum() > 20
            np.testing.assert_allclose(
                ratio[rows], 1 + direction * delta, rtol=2e-6
            )  # massive leptons: ~1e-7
        mixed = nom.best["sum_pdg"][same_leptons] == 48
        assert np.all((ratio[mixed] - 1) * direction > nano.LEPTON_SCALE[13] * 0.99)
        assert np.all((ratio[mixed] - 1) * direction < nano.LEPTON_SCALE[11] * 1.01)
    assert np.array_equal(nom.flags["four_leptons"], nano.objects(events).flags["four_leptons"])


def test_lepton_scale_histograms_in_a_run_and_the_cutflow_stays_nominal(nano_scored):
    h = nano_scored.histograms["m4l"][{"dataset": "VBF_HToZZTo4L"}]
    names = list(nano_scored.histograms["m4l"].axes["variation"])
    assert {"lepton_scaleUp", "lepton_scaleDown", "muRUp", "pileupDown", "lumiUp"} <= set(names)
    centers = h.axes[-1].centers

    def mean(variation):
        values = h[{"variation": variation}].project(h.axes[-1].name).values()
        return np.sum(values * centers) / np.sum(values)

    assert mean("lepton_scaleDown") < mean("nominal") < mean("lepton_scaleUp")
    n_cat = sum(nano_scored.cutflow["VBF_HToZZTo4L"][f"category {c}"]["n"] for c in nano.CATEGORIES)
    assert h[{"variation": "nominal"}].sum().value == pytest.approx(
        sum(nano_scored.cutflow["VBF_HToZZTo4L"][f"category {c}"]["sumw"] for c in nano.CATEGORIES), rel=1e-9
    )
    assert n_cat > 0


def test_the_toys_generator_weights_vary_the_simulation_only(nano_toy_dir, nano_scored):
    # the toy's LHEScaleWeight / PSWeight (issue 12): muR = 2 lowers the rate (log-slope < 0 per
    # production), the shower weights move each event by a few per cent either way
    h = nano_scored.histograms["m4l"]
    for dataset in ("ZZTo4L", "TTTo2L2Nu"):
        rate = {v: h[{"dataset": dataset, "variation": v}].sum(flow=True).value for v in h.axes["variation"]}
        assert rate["muRUp"] < rate["nominal"] < rate["muRDown"]
        assert rate["muFUp"] < rate["nominal"] < rate["muFDown"]
        assert 0.85 < rate["muRUp"] / rate["nominal"] < 0.999
        for shower in ("isrUp", "isrDown", "fsrUp", "fsrDown"):
            assert rate[shower] != rate["nominal"] and abs(rate[shower] / rate["nominal"] - 1) < 0.05
    with uproot.open(nano_toy_dir / "ZZTo4L_0.root") as fin:
        scale = fin["Events"]["LHEScaleWeight"].array()
    assert set(ak.num(scale).to_numpy()) == {9} and ak.all(scale[:, 4] == 1)


def test_bench_runs_nanoaod_beside_the_io_floor_of_the_branches_read(nano_toy_dir, tmp_path):
    from hepsieve.processors.bench import bench

    toy_dir = toy.generate(tmp_path / "toy", events=300, seed=2)  # every dataset: bench reads them all
    report = bench("cms-hzz4l-nanoaod", toy_dir, tmp_path / "bench", ["iterative"], workers=1, chunksize=4000,
                   model_names=["mlp"], repeat=1)  # fmt: skip
    rows = report["results"]
    name = next(n for n in rows if n.startswith("I/O floor"))
    io = rows[name]
    # the analysis' branches, genWeight, every HLT path of the trigger table, Jet_jetId (v9),
    # the toy's generator weights with their counters (nLHEScaleWeight, LHEScaleWeight, nPSWeight, PSWeight)
    triggers = sum(len(p) for p in SPEC["metadata"]["triggers"].values())
    n_read = len(nano.BRANCHES) + 1 + triggers + 1 + 2 * len(nano.GENERATOR_WEIGHTS)
    # data: no genWeight or generator weights, the HLT paths of its own and earlier primary
    # datasets only (the first, DoubleEG, reads the fewest)
    first = SPEC["metadata"] | {"is_data": True, "primary_dataset": next(iter(SPEC["metadata"]["triggers"]))}
    n_data = len(nano.BRANCHES) + sum(len(p) for p in nano.trigger_paths(first).values()) + 1
    assert f"uproot read of the {n_data}–{n_read} branches, 1 process(es)" in name
    total = sum(uproot.open(f)["Events"].num_entries for f in toy_dir.glob("*.root"))
    assert io["events"] == rows["hepsieve iterative, 1 worker(s)"]["events"] == total
    # plain collections: hepsieve's chunk code runs on uproot's arrays without coffea, too
    assert rows["bare loop: uproot.iterate + hepsieve's chunk code, 1 process"]["events"] == total
    assert io["events_per_s"] > 0


def test_simulation_without_a_trigger_table_runs_untriggered_and_says_so(caplog):
    with caplog.at_level("WARNING"):
        assert nano.dataset_branches({"is_data": False, "process": "zz"}) == {}
    assert "process zz" in caplog.text and "no HLT requirement" in caplog.text
    caplog.clear()
    nano.dataset_branches({"is_data": False, "triggers": SPEC["metadata"]["triggers"]})
    assert caplog.text == ""


def test_a_run_says_it_is_untriggered_once_not_per_chunk(nano_toy_dir, tmp_path, caplog, monkeypatch):
    from hepsieve.processors import chunkread

    reads, read_flat = [], chunkread.read_flat
    monkeypatch.setattr(chunkread, "read_flat", lambda *a: reads.append(a[0]) or read_flat(*a))
    spec = json.loads(json.dumps(SPEC))
    del spec["metadata"]["triggers"]
    spec["datasets"] = {"ZZTo4L": spec["datasets"]["ZZTo4L"]}
    fileset = tmp_path / "untriggered.json"
    fileset.write_text(json.dumps(spec))
    with caplog.at_level("WARNING"):
        result = run(RunConfig("cms-hzz4l-nanoaod", nano_toy_dir, fileset=fileset, executor="iterative",
                               chunksize=300, progress=False))  # fmt: skip
    assert len(reads) >= 4 and result.record.accounting["ZZTo4L"]["processed"] == 1500  # NANO_EVENTS
    # the input check's warning, and the flat read's first chunk (once per process and dataset)
    assert caplog.text.count("no HLT requirement applied") == 2


def test_a_run_has_its_workers_start_numba_for_the_analysis_kernels(nano_toy_dir, monkeypatch):
    """The executor is told (its workers then start numba before their first chunk)."""
    from hepsieve.processors import runner

    seen, started_early = [], runner.started_early
    monkeypatch.setattr(runner, "started_early", lambda *a, **kw: seen.append(kw) or started_early(*a, **kw))
    _run(nano_toy_dir, datasets=["ZZTo4L"], models=[], maxchunks=1)
    assert [kw["numba"] for kw in seen] == [True]
