"""The capacity diagnostic trains in resumable calls and reports the held-out AUC of fold 0."""

import re

import pytest
import torch

from hepsieve.training.capacity import main


def test_capacity_resumes_from_its_checkpoint(higgs_features, tmp_path, capsys):
    """Two calls of 2 and 1 epochs make one 3-epoch history (epochs numbered on, state kept)."""
    checkpoint = tmp_path / "mlp.pt"
    argv = ["higgs-uci", "--features", str(higgs_features), "--hidden", "8", "--checkpoint", str(checkpoint)]
    assert main([*argv, "--epochs", "2"]) == 0
    first = torch.load(checkpoint, weights_only=False)
    assert main([*argv, "--epochs", "1"]) == 0
    state = torch.load(checkpoint, weights_only=False)
    assert state["epoch"] == 3 and len(state["history"]["test_auc"]) == 3
    assert state["history"]["test_auc"][:2] == first["history"]["test_auc"]
    assert not torch.equal(state["model"]["1.weight"], first["model"]["1.weight"])  # trained on
    out = capsys.readouterr().out
    assert "epoch 3: val loss" in out
    aucs = [float(a) for a in re.findall(r"held-out AUC (\d\.\d+)", out)]
    assert all(0.5 < a < 1 for a in aucs), out


def test_capacity_refuses_a_checkpoint_of_other_options(higgs_features, tmp_path):
    checkpoint = tmp_path / "mlp.pt"
    argv = ["higgs-uci", "--features", str(higgs_features), "--hidden", "8", "--checkpoint", str(checkpoint)]
    assert main([*argv, "--epochs", "1"]) == 0
    with pytest.raises(SystemExit, match="written with other options"):
        main([*argv, "--epochs", "1", "--lr", "0.01"])


def test_capacity_max_events_limits_the_rows(higgs_features):
    """``--max-events`` reaches the data: fit + validation + held-out rows are exactly that many."""
    from hepsieve.training.capacity import _data

    d = _data("higgs-uci", str(higgs_features), None, 1000)
    assert len(d["x"]) == 1000 and len(d["fit"]) + len(d["val"]) + int(d["test"].sum()) == 1000
    assert len(_data("higgs-uci", str(higgs_features), None, None)["x"]) > 1000  # the toy's rows


def test_capacity_is_reproducible_from_its_seed(higgs_features, tmp_path):
    """Two fresh checkpoints with the same options give the same history (initial weights seeded)."""
    argv = ["higgs-uci", "--features", str(higgs_features), "--hidden", "8", "--epochs", "1"]
    states = []
    for name in ("a.pt", "b.pt"):
        assert main([*argv, "--checkpoint", str(tmp_path / name)]) == 0
        states.append(torch.load(tmp_path / name, weights_only=False))
    assert states[0]["history"] == states[1]["history"]


def test_capacity_refuses_max_events_below_one(higgs_features, tmp_path, capsys):
    """``--max-events 0`` would fall back to the training policy's count: it stops instead."""
    argv = ["higgs-uci", "--features", str(higgs_features), "--checkpoint", str(tmp_path / "m.pt")]
    with pytest.raises(SystemExit):
        main([*argv, "--max-events", "0"])
    assert "--max-events 0" in capsys.readouterr().err and not (tmp_path / "m.pt").exists()
