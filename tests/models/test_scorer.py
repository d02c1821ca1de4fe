"""OnnxScorer: fold routing, pickling, card checks, coffea ml_tools interface."""

import json
import pickle
import shutil

import awkward as ak
import numpy as np
import pyarrow.dataset as pads
import pytest

from hepsieve.models import ModelCard, OnnxScorer, load_scorers
from hepsieve.processors import ModelCardError
from hepsieve.processors.analyses import get_analysis

ANALYSIS = get_analysis("cms-hzz4l")


@pytest.fixture(scope="module")
def features(cms_features_run):
    table = pads.dataset(str(cms_features_run / "features"), format="parquet").to_table()
    names = ANALYSIS.feature_spec().names
    x = np.column_stack([table.column(n).to_numpy() for n in names]).astype(np.float32)
    return x, table.column("event").to_numpy(), table.column("label").to_numpy()


def test_each_event_scored_only_by_the_other_folds_model(cms_models, features):
    x, event, _ = features
    scorer = OnnxScorer.from_card(cms_models / "mlp.json")
    score = scorer.score(x, event)
    for fold in (0, 1):
        rows = event % 2 == fold
        np.testing.assert_array_equal(score[rows], scorer.predict_fold(fold, x[rows]))
        assert not np.allclose(score[rows], scorer.predict_fold(1 - fold, x[rows]))
        # the model applied to fold i was trained on the events of the other fold only
        card_fold = scorer.card.folds[fold]
        assert card_fold.trained_on == f"event % 2 != {fold}"
        assert card_fold.n_train == int(np.count_nonzero(event % 2 != fold))


def test_column_path_equals_matrix_path_across_batches(cms_models, features, monkeypatch):
    from hepsieve.models import scorer as scorer_module

    x, event, _ = features
    scorer = OnnxScorer.from_card(cms_models / "mlp.json")
    expected = scorer.score(x, event)
    monkeypatch.setattr(scorer_module, "MAX_BATCH", 97)  # many batches, a ragged last one
    columns = [x[:, i].astype(np.float64) for i in range(x.shape[1])]  # cast per batch
    # a different batch size changes onnxruntime's GEMM blocking: last-bit differences only
    np.testing.assert_allclose(scorer.score_columns(columns, event), expected, rtol=1e-6, atol=1e-7)
    with pytest.raises(ModelCardError, match="4 feature columns, card has 5"):
        scorer.score_columns(columns[:4], event)


def test_scorer_pickles_without_session_and_gives_same_scores(cms_models, features):
    x, event, _ = features
    scorer = OnnxScorer.from_card(cms_models / "rf.json", threads=1)
    before = scorer.score(x[:500], event[:500])
    clone = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(clone.score(x[:500], event[:500]), before)


def test_ml_tools_wrapper_on_awkward_and_dask_awkward(cms_models, features):
    import dask_awkward as dak

    x, event, _ = features
    names = ANALYSIS.feature_spec().names
    scorer = OnnxScorer.from_card(cms_models / "mlp.json")
    record = ak.zip({n: x[:, i] for i, n in enumerate(names)})
    expected = scorer.score(x, event)
    eager = scorer(record, ak.Array(event))
    np.testing.assert_allclose(ak.to_numpy(eager), expected, rtol=1e-6)
    lazy = scorer(dak.from_awkward(record, npartitions=3), dak.from_awkward(ak.Array(event), 3))
    np.testing.assert_allclose(ak.to_numpy(lazy.compute()), expected, rtol=1e-6)


def test_tampered_onnx_file_is_rejected(cms_models, tmp_path):
    shutil.copytree(cms_models, tmp_path / "m")
    onnx = tmp_path / "m" / "rf_fold1.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(ModelCardError, match=r"rf_fold1\.onnx sha256"):
        OnnxScorer.from_card(tmp_path / "m" / "rf.json")


def test_card_for_other_analysis_or_incomplete_is_rejected(cms_models, tmp_path):
    shutil.copytree(cms_models, tmp_path / "m")
    card = json.loads((tmp_path / "m" / "mlp.json").read_text())
    (tmp_path / "m" / "mlp.json").write_text(json.dumps(card | {"analysis": "atlas-hzz4l"}))
    with pytest.raises(ModelCardError, match="is for analysis 'atlas-hzz4l'"):
        load_scorers(tmp_path / "m", ANALYSIS)
    del card["folds"]
    (tmp_path / "m" / "mlp.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="missing key 'folds'"):
        ModelCard.read(tmp_path / "m" / "mlp.json")


def test_wrong_input_shape_is_a_clear_error(cms_models):
    scorer = OnnxScorer.from_card(cms_models / "mlp.json")
    with pytest.raises(ModelCardError, match=r"expected \(n, 5\) features"):
        scorer.validate_numpy_input(np.zeros((3, 4), np.float32), np.arange(3))


def test_shipped_models_match_the_analysis_and_their_hashes():
    from hepsieve.models import default_models_dir

    scorers = load_scorers(default_models_dir(ANALYSIS), ANALYSIS)
    assert {s.name for s in scorers} == {"mlp", "rf"}
    x = np.array([[600.0, 4.5, 125.0, 91.0, 28.0], [120.0, 0.8, 230.0, 91.0, 90.0]], np.float32)
    for scorer in scorers:
        vbf_like, zz_like = scorer.score(x, np.array([0, 0]))
        assert vbf_like > 0.6 > zz_like
