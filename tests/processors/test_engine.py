"""The open engine: plug-in analyses (module:ATTR, entry points), definition checks, the Python
API, model cards for ONNX trained elsewhere."""

import json
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hepsieve.processors import ConfigurationError, ModelCardError, RunConfig, Scoring, run
from hepsieve.processors.analyses import available, get_analysis
from hepsieve.processors.cli import main

PLUGIN = textwrap.dedent('''
    """A dilepton analysis written outside hepsieve: Z -> ll + MET, flat CSV -> Parquet."""
    import awkward as ak
    import numpy as np

    from hepsieve.processors import (Analysis, Categories, FeatureSpec, Inputs, Scoring, Step, Style,
                                     Weights, branch_types, histogram)

    MLL_WINDOW = (70.0, 110.0)
    MET_MIN = 20.0

    def weights(events, objects, meta):
        return np.ones(len(events)) if meta.get("is_data") else ak.to_numpy(events.weight)

    def categorize(obs):
        ee = ak.to_numpy(obs.flavour) == 11
        return {"ee": ee, "mumu": ~ee}

    ANALYSIS = Analysis(
        name="my-dilepton",
        inputs=Inputs(branches={**branch_types("int", "eventNumber", "flavour"),
                                **branch_types("float", "lep1_pt", "lep2_pt", "mll", "met")},
                      mc_branches=branch_types("float", "weight"), event_id="eventNumber"),
        selection=(
            Step("mll", f"{MLL_WINDOW[0]:g} < mll < {MLL_WINDOW[1]:g} GeV",
                 lambda e, o: (ak.to_numpy(e.mll) > MLL_WINDOW[0]) & (ak.to_numpy(e.mll) < MLL_WINDOW[1])),
            Step("met", f"met > {MET_MIN:g} GeV", lambda e, o: ak.to_numpy(e.met) > MET_MIN),
        ),
        weights=Weights(weights),
        categories=Categories(("ee", "mumu"), categorize),
        features={"kinematic": FeatureSpec(("lep1_pt", "lep2_pt", "met"), lambda e: e, units=("GeV",) * 3)},
        histograms=(histogram("mll", 20, 70, 110, r"$m_{\\ell\\ell}$ [GeV]", lambda e: e.mll),
                    histogram("met", 20, 0, 400, r"$E_T^{miss}$ [GeV]", lambda e: e.met)),
        scoring=Scoring(categories=("ee", "mumu"), cut_histogram="met", score_cut=0.5),
        style=Style("ATLAS", "my dilepton"),
    )
''')


def _write_csv(path: Path, rng, n: int, met_scale: float, weight: float | None) -> None:
    columns = {
        "lep1_pt": rng.gamma(4, 12, n) + 25,
        "lep2_pt": rng.gamma(3, 8, n) + 10,
        "mll": rng.normal(91.2, 6, n),
        "met": rng.exponential(met_scale, n),
        "flavour": rng.choice([11, 13], n),
    }
    if weight is not None:
        columns["weight"] = np.full(n, weight)
    header = ",".join(columns)
    rows = [
        ",".join(repr(float(v)) if k != "flavour" else str(int(v)) for k, v in zip(columns, row, strict=True))
        for row in zip(*columns.values(), strict=True)
    ]
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """A directory outside the package with the analysis module, CSVs, and a fileset."""
    d = tmp_path_factory.mktemp("plugin")
    (d / "my_dilepton.py").write_text(PLUGIN)
    rng = np.random.default_rng(3)
    _write_csv(d / "signal.csv", rng, 1500, 120.0, 0.01)
    _write_csv(d / "background.csv", rng, 3000, 25.0, 0.2)
    _write_csv(d / "data.csv", rng, 700, 30.0, None)
    fileset = {
        "tree": "parquet",
        "format": "parquet",
        "lumi_pb": 1000.0,
        "datasets": {
            name: {
                "files": [f"{name}.parquet"],
                "metadata": {"role": role, "process": name, "is_data": role == "data"},
            }
            for name, role in (("signal", "signal"), ("background", "background"), ("data", "data"))
        },
    }
    (d / "fileset.json").write_text(json.dumps(fileset))
    return d


def test_plugin_analysis_runs_through_every_command(plugin_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(plugin_dir)  # the module file is found in the working directory
    monkeypatch.setattr(sys, "path", list(sys.path))
    ref, fs, pq = "my_dilepton:ANALYSIS", str(plugin_dir / "fileset.json"), tmp_path / "pq"
    csvs = [str(plugin_dir / f"{n}.csv") for n in ("signal", "background", "data")]
    assert main(["-q", "convert", *csvs, "--out", str(pq)]) == 0
    common = ["--fileset", fs, "--data-dir", str(pq), "--executor", "iterative"]
    assert main(["-q", "run", ref, "--mode", "features", "--out", str(tmp_path / "f"), *common]) == 0
    for kind in ("rf", "mlp"):
        extra = ["--epochs", "3"] if kind == "mlp" else []
        assert (
            main(
                [
                    "-q",
                    "train",
                    ref,
                    "--features",
                    str(tmp_path / "f" / "features"),
                    "--model",
                    kind,
                    "--out",
                    str(tmp_path / "m"),
                    *extra,
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "-q",
                "evaluate",
                ref,
                "--features",
                str(tmp_path / "f" / "features"),
                "--models",
                str(tmp_path / "m"),
            ]
        )
        == 0
    )
    assert (
        main(["-q", "run", ref, "--models", str(tmp_path / "m"), "--out", str(tmp_path / "h"), *common]) == 0
    )
    assert main(["-q", "plot", str(tmp_path / "h")]) == 0
    capsys.readouterr()
    record = json.loads((tmp_path / "h" / "run.json").read_text())
    assert record["analysis"] == "my-dilepton" and record["analysis_ref"] == ref
    assert set(record["models"]) == {"mlp", "rf"}
    cutflow = json.loads((tmp_path / "h" / "cutflow.json").read_text())
    assert cutflow["signal"]["input"]["n"] == 1500 and cutflow["data"]["input"]["n"] == 700
    assert (tmp_path / "h" / "plots" / "met_ee.png").stat().st_size > 10_000
    metrics = json.loads((tmp_path / "m" / "evaluation" / "metrics.json").read_text())
    assert metrics["models"]["rf"]["auc_test"] > 0.7  # MET separates the toy classes


def test_plugin_analysis_object_in_the_python_api_on_a_futures_pool(plugin_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(plugin_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    from hepsieve.datasets.converters import csv_to_parquet

    for name in ("signal", "background", "data"):
        csv_to_parquet(plugin_dir / f"{name}.csv", tmp_path / f"{name}.parquet", event_id="eventNumber")
    analysis = get_analysis("my_dilepton:ANALYSIS")
    kw = {"fileset": str(plugin_dir / "fileset.json"), "progress": False, "workers": 2}
    by_object = run(RunConfig(analysis, str(tmp_path), executor="futures", **kw))
    by_name = run(RunConfig("my_dilepton:ANALYSIS", tmp_path, executor="iterative", **kw))
    assert by_object.files == [] and not list(tmp_path.glob("*.json"))  # nothing written
    assert by_object.cutflow == by_name.cutflow
    h = by_object.histograms["mll"]
    assert h[{"dataset": "signal", "variation": "nominal"}].sum(flow=True).value == pytest.approx(
        by_object.cutflow["signal"]["met > 20 GeV"]["sumw"]
    )


def _cms():
    return get_analysis("cms-hzz4l")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda a: replace(a, scoring=replace(a.scoring, cut_histogram="m5l")), "scoring.cut_histogram"),
        (lambda a: replace(a, scoring=Scoring(("vbf", "boosted"), "m4l", 0.6)), "scoring.categories"),
        (
            lambda a: replace(a, features={"high-level": replace(a.features["high-level"], units=("GeV",))}),
            "features['high-level'].units",
        ),
        (
            lambda a: replace(a, histograms=(replace(a.histograms[1], categories=("vbf", "tth")),)),
            "histograms['mjj'].categories",
        ),
        (lambda a: replace(a, inputs=replace(a.inputs, event_id="f_evt")), "inputs.event_id"),
        (lambda a: replace(a, inputs=replace(a.inputs, schema="miniaod")), "inputs.schema"),
        (lambda a: replace(a, inputs=replace(a.inputs, branches={"f_event": "integer"})), "inputs.branches"),
        (lambda a: replace(a, selection=(replace(a.selection[0], inputs=("csv",)),)), "selection step"),
    ],
)
def test_definition_errors_name_the_field_in_one_line(change, field):
    with pytest.raises(ConfigurationError) as err:
        change(_cms())
    assert field in str(err.value) and "\n" not in str(err.value)


def test_generate_without_a_toy_and_bad_references_are_one_line_errors(
    plugin_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(plugin_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    cases = {
        ("generate", "my_dilepton:ANALYSIS", "--out", str(tmp_path)): "tools.toy_generator is not set",
        ("run", "no_such_module:ANALYSIS", "--data-dir", ".", "--out", str(tmp_path)): "cannot import module",
        ("run", "my_dilepton:NOPE", "--data-dir", ".", "--out", str(tmp_path)): "has no attribute 'NOPE'",
        (
            "run",
            "json:dumps",
            "--data-dir",
            ".",
            "--out",
            str(tmp_path),
        ): "not a hepsieve.processors.Analysis",
        ("plot", "cms-hzz5l"): None,
        ("run", "cms-hzz5l", "--data-dir", ".", "--out", str(tmp_path)): "unknown analysis 'cms-hzz5l'",
        ("generate", "higgs-uci", "--datasets", "validation", "--out", str(tmp_path)): "unknown dataset",
    }
    for argv, message in cases.items():
        assert main(["-q", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert message is None or message in err, err


def test_entry_point_plugins_are_listed_and_loaded(plugin_dir, tmp_path, monkeypatch, capsys):
    dist = tmp_path / "site" / "my_dilepton_pkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-dilepton-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hepsieve.analyses]\nplug-dilepton = my_dilepton:ANALYSIS\n")
    (tmp_path / "site" / "my_dilepton.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    names = {e.name: e for e in available()}
    assert names["plug-dilepton"].source == "entry point of my-dilepton-pkg"
    assert {"cms-hzz4l", "atlas-hzz4l", "higgs-uci"} <= set(names)
    assert get_analysis("plug-dilepton").name == "my-dilepton"
    assert main(["analyses"]) == 0
    assert "plug-dilepton" in capsys.readouterr().out


def test_hepsieve_card_for_onnx_trained_elsewhere(cms_models, cms_features_run, tmp_path, capsys):
    from hepsieve.models import OnnxScorer

    folds = [str(cms_models / f"mlp_fold{i}.onnx") for i in (0, 1)]
    base = ["card", "cms-hzz4l", "--onnx", *folds, "--name", "ext", "--out", str(tmp_path)]
    assert main(["-q", *base, "--output-name", "p_signal", "--output-column", "0"]) == 0
    capsys.readouterr()
    ext, own = OnnxScorer.from_card(tmp_path / "ext.json"), OnnxScorer.from_card(cms_models / "mlp.json")
    x = np.random.default_rng(0).normal(100, 30, (50, 5)).astype(np.float32)
    event = np.arange(50)
    np.testing.assert_array_equal(ext.score(x, event), own.score(x, event))
    assert ext.card.folds[1].applied_to == "event % 2 == 1"
    bad = tmp_path / "bad"
    assert main(["-q", *base[:-1], str(bad), "--output-name", "probability"]) == 2
    err = capsys.readouterr().err
    assert "mlp_fold0.onnx" not in err and "ext_fold0.onnx: no output 'probability'" in err
    assert not list(bad.glob("*"))  # nothing left behind
    assert main(["-q", *base[:-1], str(bad), "--output-name", "p_signal", "--feature-set", "low-level"]) == 2
    assert "input shape" in capsys.readouterr().err


def test_broken_onnx_is_named_when_the_models_load_not_at_a_chunk(cms_models, tmp_path):
    import shutil

    from hepsieve.models import OnnxScorer

    shutil.copytree(cms_models, tmp_path / "m")
    card = json.loads((tmp_path / "m" / "rf.json").read_text())
    (tmp_path / "m" / "rf_fold1.onnx").write_bytes(b"not an onnx file")
    for fold in card["folds"]:
        fold["sha256"] = ""
    (tmp_path / "m" / "rf.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match=r"rf_fold1\.onnx: not a valid ONNX model"):
        OnnxScorer.from_card(tmp_path / "m" / "rf.json")


def test_the_readme_analysis_example_builds():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = "# my_dilepton.py" + readme.split("# my_dilepton.py", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["ANALYSIS"].name == "my-dilepton"
    assert [s.label for s in namespace["ANALYSIS"].selection] == ["met > 20 GeV"]


def test_overlapping_exclusive_categories_are_a_configuration_error(plugin_dir, monkeypatch):
    import awkward as ak

    from hepsieve.processors import Categories
    from hepsieve.processors.processor import AnalysisProcessor

    monkeypatch.chdir(plugin_dir)
    monkeypatch.setattr(sys, "path", list(sys.path))
    analysis = get_analysis("my_dilepton:ANALYSIS")
    events = ak.Array(
        {"eventNumber": [1, 2, 3], "flavour": [11, 13, 13], "lep1_pt": [50.0] * 3, "lep2_pt": [30.0] * 3,
         "mll": [91.0] * 3, "met": [40.0] * 3, "weight": [1.0] * 3}
    )  # fmt: skip
    meta = {"dataset": "signal", "filename": "f.parquet", "entrystart": 0, "entrystop": 3}
    exclusive = AnalysisProcessor(analysis).process_chunk(events, meta)
    assert exclusive["cutflow"]["signal"]["category mumu"]["n"] == 2
    # the third event in both: a one-line error, not a double count
    both = replace(
        analysis, categories=Categories(("ee", "mumu"), lambda o: {"ee": [1, 0, 1], "mumu": [0, 1, 1]})
    )
    with pytest.raises(ConfigurationError, match="categories overlap; set Categories"):
        AnalysisProcessor(both).process_chunk(events, meta)
    open_ = replace(both, categories=replace(both.categories, exclusive=False))
    cutflow = AnalysisProcessor(open_).process_chunk(events, meta)["cutflow"]["signal"]
    assert cutflow["category ee"]["n"] == cutflow["category mumu"]["n"] == 2
