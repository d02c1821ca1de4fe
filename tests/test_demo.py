"""The full demo through the command line (slow: the README's demo at its default size)."""

import json

import pytest

from hepsieve.processors.cli import main


@pytest.mark.slow
def test_demo_produces_every_output(tmp_path):
    assert main(["-q", "demo", "--out", str(tmp_path)]) == 0
    hists = tmp_path / "histograms"
    for name in ("histograms.pkl", "histograms.root", "cutflow.json", "run.json"):
        assert (hists / name).stat().st_size > 0
    prov = json.loads((hists / "run.json").read_text())
    assert prov["events"] == 7 * 20_000 and set(prov["models"]) == {"mlp", "rf"}
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert all(m["auc_test"] > 0.9 for m in metrics["models"].values())
    assert (hists / "plots" / "m4l_vbf.png").is_file()
    assert (tmp_path / "evaluation" / "roc.png").is_file()
