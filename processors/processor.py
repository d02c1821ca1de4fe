"""The generic coffea processor: selection, weights, categories, ONNX scores and histograms."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import awkward as ak
import hist
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from coffea import processor

from hepsieve.processors.analysis import Analysis
from hepsieve.processors.cutflow import Cutflow
from hepsieve.processors.errors import HepsieveWarning

LABELS = {"signal": 1, "background": 0, "data": -1}


def make_histograms(analysis: Analysis, model_names: Sequence[str] = ()) -> dict[str, hist.Hist]:
    """Return the empty output histograms: (dataset, category, physics axis), Weight storage."""

    def book(axis: hist.axis.Regular) -> hist.Hist:
        return hist.Hist(hist.axis.StrCategory([], growth=True, name="dataset", label="Dataset"),
                         hist.axis.StrCategory(list(analysis.categories), name="category",
                                               label="Category"),
                         axis, storage=hist.storage.Weight())

    out = {spec.name: book(spec.axis) for spec in analysis.histograms}
    cut = analysis.histogram(analysis.cut_histogram)
    for name in model_names:
        out[f"score_{name}"] = book(hist.axis.Regular(analysis.score_bins, 0.0, 1.0, name="score",
                                                      label=f"{name} score"))
        out[f"{cut.name}_{name}_pass"] = book(cut.axis)
    return out


class AnalysisProcessor(processor.ProcessorABC):
    """Runs one :class:`Analysis` on a chunk; fills histograms or exports features.

    ``mode="histograms"``: fill the analysis histograms, one score histogram per model
    and the cut histogram after that model's score cut (one value for all models or a
    ``{model: cut}`` mapping; default: the analysis' ``score_cut``).
    ``mode="features"``: also write the selected, scored-category events' features to
    Parquet under ``features_dir`` (one file per chunk, named by file and entry range, so
    a retried chunk overwrites rather than duplicates).
    """

    def __init__(self, analysis: Analysis, scorers: Sequence = (), mode: str = "histograms",
                 features_dir: str | Path | None = None,
                 score_cut: float | Mapping[str, float] | None = None):
        self.analysis = analysis
        self.scorers = list(scorers)
        self.mode = mode
        self.features_dir = None if features_dir is None else str(features_dir)
        if not isinstance(score_cut, Mapping):
            score_cut = {s.name: score_cut for s in self.scorers if score_cut is not None}
        self.score_cut = {s.name: score_cut.get(s.name, analysis.score_cut) for s in self.scorers}

    def process(self, events: ak.Array) -> dict:
        """Process one coffea chunk and return its histograms, cutflow and feature files."""
        return self.process_chunk(events, events.metadata)

    def process_chunk(self, events: ak.Array, meta: dict) -> dict:
        """Process ``events`` (any awkward record array) described by ``meta``."""
        a, dataset = self.analysis, meta["dataset"]
        weights = a.weights(events, meta)
        cutflow = Cutflow(dataset, weights)
        mask = np.ones(len(events), dtype=bool)
        for step, passed in a.selection(events).items():
            mask &= passed
            cutflow.add(step, mask)
        # an all-true mask would copy every column of a large chunk for nothing
        selected, w = (events, weights) if mask.all() else (events[mask], weights[mask])
        if a.derive is not None:
            selected = a.derive(selected)
        category = a.categorize(selected)
        for cat in a.categories:
            cutflow.add(f"category {cat}", category == cat, w)

        scored = np.isin(category, a.scored_categories)
        columns = self._feature_columns(selected if scored.all() else selected[scored])
        finite = np.logical_and.reduce([np.isfinite(c) for c in columns.values()]) \
            if columns else np.ones(np.count_nonzero(scored), dtype=bool)
        n_bad = int(np.count_nonzero(~finite))
        if n_bad:
            warnings.warn(f"{dataset} {meta['filename']} entries {meta['entrystart']}-"
                          f"{meta['entrystop']}: {n_bad} event(s) with NaN/inf features are "
                          "excluded from scoring and from the feature export", HepsieveWarning,
                          stacklevel=2)
        scored_idx = np.flatnonzero(scored)[finite]
        scored_mask = np.zeros(len(w), dtype=bool)
        scored_mask[scored_idx] = True
        cutflow.add(f"{'+'.join(a.scored_categories)}: finite features", scored_mask, w)

        out = {"histograms": self._fill(dataset, selected, w, category, columns, finite, scored_idx)}
        out |= cutflow.as_output()
        if self.mode == "features":
            out["feature_files"] = {dataset: self._export(meta, selected, w, category, columns,
                                                          finite, scored_idx)}
        return out

    def postprocess(self, accumulator: dict) -> dict:
        """Return the merged accumulator unchanged."""
        return accumulator

    def _feature_columns(self, events: ak.Array) -> dict[str, np.ndarray]:
        specs = list(self.analysis.features.values()) if self.mode == "features" else [
            self.analysis.feature_spec(s.feature_set) for s in self.scorers]
        columns: dict[str, np.ndarray] = {}
        for spec in specs:
            if not set(spec.names) <= set(columns):
                columns |= spec.columns(events)
        return columns

    def _fill(self, dataset, selected, w, category, columns, finite, scored_idx) -> dict:
        a = self.analysis
        hists = make_histograms(a, [s.name for s in self.scorers])
        # one fill per category with a scalar category: string-array fills cost 2x
        in_category = {cat: category == cat for cat in a.categories}
        for spec in a.histograms:
            value = ak.to_numpy(spec.value(selected))
            for cat in spec.categories or a.categories:
                rows = in_category[cat]
                hists[spec.name].fill(dataset=dataset, category=cat,
                                      **{spec.axis.name: value[rows]}, weight=w[rows])
        if not self.scorers:
            return hists
        event_id = ak.to_numpy(selected[a.event_id])[scored_idx]
        cut_spec = a.histogram(a.cut_histogram)
        cut_value = ak.to_numpy(cut_spec.value(selected))[scored_idx]
        w_scored = w[scored_idx]
        scored_in = {cat: rows[scored_idx] for cat, rows in in_category.items()
                     if cat in a.scored_categories}
        all_finite = bool(finite.all())
        for scorer in self.scorers:
            names = a.feature_spec(scorer.feature_set).names
            score = scorer.score_columns(
                [columns[n] if all_finite else columns[n][finite] for n in names], event_id)
            passed = score > self.score_cut[scorer.name]
            for cat, rows in scored_in.items():
                hists[f"score_{scorer.name}"].fill(dataset=dataset, category=cat, score=score[rows],
                                                   weight=w_scored[rows])
                rows = rows & passed
                hists[f"{cut_spec.name}_{scorer.name}_pass"].fill(
                    dataset=dataset, category=cat, **{cut_spec.axis.name: cut_value[rows]},
                    weight=w_scored[rows])
        return hists

    def _export(self, meta, selected, w, category, columns, finite, scored_idx) -> dict[str, int]:
        if self.analysis.labels is not None:
            label = np.asarray(self.analysis.labels(selected[scored_idx]), dtype=np.int8)
        else:
            role = meta.get("role", "data" if meta.get("is_data") else "background")
            label = np.full(len(scored_idx), LABELS[role], dtype=np.int8)
        table = pa.table({
            **{n: c[finite] for n, c in columns.items()},
            "weight": w[scored_idx],
            "label": label,
            "event": ak.to_numpy(selected[self.analysis.event_id])[scored_idx].astype(np.int64),
            "category": category[scored_idx],
            "dataset": np.full(len(scored_idx), meta["dataset"]),
        })
        path = Path(self.features_dir) / meta["dataset"] / (
            f"{meta['fileuuid'] or Path(meta['filename']).stem}_"
            f"{meta['entrystart']}-{meta['entrystop']}.parquet")
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return {str(path): len(scored_idx)}
