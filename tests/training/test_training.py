"""Training: weights, fold splits, ONNX agreement, cards, evaluation metrics."""

import json

import numpy as np
import pytest
import torch

from hepsieve.processors import ConfigurationError, HepsieveError
from hepsieve.processors.analyses import get_analysis
from hepsieve.training.data import fold_masks, training_weights
from hepsieve.training.evaluate import evaluate, threshold_metrics
from hepsieve.training.kinds import MODEL_KINDS
from hepsieve.training.mlp import build_mlp, mlp_to_onnx, predict_mlp
from hepsieve.training.train import verify_onnx


def test_training_weights_balance_classes_and_handle_negatives():
    w = np.array([1.0, 2.0, -1.0, 0.5, 0.5, 3.0])
    y = np.array([1, 1, 1, 0, 0, 0])
    for policy, sig in (("zero", [1, 2, 0]), ("abs", [1, 2, 1]), ("keep", [1, 2, -1])):
        out = training_weights(w, y, policy)
        assert out[y == 1].sum() == pytest.approx(3.0)
        assert out[y == 0].sum() == pytest.approx(3.0)
        np.testing.assert_allclose(out[y == 1] / out[y == 1][0], np.array(sig) / sig[0])
    with pytest.raises(ConfigurationError, match="--negative-weights"):
        training_weights(w, y, "clip")


def test_fold_masks_partition_events():
    event = np.arange(11)
    train0, apply0 = fold_masks(event, 2, 0)
    assert np.all(event[apply0] % 2 == 0) and np.all(event[train0] % 2 == 1)
    assert not np.any(train0 & apply0) and np.all(train0 | apply0)


def test_mlp_onnx_matches_torch_and_mismatch_is_refused():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(100, 30, (1000, 5)).astype(np.float32)
    model = build_mlp(x.mean(axis=0), x.std(axis=0)).eval()
    onnx_bytes = mlp_to_onnx(model, 5)
    native = predict_mlp(model, x)
    assert verify_onnx(onnx_bytes, x, native, MODEL_KINDS["mlp"].output) < 1e-4
    with pytest.raises(HepsieveError, match="ONNX export disagrees"):
        verify_onnx(onnx_bytes, x, native + 1e-3, MODEL_KINDS["mlp"].output)


def test_mlp_activation_option():
    x = np.random.default_rng(1).normal(0, 1, (200, 3)).astype(np.float32)
    model = build_mlp(x.mean(axis=0), x.std(axis=0), hidden=(4,), activation="tanh").eval()
    assert any(isinstance(m, torch.nn.Tanh) for m in model)
    assert verify_onnx(mlp_to_onnx(model, 3), x, predict_mlp(model, x), MODEL_KINDS["mlp"].output) < 1e-4
    with pytest.raises(ConfigurationError, match="--activation 'gelu'"):
        build_mlp(x.mean(axis=0), x.std(axis=0), activation="gelu")


def test_cards_describe_models(cms_models):
    spec = get_analysis("cms-hzz4l").feature_spec()
    for name in ("mlp", "rf"):
        card = json.loads((cms_models / f"{name}.json").read_text())
        assert [f["name"] for f in card["features"]] == list(spec.names)
        assert card["k"] == 2 and [f["fold"] for f in card["folds"]] == [0, 1]
        for fold in card["folds"]:
            assert fold["metrics"]["onnx_max_abs_diff"] < 1e-4
            assert fold["metrics"]["auc_test"] > 0.9  # toy VBF vs ggH+ZZ is well separated
            assert (cms_models / fold["file"]).is_file()
    history = json.loads((cms_models / "mlp.json").read_text())["folds"][0]["history"]
    assert len(history["val_loss"]) == len(history["train_loss"]) >= 1


def test_training_is_reproducible(cms_features_run, cms_models, tmp_path):
    from hepsieve.training.train import train

    train(
        "cms-hzz4l", cms_features_run / "features", "rf", tmp_path, progress=False, hyper={"n_estimators": 40}
    )
    a = json.loads((tmp_path / "rf.json").read_text())["folds"]
    b = json.loads((cms_models / "rf.json").read_text())["folds"]
    assert [f["sha256"] for f in a] == [f["sha256"] for f in b]


def test_threshold_metrics_against_hand_count():
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.7, 0.2, 0.8, 0.1, 0.3, 0.65])
    m = threshold_metrics(y, s, np.ones(7), 0.6)["unweighted"]
    # TP = 2, FP = 2, FN = 1
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert m["confusion_matrix"] == [[2, 2], [1, 2]]


def test_evaluate_writes_metrics_and_plots(cms_features_run, cms_models, tmp_path):
    summary = evaluate("cms-hzz4l", cms_features_run / "features", cms_models, tmp_path)
    for name in ("mlp", "rf"):
        m = summary["models"][name]
        assert 0.9 < m["auc_test"] <= 1 and 0.9 < m["auc_train"] <= 1
        assert 0 <= m["ks_pvalue"]["signal"] <= 1
        pe = m["purity_efficiency"]
        assert pe["efficiency"][0] == pytest.approx(1.0) and pe["efficiency"][-1] == 0
        for plot in (f"scores_{name}.png", f"confusion_{name}.png", f"purity_efficiency_{name}.png"):
            assert (tmp_path / plot).stat().st_size > 10_000
    assert (tmp_path / "roc.png").is_file() and (tmp_path / "loss_mlp.png").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(summary))


def test_ams_formula_and_scan():
    from hepsieve.processors.metrics import CumulativeYields, ams
    from hepsieve.training.evaluate import ams_scan

    s, b, breg = 10.0, 100.0, 1e-3
    expected = np.sqrt(2 * ((s + b + breg) * np.log(1 + s / (b + breg)) - s))
    assert ams(np.array([s]), np.array([b]))[0] == pytest.approx(expected)
    y = np.array([1] * 50 + [0] * 50)
    score = np.concatenate([np.linspace(0.55, 1, 50), np.linspace(0, 0.7, 50)])
    scan = ams_scan(CumulativeYields.from_scores(score, y == 1, np.full(100, 2.0)))
    assert 0.69 <= scan["working_point"] <= 0.71  # above it: signal only
    assert scan["best_ams"] == pytest.approx(max(scan["ams"]))


def test_hgb_thresholds_made_float32_exact_without_changing_predictions():
    import onnxruntime as ort

    from hepsieve.training.trees import fit_trees, make_classifier, predict_trees, trees_to_onnx

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(100_000, 4)) * np.array([1, 100, 1e3, 0.01])).astype(np.float32)
    y = (x[:, 0] + x[:, 1] / 100 + rng.normal(size=len(x)) > 0).astype(int)
    raw = make_classifier("hgb", 1, max_iter=40).fit(x, y)
    clf = fit_trees(x, y, np.ones(len(y)), 1, "hgb", max_iter=40)
    np.testing.assert_array_equal(clf.predict_proba(x), raw.predict_proba(x))
    onnx_scores = ort.InferenceSession(trees_to_onnx(clf, 4)).run(["probabilities"], {"features": x})[0]
    assert np.max(np.abs(onnx_scores[:, 1] - predict_trees(clf, x))) < 1e-6
