"""The CMS processor: accounting, categories, histogram sums, outputs, executors, bad input."""

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

from hepsieve.datasets import load_fileset_spec
from hepsieve.processors import HepsieveWarning, InputFileError, ModelCardError
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.analyses.hzz4l_cms import TREE
from hepsieve.processors.executors import make_executor
from hepsieve.processors.processor import AnalysisProcessor
from hepsieve.processors.provenance import peak_rss_mb
from hepsieve.processors.runner import metadata_cache

TOY_EVENTS = 3000  # the conftest's CMS toy size


@pytest.fixture(scope="module")
def hist_run(run_cms, cms_toy_dir, cms_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("cms_hists")
    return run_cms(cms_toy_dir, out, models_dir=cms_models, chunksize=2000), out


def test_cutflow_first_step_equals_entries(hist_run, cms_toy_dir):
    _result, out = hist_run
    cutflow = json.loads((out / "cutflow.json").read_text())
    for dataset, entry in load_fileset_spec("cms-hzz4l")["datasets"].items():
        n = uproot.open(cms_toy_dir / entry["files"][0])[TREE].num_entries
        assert cutflow[dataset]["input"]["n"] == n == TOY_EVENTS
        steps = cutflow[dataset]
        assert (
            steps["category vbf"]["n"] + steps["category untagged"]["n"]
            == steps["Z1 in 40-120, Z2 in 12-120 GeV"]["n"]
        )


def _selected(events):
    """The cms-hzz4l selection written out (a -999 Z mass fails the Z1 window)."""
    z1, z2 = events["f_Z1mass"], events["f_Z2mass"]
    return (events["f_mass4l"] > 70) & (z1 > 40) & (z1 < 120) & (z2 > 12) & (z2 < 120)


def test_untagged_category_keeps_events_without_two_jets(hist_run, cms_toy_dir):
    result, _ = hist_run
    events = uproot.open(cms_toy_dir / "GluGluHToZZTo4mu.root")[TREE].arrays(library="np")
    # the toy also holds events that fail the selection (as it should: each step is tested)
    no_two_jets = (events["f_jet2_pt"] == -999) & _selected(events)
    assert 0 < no_two_jets.sum() < (events["f_jet2_pt"] == -999).sum()
    steps = result.cutflow["GluGluHToZZTo4mu"]
    assert steps["category untagged"]["n"] == no_two_jets.sum()
    assert steps["category untagged"]["sumw"] == pytest.approx(
        events["f_weight"][no_two_jets].astype(float).sum(), rel=1e-9
    )


def test_histogram_sums_equal_selected_weights(hist_run, cms_toy_dir):
    result, _ = hist_run
    h = result.histograms["m4l"]
    for dataset in ("VBF_HToZZTo4e", "ZZTo4mu"):
        events = uproot.open(cms_toy_dir / f"{dataset}.root")[TREE].arrays(library="np")
        sel = _selected(events)
        w = events["f_weight"][sel].astype(float)
        in_range = events["f_mass4l"][sel] < 400  # the rest sits in the overflow bin
        total = h[{"dataset": dataset, "variation": "nominal"}].sum(flow=True)
        assert total.value == pytest.approx(w.sum(), rel=1e-9)
        assert h[{"dataset": dataset, "variation": "nominal"}].sum().value == pytest.approx(
            w[in_range].sum(), rel=1e-9
        )
        vbf = events["f_jet2_pt"][sel] != -999
        score = result.histograms["score_mlp"][
            {"dataset": dataset, "category": "vbf", "variation": "nominal"}
        ]
        assert score.sum(flow=True).value == pytest.approx(w[vbf].sum(), rel=1e-9)


def test_score_cut_histogram_is_subset(hist_run):
    result, _ = hist_run
    all_vbf = result.histograms["m4l"][{"category": "vbf", "variation": "nominal"}].sum(flow=True).value
    passed = (
        result.histograms["m4l_mlp_pass"][{"category": "vbf", "variation": "nominal"}].sum(flow=True).value
    )
    assert 0 < passed < all_vbf


def test_root_file_matches_hist_contents(hist_run):
    _result, out = hist_run
    with Path(out / "histograms.pkl").open("rb") as fin:
        stored = pickle.load(fin)
    with uproot.open(out / "histograms.root") as fin:
        for name in ("m4l", "score_rf", "mjj"):
            for dataset in ("VBF_HToZZTo4mu", "ZZTo4e"):
                h = stored[name][{"dataset": dataset, "category": "vbf", "variation": "nominal"}]
                th1 = fin[f"{name}/vbf/{dataset}"]
                np.testing.assert_allclose(th1.values(), h.values(), rtol=1e-12)
                np.testing.assert_allclose(th1.variances(), h.variances(), rtol=1e-12)
                np.testing.assert_allclose(th1.axis().edges(), h.axes[0].edges)


def test_run_json_provenance(hist_run):
    _, out = hist_run
    prov = json.loads((out / "run.json").read_text())
    assert prov["is_toy"] is True
    assert prov["events"] == 7 * TOY_EVENTS
    assert prov["events_per_s"] > 0
    assert set(prov["models"]) == {"mlp", "rf"}
    assert all(len(m["onnx_sha256"]) == 2 for m in prov["models"].values())
    assert prov["versions"]["coffea"] and len(prov["fileset_sha256"]) == 64


def _summary(result):
    counts = {k: h.values(flow=True) for k, h in result.histograms.items()}
    return result.cutflow, counts


@pytest.mark.parametrize(("executor", "chunksize"), [("iterative", 700), ("futures", 2000), ("dask", 1500)])
def test_executors_and_chunksizes_agree(
    run_cms, hist_run, cms_toy_dir, cms_models, tmp_path, executor, chunksize, capsys
):
    reference, _ = hist_run  # iterative, chunksize 2000
    result = run_cms(
        cms_toy_dir, tmp_path, models_dir=cms_models, executor=executor, workers=2, chunksize=chunksize
    )
    assert "Processing" not in capsys.readouterr().out  # progress=False: no progress bars
    ref_cutflow, ref_counts = _summary(reference)
    cutflow, counts = _summary(result)
    assert cutflow.keys() == ref_cutflow.keys()
    for dataset, steps in ref_cutflow.items():
        for step, v in steps.items():
            assert cutflow[dataset][step]["n"] == v["n"]
            assert cutflow[dataset][step]["sumw"] == pytest.approx(v["sumw"], rel=1e-9)
    for name, h in reference.histograms.items():
        other = result.histograms[name]
        for dataset in h.axes["dataset"]:
            a, b = (
                h[{"dataset": dataset, "variation": "nominal"}].view(flow=True),
                other[{"dataset": dataset, "variation": "nominal"}].view(flow=True),
            )
            np.testing.assert_allclose(b["value"], a["value"], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(b["variance"], a["variance"], rtol=1e-9, atol=1e-14)
    # unweighted counts are exact: refill-free check via the cutflow of the scored category
    assert counts.keys() == ref_counts.keys()


def test_local_dask_and_futures_workers_are_tuned_and_warmed():
    def worker_state():
        import os
        import sys

        return (
            {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")},
            "hepsieve.models.scorer" in sys.modules,
        )

    with make_executor("dask", 1, None, progress=False) as ex:
        states = list(ex.client.run(worker_state).values())
    assert states == [({"MALLOC_TRIM_THRESHOLD_": None, "MALLOC_MMAP_THRESHOLD_": None}, True)]
    with make_executor("futures", 2, None, progress=False) as ex:  # started before the run
        assert len(ex.pool._pool._processes) == 2


@pytest.mark.skipif(sys.platform != "linux", reason="forked dask workers are used on Linux only")
def test_local_dask_workers_are_forked_with_this_process_imports(monkeypatch):
    import dask
    from distributed import versions

    from hepsieve.processors import executors

    def probe():
        return getattr(sys.modules["hepsieve.processors.executors"], "_fork_probe", None)

    # a forked worker sees this process' state, a spawned one a fresh import of the module
    monkeypatch.setattr(executors, "_fork_probe", 42, raising=False)
    with make_executor("dask", 1, None, progress=False) as ex:
        assert list(ex.client.run(probe).values()) == [42]
        # no process of the local cluster reports pandas, so none imports it; no mismatch
        reported = ex.client.get_versions(check=True)
        processes = [reported["scheduler"], reported["client"], *reported["workers"].values()]
        assert all("pandas" not in p["packages"] and "numpy" in p["packages"] for p in processes)
    # restored for a later cluster of other machines, which compares pandas again
    assert "pandas" in dict(versions.optional_packages)
    # a dask configuration naming another start method is kept
    method = "distributed.worker.multiprocessing-method"
    with dask.config.set({method: "forkserver"}), executors._local_dask_config():
        assert dask.config.get(method) == "forkserver"
        assert "pandas" in dict(versions.optional_packages)


WARM_RUN = """
import sys
import dask
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.executors import make_executor
# numba's compiler has started in a process: its first compile or cache load imports its
# lowering modules (and the extensions' entry points: 0.55 s); coffea's import of numba does not
STATE = "'numba.core.boxing' in __import__('sys').modules"
numba = get_analysis(sys.argv[1]).numba_kernels
with dask.config.set({"distributed.worker.multiprocessing-method": sys.argv[2]}):
    with make_executor("dask", 1, None, progress=False, numba=numba) as ex:
        dask_worker = list(ex.client.run(eval, STATE).values())
with make_executor("futures", 1, None, progress=False, numba=numba) as ex:
    futures_worker = ex.pool.submit(eval, STATE).result()
main = eval(STATE)
with make_executor("iterative", 1, None, progress=False, numba=numba):  # runs chunks in this process
    iterative = eval(STATE)
print(dask_worker, futures_worker, main, iterative)
"""


@pytest.mark.parametrize(
    ("analysis", "method", "expected"),
    [
        # dask's default start method (spawn): hepsieve forks the workers, started once before
        ("cms-hzz4l-nanoaod", "spawn", "[True] True True True"),
        ("cms-hzz4l-nanoaod", "forkserver", "[True] True False True"),  # started in each worker
        ("atlas-hzz4l", "forkserver", "[True] True False True"),
        ("higgs-uci", "spawn", "[False] False False False"),  # an analysis without kernels: not started
    ],
)
def test_workers_start_numba_before_their_first_chunk_when_the_analysis_uses_it(analysis, method, expected):
    """numba's first call costs ~0.55 s per process: paid as the workers start, not in a chunk."""
    out = subprocess.run(
        [sys.executable, "-c", WARM_RUN, analysis, method], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected


LOCAL_DASK_RUN = """
import sys
from hepsieve.processors.executors import make_executor
with make_executor("dask", 1, None, progress=False) as ex:
    out, _ = ex([1, 2, 3], lambda x: {"n": x}, {})  # coffea's DaskExecutor: import dask.dataframe
    worker = list(ex.client.run(lambda: "pandas" in sys.modules).values())
print(out["n"], worker, "pandas" in sys.modules, "dask.dataframe.dask_expr" in sys.modules)
"""


def test_a_local_dask_run_imports_neither_pandas_nor_dask_dataframe():
    """The two imports were 0.4 s and 0.5-0.8 s of a run's start; dask.dataframe still loads when used."""
    out = subprocess.run([sys.executable, "-c", LOCAL_DASK_RUN], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["6", "[False]", "False", "False"]
    use = 'import dask.dataframe; print(dask.dataframe.from_pandas.__name__, out["n"]'
    used = LOCAL_DASK_RUN.replace('print(out["n"]', use)
    out = subprocess.run([sys.executable, "-c", used], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["from_pandas", "6", "[False]", "True", "True"]


def test_preflight_gives_coffea_its_file_metadata(
    run_cms, hist_run, cms_toy_dir, cms_models, higgs_toy_dir, tmp_path, monkeypatch
):
    from coffea.processor import Runner

    from hepsieve.datasets import resolve_fileset

    def resolve(name, data_dir):
        return resolve_fileset(load_fileset_spec(name), data_dir, get_analysis(name).inputs)

    resolved = resolve("cms-hzz4l", cms_toy_dir)
    # TTrees: the needed branches are read in one pass per chunk; RNTuples: column by column
    assert {tuple(v["preload"]) for v in resolved.fileset.values()} == {
        tuple(get_analysis("cms-hzz4l").inputs.required(is_data=False))
    }
    # the HIGGS chunks are TTrees too now (written in 100k-entry baskets)
    assert {tuple(v["preload"]) for v in resolve("higgs-uci", higgs_toy_dir).fileset.values()} == {
        tuple(get_analysis("higgs-uci").inputs.required(is_data=False))
    }
    cache = metadata_cache(resolved, TREE)
    assert len(cache) == sum(len(v["files"]) for v in resolved.fileset.values()) > 1
    for item, meta in cache.items():  # what coffea's own preprocessing would have found
        fetched = Runner.metadata_fetcher_root(60, True, {}, item).pop()  # with the clusters
        assert meta.pop("filesize") == Path(item.filename).stat().st_size  # for the checkpoint key
        assert meta == fetched.metadata | resolved.fileset[item.dataset]["metadata"]
    # and it does not run: a run with the metadata fetcher broken gives the same cutflow
    monkeypatch.setattr(Runner, "metadata_fetcher_root", None)
    result = run_cms(cms_toy_dir, tmp_path, models_dir=cms_models, chunksize=2000)
    assert result.cutflow == hist_run[0].cutflow


def test_peak_rss_of_a_spawned_process_is_its_own():
    import multiprocessing

    held = np.ones(400 * 2**20 // 8)  # 400 MB in this process
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        child = pool.apply(peak_rss_mb)
    assert peak_rss_mb() > 400 > child
    del held


def test_feature_export_rows_match_cutflow(cms_features_run):
    import pyarrow.dataset as pads

    table = pads.dataset(str(cms_features_run / "features"), format="parquet").to_table()
    cutflow = json.loads((cms_features_run / "cutflow.json").read_text())
    datasets = table.column("dataset").to_numpy(zero_copy_only=False)
    for dataset, steps in cutflow.items():
        assert (datasets == dataset).sum() == steps["vbf: finite features"]["n"]
    labels = table.column("label").to_numpy()
    assert set(np.unique(labels)) == {0, 1}
    assert np.all(labels[np.char.startswith(datasets.astype(str), "VBF")] == 1)


def test_card_feature_mismatch_fails_before_any_chunk(
    run_cms, cms_toy_dir, cms_models, tmp_path, monkeypatch
):
    bad = tmp_path / "models"
    shutil.copytree(cms_models, bad)
    card = json.loads((bad / "mlp.json").read_text())
    card["features"][0], card["features"][1] = card["features"][1], card["features"][0]
    (bad / "mlp.json").write_text(json.dumps(card))

    def no_chunks(self, events):
        raise AssertionError("a chunk was processed")

    monkeypatch.setattr(AnalysisProcessor, "process", no_chunks)
    with pytest.raises(ModelCardError, match=r"mlp.*differ from the analysis feature set"):
        run_cms(cms_toy_dir, tmp_path / "out", models_dir=bad)
    assert not (tmp_path / "out").exists()


def _copy_toys(src, dst, only=("VBF_HToZZTo4mu", "ZZTo4mu")):
    dst.mkdir()
    for name in only:
        shutil.copy(src / f"{name}.root", dst)
    return list(only)


def test_missing_file_error_names_it(run_cms, cms_toy_dir, tmp_path):
    datasets = _copy_toys(cms_toy_dir, tmp_path / "d")
    (tmp_path / "d" / "ZZTo4mu.root").unlink()
    with pytest.raises(InputFileError, match=r"ZZTo4mu\.root: file not found"):
        run_cms(tmp_path / "d", tmp_path / "out", datasets=datasets)


def test_truncated_file_error_and_skip_lists_it(run_cms, cms_toy_dir, tmp_path):
    datasets = _copy_toys(cms_toy_dir, tmp_path / "d")
    path = tmp_path / "d" / "ZZTo4mu.root"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(InputFileError, match=r"ZZTo4mu\.root: cannot be read as ROOT"):
        run_cms(tmp_path / "d", tmp_path / "out", datasets=datasets)
    result = run_cms(tmp_path / "d", tmp_path / "out", datasets=datasets, skip_bad_files=True)
    assert any("ZZTo4mu.root" in s for s in result.provenance["skipped_files"])
    assert list(result.cutflow) == ["VBF_HToZZTo4mu"]
    prov = json.loads((tmp_path / "out" / "run.json").read_text())
    assert prov["skipped_files"] == result.provenance["skipped_files"]


def test_wrong_tree_and_missing_branch_errors(run_cms, cms_toy_dir, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    events = uproot.open(cms_toy_dir / "ZZTo4mu.root")[TREE].arrays(library="np")
    with uproot.recreate(d / "ZZTo4mu.root") as fout:
        fout["Events"] = {"f_mass4l": events["f_mass4l"]}
    with pytest.raises(InputFileError, match=rf"no tree '{TREE}'"):
        run_cms(d, tmp_path / "out", datasets=["ZZTo4mu"])
    with uproot.recreate(d / "ZZTo4mu.root") as fout:
        fout[TREE] = {k: v for k, v in events.items() if k != "f_Z2mass"}
    with pytest.raises(InputFileError, match=r"lacks branch.*f_Z2mass"):
        run_cms(d, tmp_path / "out", datasets=["ZZTo4mu"])


def test_nan_features_are_counted_warned_and_not_scored(run_cms, cms_toy_dir, cms_models, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    events = uproot.open(cms_toy_dir / "VBF_HToZZTo4mu.root")[TREE].arrays(library="np")
    vbf = np.flatnonzero((events["f_massjj"] != -999) & _selected(events))
    events["f_massjj"][vbf[:7]] = np.nan
    with uproot.recreate(d / "VBF_HToZZTo4mu.root") as fout:
        fout[TREE] = events
    with pytest.warns(HepsieveWarning, match="7 event.*NaN/inf"):
        result = run_cms(d, tmp_path / "out", datasets=["VBF_HToZZTo4mu"], models_dir=cms_models)
    steps = result.cutflow["VBF_HToZZTo4mu"]
    assert steps["input"]["n"] == len(events["f_mass4l"])
    assert steps["category vbf"]["n"] == len(vbf)  # NaN m_jj is not -999: still vbf
    assert steps["vbf: finite features"]["n"] == len(vbf) - 7
    score = result.histograms["score_mlp"][
        {"dataset": "VBF_HToZZTo4mu", "category": "vbf", "variation": "nominal"}
    ]
    assert score.sum(flow=True).value == pytest.approx(steps["vbf: finite features"]["sumw"])


def test_checkpointed_rerun_reads_chunks_back_and_gives_same_result(
    run_cms, cms_toy_dir, tmp_path, monkeypatch
):
    kw = {"datasets": ["VBF_HToZZTo4e", "ZZTo4e"], "chunksize": 1000, "checkpoint": tmp_path / "ckpt"}
    first = run_cms(cms_toy_dir, tmp_path / "a", **kw)
    assert len(list((tmp_path / "ckpt").rglob("*.coffea"))) == 6  # 2 files x 3 chunks

    def no_chunks(self, events):
        raise AssertionError("a checkpointed chunk was processed again")

    monkeypatch.setattr(AnalysisProcessor, "process", no_chunks)
    second = run_cms(cms_toy_dir, tmp_path / "b", **kw)
    assert second.cutflow == first.cutflow
    for name, h in first.histograms.items():
        np.testing.assert_array_equal(second.histograms[name].values(flow=True), h.values(flow=True))
