"""--cluster (dask-jobqueue): job scripts, worker settings, clear errors, and a real single-node
Slurm: same histograms as a local run, and a job killed with scancel mid-run (issue 16, items 1-2)."""

import itertools
import os
import sys
import threading
import time
from pathlib import Path

import dask.config
import numpy as np
import pytest

from hepsieve.processors import ConfigurationError, RunConfig, run
from hepsieve.processors.cli import main
from hepsieve.processors.clusters import CLUSTERS, ClusterOptions, cluster_kwargs
from hepsieve.processors.executors import LOCAL_DASK_CONFIG, WORKER_MODULES, make_executor
from hepsieve.processors.processor import AnalysisProcessor

DATASETS = ["VBF_HToZZTo4mu", "ZZTo4mu"]


def _inherited_config(prologue: list[str]) -> dict:
    (line,) = [p for p in prologue if "DASK_INTERNAL_INHERIT_CONFIG=" in p]
    return dask.config.deserialize(line.split("=", 1)[1])


def test_jobs_get_the_local_clusters_worker_settings_and_the_options(tmp_path):
    profile = tmp_path / "site.yaml"
    profile.write_text(
        "jobqueue:\n  slurm:\n    queue: long\n    walltime: '02:00:00'\n"
        "    job_extra_directives: ['--qos=x']\n"
    )
    options = ClusterOptions(
        "slurm", cores=2, walltime="00:10:00", job_directives=("--exclusive",), profile=str(profile)
    )
    kwargs = cluster_kwargs(options, LOCAL_DASK_CONFIG, WORKER_MODULES)
    assert _inherited_config(kwargs["job_script_prologue"]) == LOCAL_DASK_CONFIG
    assert kwargs["queue"] == "long" and kwargs["walltime"] == "00:10:00"  # the command line wins
    assert kwargs["job_extra_directives"] == ["--qos=x", "--exclusive"]
    assert kwargs["cores"] == kwargs["processes"] == 2 and kwargs["memory"] == "4GB"  # 1 thread each
    assert kwargs["worker_extra_args"] == [a for m in WORKER_MODULES for a in ("--preload", m)]


@pytest.mark.parametrize("kind", list(CLUSTERS))
def test_every_batch_system_gets_a_job_script_with_the_worker_settings(kind, tmp_path):
    from hepsieve.processors.clusters import _build

    options = ClusterOptions(kind, memory="1GB", log_dir=str(tmp_path / "jobs"))
    cluster, script = _build(options, cluster_kwargs(options, LOCAL_DASK_CONFIG, WORKER_MODULES))
    with cluster:
        text = script.read_text()
    assert "DASK_INTERNAL_INHERIT_CONFIG=" in text and "--preload hepsieve.processors.processor" in text
    assert "--nthreads 1" in text


def test_htcondor_directives_are_a_submit_mapping_and_jobs_ask_for_disk(tmp_path):
    from hepsieve.processors.clusters import _build

    profile = tmp_path / "site.yaml"
    profile.write_text("jobqueue:\n  htcondor:\n    job_extra_directives: {request_gpus: '0'}\n")
    options = ClusterOptions(
        "htcondor", job_directives=('+JobFlavour = "longlunch"',), profile=str(profile), log_dir=str(tmp_path)
    )
    kwargs = cluster_kwargs(options, LOCAL_DASK_CONFIG, WORKER_MODULES)
    assert kwargs["job_extra_directives"] == {"request_gpus": "0", "+JobFlavour": '"longlunch"'}
    assert kwargs["disk"] == "1GB"
    cluster, script = _build(options, kwargs)
    with cluster:
        text = script.read_text()
    assert '+JobFlavour = "longlunch"' in text and "request_gpus = 0" in text
    with pytest.raises(ConfigurationError, match="--job-directive 'longlunch': HTCondor directives are KEY="):
        cluster_kwargs(ClusterOptions("htcondor", job_directives=("longlunch",)), {}, ())


def _fake_batch_system(tmp_path, monkeypatch, sbatch_body: str) -> Path:
    """Put fake sbatch/squeue/scancel on PATH (nothing else): a batch system that never runs jobs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {
        "sbatch": sbatch_body,
        "squeue": "echo '42 PENDING (Priority)'",
        "scancel": "true",
    }.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return bin_dir


def _argv(cms_toy_dir, tmp_path, *extra):
    return [
        "-q",
        "run",
        "cms-hzz4l",
        "--data-dir",
        str(cms_toy_dir),
        "--out",
        str(tmp_path / "o"),
        "--datasets",
        *DATASETS,
        "--cluster",
        "slurm",
        "--job-log-dir",
        str(tmp_path / "jobs"),
        *extra,
    ]


def test_missing_batch_commands_are_one_line_naming_them(cms_toy_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    assert main(_argv(cms_toy_dir, tmp_path)) == 2
    err = capsys.readouterr().err
    assert (
        "--cluster slurm: the batch system's command 'sbatch' is not on PATH" in err and err.count("\n") == 1
    )


def test_jobs_that_do_not_start_are_one_line_naming_script_state_and_logs(
    cms_toy_dir, tmp_path, monkeypatch, capsys
):
    _fake_batch_system(tmp_path, monkeypatch, "echo 'Submitted batch job 42'")
    start = time.perf_counter()
    assert main(_argv(cms_toy_dir, tmp_path, "--job-timeout", "3", "--workers", "1")) == 2
    err = capsys.readouterr().err
    assert time.perf_counter() - start < 30 and err.count("\n") == 1, err
    assert "no dask worker connected within 3 s; jobs: 42 PENDING (Priority)" in err
    assert (
        f"job script: {tmp_path / 'jobs' / 'job_script.sh'}" in err
        and f"job logs: {tmp_path / 'jobs'}/" in err
    )
    assert (tmp_path / "jobs" / "job_script.sh").read_text().startswith("#!/usr/bin/env bash")
    assert not (tmp_path / "o").exists()


def test_a_refused_job_is_one_line_with_the_batch_systems_message(cms_toy_dir, tmp_path, monkeypatch, capsys):
    _fake_batch_system(
        tmp_path, monkeypatch, "echo 'sbatch: error: invalid partition specified: nosuch' >&2; exit 1"
    )
    assert main(_argv(cms_toy_dir, tmp_path, "--queue", "nosuch", "--job-timeout", "3")) == 2
    err = capsys.readouterr().err
    assert (
        "the job was refused" in err and "invalid partition specified: nosuch" in err and err.count("\n") == 1
    )
    assert "job script:" in err


def test_cluster_with_another_executor_is_refused():
    with pytest.raises(ConfigurationError, match="use --executor dask"):
        RunConfig("cms-hzz4l", ".", executor="futures", cluster=ClusterOptions("slurm"))
    with pytest.raises(ConfigurationError, match="--adapt 3 1"):
        ClusterOptions("slurm", adapt=(3, 1))


# --- a real batch system: single-node Slurm on 127.0.0.1 ---

PROFILE = "interface: lo\n"  # scheduler and workers on the loopback interface: no traffic beyond


def _slurm_options(tmp_path, **kw) -> ClusterOptions:
    profile = tmp_path / "slurm.yaml"
    profile.write_text(PROFILE)
    kw.setdefault("memory", "2GB")
    return ClusterOptions(
        "slurm", profile=str(profile), log_dir=str(tmp_path / "jobs"), job_timeout_s=120, **kw
    )


def _by_label(h):
    cats = [ax for ax in h.axes if ax.traits.discrete and not ax.traits.ordered]
    return {
        labels: h[dict(zip([ax.name for ax in cats], labels, strict=True))].view(flow=True)
        for labels in itertools.product(*(list(ax) for ax in cats))
    }


def _assert_same(result, reference):
    """Same counts, sums equal to 1e-12 (chunks merge in another order on other workers)."""
    for dataset, steps in reference.cutflow.items():
        for step, v in steps.items():
            assert result.cutflow[dataset][step]["n"] == v["n"]
            assert result.cutflow[dataset][step]["sumw"] == pytest.approx(v["sumw"], rel=1e-12)
    assert result.histograms.keys() == reference.histograms.keys()
    for name, h in reference.histograms.items():
        expected, found = _by_label(h), _by_label(result.histograms[name])
        assert found.keys() == expected.keys()
        for labels, a in expected.items():
            np.testing.assert_allclose(found[labels]["value"], a["value"], rtol=1e-12, atol=0)
            np.testing.assert_allclose(found[labels]["variance"], a["variance"], rtol=1e-12, atol=0)


def _run(data, out, **kw):
    kw.setdefault("executor", "iterative")
    return run(RunConfig("cms-hzz4l", data, out, datasets=DATASETS, chunksize=500, progress=False, **kw))


def test_slurm_setup_says_why_it_cannot_start_and_reuses_a_running_one(slurm, tmp_path):
    import subprocess

    helper = Path(__file__).parents[1] / "slurm.py"
    failed = subprocess.run(
        [sys.executable, str(helper), "start", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},  # no Slurm, no munge
        check=False,
    )
    assert failed.returncode == 1 and failed.stderr.startswith("Slurm cannot start: munged, mungekey, ")
    pid = (slurm.root / "slurmctld.pid").read_text()
    assert slurm.start() is None and (slurm.root / "slurmctld.pid").read_text() == pid  # not restarted


def test_slurm_workers_run_with_the_local_settings(slurm, tmp_path):
    def state():
        import os
        import sys

        import dask

        return (
            os.environ.get("MALLOC_TRIM_THRESHOLD_"),
            dask.config.get("distributed.worker.profile.enabled"),
            dask.config.get("distributed.admin.tick.interval"),
            "hepsieve.models.scorer" in sys.modules,
            bool(os.environ.get("SLURM_JOB_ID")),
        )

    with make_executor("dask", 2, None, False, cluster=_slurm_options(tmp_path)) as ex:
        states = list(ex.client.run(state).values())
    assert states == [(None, False, "1s", True, True)] * 2


def test_slurm_run_gives_the_histograms_of_a_local_run(slurm, cms_toy_dir, cms_models, tmp_path):
    reference = _run(cms_toy_dir, None, models_dir=cms_models)
    result = _run(
        cms_toy_dir,
        tmp_path / "o",
        models_dir=cms_models,
        executor="dask",
        workers=2,
        cluster=_slurm_options(tmp_path),
    )
    _assert_same(result, reference)
    assert result.record.accounting == reference.record.accounting
    assert result.record.config["cluster"]["kind"] == "slurm"
    assert (tmp_path / "jobs" / "job_script.sh").is_file() and list(
        (tmp_path / "jobs").glob("hepsieve-*.err")
    )


class SlowAndMarked(AnalysisProcessor):
    """Takes 0.3 s per chunk and leaves a marker naming its Slurm job (to kill one mid-run)."""

    def process(self, events):
        marks = Path(os.environ["HEPSIEVE_TEST_MARKS"])
        meta = events.metadata
        job = os.environ.get("SLURM_JOB_ID", "")
        name = f"{Path(meta['filename']).stem}_{meta['entrystart']}_{job}_{time.time()}"
        time.sleep(0.3)
        out = super().process(events)
        (marks / name).write_text(job)
        return out


def test_a_job_killed_with_scancel_mid_run_has_its_chunks_retried_elsewhere(
    slurm, cms_toy_dir, tmp_path, monkeypatch
):
    import cloudpickle

    import hepsieve.processors.runner as runner

    reference = _run(cms_toy_dir, None)
    marks = tmp_path / "marks"
    marks.mkdir()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    monkeypatch.setenv("HEPSIEVE_TEST_MARKS", str(marks))
    monkeypatch.setattr(runner, "AnalysisProcessor", SlowAndMarked)
    killed: list[str] = []

    def kill_one_job():
        for _ in range(1200):
            done = [p.read_text() for p in marks.iterdir()]
            if len(done) >= 3 and len(set(done)) == 2:  # both jobs are processing chunks
                killed.append(done[0])
                slurm.cancel(done[0])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_job, daemon=True)
    killer.start()
    result = _run(cms_toy_dir, tmp_path / "o", executor="dask", workers=2, cluster=_slurm_options(tmp_path))
    killer.join(timeout=5)
    assert killed, "no job was killed mid-run"
    chunks = len(list(marks.iterdir()))
    by_killed = sum(p.read_text() == killed[0] for p in marks.iterdir())
    assert 0 < by_killed < chunks and killed[0] not in slurm.jobs()  # killed before the end
    _assert_same(result, reference)
    assert all(v["lost"] == {} for v in result.record.accounting.values())
