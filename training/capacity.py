r"""Capacity check: does a bigger MLP than the shipped one climb on the same exported features.

A diagnostic (issue 15), not a model recipe: one fold (train on ``event % 2 != 0``, report on
``event % 2 == 0``, as the shipped fold 0), batches of 1024, Adam with the learning rate decayed
by ``--decay`` per epoch, no early stopping (the best validation epoch is reported). It runs in
calls of ``--epochs`` epochs and resumes from ``--checkpoint``, so each CPU job stays short::

    python -m hepsieve.training.capacity higgs-uci --features results/higgs_train/features \
        --hidden 300 300 300 --epochs 15 --checkpoint results/higgs_train/capacity/300x3.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hepsieve.processors.analyses import get_analysis
from hepsieve.training.data import fold_masks, training_weights, validation_mask
from hepsieve.training.evaluate import weighted_auc
from hepsieve.training.mlp import _train_epoch, _weighted_bce, build_mlp, predict_mlp
from hepsieve.training.train import _training_frame


def _data(analysis_name: str, features: str, feature_set: str | None, max_events: int | None) -> dict:
    """Return fit / validation / held-out arrays of fold 0 (the shipped fold-0 split, seed 1)."""
    analysis = get_analysis(analysis_name)
    spec = analysis.feature_spec(feature_set)
    frame = _training_frame(analysis, features, spec, max_events)
    x = frame[list(spec.names)].to_numpy(np.float32)
    y = frame["label"].to_numpy()
    w = training_weights(frame["weight"].to_numpy(), y)
    train_rows, apply_rows = fold_masks(frame["event"].to_numpy(), 2, 0)
    val = validation_mask(int(train_rows.sum()), 0.2, 1)
    fit = np.flatnonzero(train_rows)[~val]
    valid = np.flatnonzero(train_rows)[val]
    return {"x": x, "y": y.astype(np.float32), "w": w, "fit": fit, "val": valid, "test": apply_rows}


def _tensors(d: dict, rows) -> tuple[torch.Tensor, ...]:
    return tuple(torch.as_tensor(a[rows], dtype=torch.float32) for a in (d["x"], d["y"], d["w"]))


def run(args: argparse.Namespace) -> dict:
    """Train ``args.epochs`` more epochs (resuming ``args.checkpoint``); return the history."""
    d = _data(args.analysis, args.features, args.feature_set, args.max_events)
    x_fit = d["x"][d["fit"]]
    hidden = tuple(args.hidden)
    torch.manual_seed(args.seed)  # the initial weights (a resumed call loads its own)
    model = build_mlp(x_fit.mean(axis=0), x_fit.std(axis=0), hidden, args.dropout, args.activation)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, args.decay)
    shaped_by = {k: v for k, v in vars(args).items() if k not in ("epochs", "checkpoint")}
    shaped_by["features"] = str(Path(args.features).resolve())
    state: dict[str, Any] = {"epoch": 0, "history": {"val_loss": [], "test_auc": []}, "options": shaped_by}
    path = Path(args.checkpoint)
    if path.exists():
        state = torch.load(path, weights_only=False)
        if state.get("options") != shaped_by:
            raise SystemExit(
                f"{path}: written with other options ({state.get('options')}); "
                "give another --checkpoint or delete it"
            )
        for obj, key in ((model, "model"), (opt, "opt"), (sched, "sched")):
            obj.load_state_dict(state[key])
    torch.manual_seed(args.seed + state["epoch"])
    gen = torch.Generator().manual_seed(args.seed + state["epoch"])
    fit, val = _tensors(d, d["fit"]), _tensors(d, d["val"])
    for _ in range(args.epochs):
        _train_epoch(model, opt, fit, args.batch_size, gen)
        sched.step()
        model.eval()
        with torch.no_grad():
            loss = float(_weighted_bce(model, *val))
        auc = weighted_auc(d["y"][d["test"]], predict_mlp(model, d["x"][d["test"]]), d["w"][d["test"]])
        state["epoch"] += 1
        state["history"]["val_loss"].append(loss)
        state["history"]["test_auc"].append(auc)
        sys.stdout.write(f"epoch {state['epoch']}: val loss {loss:.5f}, held-out AUC {auc:.4f}\n")
    state |= {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state["history"]


def main(argv: list[str] | None = None) -> int:
    """Parse the options, train, print the held-out AUC at the best validation epoch so far."""
    p = argparse.ArgumentParser(prog="python -m hepsieve.training.capacity")
    p.add_argument("analysis")
    p.add_argument("--features", required=True)
    p.add_argument("--feature-set", default=None)
    p.add_argument("--max-events", type=int, help="exported events used (default: the training policy's)")
    p.add_argument("--hidden", type=int, nargs="+", default=[300, 300, 300])
    p.add_argument("--activation", default="tanh")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=10, help="epochs in this call")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--decay", type=float, default=0.95, help="learning-rate factor per epoch")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--checkpoint", required=True)
    args = p.parse_args(argv)
    if args.max_events is not None and args.max_events < 1:
        p.error(f"--max-events {args.max_events}: give at least 1 event (or leave it out)")
    history = run(args)
    best = int(np.argmin(history["val_loss"]))
    sys.stdout.write(f"best validation epoch {best + 1}: held-out AUC {history['test_auc'][best]:.4f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
