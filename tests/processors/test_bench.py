"""The bench's independent baselines and the chunk pipeline's performance paths.

The HIGGS limit loop gives the processor's histograms; the RDataFrame peer the ATLAS cutflow;
integer category codes the same histograms as one fill per category; written files and the
processor's chunks follow clusters of at most 100k entries; ``hepsieve bench`` end to end.
"""

import dataclasses
import importlib.util
import multiprocessing
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from hepsieve.processors import RunConfig, bench_limits, bench_rdf, run
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.bench import make_setup
from hepsieve.processors.runner import chunk_boundaries


def _run(analysis, data_dir, **kw):
    kw.setdefault("executor", "iterative")
    return run(RunConfig(analysis, data_dir, progress=False, **kw))


def test_limit_loop_gives_the_processors_histograms(higgs_toy_dir, higgs_models, tmp_path):
    setup = make_setup(
        "higgs-uci", higgs_toy_dir, tmp_path, executors=["iterative"], workers=1, chunksize=5000,
        models_dir=higgs_models, model_names=["mlp"],
    )  # fmt: skip
    # in this process; the bench runs the same function in spawned ones
    part = bench_limits.higgs_limit_share(setup.items, 3000, higgs_models / "mlp.json", 0.5)
    limit = bench_limits.merged_counts([part])
    result = _run("higgs-uci", higgs_toy_dir, models_dir=higgs_models, models=["mlp"], chunksize=4000)
    assert part["events"] == 22_000
    assert sorted(limit) == ["test", "train"] and all(len(h) == 4 for h in limit.values())
    assert bench_limits.compare_with_processor(limit, result.histograms) == []
    assert limit["train"]["score_mlp"].sum() == result.cutflow["train"]["input"]["n"]
    # one event moved by one bin is seen
    limit["train"]["score_mlp"][1, 500] -= 1
    limit["train"]["score_mlp"][1, 501] += 1
    assert bench_limits.compare_with_processor(limit, result.histograms) == ["train/score_mlp"]


def _atlas_rdf(data_dir):
    setup = make_setup(
        "atlas-hzz4l", data_dir, data_dir, executors=[], workers=1, chunksize=1000, models_dir=None,
        model_names=None,
    )  # fmt: skip
    return bench_rdf.atlas_rdf(setup.datasets(), setup.spec["tree"], setup.spec["lumi_pb"], 1)


def test_rdataframe_peer_gives_the_processors_cutflow(atlas_toy_dir):
    pytest.importorskip("ROOT", reason="ROOT not installed: pip install 'hepsieve[peers]'")
    # a spawned process, as in the bench: ROOT's interpreter stays out of the test process
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        peer = pool.submit(_atlas_rdf, atlas_toy_dir).result()["cutflow"]
    analysis = get_analysis("atlas-hzz4l")
    result = _run("atlas-hzz4l", atlas_toy_dir, chunksize=1500)
    labels = [s.label for s in analysis.selection]
    assert bench_rdf.compare_atlas_cutflow(peer, result.cutflow, labels) == []
    assert sum(s["sfos"]["n"] for s in peer.values()) > 100  # the selection keeps events
    for ds, steps in peer.items():  # and the weights agree too (float32 factors as in the analysis)
        assert steps["sfos"]["sumw"] == pytest.approx(result.cutflow[ds][labels[-1]]["sumw"], rel=1e-6)
    peer[next(iter(peer))]["charge"]["n"] += 1
    assert len(bench_rdf.compare_atlas_cutflow(peer, result.cutflow, labels)) == 1


def test_category_codes_fill_as_one_fill_per_category(atlas_toy_dir, monkeypatch):
    from hepsieve.processors.analyses import hzz4l_atlas

    atlas = get_analysis("atlas-hzz4l")

    def two_of_three(observed):  # 2e2mu events are in no category: code -1, never the overflow bin
        masks = hzz4l_atlas.categorize(observed)
        return masks | {"2e2mu": np.zeros_like(masks["2e2mu"])}

    for assign in (atlas.categories.assign, two_of_three):
        outputs, fills = [], []
        for exclusive in (True, False):  # codes, and the per-category fills of overlapping ones
            categories = dataclasses.replace(atlas.categories, assign=assign, exclusive=exclusive)
            analysis = dataclasses.replace(atlas, categories=categories)
            result = _run(analysis, atlas_toy_dir, chunksize=1500)
            outputs.append({k: h.view(flow=True) for k, h in result.histograms.items()})
            fills.append({k: h.metadata["fills"] for k, h in result.histograms.items()})
            m4l = result.histograms["m4l"][{"variation": "nominal"}].view(flow=True)["value"]
            assert m4l[:, -1].sum() == 0  # nothing in the category overflow
            assert m4l.sum() > 0 and (assign is not two_of_three or m4l[:, 1].sum() == 0)
        assert outputs[0].keys() == outputs[1].keys()
        for name in outputs[0]:
            assert np.array_equal(outputs[0][name], outputs[1][name]), name
        assert fills[0] == fills[1]  # the fill counts of the score-cut histograms too
        assert any(n for k, f in fills[0].items() if k.endswith("_pass") for n in f.values())


def test_written_files_have_clusters_of_at_most_100k(tmp_path):
    from hepsieve.datasets.converters import CLUSTER_ENTRIES, csv_to_parquet, write_higgs_chunks

    n = 250_000
    rng = np.random.default_rng(1)
    cols = {c: rng.random(n) for c in get_analysis("higgs-uci").inputs.branches if c != "event"}
    names = write_higgs_chunks(tmp_path, iter([cols]), n, "root", chunk_rows=n)
    tree = uproot.open(tmp_path / names[0])["higgs"]
    assert np.diff(tree.common_entry_offsets()).max() <= CLUSTER_ENTRIES == 100_000
    assert tree.num_entries > CLUSTER_ENTRIES
    (tmp_path / "pq").mkdir()
    names = write_higgs_chunks(tmp_path / "pq", iter([cols]), n, "parquet", chunk_rows=n)
    meta = pq.ParquetFile(tmp_path / "pq" / names[0]).metadata
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= CLUSTER_ENTRIES
    csv = tmp_path / "big.csv"
    np.savetxt(
        csv, np.column_stack([np.arange(n), rng.random(n)]), delimiter=",", header="event,x", comments=""
    )
    csv_to_parquet(csv, tmp_path / "big.parquet")
    meta = pq.ParquetFile(tmp_path / "big.parquet").metadata
    assert (
        meta.num_rows == n and max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 100_000
    )


def test_chunks_are_whole_clusters_and_one_cluster_files_chunk_as_coffea():
    from coffea.processor.executor import FileMeta

    def chunks(clusters, chunksize, align=True):
        meta = {"numentries": clusters[-1], "uuid": "u", "clusters": chunk_boundaries(clusters, chunksize)}
        target = 1 if align else chunksize  # the runner's target when aligned: every boundary
        return [(w.entrystart, w.entrystop) for w in FileMeta("d", "f", "t", meta).chunks(target, align)]

    clusters = [0, 100_000, 200_000, 300_000, 350_000]
    assert chunks(clusters, 200_000) == [(0, 200_000), (200_000, 350_000)]
    assert chunks(clusters, 100_000) == [
        (0, 100_000),
        (100_000, 200_000),
        (200_000, 300_000),
        (300_000, 350_000),
    ]
    # a small cluster joined to a long one, the whole then cut into chunks of about chunksize
    assert chunks([0, 100_000, 1_000_000], 200_000) == [
        (s, s + 200_000) for s in range(0, 1_000_000, 200_000)
    ]
    for n, size in ((3000, 1000), (2500, 1000), (1_000_000, 200_000), (22_000, 4000), (7, 3), (5, 10)):
        assert chunks([0, n], size) == chunks([0, n], size, align=False)  # a one-cluster file


def test_bench_rounds_medians_checks_and_growth(higgs_toy_dir, higgs_models, tmp_path, capsys, monkeypatch):
    import json

    from hepsieve.processors.bench import bench

    monkeypatch.setattr(bench_rdf, "rdf_unavailable", lambda: "RDataFrame left out in this test")
    from hepsieve.models import scorer

    monkeypatch.setattr(scorer, "_SESSIONS", {})  # filled by the chunks this process runs
    report = bench(
        "higgs-uci", higgs_toy_dir, tmp_path, ["iterative"], workers=1, chunksize=5000,
        models_dir=higgs_models, model_names=["mlp"], repeat=3, growth_sizes=[5000, 22_000],
        growth_executor="iterative",
    )  # fmt: skip
    # the processor rows ran in processes of their own, as a `hepsieve run` command does (dask
    # workers forked from the bench process had inherited what the rows before left there): no
    # iterative run's sessions (threads=0) here; the notebook row's (threads=1) are its own
    assert scorer._SESSIONS and not [key for key in scorer._SESSIONS if key[1] == 0]
    rows = report["results"]
    kinds = {r["kind"] for r in rows.values()}
    assert kinds == {"io", "limit", "bare", "hepsieve", "notebook"}
    for row in (r for r in rows.values() if r["kind"] != "notebook"):
        assert row["events"] == 22_000
        assert len(row["events_per_s_runs"]) == 3
        assert row["events_per_s"] == sorted(row["events_per_s_runs"])[1]  # the median round
        assert row["wall_s"] > 0 and row["startup_s"] >= 0
    hepsieve = rows["hepsieve iterative, 1 worker(s)"]
    limit = next(r for r in rows.values() if r["kind"] == "limit")
    assert hepsieve["ratios"]["limit"] == pytest.approx(hepsieve["events_per_s"] / limit["events_per_s"])
    assert 0 < limit["worker_max_rss_mb"][0] < 2000  # the spawned loop's own peak
    assert report["checks"]["limit"].startswith("limit loop == processor")
    growth = report["growth"]
    assert sorted(growth["sizes"]) == [5000, 22_000]  # the first file holds 5000 rows
    assert len(growth["sizes"][5000]["wall_s_runs"]) == 3
    # two sizes: the fitted line passes through both medians (its slope is noise at 22k events:
    # run-to-run jitter of the start-up exceeds the 17k events' cost, so its sign is not tested)
    for n, size in growth["sizes"].items():
        fitted = growth["fixed_s"] + growth["per_event_us"] * 1e-6 * n
        assert fitted == pytest.approx(size["wall_s"], abs=1e-6)
        assert size["wall_s"] == sorted(size["wall_s_runs"])[1]
    assert json.loads((tmp_path / "bench.json").read_text())["repeat"] == 3
    out = capsys.readouterr().out
    assert "median of 3 rounds" in out and "RDataFrame left out in this test" in out and "fit: wall" in out
    # paired per round: each round's processor over that same round's limit loop
    paired = [h / b for h, b in zip(hepsieve["events_per_s_runs"], limit["events_per_s_runs"], strict=True)]
    shown = " / ".join(f"{x:.2f}" for x in paired)
    line = f"per round, hepsieve iterative, 1 worker(s) / limit: {shown} (median {sorted(paired)[1]:.2f})"
    assert line in out


def test_the_bench_tries_root_in_a_child_so_its_forked_workers_never_inherit_it():
    code = (
        "import sys; from hepsieve.processors import bench_rdf\n"
        "print(bench_rdf.rdf_unavailable(), 'ROOT' in sys.modules, 'cppyy' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    why, root_here, cppyy_here = done.stdout.split("\n")[-2].rsplit(" ", 2)
    assert (root_here, cppyy_here) == ("False", "False")
    if importlib.util.find_spec("ROOT") is None:
        assert why.startswith("ROOT is not installed")
    else:  # the peers extra: ROOT works, and the bench process never imported it
        assert why == "None"
