"""UCI HIGGS processor: every row accounted for, AUC from histograms vs sklearn's unbinned AUC."""

import numpy as np
import pytest
import uproot
from sklearn.metrics import roc_auc_score

from hepsieve.models import OnnxScorer
from hepsieve.processors import RunConfig, run
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.analyses.higgs_uci import TREE
from hepsieve.processors.metrics import roc_from_counts


def test_roc_from_counts_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.4
    score = np.clip(np.round(rng.normal(np.where(y, 0.6, 0.4), 0.2), 2), 0, 0.99)  # 100 levels
    bins = np.linspace(-0.005, 0.995, 101)  # one bin per score level
    s, _ = np.histogram(score[y], bins)
    b, _ = np.histogram(score[~y], bins)
    assert roc_from_counts(s, b)[2] == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_auc_from_histograms_agrees_with_unbinned(higgs_toy_dir, higgs_models, tmp_path):
    result = run(
        RunConfig(
            "higgs-uci",
            higgs_toy_dir,
            tmp_path,
            models_dir=higgs_models,
            executor="iterative",
            chunksize=4000,
            progress=False,
        )
    )
    assert result.cutflow["train"]["input"]["n"] + result.cutflow["test"]["input"]["n"] == 22_000
    spec = get_analysis("higgs-uci").feature_spec()
    files = sorted(higgs_toy_dir.glob("HIGGS_test_*.root"))
    test = [uproot.open(f)[TREE].arrays(library="np") for f in files]
    test = {k: np.concatenate([t[k] for t in test]) for k in test[0]}
    x = np.column_stack([test[n] for n in spec.names]).astype(np.float32)
    for name in ("mlp", "hgb"):
        scorer = OnnxScorer.from_card(higgs_models / f"{name}.json")
        unbinned = roc_auc_score(test["label"], scorer.score(x, test["event"]))
        binned = result.provenance["auc_from_histograms"][name]["test"]
        assert binned == pytest.approx(unbinned, abs=1e-3)
        # a small model on the (hard, Baldi-like) toy, but it has learned: chance is 0.5 +- 0.02
        # on the 1000 test rows, so the binned/unbinned agreement is tested on a real ROC curve
        assert unbinned > 0.6
    from hepsieve.processors.plots import plot_run

    plot_run(tmp_path)
    assert (tmp_path / "plots" / "roc_test.png").stat().st_size > 10_000


def test_training_holds_out_the_test_split(higgs_models):
    import json

    card = json.loads((higgs_models / "hgb.json").read_text())
    assert card["training_data"]["held_out_datasets"] == ["test"]
    assert card["training_data"]["datasets"] == ["train"]
    assert card["kind"] == "hgb" and all(f["metrics"]["onnx_max_abs_diff"] < 1e-4 for f in card["folds"])


def test_bench_rounds_medians_and_report(higgs_toy_dir, higgs_models, tmp_path, capsys):
    import json

    from hepsieve.processors.bench import bench

    report = bench(
        "higgs-uci",
        higgs_toy_dir,
        tmp_path,
        ["iterative"],
        workers=1,
        chunksize=5000,
        models_dir=higgs_models,
        model_names=["mlp"],
        repeat=3,
    )
    rows = report["results"]
    floor, iterative = (
        rows["floor: uproot.iterate + onnxruntime + hist, 1 process"],
        rows["hepsieve iterative, 1 worker(s)"],
    )
    for row in (floor, iterative):
        assert row["events"] == 22_000
        assert len(row["events_per_s_runs"]) == 3
        assert row["events_per_s"] == sorted(row["events_per_s_runs"])[1]  # the median round
        assert row["wall_s"] > 0 and row["startup_s"] >= 0
    assert 0 < floor["worker_max_rss_mb"][0] < 2000  # the spawned floor process's own peak
    text = [r for name, r in rows.items() if name.startswith("pandas.read_csv")]
    assert text and text[0]["extrapolated_to"] == 22_000
    assert json.loads((tmp_path / "bench.json").read_text())["repeat"] == 3
    assert "median of 3 rounds" in capsys.readouterr().out
