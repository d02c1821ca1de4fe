"""Guarantees checked against independent computations, so that a one-line break fails a test.

Each test names the break it was written against (issue 10, "Tests that can fail"): k-fold
routing shifted by one fold, the score cut ignored, cutflow sumw2 = sumw, the entry accounting
never raising, purity = s/(s+2b), the data/MC ratio inverted, the KS test of a sample against
itself, ``--score-cut`` dropped by the command line.
"""

import json

import numpy as np
import onnxruntime as ort
import pyarrow.dataset as pads
import pytest
import uproot
from scipy.stats import ks_2samp

from hepsieve.processors import CutflowMismatchError, RunConfig, run
from hepsieve.processors.analyses.hzz4l_cms import TREE
from hepsieve.processors.processor import AnalysisProcessor

CUT = 0.6


def _bare_scores(models_dir, name, x, event, k=2):
    """Score each row with the ONNX file of fold event % k, by bare onnxruntime sessions."""
    card = json.loads((models_dir / f"{name}.json").read_text())
    out = np.empty(len(x), dtype=np.float32)
    for fold in range(k):
        sess = ort.InferenceSession(str(models_dir / f"{name}_fold{fold}.onnx"))
        rows = event % k == fold
        result = sess.run([card["output"]["name"]], {sess.get_inputs()[0].name: x[rows]})[0]
        out[rows] = result[:, card["output"]["column"]]
    return out


@pytest.fixture(scope="module")
def vbf_events(cms_toy_dir):
    """Selected vbf-category events of two CMS toy files, read with uproot (no hepsieve code)."""
    out = {}
    for name in ("VBF_HToZZTo4mu", "ZZTo4mu"):
        ev = uproot.open(cms_toy_dir / f"{name}.root")[TREE].arrays(library="np")
        sel = (
            (ev["f_mass4l"] > 70)
            & (ev["f_Z1mass"] > 40)
            & (ev["f_Z1mass"] < 120)
            & (ev["f_Z2mass"] > 12)
            & (ev["f_Z2mass"] < 120)
            & (ev["f_jet2_pt"] != -999)
        )
        out[name] = {k: v[sel] for k, v in ev.items()}
    return out


@pytest.fixture(scope="module")
def scored_run(cms_toy_dir, cms_models, tmp_path_factory):
    return run(
        RunConfig(
            "cms-hzz4l",
            cms_toy_dir,
            tmp_path_factory.mktemp("g"),
            models_dir=cms_models,
            datasets=["VBF_HToZZTo4mu", "ZZTo4mu"],
            executor="iterative",
            chunksize=1000,
            progress=False,
            score_cut=CUT,
        )
    )


def _x(events):
    names = ("f_massjj", "f_deltajj", "f_mass4l", "f_Z1mass", "f_Z2mass")
    return np.column_stack([events[n] for n in names]).astype(np.float32)


@pytest.mark.parametrize("model", ["mlp", "rf"])
def test_score_histograms_equal_bare_fold_sessions(scored_run, vbf_events, cms_models, model):
    """Break: routing ``(event + 1) % k`` scores every event by the model trained on it."""
    h = scored_run.histograms[f"score_{model}"]
    for dataset, ev in vbf_events.items():
        score = _bare_scores(cms_models, model, _x(ev), ev["f_event"])
        expected, _ = np.histogram(score, bins=h.axes["score"].edges, weights=ev["f_weight"].astype(float))
        got = h[{"dataset": dataset, "category": "vbf", "variation": "nominal"}].values()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


def test_fold_models_were_trained_only_on_the_other_fold(cms_features_run, tmp_path):
    """Break: ``fold_masks`` shifted, so model i trains on the events it is applied to."""
    from hepsieve.training.data import load_features, training_weights, validation_mask
    from hepsieve.training.train import train
    from hepsieve.training.trees import fit_trees, predict_trees

    train(
        "cms-hzz4l", cms_features_run / "features", "rf", tmp_path, progress=False, hyper={"n_estimators": 20}
    )
    frame = load_features(
        cms_features_run / "features", ("f_massjj", "f_deltajj", "f_mass4l", "f_Z1mass", "f_Z2mass")
    )
    x, y, event = _x(frame), frame["label"].to_numpy(), frame["event"].to_numpy()
    w = training_weights(frame["weight"].to_numpy(), y, "zero")
    for fold in (0, 1):
        rows = event % 2 != fold  # written out here, not taken from hepsieve
        xt, yt, wt = x[rows], y[rows], w[rows]
        fit = ~validation_mask(len(xt), 0.2, 1 + fold)
        model = fit_trees(xt[fit], yt[fit], wt[fit], 1 + fold, "rf", n_estimators=20)
        onnx = _bare_scores(tmp_path, "rf", x, np.full(len(x), fold))
        np.testing.assert_allclose(onnx, predict_trees(model, x), atol=1e-5)


def test_pass_histogram_holds_exactly_the_events_above_the_cut(scored_run, vbf_events, cms_models):
    """Break: the score cut ignored (``passed = score >= 0`` or the mask not applied)."""
    h = scored_run.histograms["m4l_mlp_pass"]
    for dataset, ev in vbf_events.items():
        passed = _bare_scores(cms_models, "mlp", _x(ev), ev["f_event"]) > CUT
        total = h[{"dataset": dataset, "category": "vbf", "variation": "nominal"}].sum(flow=True)
        assert total.value == pytest.approx(ev["f_weight"][passed].astype(float).sum(), rel=1e-9)
        assert total.variance == pytest.approx(
            np.square(ev["f_weight"][passed].astype(float)).sum(), rel=1e-9
        )
        assert 0 < passed.sum() < len(passed)


def test_cutflow_sumw_and_sumw2_are_exact(scored_run, vbf_events):
    """Break: ``sumw2 = sum(w)`` instead of ``sum(w**2)``."""
    for dataset, ev in vbf_events.items():
        step = scored_run.cutflow[dataset]["category vbf"]
        w = ev["f_weight"].astype(np.float64)
        assert step["n"] == len(w)
        assert step["sumw"] == pytest.approx(w.sum(), rel=1e-12)
        assert step["sumw2"] == pytest.approx(np.square(w).sum(), rel=1e-12)
        assert step["sumw2"] != pytest.approx(step["sumw"], rel=1e-3)


def test_entry_accounting_raises_on_a_lost_or_doubled_chunk(cms_toy_dir, tmp_path, monkeypatch):
    """Break: the accounting never raising (a chunk's entries silently missing)."""
    original = AnalysisProcessor.process_chunk

    def lose_a_chunk(self, events, meta):
        out = original(self, events, meta)
        if meta["entrystart"] == 1000:
            return {"histograms": out["histograms"], "cutflow": {}, "entries": {}}
        return out

    monkeypatch.setattr(AnalysisProcessor, "process_chunk", lose_a_chunk)
    with pytest.raises(
        CutflowMismatchError, match=r"ZZTo4mu: processed 2000 entries but the input files hold 3000"
    ):
        run(
            RunConfig(
                "cms-hzz4l",
                cms_toy_dir,
                tmp_path / "o",
                datasets=["ZZTo4mu"],
                executor="iterative",
                chunksize=1000,
                progress=False,
            )
        )
    assert not (tmp_path / "o").exists()

    def count_twice(self, events, meta):
        out = original(self, events, meta)
        out["entries"] = {k: 2 * v for k, v in out["entries"].items()}
        return out

    monkeypatch.setattr(AnalysisProcessor, "process_chunk", count_twice)
    with pytest.raises(CutflowMismatchError, match="counted twice"):
        run(
            RunConfig(
                "cms-hzz4l", cms_toy_dir, None, datasets=["ZZTo4mu"], executor="iterative", progress=False
            )
        )


def test_purity_efficiency_and_significances_on_a_hand_table():
    """Break: purity = s/(s+2b); s/sqrt(b) or Z_A with a wrong term."""
    from hepsieve.processors.metrics import CumulativeYields, ams, asimov_significance, s_over_sqrt_b
    from hepsieve.training.evaluate import purity_efficiency

    score = np.array([0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25])
    signal = np.array([1, 1, 0, 1, 0, 1, 0, 0], bool)
    weight = np.array([2.0, 1.0, 0.5, 1.5, 1.0, 0.5, 3.0, 4.0])
    cy = CumulativeYields.from_scores(score, signal, weight, np.array([0.5, 0.7, 0.9]))
    np.testing.assert_allclose(cy.signal, [4.5, 3.0, 2.0])  # score > 0.5: 2 + 1 + 1.5
    np.testing.assert_allclose(cy.background, [1.5, 0.5, 0.0])
    np.testing.assert_allclose(cy.purity(), [4.5 / 6.0, 3.0 / 3.5, 1.0])
    np.testing.assert_allclose(cy.efficiency(), [4.5 / 5.0, 3.0 / 5.0, 2.0 / 5.0])
    pe = purity_efficiency(cy)
    assert pe["best_threshold"] == 0.5 and pe["best_purity_x_efficiency"] == pytest.approx(0.75 * 0.9)
    s, b = 4.5, 1.5
    assert asimov_significance(np.array([s]), np.array([b]))[0] == pytest.approx(
        np.sqrt(2 * ((s + b) * np.log(1 + s / b) - s))
    )
    assert s_over_sqrt_b(np.array([s]), np.array([b]))[0] == pytest.approx(s / np.sqrt(b + 1e-3))
    assert ams(np.array([s]), np.array([b]), 1e-3)[0] == pytest.approx(
        np.sqrt(2 * ((s + b + 1e-3) * np.log(1 + s / (b + 1e-3)) - s))
    )


def test_ks_pvalues_compare_training_with_held_out_scores(cms_features_run, cms_models, tmp_path):
    """Break: the KS test of the held-out scores against themselves (p = 1)."""
    from hepsieve.training.data import load_features
    from hepsieve.training.evaluate import evaluate

    summary = evaluate("cms-hzz4l", cms_features_run / "features", cms_models, tmp_path)
    frame = load_features(
        cms_features_run / "features", ("f_massjj", "f_deltajj", "f_mass4l", "f_Z1mass", "f_Z2mass")
    )
    x, y, event = _x(frame), frame["label"].to_numpy(), frame["event"].to_numpy()
    test = _bare_scores(cms_models, "mlp", x, event)
    train = np.concatenate(
        [
            _bare_scores(cms_models, "mlp", x[event % 2 != f], np.full((event % 2 != f).sum(), f))
            for f in (0, 1)
        ]
    )
    train_y = np.concatenate([y[event % 2 != f] for f in (0, 1)])
    for cls, c in (("signal", 1), ("background", 0)):
        expected = ks_2samp(train[train_y == c], test[y == c]).pvalue
        assert summary["models"]["mlp"]["ks_pvalue"][cls] == pytest.approx(expected, rel=1e-6)


def test_cli_score_cut_reaches_the_pass_histograms(cms_toy_dir, cms_models, vbf_events, tmp_path, capsys):
    """Break: ``--score-cut`` not passed from the command line to the run."""
    from hepsieve.processors.cli import main
    from hepsieve.processors.outputs import load_histograms

    ev = vbf_events["ZZTo4mu"]
    score = _bare_scores(cms_models, "mlp", _x(ev), ev["f_event"])
    for cut in (0.05, 0.5):
        out = tmp_path / f"cut{cut}"
        assert (
            main(
                [
                    "-q",
                    "run",
                    "cms-hzz4l",
                    "--data-dir",
                    str(cms_toy_dir),
                    "--out",
                    str(out),
                    "--models",
                    str(cms_models),
                    "--model-names",
                    "mlp",
                    "--executor",
                    "iterative",
                    "--datasets",
                    "ZZTo4mu",
                    "--score-cut",
                    str(cut),
                ]
            )
            == 0
        )
        assert json.loads((out / "run.json").read_text())["score_cut"] == {"mlp": cut}
        h = load_histograms(out)["m4l_mlp_pass"][
            {"dataset": "ZZTo4mu", "category": "vbf", "variation": "nominal"}
        ]
        assert h.sum(flow=True).value == pytest.approx(
            ev["f_weight"][score > cut].astype(float).sum(), rel=1e-9
        )
    capsys.readouterr()


def test_feature_export_rows_are_the_selected_vbf_events(cms_features_run, vbf_events):
    """Break: the export writing all categories, or weights of other events."""
    table = pads.dataset(str(cms_features_run / "features"), format="parquet").to_table().to_pandas()
    for dataset, ev in vbf_events.items():
        rows = table[table["dataset"] == dataset].sort_values("event")
        np.testing.assert_array_equal(rows["event"].to_numpy(), np.sort(ev["f_event"]))
        order = np.argsort(ev["f_event"])
        np.testing.assert_allclose(rows["weight"].to_numpy(), ev["f_weight"][order].astype(float), rtol=1e-12)
