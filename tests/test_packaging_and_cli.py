"""Packaging (non-editable install) and the command line."""

import os
import subprocess
import sys

import pytest

from hepsieve.processors.cli import main


def test_non_editable_install_imports_from_another_directory(tmp_path):
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(root),
        ],
        check=True,
        cwd=tmp_path,
    )
    code = (
        "import hepsieve.processors, hepsieve.models, hepsieve.training, hepsieve.datasets, "
        "hepsieve.datasets.toys.cms_hzz4l as t; from hepsieve.datasets import load_fileset_spec;"
        "print(hepsieve.processors.__file__); print(load_fileset_spec('cms-hzz4l')['tree'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        check=True,
        text=True,
        capture_output=True,
        env={"PYTHONPATH": str(target), "PATH": ""},
    ).stdout
    assert out.splitlines() == [
        str(target / "hepsieve" / "processors" / "__init__.py"),
        "HZZ4LeptonsAnalysisReduced",
    ]
    # no top-level packages that would shadow others (e.g. Hugging Face `datasets`)
    assert not (target / "datasets").exists() and not (target / "processors").exists()


@pytest.mark.parametrize(
    "command", ["generate", "run", "train", "evaluate", "plot", "stats", "demo", "bench"]
)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: hepsieve" in capsys.readouterr().out


def test_cli_errors_are_one_line_naming_the_problem(tmp_path, capsys):
    code = main(
        ["-q", "run", "cms-hzz4l", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "nowhere does not exist" in err and "hepsieve generate cms-hzz4l" in err
    assert "Traceback" not in err


def test_cli_run_and_plot(cms_toy_dir, cms_models, tmp_path, capsys):
    assert (
        main(
            [
                "-q",
                "run",
                "cms-hzz4l",
                "--data-dir",
                str(cms_toy_dir),
                "--out",
                str(tmp_path / "r"),
                "--models",
                str(cms_models),
                "--executor",
                "iterative",
                "--datasets",
                "VBF_HToZZTo4mu",
                "ZZTo4mu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "VBF_HToZZTo4mu" in out and "processed       3000 /       3000" in out
    assert main(["-q", "plot", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "plots" / "m4l_vbf.png").stat().st_size > 10_000
    assert (tmp_path / "r" / "plots" / "score_mlp_vbf.png").is_file()


def test_cli_flat_csv_convert_and_working_points(tmp_path, capsys):
    import json

    toys, csv = tmp_path / "toys", tmp_path / "csv"
    assert (
        main(["-q", "generate", "atlas-hzz4l", "--events", "300", "--out", str(toys), "--flat-csv", str(csv)])
        == 0
    )
    assert sorted(p.name for p in csv.glob("*.csv")) == ["data.csv", "ggH125_ZZ4lep.csv", "llll.csv"]
    assert main(["-q", "convert", *map(str, sorted(csv.glob("*.csv"))), "--out", str(tmp_path / "pq")]) == 0
    metrics = tmp_path / "metrics.json"
    metrics.write_text(
        json.dumps(
            {"models": {"mlp": {"ams": {"working_point": 0.83}}, "rf": {"ams": {"working_point": 0.9}}}}
        )
    )
    assert (
        main(
            [
                "-q",
                "run",
                "atlas-hzz4l",
                "--fileset",
                "atlas_hzz4l_csv",
                "--data-dir",
                str(tmp_path / "pq"),
                "--out",
                str(tmp_path / "r"),
                "--executor",
                "iterative",
                "--working-points",
                str(metrics),
            ]
        )
        == 0
    )
    prov = json.loads((tmp_path / "r" / "run.json").read_text())
    assert prov["score_cut"] == {"mlp": 0.83, "rf": 0.9}
    assert set(prov["accounting"]) == {"data", "ggH125_ZZ4lep", "llll"}
    assert all(a["processed"] == a["expected"] > 0 for a in prov["accounting"].values())
    assert (
        main(
            [
                "-q",
                "generate",
                "cms-hzz4l",
                "--events",
                "10",
                "--out",
                str(tmp_path / "c"),
                "--flat-csv",
                str(tmp_path / "x"),
                "--datasets",
                "ZZTo4e",
            ]
        )
        == 2
    )
    assert "has no flat CSV form" in capsys.readouterr().err


def test_cli_logs_hepsieve_at_info_and_other_libraries_at_warning(monkeypatch, capsys):
    import logging

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # let basicConfig configure afresh
    assert main(["analyses"]) == 0
    assert logging.getLogger("hepsieve.processors.plots").isEnabledFor(logging.INFO)
    assert not logging.getLogger("matplotlib.mathtext").isEnabledFor(logging.INFO)


@pytest.mark.parametrize(
    ("argv", "status"), [(["analyses"], 0), (["run", "no-such-analysis", "--out", "o"], 2)]
)
def test_the_command_exits_with_mains_status_and_its_output_flushed(tmp_path, argv, status):
    # console_main leaves without the interpreter's teardown: its output must still arrive
    code = "import sys; from hepsieve.processors.cli import console_main; console_main()"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # block-buffered pipes
    command = [sys.executable, "-c", code, *argv]
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == status
    if status:
        assert done.stderr.strip().endswith("own Analysis)") and "unknown analysis" in done.stderr
    else:
        assert "higgs-uci" in done.stdout


VECTOR_WITHOUT_SYMPY = """
import atexit, sys
from hepsieve.processors import cli
atexit.register(lambda: print("vector" in sys.modules, "sympy" in sys.modules))
sys.argv = ["hepsieve", "analyses"]
cli.console_main()
"""


def test_the_command_imports_vector_without_sympy_which_stays_importable():
    """vector imports sympy when installed (0.34 s of every command's start); hepsieve never uses it."""
    command = [sys.executable, "-c", VECTOR_WITHOUT_SYMPY]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert done.stdout.split()[-2:] == ["True", "False"]
    code = (
        "from hepsieve.processors import cli; cli._import_vector_without_sympy()\n"
        "import sympy, vector; print(vector.VectorSympy, sympy.Symbol('x') + 1)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["None", "x", "+", "1"]
