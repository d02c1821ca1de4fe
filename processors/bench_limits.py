"""Independent baselines of ``hepsieve bench``: the I/O floor and the UCI HIGGS limit loop.

Nothing here runs hepsieve's analysis code (selection, weights, features, scorer, processor):

- the **I/O floor** reads exactly the branches an analysis declares, with ``uproot.iterate``
  into awkward arrays, and does nothing else — no analysis can be faster on these files;
- the **HIGGS limit loop** is the analysis written out by hand the shortest way:
  ``uproot.iterate`` → numpy columns → float32 batches → onnxruntime (each event by its
  fold's model) → ``hist`` fills. It reads the model card as plain JSON and builds its own
  sessions; the histogram binning below is written out again on purpose. ``tests`` and
  ``hepsieve bench`` check that it gives the processor's histograms, bin for bin.

Both run in spawned processes (1 or N, files dealt by size); ``start``/``stop`` bracket the
event loop, after imports and session building, like the executors' ``wall_s``.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

#: rows per onnxruntime call, as a cache-sized batch (1.8 MB at 28 float32 features)
LIMIT_BATCH = 16_384
#: the UCI HIGGS histograms, written out independently of processors/analyses/higgs_uci.py
HIGGS_HISTOGRAMS = {"m_bb": (60, 0.0, 3.0), "m_wwbb": (60, 0.0, 3.0)}
HIGGS_CUT_HISTOGRAM = "m_bb"
HIGGS_SCORE_BINS = 1000
HIGGS_SCORE_CUT = 0.5
HIGGS_CATEGORIES = ("background", "signal")  # integer code = UCI label


#: one unit of work: (dataset, file path, tree name, branches to read)
Item = tuple[str, str, str, tuple[str, ...]]


def in_processes(task: Callable[..., dict], shares: Sequence[Sequence[Item]], *args: Any) -> dict:
    """Run ``task(share, *args)`` in one spawned process per share; return the combined timing.

    ``wall_s`` runs from the first process starting its loop to the last one ending it;
    ``startup_s`` is the rest (spawn, imports, sessions). ``parts`` holds each process' result.
    """
    begin = time.time()
    # spawn: a fresh process even for one share, so that its peak memory is the loop's alone,
    # and no copy of the parent's onnxruntime or ROOT thread pools
    with ProcessPoolExecutor(len(shares), mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(task, shares, *([a] * len(shares) for a in args)))
    total = time.time() - begin
    wall = max(p["stop"] for p in parts) - min(p["start"] for p in parts)
    n = sum(p["events"] for p in parts)
    return {
        "events": n,
        "wall_s": wall,
        "startup_s": total - wall,
        "events_per_s": n / wall if wall > 0 else float("inf"),
        "worker_max_rss_mb": [p["max_rss_mb"] for p in parts],
        "parts": parts,
    }


def deal(items: Sequence[Item], processes: int) -> list[list[Item]]:
    """Deal ``items`` round-robin by file size (largest first) into ``processes`` shares."""
    ordered = sorted(items, key=lambda i: -Path(i[1]).stat().st_size)
    return [s for s in (ordered[i::processes] for i in range(processes)) if s]


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def io_floor_share(share: Sequence[Item], step_size: int) -> dict:
    """Read every branch of ``share`` with uproot.iterate (awkward arrays), nothing else."""
    import awkward as ak
    import uproot

    start, n, nbytes = time.time(), 0, 0
    for _, path, tree, branches in share:
        for arrays in uproot.iterate(f"{path}:{tree}", list(branches), step_size=step_size, library="ak"):
            n += len(arrays)
            nbytes += int(ak.to_layout(arrays).nbytes)
    return {"events": n, "bytes": nbytes, "start": start, "stop": time.time(), "max_rss_mb": _peak_rss_mb()}


def _sessions(card_path: Path) -> tuple[dict, list]:
    """Return the card (plain JSON) and one single-threaded onnxruntime session per fold."""
    import onnxruntime as ort

    card = json.loads(card_path.read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sessions = [
        ort.InferenceSession(
            (card_path.parent / f["file"]).read_bytes(), opts, providers=["CPUExecutionProvider"]
        )
        for f in sorted(card["folds"], key=lambda f: f["fold"])
    ]
    return card, sessions


def _score(card: dict, sessions: list, cols: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Return P(signal) per row: rows of fold i packed LIMIT_BATCH at a time for model i."""
    event = cols["event"]
    fold = event % len(sessions)
    out = np.empty(len(event), dtype=np.float32)
    buffer = np.empty((min(len(event), LIMIT_BATCH), len(names)), dtype=np.float32)
    output, column = card["output"]["name"], card["output"].get("column")
    for i, sess in enumerate(sessions):
        rows = np.flatnonzero(fold == i)
        input_name = sess.get_inputs()[0].name
        for start in range(0, len(rows), LIMIT_BATCH):
            batch = rows[start : start + LIMIT_BATCH]
            x = buffer[: len(batch)]
            for j, name in enumerate(names):
                x[:, j] = cols[name][batch]
            part = sess.run([output], {input_name: x})[0]
            out[batch] = (part[:, column] if column is not None else part).reshape(-1)
    return out


def _higgs_book(model: str) -> dict:
    import hist

    def book(bins: int, lo: float, hi: float) -> hist.Hist:
        return hist.Hist(
            hist.axis.IntCategory(range(len(HIGGS_CATEGORIES)), overflow=False),
            hist.axis.Regular(bins, lo, hi),
            storage=hist.storage.Double(),
        )

    out = {name: book(*binning) for name, binning in HIGGS_HISTOGRAMS.items()}
    out[f"score_{model}"] = book(HIGGS_SCORE_BINS, 0.0, 1.0)
    out[f"{HIGGS_CUT_HISTOGRAM}_{model}_pass"] = book(*HIGGS_HISTOGRAMS[HIGGS_CUT_HISTOGRAM])
    return out


def higgs_limit_share(share: Sequence[Item], step_size: int, card_path: Path, score_cut: float) -> dict:
    """Run the hand-written HIGGS analysis on ``share``: read, pack, ONNX, fill; return the counts.

    Returns ``{dataset: {histogram: (2, bins + 2) counts with flow}}`` beside the timing.
    """
    import uproot

    card, sessions = _sessions(Path(card_path))
    names = [f["name"] for f in card["features"]]
    model = card["name"]
    hists: dict[str, dict] = {}
    start, n = time.time(), 0
    for dataset, path, tree, _ in share:
        h = hists.setdefault(dataset, _higgs_book(model))
        for cols in uproot.iterate(
            f"{path}:{tree}", [*names, "label", "event"], step_size=step_size, library="np"
        ):
            code = cols["label"].astype(np.int64)
            score = _score(card, sessions, cols, names)
            for name in HIGGS_HISTOGRAMS:
                h[name].fill(code, cols[name])
            h[f"score_{model}"].fill(code, score)
            passed = score > score_cut
            h[f"{HIGGS_CUT_HISTOGRAM}_{model}_pass"].fill(code[passed], cols[HIGGS_CUT_HISTOGRAM][passed])
            n += len(code)
    counts = {ds: {k: v.values(flow=True) for k, v in hs.items()} for ds, hs in hists.items()}
    return {"events": n, "start": start, "stop": time.time(), "max_rss_mb": _peak_rss_mb(), "counts": counts}


def merged_counts(parts: Sequence[dict]) -> dict[str, dict[str, np.ndarray]]:
    """Add the per-process histogram counts of a limit loop: ``{dataset: {histogram: counts}}``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for part in parts:
        for dataset, hists in part["counts"].items():
            into = out.setdefault(dataset, {})
            for name, counts in hists.items():
                into[name] = into[name] + counts if name in into else np.array(counts)
    return out


def processor_counts(histograms: dict, dataset: str, name: str) -> np.ndarray:
    """Return a run histogram's nominal counts as (category code, bins + 2 with flow).

    Return a run histogram's nominal sum of weights per (category code, bin with flow), in
    the limit loop's layout; for unit weights also its variances must equal them.
    """
    h = histograms[name]
    rows = []
    for cat in HIGGS_CATEGORIES:
        sub = h[{"dataset": dataset, "category": cat, "variation": "nominal"}]
        view = sub.view(flow=True)
        if not np.array_equal(view["value"], view["variance"]):
            raise AssertionError(f"{name} {dataset} {cat}: weights are not all 1")
        rows.append(view["value"])
    return np.stack(rows)


def compare_with_processor(limit: dict[str, dict[str, np.ndarray]], histograms: dict) -> list[str]:
    """Return the (dataset, histogram) pairs where the limit loop and the processor differ."""
    bad = []
    for dataset, hists in limit.items():
        for name, counts in hists.items():
            if name not in histograms:
                bad.append(f"{dataset}/{name}: the processor has no such histogram")
            elif not np.array_equal(processor_counts(histograms, dataset, name), counts):
                bad.append(f"{dataset}/{name}")
    return bad
