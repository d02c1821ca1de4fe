"""Session-scoped toy data, feature export and models shared by the tests (seeded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hepsieve.processors import RunConfig, run

TOY_EVENTS = 3000


@pytest.fixture(scope="session")
def toy_events() -> int:
    """Selected events per dataset of the CMS toy."""
    return TOY_EVENTS


@pytest.fixture(scope="session")
def cms_toy_dir(tmp_path_factory) -> Path:
    """Directory of CMS toy files, 3000 selected events per dataset."""
    from hepsieve.datasets.toys.cms_hzz4l import generate

    return generate(tmp_path_factory.mktemp("cms_toys"), events=TOY_EVENTS, seed=11)


@pytest.fixture(scope="session")
def cms_features_run(cms_toy_dir, tmp_path_factory) -> Path:
    """Output directory of a features-mode run (iterative executor)."""
    out = tmp_path_factory.mktemp("cms_features")
    run(
        RunConfig(
            "cms-hzz4l",
            cms_toy_dir,
            out,
            mode="features",
            executor="iterative",
            chunksize=5000,
            progress=False,
        )
    )
    return out


@pytest.fixture(scope="session")
def cms_models(cms_features_run, tmp_path_factory) -> Path:
    """Directory with a small MLP and RandomForest (2 folds each) trained on the toy."""
    from hepsieve.training.train import train

    out = tmp_path_factory.mktemp("cms_models")
    features = cms_features_run / "features"
    train("cms-hzz4l", features, "mlp", out, progress=False, hyper={"epochs": 15})
    train("cms-hzz4l", features, "rf", out, progress=False, hyper={"n_estimators": 40})
    return out


def _run_cms(data_dir: Path, out: Path, **kw):
    kw.setdefault("executor", "iterative")
    return run(RunConfig("cms-hzz4l", data_dir, out, progress=False, **kw))


@pytest.fixture(scope="session")
def run_cms():
    """Return a function that runs the CMS analysis quietly and returns the RunResult."""
    return _run_cms


@pytest.fixture(scope="session")
def atlas_toy_dir(tmp_path_factory) -> Path:
    """Directory of ATLAS toy files, 2000 events per MC sample, plus pseudo-data."""
    from hepsieve.datasets.toys.atlas_hzz4l import generate

    return generate(tmp_path_factory.mktemp("atlas_toys"), events=2000, seed=3)


@pytest.fixture(scope="session")
def atlas_run(atlas_toy_dir, tmp_path_factory):
    """Features-mode run over the whole ATLAS toy (iterative)."""
    out = tmp_path_factory.mktemp("atlas_run")
    return run(
        RunConfig("atlas-hzz4l", atlas_toy_dir, out, mode="features", executor="iterative", progress=False)
    ), out


@pytest.fixture(scope="session")
def higgs_toy_dir(tmp_path_factory) -> Path:
    """UCI HIGGS toy: 22 000 rows as ROOT chunks of 5 000 and as HIGGS.csv.gz (same seed)."""
    from hepsieve.datasets.toys.higgs_uci import generate

    return generate(
        tmp_path_factory.mktemp("higgs"), events=22_000, seed=5, formats=("root", "csv"), chunk_rows=5000
    )


@pytest.fixture(scope="session")
def higgs_features(higgs_toy_dir, tmp_path_factory) -> Path:
    """The exported features of the UCI HIGGS toy's train split (the ``features`` directory)."""
    features = tmp_path_factory.mktemp("higgs_features")
    run(
        RunConfig(
            "higgs-uci",
            higgs_toy_dir,
            features,
            mode="features",
            executor="iterative",
            datasets=["train"],
            progress=False,
        )
    )
    return features / "features"


@pytest.fixture(scope="session")
def higgs_models(higgs_features, tmp_path_factory) -> Path:
    """A small MLP and HistGradientBoosting trained on the toy's train split."""
    from hepsieve.training.train import train

    out = tmp_path_factory.mktemp("higgs_models")
    train(
        "higgs-uci",
        higgs_features,
        "mlp",
        out,
        progress=False,
        hyper={"epochs": 8, "hidden": (16, 16)},
    )
    train("higgs-uci", higgs_features, "hgb", out, progress=False, hyper={"max_iter": 30})
    return out


def _helper(name: str):
    """Load the test helper module ``tests/<name>.py`` (tests never import each other)."""
    import importlib.util

    path = Path(__file__).parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"hepsieve_test_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A single-node Slurm on 127.0.0.1 for the session; skipped, saying why, where it cannot start.

    Under ``.ci/run`` it is the one ``.ci/slurm`` started (``HEPSIEVE_TEST_SLURM_DIR``): that one
    must be up (an error, not a skip); otherwise the fixture starts its own and stops it after.
    """
    import os

    slurm_module = _helper("slurm")
    ci_dir = os.environ.get("HEPSIEVE_TEST_SLURM_DIR")
    cluster = slurm_module.SingleNodeSlurm(Path(ci_dir) if ci_dir else tmp_path_factory.mktemp("slurm"))
    if ci_dir and not cluster.idle():
        pytest.fail(f"HEPSIEVE_TEST_SLURM_DIR={ci_dir}: the Slurm that .ci/slurm started is not up")
    reason = None if ci_dir else cluster.start()
    if reason:
        cluster.stop()
        pytest.skip(reason)
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # for sbatch/squeue, as dask-jobqueue calls them
    yield cluster
    if not ci_dir:
        cluster.stop()
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before


@pytest.fixture(scope="session")
def file_server():
    """Return the class of a static HTTP server on 127.0.0.1 with byte ranges (a context manager)."""
    return _helper("http_files").FileServer


# --- atlas-dm (ATLAS Open Data DM + Z -> ll) ---
DM_TOY_EVENTS = 1500


@pytest.fixture(scope="session")
def dm_toy_events() -> int:
    """Rows per file of the atlas-dm toy."""
    return DM_TOY_EVENTS


@pytest.fixture(scope="session")
def dm_toy_dir(tmp_path_factory) -> Path:
    """The five atlas-dm toy CSVs and their Parquet, 1500 rows per file (seed 7)."""
    from hepsieve.datasets.toys.atlas_dm import generate

    return generate(tmp_path_factory.mktemp("dm_toys"), events=DM_TOY_EVENTS, seed=7)


@pytest.fixture(scope="session")
def dm_features_run(dm_toy_dir, tmp_path_factory):
    """(RunResult, directory) of a features-mode atlas-dm run over the toy (iterative)."""
    out = tmp_path_factory.mktemp("dm_features")
    result = run(
        RunConfig("atlas-dm", dm_toy_dir, out, mode="features", executor="iterative", progress=False)
    )
    return result, out


@pytest.fixture(scope="session")
def dm_models(dm_features_run, tmp_path_factory) -> Path:
    """Small hgb, mlp and rf (2 folds each) trained on the atlas-dm toy features."""
    from hepsieve.training.train import train

    out = tmp_path_factory.mktemp("dm_models")
    features = dm_features_run[1] / "features"
    train("atlas-dm", features, "hgb", out, progress=False, hyper={"max_iter": 40, "max_leaf_nodes": 8})
    train("atlas-dm", features, "mlp", out, progress=False, hyper={"epochs": 6, "hidden": (16, 8)})
    train("atlas-dm", features, "rf", out, progress=False, hyper={"n_estimators": 40, "max_depth": 5})
    return out


NANO_EVENTS = 1500


@pytest.fixture(scope="session")
def nano_toy_dir(tmp_path_factory) -> Path:
    """NanoAOD toy (v9 layout), 1500 events per MC dataset, no pseudo-data (seeded)."""
    from hepsieve.datasets.toys.cms_hzz4l_nanoaod import generate

    mc = ["VBF_HToZZTo4L", "GluGluHToZZTo4L", "ZZTo4L", "DYJetsToLL_M-50", "TTTo2L2Nu"]
    return generate(tmp_path_factory.mktemp("nano_toys"), events=NANO_EVENTS, seed=21, datasets=mc)
