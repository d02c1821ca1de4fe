"""Never silently wrong, on the input side: damaged files, wrong branch types, non-finite weights,
invalid labels, malformed filesets, link loops, models broken at load (issue 10 classes 4, 5, 8, 9)."""

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import uproot

from hepsieve.processors import DataValueError, InputFileError, ModelCardError, RunConfig, run
from hepsieve.processors.analyses.hzz4l_cms import TREE
from hepsieve.processors.cli import main
from hepsieve.processors.errors import ChunkReadError, ConfigurationError
from hepsieve.processors.processor import AnalysisProcessor

DATASETS = ["VBF_HToZZTo4mu", "ZZTo4mu"]


def _events(cms_toy_dir, name="VBF_HToZZTo4mu"):
    return uproot.open(cms_toy_dir / f"{name}.root")[TREE].arrays(library="np")


def _write(path: Path, events: dict, baskets: int = 3) -> None:
    """Write ``events`` as a CMS reduced ntuple, in ``baskets`` baskets per branch (LZ4)."""
    with uproot.recreate(path, compression=uproot.LZ4(1)) as fout:
        fout.mktree(TREE, {k: v.dtype for k, v in events.items()})
        for part in np.array_split(np.arange(len(events["f_event"])), baskets):
            fout[TREE].extend({k: v[part] for k, v in events.items()})


@pytest.fixture
def data_dir(cms_toy_dir, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name in DATASETS:
        shutil.copy(cms_toy_dir / f"{name}.root", d)
    return d


def _run(data_dir, out, **kw):
    kw.setdefault("executor", "iterative")
    return run(RunConfig("cms-hzz4l", data_dir, out, datasets=DATASETS, progress=False, chunksize=1000, **kw))


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_file_fails_the_preflight_and_is_skipped_on_request(data_dir, tmp_path, fraction):
    path = data_dir / "ZZTo4mu.root"
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)])
    with pytest.raises(InputFileError, match=r"ZZTo4mu\.root: cannot be read as ROOT"):
        _run(data_dir, tmp_path / "out")
    result = _run(data_dir, tmp_path / "out", skip_bad_files=True)
    assert list(result.cutflow) == ["VBF_HToZZTo4mu"]
    assert any("ZZTo4mu.root" in s for s in result.record.skipped_files)


def test_damaged_basket_is_one_error_naming_the_chunk_or_is_skipped_with_its_entries(
    cms_toy_dir, data_dir, tmp_path, capsys
):
    path = data_dir / "ZZTo4mu.root"
    _write(path, _events(cms_toy_dir, "ZZTo4mu"))
    branch = uproot.open(path)[TREE]["f_event"]  # sequential integers: compressed baskets (LZ4 + checksum)
    seek, size = branch.member("fBasketSeek")[1], branch.member("fBasketBytes")[1]
    assert size < 1000 * 8  # basket 1 is compressed (ROOT keeps no checksum of uncompressed ones)
    raw = bytearray(path.read_bytes())
    raw[seek + size - 60 : seek + size - 40] = os.urandom(20)  # inside basket 1's compressed data
    path.write_bytes(bytes(raw))
    with pytest.raises(ChunkReadError, match=r"ZZTo4mu\.root entries 1000-2000: cannot be read"):
        _run(data_dir, tmp_path / "out")
    assert (
        main(
            [
                "-q",
                "run",
                "cms-hzz4l",
                "--data-dir",
                str(data_dir),
                "--out",
                str(tmp_path / "o"),
                "--datasets",
                *DATASETS,
                "--executor",
                "futures",
                "--workers",
                "2",
                "--chunksize",
                "1000",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "entries 1000-2000: cannot be read" in err
    assert "Traceback" not in err and "WorkItem" not in err
    result = _run(data_dir, tmp_path / "out", skip_bad_files=True)
    acc = result.record.accounting["ZZTo4mu"]
    assert acc["expected"] == 3000 and acc["processed"] == 2000 and acc["lost"] == {str(path): 1000}
    assert result.cutflow["ZZTo4mu"]["input"]["n"] == 2000
    assert any(
        "1000 entries lost" in s
        for s in json.loads((tmp_path / "out" / "run.json").read_text())["skipped_files"]
    )


@pytest.mark.parametrize(
    ("branch", "value", "found"),
    [
        ("f_mass4l", lambda v: v.astype(np.int32), "int32"),
        ("f_event", lambda v: v.astype(np.float64), "float64"),
    ],
)
def test_branch_of_another_type_is_named(cms_toy_dir, data_dir, tmp_path, branch, value, found):
    events = _events(cms_toy_dir)
    events[branch] = value(events[branch])
    _write(data_dir / "VBF_HToZZTo4mu.root", events, baskets=1)
    with pytest.raises(
        InputFileError, match=rf"VBF_HToZZTo4mu\.root: branch '{branch}' is {found}, the analysis reads"
    ):
        _run(data_dir, tmp_path / "out")


def test_jagged_branch_where_a_flat_one_is_expected(cms_toy_dir, data_dir, tmp_path):
    import awkward as ak

    events = _events(cms_toy_dir)
    jagged = {k: v for k, v in events.items() if k != "f_Z1mass"}
    counts = 1 + np.arange(len(events["f_Z1mass"])) % 2
    jagged["f_Z1mass"] = ak.unflatten(np.repeat(events["f_Z1mass"], counts), counts)
    with uproot.recreate(data_dir / "VBF_HToZZTo4mu.root") as fout:
        fout[TREE] = jagged
    with pytest.raises(
        InputFileError, match=r"branch 'f_Z1mass' is var \* float32, the analysis reads it as float"
    ):
        _run(data_dir, tmp_path / "out")


def _damage_the_second_read(monkeypatch, reader: str) -> list:
    """Make the second chunk read raise OSError: flat (``tree.arrays``) or lazy (coffea)."""
    import awkward as ak

    from hepsieve.processors import chunkread, executors
    from hepsieve.processors import processor as processor_module
    from hepsieve.processors import runner as runner_module

    calls: list = []

    def damaged(read, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second chunk read
            raise OSError("decompression failed")
        return read(*args, **kwargs)

    if reader == "flat":
        open_tree = chunkread.open_tree

        def tree(*args):
            opened = open_tree(*args)
            return SimpleNamespace(arrays=lambda *a, **k: damaged(opened.arrays, *a, **k))

        monkeypatch.setattr(chunkread, "open_tree", tree)
    else:  # coffea's lazy NanoEvents (Parquet input, a subclass's process): read first, in a guard
        materialize = ak.materialize
        if reader == "coffea":
            monkeypatch.setattr(executors, "run_flat", lambda *a: None)
        else:  # a subclass overriding process() gets coffea's events, and the guard too
            monkeypatch.setattr(runner_module, "AnalysisProcessor", OwnProcess)
        monkeypatch.setattr(processor_module.ak, "materialize", lambda a: damaged(materialize, a))
    return calls


class OwnProcess(AnalysisProcessor):
    """A user's processor: its own ``process``, which calls hepsieve's."""

    def process(self, events):
        return super().process(events)


@pytest.mark.parametrize("reader", ["flat", "coffea", "subclass"])
def test_read_failure_in_a_chunk_is_told_apart_from_an_analysis_error(higgs_toy_dir, monkeypatch, reader):
    calls = _damage_the_second_read(monkeypatch, reader)
    kw = {"datasets": ["train"], "executor": "iterative", "chunksize": 5000, "progress": False}
    pattern = r"HIGGS_train_00\d\.root entries 0-5000: cannot be read \(OSError"
    with pytest.raises(ChunkReadError, match=pattern) as err:
        run(RunConfig("higgs-uci", higgs_toy_dir, None, **kw))
    damaged_file = str(err.value).split(" entries ")[0]
    calls.clear()
    result = run(RunConfig("higgs-uci", higgs_toy_dir, None, skip_bad_files=True, **kw))
    assert result.record.accounting["train"]["lost"] == {damaged_file: 5000}


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_an_error_naming_file_and_entries(cms_toy_dir, data_dir, tmp_path, bad):
    events = _events(cms_toy_dir)
    events["f_weight"][[5, 1700]] = bad
    _write(data_dir / "VBF_HToZZTo4mu.root", events)
    with pytest.raises(
        DataValueError,
        match=r"VBF_HToZZTo4mu\.root entries 0-1000: 1 event\(s\) with a non-finite"
        r" weight \(NaN/inf\), at entry 5;",
    ):
        _run(data_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("label", "shown"), [(np.nan, "nan"), (2.0, "2.0")])
def test_higgs_labels_other_than_0_or_1_are_an_error(higgs_toy_dir, tmp_path, label, shown):
    from hepsieve.processors.analyses.higgs_uci import TREE as HIGGS

    d = tmp_path / "h"
    d.mkdir()
    cols = uproot.open(higgs_toy_dir / "HIGGS_test_000.root")[HIGGS].arrays(library="np")
    cols["label"][[7, 9]] = label
    with uproot.recreate(d / "HIGGS_test_000.root") as fout:
        fout[HIGGS] = cols
    with pytest.raises(
        DataValueError, match=rf"2 label\(s\) neither 0 nor 1 \(e\.g\. {shown}\), at entries 7, 9$"
    ):
        run(RunConfig("higgs-uci", d, None, datasets=["test"], executor="iterative", progress=False))


def _fileset(tmp_path, datasets):
    path = tmp_path / "fs.json"
    path.write_text(json.dumps({"tree": TREE, "datasets": datasets}))
    return str(path)


@pytest.mark.parametrize(
    ("datasets", "message"),
    [
        (["VBF_HToZZTo4mu"], "'datasets' must map dataset names"),
        ({"VBF": {"metadata": {}}}, "dataset 'VBF' has no 'files' list"),
        ({"VBF": {"files": []}}, "dataset 'VBF' lists no files"),
        ({"VBF": {"files": "VBF_HToZZTo4mu.root"}}, "'files' must be a list of names"),
        ({"VBF": {"files": ["VBF_HToZZTo4mu.root"], "metadata": []}}, "'metadata' must be an object"),
    ],
)
def test_malformed_filesets_are_one_line_errors(data_dir, tmp_path, capsys, datasets, message):
    argv = [
        "-q",
        "run",
        "cms-hzz4l",
        "--data-dir",
        str(data_dir),
        "--out",
        str(tmp_path / "o"),
        "--fileset",
        _fileset(tmp_path, datasets),
        "--executor",
        "iterative",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_link_loop_and_broken_link_in_the_data_dir(data_dir, tmp_path, capsys):
    (data_dir / "loop_a.root").symlink_to(data_dir / "loop_b.root")
    (data_dir / "loop_b.root").symlink_to(data_dir / "loop_a.root")
    fs = _fileset(tmp_path, {"VBF": {"files": ["loop_a.root"], "metadata": {"role": "signal"}}})
    assert (
        main(
            [
                "-q",
                "run",
                "cms-hzz4l",
                "--data-dir",
                str(data_dir),
                "--out",
                str(tmp_path / "o"),
                "--fileset",
                fs,
                "--executor",
                "iterative",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "loop_a.root: a symbolic link loop" in err and err.count("\n") == 1


def test_non_ascii_data_directory_runs(cms_toy_dir, tmp_path):
    d = tmp_path / "données_µμ"
    d.mkdir()
    shutil.copy(cms_toy_dir / "ZZTo4mu.root", d)
    result = run(
        RunConfig(
            "cms-hzz4l",
            d,
            tmp_path / "sortie_é",
            datasets=["ZZTo4mu"],
            executor="futures",
            workers=2,
            progress=False,
        )
    )
    assert result.record.accounting["ZZTo4mu"]["processed"] == 3000
    assert (tmp_path / "sortie_é" / "histograms.root").is_file()


def test_plot_of_an_incomplete_run_directory(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("{}")
    assert main(["-q", "plot", str(tmp_path / "r")]) == 2
    assert "incomplete run record" in capsys.readouterr().err
    (tmp_path / "r" / "run.json").write_text('{"analysis": "cms-hzz4l"')
    assert main(["-q", "plot", str(tmp_path / "r")]) == 2
    assert "not the run.json of a finished" in capsys.readouterr().err


def _two_input_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 5])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 5])
    out = helper.make_tensor_value_info("p_signal", TensorProto.FLOAT, [None, 5])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["p_signal"])], "two", [a, b], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_models_broken_at_load_time_name_the_onnx_file_before_any_chunk(
    cms_models, data_dir, tmp_path, monkeypatch
):
    def no_chunks(self, events):
        raise AssertionError("a chunk was processed")

    monkeypatch.setattr(AnalysisProcessor, "process", no_chunks)
    models = tmp_path / "m"
    shutil.copytree(cms_models, models)
    (models / "rf.json").unlink()
    card = json.loads((models / "mlp.json").read_text())
    card["output"]["name"] = "score"
    (models / "mlp.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match=r"mlp_fold0\.onnx: no output 'score' \(has \['p_signal'\]\)"):
        _run(data_dir, tmp_path / "out", models_dir=models)
    card["output"]["name"] = "p_signal"
    _two_input_onnx(models / "mlp_fold1.onnx")
    card["folds"][1]["sha256"] = ""
    (models / "mlp.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match=r"mlp_fold1\.onnx: 2 inputs"):
        _run(data_dir, tmp_path / "out", models_dir=models)
    assert not (tmp_path / "out").exists()


def test_unknown_dataset_role_is_named(data_dir, tmp_path):
    fs = _fileset(tmp_path, {"VBF": {"files": ["VBF_HToZZTo4mu.root"], "metadata": {"role": "sgnal"}}})
    with pytest.raises(ConfigurationError, match="role 'sgnal' is not one of"):
        run(
            RunConfig(
                "cms-hzz4l",
                data_dir,
                tmp_path / "o",
                mode="features",
                fileset=fs,
                executor="iterative",
                progress=False,
            )
        )
