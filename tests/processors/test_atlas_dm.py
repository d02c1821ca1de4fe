"""atlas-dm: the cut-based region cut by cut, same-sign removal, the held-out guarantee against bare
onnxruntime sessions, significance numbers against a hand computation, real-format input."""

import json
import math
import pickle
import shutil
import time

import awkward as ak
import hist
import numpy as np
import onnxruntime as ort
import pandas as pd
import pyarrow.parquet as pq
import pytest

from hepsieve.models.cards import ModelCard
from hepsieve.processors import InputFileError, RunConfig, run
from hepsieve.processors.analyses import get_analysis
from hepsieve.processors.cli import main
from hepsieve.processors.pipeline import prepare_inputs
from hepsieve.processors.processor import AnalysisProcessor
from hepsieve.training.evaluate import (
    HeldOutScores,
    asimov_uncertainty,
    cv_threshold_significance,
    evaluate,
    region_significance,
    significance_scan,
    working_points,
)

ANALYSIS = get_analysis("atlas-dm")
SEED = ANALYSIS.feature_spec("seed").names
# a row inside the cut-based region, far from every threshold
BASELINE = {
    "totalWeight": 1.0,
    "sum_lep_charge": 0,
    "lead_lep_pt": 80.0,
    "sublead_lep_pt": 45.0,
    "mll": 91.0,
    "ETmiss": 150.0,
    "dRll": 1.0,
    "dphi_pTll_ETmiss": 3.0,
    "fractional_pT_difference": 0.05,
    "ETmiss_over_HT": 0.9,
    "N_bjets": 0,
}
# (column, a value just inside, a value just outside): the published thresholds of arXiv:1708.09624
EPS = 1e-6
CUTS = [  # every cut is strict: the threshold itself is outside
    ("lead_lep_pt", 30 + EPS, 30.0),
    ("lead_lep_pt", 30 + EPS, 30 - EPS),
    ("sublead_lep_pt", 20 + EPS, 20.0),
    ("mll", 76 + EPS, 76.0),
    ("mll", 106 - EPS, 106.0),
    ("ETmiss", 90 + EPS, 90.0),
    ("ETmiss_over_HT", 0.6 + EPS, 0.6),
    ("dphi_pTll_ETmiss", 2.7 + EPS, 2.7),
    ("dRll", 1.8 - EPS, 1.8),
    ("fractional_pT_difference", 0.2 - EPS, 0.2),
    ("N_bjets", 0, 1),
]


def _chunk(rows: list[dict]) -> ak.Array:
    return ak.Array([{**BASELINE, **row, "eventNumber": i} for i, row in enumerate(rows)])


def _process(rows: list[dict]) -> dict:
    meta = {"dataset": "hand", "role": "signal", "is_data": False}
    return AnalysisProcessor(ANALYSIS).process_chunk(_chunk(rows), meta)


@pytest.mark.parametrize(("column", "inside", "outside"), CUTS)
def test_each_cut_of_the_cut_based_region(column, inside, outside):
    # weights 1 (inside) and 10 (outside): the region's sum of weights tells which row passed
    out = _process([{column: inside, "totalWeight": 1.0}, {column: outside, "totalWeight": 10.0}])
    steps = out["cutflow"]["hand"]
    assert steps["category cut-based"]["n"] == 1 and steps["category cut-based"]["sumw"] == 1.0
    assert steps["category ml"]["n"] == 2  # the ml region keeps both
    h = out["histograms"]["ETmiss"][{"dataset": "hand", "category": "cut-based", "variation": "nominal"}]
    assert h.sum(flow=True).value == 1.0
    cuts = out["histograms"]["cut_based_cuts"][
        {"dataset": "hand", "category": "ml", "variation": "nominal"}
    ].values(flow=True)
    assert cuts[-2] == 1.0  # all nine cuts passed: the inside row only


def test_same_sign_pairs_are_removed_and_counted():
    charges = [0, 2, -2, 0, 2]
    out = _process([{"sum_lep_charge": q, "totalWeight": 1.0 + i} for i, q in enumerate(charges)])
    steps = out["cutflow"]["hand"]
    assert steps["input"]["n"] == 5 and steps["input"]["sumw"] == 15.0
    os_step = steps["opposite-sign pair (sum_lep_charge = 0)"]
    assert os_step["n"] == 2 and os_step["sumw"] == 1.0 + 4.0  # rows 0 and 3; 3 same-sign removed
    assert steps["category ml"]["n"] == 2 and steps["category cut-based"]["n"] == 2
    for category in ("ml", "cut-based"):
        h = out["histograms"]["mll"][{"dataset": "hand", "category": category, "variation": "nominal"}]
        assert h.sum(flow=True).value == 5.0


def test_regions_overlap_by_design():
    assert ANALYSIS.categories.exclusive is False
    assert ANALYSIS.scoring.categories == ("ml",) and ANALYSIS.scoring.reference_categories == ("cut-based",)


# --- significance: the tool against a hand computation ---
SCORES = np.array([0.95, 0.92, 0.88, 0.81, 0.77, 0.66, 0.6, 0.55, 0.42, 0.3, 0.2, 0.1])
LABELS = np.array([1, 1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0])
WEIGHTS = np.array([2.0, 1.5, 0.05, 1.0, 0.1, 3.5, -0.3, 1.2, 2.5, 0.7, 3.0, 4.0])
THRESHOLDS = np.array([0.0, 0.5, 0.75, 0.85, 0.9])


def _hand_z(s: float, b: float) -> float:
    return math.sqrt(2 * ((s + b) * math.log(1 + s / b) - s))


def _hand_yields(t: float) -> tuple[float, float, int]:
    above = t < SCORES
    s = float(sum(w for w, y, a in zip(WEIGHTS, LABELS, above, strict=True) if a and y == 1))
    b = float(sum(w for w, y, a in zip(WEIGHTS, LABELS, above, strict=True) if a and y == 0))
    return s, b, int(sum(1 for y, a in zip(LABELS, above, strict=True) if a and y == 0))


def test_significance_scan_equals_a_hand_computation():
    scan = significance_scan(SCORES, LABELS == 1, WEIGHTS, THRESHOLDS, min_background_events=2)
    hand = [_hand_yields(t) for t in THRESHOLDS]
    # t = 0.9: no background event above; t = 0.85: the largest Z_A, but from 1 background
    # event (fewer than min_background_events): neither may be the best threshold
    for i, (s, b, n_b) in enumerate(hand):
        assert scan["s"][i] == pytest.approx(s) and scan["b"][i] == pytest.approx(b)
        assert scan["n_background_events"][i] == n_b
        assert scan["s_over_sqrt_b"][i] == pytest.approx(s / math.sqrt(b + 0.001))
        if b > 0:
            assert scan["asimov"][i] == pytest.approx(_hand_z(s, b))
    allowed = [i for i, (s, b, n_b) in enumerate(hand) if b > 0 and n_b >= 2]
    with_b = [i for i, (s, b, n_b) in enumerate(hand) if b > 0]
    assert THRESHOLDS[max(with_b, key=lambda i: _hand_z(*hand[i][:2]))] == 0.85
    best = max(allowed, key=lambda i: _hand_z(hand[i][0], hand[i][1]))
    assert scan["best_threshold"] == THRESHOLDS[best]
    assert scan["max_significance"] == pytest.approx(_hand_z(*hand[best][:2]))
    best_sb = max(allowed, key=lambda i: hand[i][0] / math.sqrt(hand[i][1] + 1e-3))
    assert scan["max_significance_s_sqrt_b"] == pytest.approx(
        hand[best_sb][0] / math.sqrt(hand[best_sb][1] + 1e-3)
    )
    assert (scan["best_threshold"], scan["best_threshold_s_sqrt_b"]) == (0.5, 0.75)  # the two formulas differ


def test_significance_uncertainty_equals_the_analytic_propagation():
    s, b, ds, db = 12.0, 40.0, 1.5, 3.0
    z = _hand_z(s, b)
    dz_ds, dz_db = math.log(1 + s / b) / z, (math.log(1 + s / b) - s / b) / z
    expected = math.hypot(dz_ds * ds, dz_db * db)
    assert asimov_uncertainty(np.array([s]), np.array([b]), np.array([ds]), np.array([db]))[
        0
    ] == pytest.approx(expected, rel=1e-5)


def test_region_significance_equals_a_hand_computation():
    region = SCORES > 0.5  # as if a cut-based selection
    r = region_significance(region, LABELS == 1, WEIGHTS)
    s, b, _ = _hand_yields(0.5)
    assert r["s"] == pytest.approx(s) and r["b"] == pytest.approx(b)
    assert r["significance"] == pytest.approx(_hand_z(s, b))
    assert r["significance_s_sqrt_b"] == pytest.approx(s / math.sqrt(b + 1e-3))
    sig = (LABELS == 1) & region
    assert r["s_unc"] == pytest.approx(math.sqrt(float(np.sum(WEIGHTS[sig] ** 2))))


def test_cv_threshold_significance_chooses_each_fold_cut_on_the_other_fold():
    event = np.arange(len(SCORES))
    sc = HeldOutScores(LABELS, SCORES, WEIGHTS, WEIGHTS, event, event, SCORES)
    out = cv_threshold_significance(sc, 2, min_background_events=1)
    s = b = 0.0
    for f in (0, 1):
        other, mine = event % 2 != f, event % 2 == f
        t = significance_scan(SCORES[other], LABELS[other] == 1, WEIGHTS[other], min_background_events=1)[
            "best_threshold"
        ]
        assert out["thresholds"][f] == t
        s += WEIGHTS[mine & (t < SCORES) & (LABELS == 1)].sum()
        b += WEIGHTS[mine & (t < SCORES) & (LABELS == 0)].sum()
    assert out["significance"] == pytest.approx(_hand_z(s, b))


# --- the held-out guarantee, checked with bare onnxruntime sessions and the training masks ---
def _bare_held_out(
    models_dir, name: str, x: np.ndarray, event: np.ndarray, all_events: bool = False
) -> np.ndarray:
    """Each event scored by the fold file whose training mask (event % k != fold) excludes it."""
    card = ModelCard.read(models_dir / f"{name}.json")
    out = np.full(len(event), np.nan)
    for fold in range(card.k):
        apply, trained_on = event % card.k == fold, event % card.k != fold
        assert not np.any(apply & trained_on)
        if all_events:  # the card's fold model was trained on exactly these events
            assert card.folds[fold].n_train == trained_on.sum()
        sess = ort.InferenceSession(
            str(models_dir / f"{name}_fold{fold}.onnx"), providers=["CPUExecutionProvider"]
        )
        part = sess.run([card.output.name], {"features": x[apply]})[0]
        out[apply] = part[:, card.output.column] if card.output.column is not None else part.ravel()
    return out


def _features(dm_features_run) -> pd.DataFrame:
    return pd.concat(
        [pd.read_parquet(p) for p in sorted((dm_features_run[1] / "features").rglob("*.parquet"))],
        ignore_index=True,
    )


def test_evaluation_scores_every_event_with_the_model_that_did_not_see_it(
    dm_features_run, dm_models, tmp_path
):
    summary = evaluate("atlas-dm", dm_features_run[1] / "features", dm_models, tmp_path)
    frame = _features(dm_features_run)
    x = frame[list(SEED)].to_numpy(np.float32)
    event, y, w = frame["event"].to_numpy(), frame["label"].to_numpy(), frame["weight"].to_numpy()
    for name in ("hgb", "mlp", "rf"):
        held_out = _bare_held_out(dm_models, name, x, event, all_events=True)
        scan = significance_scan(held_out, y == 1, w)
        m = summary["models"][name]
        assert m["significance"]["s"] == pytest.approx(scan["s"], rel=1e-6)
        assert m["max_significance"] == pytest.approx(scan["max_significance"], rel=1e-6)
        assert m["best_threshold"] == scan["best_threshold"]
        assert m["max_significance_s_sqrt_b"] == pytest.approx(scan["max_significance_s_sqrt_b"], rel=1e-6)
        assert (tmp_path / f"significance_{name}.png").stat().st_size > 20_000
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["cut_based_significance"] == summary["cut_based_significance"] > 0
    # `hepsieve run --working-points` applies atlas-dm's significance working points
    best = {name: m["best_threshold"] for name, m in metrics["models"].items()}
    assert working_points(tmp_path / "metrics.json") == best


def test_run_histograms_hold_held_out_scores_only(dm_toy_dir, dm_models, dm_features_run, tmp_path):
    result = run(
        RunConfig(
            "atlas-dm", dm_toy_dir, tmp_path, models_dir=dm_models, executor="iterative", progress=False
        )
    )
    for dataset in ("DM_300", "ZZ", "Zjets"):
        table = pq.read_table(
            dm_toy_dir / f"{'Z+jets' if dataset == 'Zjets' else dataset}.parquet"
        ).to_pandas()
        table = table[table["sum_lep_charge"] == 0]
        x, event = table[list(SEED)].to_numpy(np.float32), table["eventNumber"].to_numpy()
        for name in ("hgb", "mlp", "rf"):
            held_out = _bare_held_out(dm_models, name, x, event)
            h = result.histograms[f"score_{name}"][
                {"dataset": dataset, "category": "ml", "variation": "nominal"}
            ]
            expected = hist.Hist(h.axes[0], storage=hist.storage.Weight()).fill(
                held_out, weight=table["totalWeight"]
            )
            np.testing.assert_allclose(h.values(flow=True), expected.values(flow=True), rtol=1e-9, atol=1e-12)
    cut = json.loads((tmp_path / "run.json").read_text())["score_cut"]
    assert set(cut) == {"hgb", "mlp", "rf"}


def test_cut_based_significance_equals_the_region_of_the_run(dm_features_run, dm_models, tmp_path):
    summary = evaluate("atlas-dm", dm_features_run[1] / "features", dm_models, tmp_path)
    cutflow = dm_features_run[0].cutflow
    s = cutflow["DM_300"]["category cut-based"]["sumw"]
    b = sum(v["category cut-based"]["sumw"] for k, v in cutflow.items() if k != "DM_300")
    region = summary["reference_regions"]["cut-based"]
    assert region["s"] == pytest.approx(s, rel=1e-9) and region["b"] == pytest.approx(b, rel=1e-9)
    assert summary["cut_based_significance"] == pytest.approx(_hand_z(s, b), rel=1e-9)
    # the cuts-passed histogram's last bin is the region, per dataset
    h = dm_features_run[0].histograms["cut_based_cuts"]
    for dataset, steps in cutflow.items():
        values = h[{"dataset": dataset, "category": "ml", "variation": "nominal"}].values()
        assert values[-1] == pytest.approx(steps["category cut-based"]["sumw"], rel=1e-9, abs=1e-12)


# --- real-format input: the CSVs as published, any column order, extra columns ---
REAL_NAMES = ("DM_300", "ZZ", "WZ", "Z+jets", "Non-resonant_ll")


def _real_format_csvs(dm_toy_dir, out, rng) -> None:
    out.mkdir()
    for name in REAL_NAMES:
        frame = pd.read_csv(dm_toy_dir / f"{name}.csv")
        columns = list(frame.columns)
        rng.shuffle(columns)
        frame = frame[columns]
        frame.insert(3, "channelNumber", 303513)
        frame["comment"] = "mc16"
        frame.to_csv(out / f"{name}.csv", index=False)


def _same_values_as_the_toy(dm_toy_dir, converted_dir) -> None:
    for name in REAL_NAMES:  # the same values as the toy's own Parquet, whatever the column order
        converted, toy = (
            pq.read_table(converted_dir / f"{name}.parquet"),
            pq.read_table(dm_toy_dir / f"{name}.parquet"),
        )
        assert sorted(converted.column_names) == sorted(toy.column_names)
        assert converted.select(toy.column_names).equals(toy)


def test_shuffled_columns_and_extra_columns_convert_and_run(dm_toy_dir, dm_features_run, tmp_path, capsys):
    csvs = tmp_path / "csv"
    _real_format_csvs(dm_toy_dir, csvs, np.random.default_rng(4))
    inputs = prepare_inputs(ANALYSIS, csvs, tmp_path / "data")  # the demo's and `run`'s first step
    assert inputs == tmp_path / "data"
    _same_values_as_the_toy(dm_toy_dir, inputs)
    out = tmp_path / "features"
    result = run(RunConfig("atlas-dm", inputs, out, mode="features", executor="iterative", progress=False))
    assert result.cutflow == dm_features_run[0].cutflow
    assert json.loads((out / "run.json").read_text())["is_toy"] is False  # no toy.json among the CSVs


@pytest.mark.slow
def test_shuffled_columns_and_extra_columns_convert_and_run_through_the_demo(
    dm_toy_dir, dm_features_run, tmp_path, capsys
):
    csvs = tmp_path / "csv"
    _real_format_csvs(dm_toy_dir, csvs, np.random.default_rng(4))
    out = tmp_path / "demo"
    assert (
        main(
            ["-q", "demo", "atlas-dm", "--data-dir", str(csvs), "--out", str(out), "--executor", "iterative"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "cut-based" in printed and "Z_A (Asimov)" in printed
    _same_values_as_the_toy(dm_toy_dir, out / "data")
    cutflow = json.loads((out / "features" / "cutflow.json").read_text())
    assert cutflow == json.loads(json.dumps(dm_features_run[0].cutflow))
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert {"cut_based_significance", "reference_regions"} <= set(metrics)
    for name in ("hgb", "mlp", "rf"):
        m = metrics["models"][name]
        assert {"max_significance", "max_significance_s_sqrt_b", "best_threshold"} <= set(m)
        assert m["auc_test"] > 0.85
    record = json.loads((out / "histograms" / "run.json").read_text())
    assert record["is_toy"] is False  # no toy.json among the CSVs
    assert record["score_cut"] == {n: m["best_threshold"] for n, m in metrics["models"].items()}
    with (out / "histograms" / "histograms.pkl").open("rb") as fin:
        hists = pickle.load(fin)
    for plot in ("ETmiss_ml", "ETmiss_cut-based", "mll_cut-based", "dphi_pTll_ETmiss_ml", "score_hgb_ml"):
        assert (out / "histograms" / "plots" / f"{plot}.png").is_file(), plot
    assert "ETmiss_rf_pass" in hists and (out / "histograms" / "plots" / "ETmiss_rf_pass_ml.png").is_file()


def test_a_missing_feature_column_is_one_clear_error(dm_toy_dir, tmp_path, capsys):
    data = tmp_path / "pq"
    data.mkdir()
    for name in REAL_NAMES:
        shutil.copy(dm_toy_dir / f"{name}.parquet", data)
    table = pq.read_table(data / "WZ.parquet")
    pq.write_table(table.drop(["ETmiss_over_HT"]), data / "WZ.parquet")
    with pytest.raises(InputFileError, match=r"WZ\.parquet: lacks column\(s\) ETmiss_over_HT"):
        run(RunConfig("atlas-dm", data, executor="iterative", progress=False))
    frame = pd.read_csv(dm_toy_dir / "ZZ.csv").drop(columns=["dphi_pTll_ETmiss"])
    frame.to_csv(tmp_path / "ZZ.csv", index=False)
    assert main(["convert", "--analysis", "atlas-dm", str(tmp_path / "ZZ.csv"), "--out", str(data)]) == 2
    err = capsys.readouterr().err
    assert "ZZ.csv: lacks column(s) dphi_pTll_ETmiss needed by analysis 'atlas-dm'" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_on_fresh_toys_within_five_minutes(tmp_path, capsys):
    start = time.perf_counter()
    assert main(["-q", "demo", "atlas-dm", "--out", str(tmp_path)]) == 0
    seconds = time.perf_counter() - start
    assert seconds < 300, f"the demo took {seconds:.0f} s"
    assert "cut-based" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    cut_based = metrics["cut_based_significance"]
    for name, m in metrics["models"].items():  # held out, on the default toy (20 000 rows per file)
        assert m["max_significance"] - 3 * m["max_significance_unc"] > cut_based, name
        assert (tmp_path / "evaluation" / f"significance_{name}.png").is_file()
    assert (tmp_path / "histograms" / "plots" / "ETmiss_cut-based.png").is_file()


def test_shipped_models_load_and_separate_unseen_toy_events(dm_toy_dir):
    from hepsieve.models import default_models_dir
    from hepsieve.models.scorer import load_scorers
    from hepsieve.training.evaluate import weighted_auc

    scorers = {s.name: s for s in load_scorers(default_models_dir(ANALYSIS), ANALYSIS)}
    assert set(scorers) == {"hgb", "mlp", "rf"} and all(s.k == 2 for s in scorers.values())
    frames = []
    for name in REAL_NAMES:
        frame = pq.read_table(dm_toy_dir / f"{name}.parquet").to_pandas()
        frames.append(frame.assign(label=int(name == "DM_300")))
    frame = pd.concat(frames)
    frame = frame[frame["sum_lep_charge"] == 0]
    x = frame[list(SEED)].to_numpy(np.float32)
    for name, scorer in scorers.items():  # another seed than the models' toy: every event unseen
        score = scorer.score(x, frame["eventNumber"].to_numpy())
        assert (
            weighted_auc(frame["label"].to_numpy(), score, np.abs(frame["totalWeight"].to_numpy())) > 0.9
        ), name
