"""The full demo through the command line (slow: the README's demo at its default size)."""

import json

import pytest

from hepsieve.processors.cli import main


@pytest.mark.slow
@pytest.mark.parametrize(
    ("analysis", "plot"), [("cms-hzz4l", "m4l_vbf.png"), ("atlas-hzz4l", "m4l_2e2mu.png")]
)
def test_demo_produces_every_output(tmp_path, analysis, plot, capsys):
    assert main(["-q", "demo", analysis, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
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
    # the demo ends with the significance table of its analysis (hepsieve stats on the final run)
    significance = json.loads((hists / "fit" / "significance.json").read_text())
    expected = significance["results"]["all"]["expected"]
    assert expected["Z"] > 0
    assert f"{expected['Z']:7.3f}" in printed and "stat. + syst." in printed
