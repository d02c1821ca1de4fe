"""The full demo through the command line (slow: the README's demo at its default size)."""

import json

import pytest

from hepsieve.processors.cli import main


@pytest.mark.slow
@pytest.mark.parametrize(
    ("analysis", "plot"), [("cms-hzz4l", "m4l_vbf.png"), ("atlas-hzz4l", "m4l_2e2mu.png")]
)
def test_demo_produces_every_output(tmp_path, analysis, plot):
    assert main(["-q", "demo", analysis, "--out", str(tmp_path)]) == 0
    hists = tmp_path / "histograms"
    for name in ("histograms.pkl", "histograms.root", "cutflow.json", "run.json"):
        assert (hists / name).stat().st_size > 0
    prov = json.loads((hists / "run.json").read_text())
    assert all(a["processed"] == a["expected"] for a in prov["accounting"].values())
    assert set(prov["models"]) == {"mlp", "rf"}
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert all(m["auc_test"] > 0.9 for m in metrics["models"].values())
    assert (hists / "plots" / plot).is_file()
    assert (tmp_path / "evaluation" / "roc.png").is_file()
