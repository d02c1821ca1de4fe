"""Never silently wrong, on the run side: checkpoints reused only when nothing changed, features
exported exactly once, atomic and locked outputs, executor faults (issue 10 classes 1, 2, 6, 7)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest

from hepsieve.processors import ConfigurationError, RunConfig, run
from hepsieve.processors.outputs import OutputDir
from hepsieve.processors.processor import AnalysisProcessor

DATASETS = ["VBF_HToZZTo4e", "ZZTo4e"]


def _run(data, out, **kw):
    kw.setdefault("executor", "iterative")
    kw.setdefault("datasets", DATASETS)
    return run(RunConfig("cms-hzz4l", data, out, chunksize=1000, progress=False, **kw))


@pytest.fixture
def count_chunks(monkeypatch):
    """Count the chunks processed in this process (iterative executor)."""
    calls = []
    original = AnalysisProcessor.process

    def counted(self, events):
        calls.append(events.metadata["entrystart"])
        return original(self, events)

    monkeypatch.setattr(AnalysisProcessor, "process", counted)
    return calls


def _values(result):
    return {k: h.values(flow=True) for k, h in result.histograms.items()}


def test_checkpoint_reused_only_for_the_same_configuration(
    cms_toy_dir, cms_models, tmp_path, count_chunks, caplog
):
    ckpt = tmp_path / "ckpt"
    mlp = _run(cms_toy_dir, tmp_path / "a", models_dir=cms_models, models=["mlp"], checkpoint=ckpt)
    assert len(count_chunks) == 6 and mlp.record.reused_chunks == 0
    again = _run(cms_toy_dir, tmp_path / "b", models_dir=cms_models, models=["mlp"], checkpoint=ckpt)
    assert len(count_chunks) == 6 and again.record.reused_chunks == 6  # nothing recomputed
    assert again.cutflow == mlp.cutflow
    for name, values in _values(mlp).items():
        np.testing.assert_array_equal(_values(again)[name], values)
    changes = [
        {"models": ["rf"]},
        {"models": ["mlp"], "score_cut": 0.3},
        {"models": ["mlp"], "mode": "features"},
    ]
    for i, change in enumerate(changes):
        result = _run(cms_toy_dir, tmp_path / f"c{i}", models_dir=cms_models, checkpoint=ckpt, **change)
        assert result.record.reused_chunks == 0 and len(count_chunks) == 6 * (i + 2), change
        assert "holds chunks of" in caplog.text and "they are not reused" in caplog.text
    rf = _run(cms_toy_dir, tmp_path / "d", models_dir=cms_models, models=["rf"], checkpoint=ckpt)
    assert set(rf.histograms) >= {"score_rf"} and "score_mlp" not in rf.histograms
    assert json.loads((tmp_path / "d" / "run.json").read_text())["models"].keys() == {"rf"}


def test_checkpoint_of_a_replaced_parquet_file_is_not_reused(tmp_path, count_chunks):
    from hepsieve.datasets.converters import csv_to_parquet
    from hepsieve.datasets.toys.atlas_hzz4l import generate, write_kaggle_csv

    toys, pq_dir, ckpt = tmp_path / "toys", tmp_path / "pq", tmp_path / "ckpt"
    generate(toys, events=300, seed=4)
    for csv in write_kaggle_csv(toys, tmp_path / "csv")[:2]:  # llll, ggH125_ZZ4lep
        csv_to_parquet(csv, pq_dir / csv.with_suffix(".parquet").name)
    kw = {"fileset": "atlas_hzz4l_csv", "datasets": ["llll", "ggH125_ZZ4lep"], "checkpoint": ckpt}

    def atlas(out):
        return run(
            RunConfig("atlas-hzz4l", pq_dir, tmp_path / out, executor="iterative", progress=False, **kw)
        )

    first = atlas("a")
    n = len(count_chunks)
    assert atlas("b").record.reused_chunks == n
    generate(toys, events=400, seed=5)  # other events, same file name
    csv = write_kaggle_csv(toys, tmp_path / "csv2")[0]
    csv_to_parquet(csv, pq_dir / "llll.parquet")
    third = atlas("c")
    assert third.cutflow["llll"]["input"]["n"] != first.cutflow["llll"]["input"]["n"]
    assert third.record.reused_chunks == 1  # ggH125 only: its file is unchanged


def _flat_parquet(path, seed):
    """A flat-CSV-flavour ATLAS file of 200 events: the same size for every seed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    cols = {f"lep_{f}_{i}": rng.uniform(10, 50, 200) for f in ("pt", "eta", "phi", "E") for i in range(4)}
    cols |= {
        f"lep_charge_{i}": np.array([1, -1] * 100)[rng.permutation(200)]
        if i < 0
        else np.tile([1, -1, 1, -1][i], 200)
        for i in range(4)
    }
    cols |= {f"lep_type_{i}": np.full(200, 13) for i in range(4)}
    cols |= {"totalWeight": rng.uniform(0.1, 1, 200), "eventNumber": np.arange(200)}
    pq.write_table(pa.table(cols), path, compression="none", use_dictionary=False, write_statistics=False)


def test_checkpoint_of_a_parquet_file_rewritten_with_the_same_size_is_not_reused(tmp_path, count_chunks):
    fs = tmp_path / "fs.json"
    fs.write_text(
        json.dumps(
            {
                "tree": "parquet",
                "format": "parquet",
                "inputs": "flat-csv",
                "lumi_pb": 1.0,
                "lumi_uncertainty": 0.02,
                "datasets": {"zz": {"files": ["zz.parquet"], "metadata": {"role": "background"}}},
            }
        )
    )

    def atlas(out):
        return run(
            RunConfig(
                "atlas-hzz4l",
                tmp_path,
                tmp_path / out,
                fileset=fs,
                executor="iterative",
                checkpoint=tmp_path / "ckpt",
                progress=False,
            )
        )

    _flat_parquet(tmp_path / "zz.parquet", 1)
    size = (tmp_path / "zz.parquet").stat().st_size
    first = atlas("a")
    assert atlas("b").record.reused_chunks == 1
    _flat_parquet(tmp_path / "zz.parquet", 2)
    assert (tmp_path / "zz.parquet").stat().st_size == size  # only the content tells them apart
    third = atlas("c")
    assert third.record.reused_chunks == 0 and len(count_chunks) == 2
    assert third.cutflow["zz"]["input"]["sumw"] != first.cutflow["zz"]["input"]["sumw"]


def test_resumed_feature_export_into_a_new_out_holds_every_event_once(cms_toy_dir, tmp_path, monkeypatch):
    from hepsieve.training.data import load_features

    ckpt = tmp_path / "ckpt"
    original = AnalysisProcessor.process_chunk

    def crash_at_the_third_chunk(self, events, meta):
        if meta["dataset"] == "ZZTo4e" and meta["entrystart"] == 2000:
            raise KeyboardInterrupt  # Ctrl-C during the run
        return original(self, events, meta)

    monkeypatch.setattr(AnalysisProcessor, "process_chunk", crash_at_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        _run(cms_toy_dir, tmp_path / "first", mode="features", checkpoint=ckpt)
    assert not (tmp_path / "first").exists()  # nothing that looks like a result
    monkeypatch.setattr(AnalysisProcessor, "process_chunk", original)
    resumed = _run(cms_toy_dir, tmp_path / "second", mode="features", checkpoint=ckpt)
    assert resumed.record.reused_chunks == 5
    _run(cms_toy_dir, tmp_path / "plain", mode="features")
    frames = [load_features(tmp_path / d / "features", ("f_mass4l",)) for d in ("second", "plain")]
    for frame in frames:
        assert not frame.duplicated(["dataset", "event"]).any()
    assert sorted(zip(frames[0]["dataset"], frames[0]["event"], strict=True)) == sorted(
        zip(frames[1]["dataset"], frames[1]["event"], strict=True)
    )
    manifest = json.loads((tmp_path / "second" / "run.json").read_text())["feature_files"]
    assert sum(e["events"] for files in manifest.values() for e in files) == len(frames[0])


def test_rerun_into_the_same_out_with_another_chunk_size_replaces_the_export(cms_toy_dir, tmp_path):
    out = tmp_path / "f"
    _run(cms_toy_dir, out, mode="features")
    run(
        RunConfig(
            "cms-hzz4l",
            cms_toy_dir,
            out,
            mode="features",
            executor="iterative",
            chunksize=700,
            datasets=DATASETS,
            progress=False,
        )
    )
    table = pads.dataset(str(out / "features"), format="parquet").to_table()
    keys = list(zip(table.column("dataset").to_pylist(), table.column("event").to_pylist(), strict=True))
    assert len(keys) == len(set(keys))  # every event once
    assert all("_0-700." in p.name or "-" in p.name for p in (out / "features").rglob("*.parquet"))
    assert not list(tmp_path.glob(".f.partial-*"))


def test_unusable_out_and_checkpoint_are_found_before_any_chunk(cms_toy_dir, tmp_path, count_chunks):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match=r"--out .*file: is a file, not a directory"):
        _run(cms_toy_dir, tmp_path / "file")
    with pytest.raises(ConfigurationError, match="--out /sys/hepsieve-out: cannot write in /sys"):
        _run(cms_toy_dir, Path("/sys/hepsieve-out"))
    with pytest.raises(ConfigurationError, match="--checkpoint /sys/ckpt: cannot write in /sys"):
        _run(cms_toy_dir, tmp_path / "o", checkpoint=Path("/sys/ckpt"))
    with pytest.raises(ConfigurationError, match=r"--checkpoint .*file: is a file"):
        _run(cms_toy_dir, tmp_path / "o", checkpoint=tmp_path / "file")
    assert count_chunks == []


def test_failed_write_leaves_the_earlier_outputs_whole(cms_toy_dir, tmp_path, monkeypatch, caplog):
    out = tmp_path / "o"
    first = _run(cms_toy_dir, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import hepsieve.processors.outputs as outputs

    def disk_full(histograms, path):
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_histograms_root", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _run(cms_toy_dir, out, score_cut=0.9)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # not mixed with the new run
    assert "is unchanged: it holds the outputs of an earlier run" in caplog.text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.partial")]
    assert first.record.events == 6000


def test_a_second_run_into_the_same_out_is_refused(cms_toy_dir, tmp_path):
    holder = OutputDir(tmp_path / "o")  # as a run that is still writing
    try:
        with pytest.raises(
            ConfigurationError, match=rf"another hepsieve run \(pid {os.getpid()}\) is writing"
        ):
            _run(cms_toy_dir, tmp_path / "o")
    finally:
        holder.close()
    assert _run(cms_toy_dir, tmp_path / "o").record.events == 6000  # free again


class KillOnce(AnalysisProcessor):
    """Kills its own worker process at one chunk of ZZTo4e, once (a marker file remembers it)."""

    def process(self, events):
        marker = Path(os.environ["HEPSIEVE_TEST_KILL_MARKER"])
        if (
            events.metadata["entrystart"] == 1000
            and "ZZTo4e" in events.metadata["filename"]
            and not marker.exists()
        ):
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().process(events)


def test_chunks_of_a_killed_futures_worker_are_retried_with_the_same_result(
    cms_toy_dir, tmp_path, monkeypatch, caplog
):
    import cloudpickle

    import hepsieve.processors.runner as runner

    reference = _run(cms_toy_dir, tmp_path / "ref", mode="features")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    monkeypatch.setenv("HEPSIEVE_TEST_KILL_MARKER", str(tmp_path / "killed"))
    monkeypatch.setattr(runner, "AnalysisProcessor", KillOnce)
    result = _run(cms_toy_dir, tmp_path / "o", executor="futures", workers=2, mode="features")
    assert (tmp_path / "killed").is_file() and "a futures worker died" in caplog.text
    for dataset, steps in reference.cutflow.items():  # chunks merge in another order: last bits of sums
        for step, v in steps.items():
            assert result.cutflow[dataset][step]["n"] == v["n"]
            assert result.cutflow[dataset][step]["sumw"] == pytest.approx(v["sumw"], rel=1e-12)
    for name, values in _values(reference).items():
        np.testing.assert_allclose(_values(result)[name], values, rtol=1e-12)


def _children(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            out.append(int(status.parent.name))
    return out


def _start_run(cms_toy_dir, tmp_path, *extra):
    """Start a features run on 2 futures workers; return once they are processing chunks."""
    argv = [
        sys.executable,
        "-m",
        "hepsieve.processors.cli",
        "run",
        "cms-hzz4l",
        "--data-dir",
        str(cms_toy_dir),
        "--out",
        str(tmp_path / "o"),
        "--executor",
        "futures",
        "--workers",
        "2",
        "--chunksize",
        "50",
        "--mode",
        "features",
        *extra,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(1200):  # feature files appear when chunks are done
        if len(list(tmp_path.glob("**/*.parquet"))) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    return proc


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_killing_the_main_process_takes_its_workers_down(cms_toy_dir, tmp_path):
    proc = _start_run(cms_toy_dir, tmp_path, "--checkpoint", str(tmp_path / "ckpt"))
    workers = [w for w in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{w}/cmdline").read_bytes()]
    assert len(workers) == 2
    proc.kill()
    proc.wait()
    for _ in range(50):
        if not any(_alive(w) for w in workers):
            break
        time.sleep(0.1)
    assert [w for w in workers if _alive(w)] == []


def test_ctrl_c_prints_one_line_and_exits_130(cms_toy_dir, tmp_path):
    proc = _start_run(cms_toy_dir, tmp_path, "--checkpoint", str(tmp_path / "ckpt"))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)  # a loaded machine: the run may take long to stop
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("hepsieve run: interrupted; no output was written")
    assert "Traceback" not in err and "rerun the same command to resume" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [
        ("tcp://127.0.0.1:9", "no dask scheduler answered within 10 s"),
        ("not a scheduler", "not a scheduler address"),
    ],
)
def test_scheduler_errors_are_one_line_within_10_s(cms_toy_dir, tmp_path, capsys, scheduler, message):
    from hepsieve.processors.cli import main

    start = time.perf_counter()
    assert (
        main(
            [
                "-q",
                "run",
                "cms-hzz4l",
                "--data-dir",
                str(cms_toy_dir),
                "--out",
                str(tmp_path / "o"),
                "--scheduler",
                scheduler,
                "--datasets",
                "ZZTo4e",
            ]
        )
        == 2
    )
    assert time.perf_counter() - start < 15
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_analysis_errors_in_workers_are_one_line_naming_the_chunk(cms_toy_dir, tmp_path, monkeypatch, capsys):
    import hepsieve.processors.runner as runner
    from hepsieve.processors.cli import main

    class Broken(AnalysisProcessor):
        def process_chunk(self, events, meta):
            if meta["entrystart"] == 1000:
                meta = dict(meta) | {"dataset": None}  # an analysis bug: KeyError/TypeError inside
            return super().process_chunk(events, meta)

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(runner, "AnalysisProcessor", Broken)
    assert (
        main(
            [
                "-q",
                "run",
                "cms-hzz4l",
                "--data-dir",
                str(cms_toy_dir),
                "--out",
                str(tmp_path / "o"),
                "--executor",
                "futures",
                "--workers",
                "2",
                "--chunksize",
                "1000",
                "--datasets",
                "ZZTo4e",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "WorkItem" not in err
    assert "ZZTo4e.root entries 1000-2000: the analysis failed" in err


def test_training_reads_the_manifest_not_whatever_lies_in_the_directory(cms_features_run, tmp_path, caplog):
    from hepsieve.training.data import load_features

    run_dir = tmp_path / "run"
    shutil.copytree(cms_features_run, run_dir)
    before = load_features(run_dir / "features", ("f_mass4l",))
    stray = next((run_dir / "features").rglob("*.parquet"))
    shutil.copy(stray, stray.with_name("copy_of_a_chunk.parquet"))  # e.g. left by hand
    after = load_features(run_dir / "features", ("f_mass4l",))
    assert len(after) == len(before) and "not in the run's manifest: ignored" in caplog.text
    stray.unlink()
    with pytest.raises(Exception, match=r"the manifest of .* lists .* events, the file is missing"):
        load_features(run_dir, ("f_mass4l",))
