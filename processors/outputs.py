"""Run outputs: histograms.pkl, histograms.root (uproot), cutflow.json and run.json."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import hist
import uproot

from hepsieve.processors.provenance import RunRecord


def write_histograms_root(histograms: dict[str, hist.Hist], path: Path) -> None:
    """Write one TH1 per (histogram, category, dataset) as ``<hist>/<category>/<dataset>``."""
    with uproot.recreate(path) as fout:
        for name, h in histograms.items():
            for dataset in h.axes["dataset"]:
                for category in h.axes["category"]:
                    fout[f"{name}/{category}/{dataset}"] = h[{"dataset": dataset, "category": category}]


def write_outputs(
    out_dir: Path, histograms: dict[str, hist.Hist] | None, cutflow: dict, record: RunRecord
) -> list[Path]:
    """Write every run output into ``out_dir`` and return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if histograms is not None:
        with (out_dir / "histograms.pkl").open("wb") as fout:
            pickle.dump(histograms, fout)
        write_histograms_root(histograms, out_dir / "histograms.root")
        written += [out_dir / "histograms.pkl", out_dir / "histograms.root"]
    (out_dir / "cutflow.json").write_text(json.dumps(cutflow, indent=1))
    record.write(out_dir / "run.json")
    return [*written, out_dir / "cutflow.json", out_dir / "run.json"]


def load_histograms(run_dir: str | Path) -> dict[str, hist.Hist]:
    """Return the histograms of a finished run."""
    with (Path(run_dir) / "histograms.pkl").open("rb") as fin:
        return pickle.load(fin)
