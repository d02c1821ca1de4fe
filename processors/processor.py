"""The generic chunk pipeline, a coffea processor.

The generic chunk pipeline (a coffea processor): objects -> selection -> weights -> categories
-> features -> ONNX scores -> histograms, or the feature export for training.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import hist
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from coffea import processor

from hepsieve.processors.analysis import NOMINAL, Analysis
from hepsieve.processors.chunkread import CHUNK_KEYS, nanoaod_events
from hepsieve.processors.cutflow import Cutflow
from hepsieve.processors.errors import (
    ChunkError,
    ChunkReadError,
    ConfigurationError,
    DataValueError,
    HepsieveError,
    HepsieveWarning,
)

LABELS = {"signal": 1, "background": 0, "data": -1}
MODES = ("histograms", "features")
#: a worker's branch lists of flat chunks, by input flavour and dataset metadata
_FLAT_NAMES: dict[str, list[str]] = {}


def make_histograms(
    analysis: Analysis,
    model_names: Sequence[str] = (),
    variations: Sequence[str] = (NOMINAL,),
    coded: bool = False,
) -> dict[str, hist.Hist]:
    """Return the empty output histograms: (dataset, category, variation, physics axes), Weight storage.

    ``coded``: the category axis is the categories' integer codes (0, 1, ... in the analysis'
    order), as the chunk pipeline fills it; :func:`with_category_names` turns it into names.
    It is an ``Integer`` axis with the overflow bin of a category axis (the same bins; a fill
    takes half the time of an ``IntCategory`` one, which looks every code up).
    """
    names = list(analysis.categories.names)
    category = (
        hist.axis.Integer(0, len(names), underflow=False, name="category", label="Category")
        if coded
        else hist.axis.StrCategory(names, name="category", label="Category")
    )

    def book(*axes: hist.axis.Regular) -> hist.Hist:
        return hist.Hist(
            hist.axis.StrCategory([], growth=True, name="dataset", label="Dataset"),
            category,
            hist.axis.StrCategory(list(variations), name="variation", label="Variation"),
            *axes,
            storage=hist.storage.Weight(),
        )

    out = {spec.name: book(*spec.axes) for spec in analysis.histograms}
    cut = analysis.histogram(analysis.scoring.cut_histogram)
    for name in model_names:
        out[f"score_{name}"] = book(
            hist.axis.Regular(analysis.scoring.score_bins, 0.0, 1.0, name="score", label=f"{name} score")
        )
        out[f"{cut.name}_{name}_pass"] = book(*cut.axes)
    return out


def with_category_names(h: hist.Hist, names: Sequence[str]) -> hist.Hist:
    """Return the histogram with its integer-coded category axis replaced by the names (same bins)."""
    axes = [
        hist.axis.StrCategory(list(names), name="category", label=ax.label) if ax.name == "category" else ax
        for ax in h.axes
    ]
    out = hist.Hist(*axes, storage=hist.storage.Weight())
    out.view(flow=True)[...] = h.view(flow=True)
    return out


@dataclass
class Selected:
    """One chunk after the selection.

    The selected events, their observables, weights and category masks, and the scored
    events' feature columns and event ids.
    """

    events: Any
    objects: Any
    observables: Any
    weights: np.ndarray
    categories: dict[str, np.ndarray]
    columns: dict[str, np.ndarray]
    finite: np.ndarray  # over the scored events: all feature columns finite
    scored_idx: np.ndarray  # selected-event indices that are scored (finite features)
    event_id: np.ndarray  # of the scored events
    rows: np.ndarray | None = None  # chunk row of each selected event (None: every row selected)
    # exclusive categories: each selected event's category code (-1: none); None: overlapping
    codes: np.ndarray | None = None


class AnalysisProcessor(processor.ProcessorABC):
    """Runs one :class:`Analysis` on a chunk; fills histograms or exports features.

    ``mode="histograms"``: fill the analysis histograms, one score histogram per model
    and the cut histogram after that model's score cut (one value for all models or a
    ``{model: cut}`` mapping; default: the analysis' ``scoring.score_cut``).
    ``mode="features"``: also write the selected, scored-category events' features to
    Parquet under ``features_dir`` (one file per chunk, named by file and entry range, so
    a retried chunk overwrites rather than duplicates).
    """

    def __init__(
        self,
        analysis: Analysis,
        scorers: Sequence = (),
        mode: str = "histograms",
        features_dir: str | Path | None = None,
        score_cut: float | Mapping[str, float] | None = None,
        variations: Sequence[str] | None = None,
    ):
        if mode not in MODES:
            raise ConfigurationError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
        self.analysis = analysis
        self.variations = _chosen_variations(analysis, mode, variations)
        self.scorers = list(scorers)
        self.mode = mode
        self.features_dir = None if features_dir is None else str(features_dir)
        if not isinstance(score_cut, Mapping):
            score_cut = {s.name: score_cut for s in self.scorers if score_cut is not None}
        self.score_cut = {s.name: score_cut.get(s.name, analysis.scoring.score_cut) for s in self.scorers}

    def identity(self) -> dict[str, Any]:
        """Return what, besides the analysis and the chunk, shapes a chunk's result."""
        models = [
            {
                "name": s.name,
                "feature_set": s.feature_set,
                "onnx_sha256": s.hashes,
                "output": [s.output_name, s.output_column],
            }
            for s in self.scorers
        ]
        return {
            "mode": self.mode,
            "score_cut": self.score_cut,
            "models": models,
            "variations": self.variations,
        }

    def process(self, events: ak.Array) -> dict:
        """Process one coffea chunk and return its histograms, cutflow and feature files."""
        meta = events.metadata
        events = self._read_inputs(events, meta)
        return self.process_chunk(events, meta)

    def process_chunk(self, events: ak.Array, meta: Mapping) -> dict:
        """Process ``events`` (any awkward record array) described by ``meta``.

        Every error names the file and entry range of the chunk; HepsieveErrors keep their
        class, anything else from the analysis code becomes a :class:`ChunkError`.
        """
        try:
            cutflow, sel, objects = self._select(events, meta)
            out = self._histograms(events, objects, meta, sel) | cutflow.as_output()
            if self.mode == "features":
                out["feature_files"] = {meta["dataset"]: self._export(meta, sel)}
        except DataValueError as err:
            raise DataValueError(f"{_where(meta)}: {err}") from err
        except HepsieveError as err:
            raise type(err)(f"{_where(meta)}: {err}") from err
        except Exception as err:
            raise ChunkError(f"{_where(meta)}: the analysis failed: {type(err).__name__}: {err}") from err
        out["entries"] = {meta.get("filename", meta["dataset"]): len(events)}
        return out

    def postprocess(self, accumulator: dict) -> dict:
        """Return the merged accumulator unchanged."""
        return accumulator

    def _read_inputs(self, events: ak.Array, meta: Mapping) -> ak.Array:
        """Read the analysis' branches of a chunk now; a read failure is a ChunkReadError.

        Reading is lazy, so a damaged basket would otherwise fail somewhere inside the
        analysis code; read here, it is told apart from an analysis error (and
        ``--skip-bad-files`` can drop the chunk, reporting its entries as lost).
        """
        if self.analysis.input_flavour(meta.get("inputs")).schema != "base":
            return events  # NanoEvents collections: coffea reads them as the analysis asks
        names = self.flat_branches(meta, events.fields)
        if names is None:
            return events
        try:
            return ak.materialize(events[names])
        except Exception as err:  # uproot raises many types for damaged data
            raise ChunkReadError(f"{_where(meta)}: cannot be read ({type(err).__name__}: {err})") from err

    def flat_branches(self, meta: Mapping, available: Collection[str]) -> list[str] | None:
        """Return the branches a flat chunk reads, of ``available``; else None.

        Flat: the ``base`` schema, and ``nanoaod`` with ``plain_collections``; None for other
        NanoEvents inputs, whose collections coffea builds.
        """
        inputs = self.analysis.input_flavour(meta.get("inputs"))
        if inputs.schema != "base" and not inputs.plain_collections:
            return None
        dataset_meta = {k: v for k, v in meta.items() if k not in CHUNK_KEYS}
        key = json.dumps([repr(inputs), dataset_meta], sort_keys=True, default=str)
        if key not in _FLAT_NAMES:  # once per dataset in a worker: dataset_branches may warn
            names = [*inputs.required(bool(meta.get("is_data")), dataset_meta), *inputs.optional]
            _FLAT_NAMES[key] = list(dict.fromkeys(names))
        return [n for n in _FLAT_NAMES[key] if n in available]

    def flat_events(self, arrays: ak.Array, meta: Mapping) -> ak.Array:
        """Return the events of a flat read: the branches, or NanoAOD's grouped as plain records."""
        if self.analysis.input_flavour(meta.get("inputs")).schema == "nanoaod":
            return nanoaod_events(arrays, meta)
        return arrays

    def takes_flat_chunks(self) -> bool:
        """Return whether the flat read may call :meth:`process_chunk` directly.

        Not for a subclass that overrides :meth:`process`: it is given coffea's events, as
        it expects.
        """
        return type(self).process is _OWN_PROCESS

    def _weigh(self, events: ak.Array, objects: Any, meta: Mapping) -> np.ndarray:
        """Return the nominal weights; DataValueError naming the entries of non-finite ones."""
        weights = np.asarray(self.analysis.weights.nominal(events, objects, meta), dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(weights))
        if len(bad):
            raise DataValueError(
                f"{len(bad)} event(s) with a non-finite weight (NaN/inf), at "
                f"{_entries(meta, bad)}; fix the input or its weight recipe"
            )
        return weights

    def _select(self, events: ak.Array, meta: Mapping, objects: Any = None) -> tuple[Cutflow, Selected, Any]:
        """Objects, weights and the selection steps; categories and features of the selected.

        Returns the cutflow, the selected events and the object record of the whole chunk.
        """
        a, flavour = self.analysis, meta.get("inputs")
        objects = a.make_objects(events) if objects is None else objects
        weights = self._weigh(events, objects, meta)
        cutflow = Cutflow(meta["dataset"], weights)
        mask = np.ones(len(events), dtype=bool)
        for step in a.steps(flavour or a.inputs.name):
            mask &= step.mask(events, objects)
            cutflow.add(step.label, mask)
        if mask.all():  # an all-true mask would copy every column of a large chunk for nothing
            selected, sel_objects, w = events, objects, weights
        else:
            selected, w = events[mask], weights[mask]
            sel_objects = selected if objects is events else objects[mask]
        rows = None if selected is events else np.flatnonzero(mask)
        try:
            sel = self._observe(selected, sel_objects, w, cutflow, meta)
        except DataValueError as err:
            raise _located(err, meta, rows) from err
        sel.rows = rows
        return cutflow, sel, objects

    def _observe(
        self, selected: Any, sel_objects: Any, w: np.ndarray, cutflow: Cutflow, meta: Mapping
    ) -> Selected:
        """Observables, categories, feature columns and event ids of the selected events."""
        a = self.analysis
        observables = a.make_observables(selected, sel_objects)
        categories = self._categories(observables, len(w))
        codes = self._codes(categories, len(w))
        for name, rows in categories.items():
            cutflow.add(f"category {name}", rows, w)
        scored = np.logical_or.reduce([categories[c] for c in a.scoring.categories])
        columns = self._feature_columns(observables if scored.all() else observables[scored])
        finite = _all_finite(columns.values(), int(np.count_nonzero(scored)))
        _warn_non_finite(meta, int(np.count_nonzero(~finite)))
        event_id = ak.to_numpy(selected[a.input_flavour(meta.get("inputs")).event_id])
        if len(finite) == len(w) and finite.all():  # every selected event scored
            scored_idx, scored_mask = np.arange(len(w)), finite
        else:
            scored_idx = np.flatnonzero(scored)[finite]
            scored_mask = np.zeros(len(w), dtype=bool)
            scored_mask[scored_idx] = True
            event_id = event_id[scored_idx]
        cutflow.add(f"{'+'.join(a.scoring.categories)}: finite features", scored_mask, w)
        return Selected(
            selected,
            sel_objects,
            observables,
            w,
            categories,
            columns,
            finite,
            scored_idx,
            event_id,
            codes=codes,
        )

    def _categories(self, observables: Any, n: int) -> dict[str, np.ndarray]:
        """Return the category masks in the analysis' order, checked against its definition."""
        names = self.analysis.categories.names
        masks = self.analysis.categories.assign(observables)
        if set(masks) != set(names):
            raise ConfigurationError(
                f"analysis {self.analysis.name!r}: categories.assign returned "
                f"{sorted(masks)}, not categories.names {names}"
            )
        return {c: np.asarray(masks[c], dtype=bool) for c in names}

    def _codes(self, masks: dict[str, np.ndarray], n: int) -> np.ndarray | None:
        """Return each event's category code (-1: none) of exclusive categories; check they are.

        None for overlapping categories (``Categories(exclusive=False)``): those are filled
        one category at a time.
        """
        if not self.analysis.categories.exclusive:
            return None
        codes, in_how_many = np.full(n, -1, dtype=np.intp), np.zeros(n, dtype=np.uint16)
        for i, mask in enumerate(masks.values()):  # arithmetic, not masked writes: labels are random
            in_how_many += mask
            codes += mask.view(np.uint8) * np.uint16(i + 1)
        if in_how_many.max(initial=0) > 1:
            raise ConfigurationError(
                f"analysis {self.analysis.name!r}: categories overlap; "
                "set Categories(exclusive=False) for overlapping regions"
            )
        return codes

    def _feature_columns(self, observables: Any) -> dict[str, np.ndarray]:
        specs = (
            list(self.analysis.features.values())
            if self.mode == "features"
            else [self.analysis.feature_spec(s.feature_set) for s in self.scorers]
        )
        columns: dict[str, np.ndarray] = {}
        for spec in specs:
            if not set(spec.names) <= set(columns):
                columns |= spec.columns(observables)
        return columns

    def _histograms(self, events: Any, objects: Any, meta: Mapping, sel: Selected) -> dict:
        """Fill every histogram: nominal, then (simulation only) each weight and shape variation."""
        a, dataset = self.analysis, meta["dataset"]
        hists = make_histograms(a, [s.name for s in self.scorers], self.variations, coded=True)
        fills: dict[tuple[str, str, str, str], int] = {}
        scores = self._scores(sel)
        self._fill(hists, fills, dataset, NOMINAL, sel, sel.weights, scores)
        if not meta.get("is_data"):
            self._fill_variations(hists, fills, (events, objects, meta), sel, scores)
        names = a.categories.names
        return {"histograms": {k: with_category_names(h, names) for k, h in hists.items()}, "fills": fills}

    def _fill_variations(
        self, hists: dict, fills: dict, chunk: tuple, sel: Selected, scores: dict[str, np.ndarray]
    ) -> None:
        """Fill each chosen weight variation, then each shape variation (re-running the chunk)."""
        a, (events, objects, meta) = self.analysis, chunk
        dataset = meta["dataset"]
        for wv in a.weights.variations:
            for direction, factor in (("Up", wv.up), ("Down", wv.down)):
                if f"{wv.name}{direction}" not in self.variations:
                    continue
                f = np.asarray(factor(sel.events, sel.objects, meta), float)
                if f.ndim == 0:  # a flat factor: the nominal histograms scaled, not filled again
                    _scale_nominal(hists, fills, dataset, f"{wv.name}{direction}", float(f))
                    continue
                f = np.broadcast_to(f, sel.weights.shape)
                self._fill(hists, fills, dataset, f"{wv.name}{direction}", sel, sel.weights * f, scores)
        for sv in a.shape_variations:
            for direction, sign in (("Up", +1), ("Down", -1)):
                if f"{sv.name}{direction}" in self.variations:
                    varied, varied_objects = sv.vary(events, objects, meta, sign)
                    vsel = self._select(varied, meta, varied_objects)[1]
                    self._fill(
                        hists, fills, dataset, f"{sv.name}{direction}", vsel, vsel.weights, self._scores(vsel)
                    )

    def _scores(self, sel: Selected) -> dict[str, np.ndarray]:
        """Return each model's score of the scored events (each by its fold's model)."""
        a, all_finite = self.analysis, bool(sel.finite.all())
        out = {}
        for scorer in self.scorers:
            names = a.feature_spec(scorer.feature_set).names
            columns = [sel.columns[n] if all_finite else sel.columns[n][sel.finite] for n in names]
            out[scorer.name] = scorer.score_columns(columns, sel.event_id)
        return out

    def _fill(
        self,
        hists: dict[str, hist.Hist],
        fills: dict,
        dataset: str,
        variation: str,
        sel: Selected,
        weights: np.ndarray,
        scores: dict[str, np.ndarray],
    ) -> None:
        """Fill the histograms of one variation; count the fills of each (histogram, category).

        Exclusive categories: one fill per histogram with the events' integer category codes
        (no copy of values and weights where every event is in a filled category); overlapping
        ones: one fill per category with a scalar code.
        """
        a = self.analysis
        counts = _code_counts(sel.codes, len(a.categories.names))
        for spec in a.histograms:
            values = spec.values(sel.observables)
            cats = spec.categories or a.categories.names
            _fill_coded(hists[spec.name], (dataset, variation), self._code_index(cats), sel, values, weights)
            for cat in cats:
                fills[(spec.name, dataset, cat, variation)] = _count(sel, counts, self._code(cat))
        if scores:
            self._fill_scores(hists, fills, (dataset, variation), sel, weights, scores)

    def _code(self, category: str) -> int:
        return self.analysis.categories.names.index(category)

    def _code_index(self, categories: Sequence[str]) -> tuple[int, ...]:
        return tuple(self._code(c) for c in categories)

    def _fill_scores(
        self,
        hists: dict[str, hist.Hist],
        fills: dict,
        where: tuple[str, str],
        sel: Selected,
        weights: np.ndarray,
        scores: dict[str, np.ndarray],
    ) -> None:
        """Fill each model's score histogram and the cut histogram after its score cut."""
        a, (dataset, variation) = self.analysis, where
        cut_spec = a.histogram(a.scoring.cut_histogram)
        scored = sel.scored_idx
        all_scored = len(scored) == len(weights)  # then scored_idx is every selected event, in order
        cut_values = cut_spec.values(sel.observables)
        if not all_scored:
            cut_values = tuple(v[scored] for v in cut_values)
        sub = _Scored(sel, scored, all_scored, weights)
        codes = self._code_index(a.scoring.categories)
        for model, score in scores.items():
            name = f"{cut_spec.name}_{model}_pass"
            _fill_coded(hists[f"score_{model}"], where, codes, sub, (score,), sub.weights)
            passed = score > self.score_cut[model]
            _fill_coded(hists[name], where, codes, sub, cut_values, sub.weights, also=passed)
            n_codes = len(a.categories.names)
            counts = _code_counts(sub.codes, n_codes)
            passed_counts = _code_counts(sub.codes, n_codes, passed)
            for cat in a.scoring.categories:
                code = self._code(cat)
                fills[(f"score_{model}", dataset, cat, variation)] = _count(sub, counts, code)
                fills[(name, dataset, cat, variation)] = _count(sub, passed_counts, code, passed)

    def _labels(self, meta: Mapping, sel: Selected) -> np.ndarray:
        if self.analysis.labels is not None:
            label = np.asarray(self.analysis.labels(sel.observables[sel.scored_idx]))
            bad = np.flatnonzero((label != 0) & (label != 1))
            if len(bad):
                raise DataValueError(
                    f"{len(bad)} training label(s) not 0 or 1 (e.g. {label[bad[0]]})", sel.scored_idx[bad]
                )
            return label.astype(np.int8)
        role = meta.get("role", "data" if meta.get("is_data") else "background")
        if role not in LABELS:
            raise ConfigurationError(
                f"dataset {meta['dataset']}: role {role!r} is not one of "
                f"{sorted(LABELS)} (set it in the fileset's metadata)"
            )
        return np.full(len(sel.scored_idx), LABELS[role], dtype=np.int8)

    def _export(self, meta: Mapping, sel: Selected) -> dict[str, int]:
        try:
            label = self._labels(meta, sel)
        except DataValueError as err:
            raise _located(err, meta, sel.rows) from err
        scored_names = self.analysis.scoring.categories
        category = np.select(
            [sel.categories[c][sel.scored_idx] for c in scored_names], list(scored_names), default=""
        )
        table = pa.table(
            {
                **{n: c[sel.finite] for n, c in sel.columns.items()},
                "weight": sel.weights[sel.scored_idx],
                "label": label,
                "event": sel.event_id.astype(np.int64),
                "category": category,
                "dataset": np.full(len(sel.scored_idx), meta["dataset"]),
            }
        )
        name = f"{meta['fileuuid'] or Path(meta['filename']).stem}_{meta['entrystart']}-{meta['entrystop']}"
        path = Path(str(self.features_dir)) / meta["dataset"] / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a retried chunk replaces it whole
        pq.write_table(table, tmp)
        tmp.replace(path)
        return {str(path): len(sel.scored_idx)}


class _Scored:
    """The scored events of a :class:`Selected` (codes, masks and weights restricted to them)."""

    def __init__(self, sel: Selected, idx: np.ndarray, whole: bool, weights: np.ndarray):
        if whole:
            self.codes, self.categories, self.weights = sel.codes, sel.categories, weights
        else:
            self.codes = None if sel.codes is None else sel.codes[idx]
            self.categories = {c: m[idx] for c, m in sel.categories.items()}
            self.weights = weights[idx]


def _all_finite(columns: Iterable[np.ndarray], n: int) -> np.ndarray:
    """Return whether each event's values are all finite, over every column (n events)."""
    columns = list(columns)
    finite = np.ones(n, dtype=bool)
    with np.errstate(over="ignore"):  # a finite sum that overflows sends it to the exact check
        if all(np.isfinite(np.sum(c)) for c in columns):  # a NaN or inf makes its column's sum one
            return finite
    for column in columns:
        finite &= np.isfinite(column)
    return finite


def _code_counts(codes: np.ndarray | None, n: int, also: np.ndarray | None = None) -> np.ndarray | None:
    """Return the events per category code (and passing ``also``); None for overlapping categories."""
    if codes is None:
        return None
    if also is not None:  # failing events moved past every code (-1 too): no copy through the mask
        codes = codes + (2 * n) * ~also
    return np.bincount(codes[codes >= 0], minlength=n)[:n]


def _count(
    sel: Selected | _Scored, counts: np.ndarray | None, code: int, also: np.ndarray | None = None
) -> int:
    """Return the events in category ``code`` (and passing ``also``), from codes or masks."""
    if counts is not None:
        return int(counts[code])
    mask = list(sel.categories.values())[code]
    return int(np.count_nonzero(mask if also is None else mask & also))


def _scale_nominal(
    hists: dict[str, hist.Hist], fills: dict, dataset: str, variation: str, factor: float
) -> None:
    """Set ``variation`` of ``dataset`` to its nominal histograms times ``factor`` (flat weight factor).

    The same sums as a fill with every weight times ``factor`` (to rounding): values x factor,
    variances (sums of squared weights) x factor², fill counts those of the nominal.
    """
    for h in hists.values():
        if dataset not in list(h.axes["dataset"]):
            continue  # no event filled: the variation is empty too
        view = h.view(flow=True)
        d = h.axes["dataset"].index(dataset)
        nominal, varied = h.axes["variation"].index(NOMINAL), h.axes["variation"].index(variation)
        view.value[d, :, varied] = view.value[d, :, nominal] * factor
        view.variance[d, :, varied] = view.variance[d, :, nominal] * factor**2
    for key in [k for k in fills if k[1] == dataset and k[3] == NOMINAL]:
        fills[(*key[:3], variation)] = fills[key]


def _fill_coded(
    h: hist.Hist,
    where: tuple[str, str],
    codes: tuple[int, ...],
    sel: Selected | _Scored,
    values: tuple[np.ndarray, ...],
    weights: np.ndarray,
    also: np.ndarray | None = None,
) -> None:
    """Fill ``h`` with the events in the categories ``codes`` (and passing ``also``).

    With exclusive categories one fill with the per-event codes, copying values only where
    some events are left out; with overlapping ones one fill per category.
    """
    dataset, variation = where
    if sel.codes is None:
        masks = list(sel.categories.values())
        for code in codes:
            keep = masks[code] if also is None else masks[code] & also
            h.fill(dataset, code, variation, *(v[keep] for v in values), weight=weights[keep])
        return
    keep = None
    if len(codes) != len(h.axes["category"]):
        keep = np.isin(sel.codes, codes)
    elif sel.codes.min(initial=0) < 0:  # events in no category: code -1 would fill the overflow bin
        keep = sel.codes >= 0
    if also is not None and not also.any():
        return  # as a fill of no events: the dataset axis does not grow
    if also is not None and keep is None:
        # a failing event adds weight 0 (value and variance unchanged, to the bit): cheaper than
        # copying every column through a mask as random as a score cut
        weights = np.where(also, weights, 0.0)
    elif also is not None:
        keep &= also
    if keep is None:
        h.fill(dataset, sel.codes, variation, *values, weight=weights)
    else:
        h.fill(dataset, sel.codes[keep], variation, *(v[keep] for v in values), weight=weights[keep])


def _chosen_variations(analysis: Analysis, mode: str, chosen: Sequence[str] | None) -> tuple[str, ...]:
    """Return the variations to fill: all the analysis declares (None), or the named ones.

    A feature export fills the nominal histograms only.
    """
    names = analysis.variation_names
    if mode == "features":
        return (NOMINAL,)
    if chosen is None:
        return names
    base = {n.removesuffix("Up").removesuffix("Down") for n in names[1:]}
    unknown = sorted(set(chosen) - base)
    if unknown:
        raise ConfigurationError(
            f"--variations {unknown}: analysis {analysis.name!r} declares {sorted(base) or 'none'}"
        )
    return (NOMINAL, *(n for n in names[1:] if n.removesuffix("Up").removesuffix("Down") in chosen))


def _located(err: DataValueError, meta: Mapping, rows: np.ndarray | None) -> DataValueError:
    """Return ``err`` with the file entries of its selected-event indices (its second arg)."""
    if len(err.args) < 2:
        return err
    idx = np.asarray(err.args[1])
    return DataValueError(f"{err.args[0]}, at {_entries(meta, idx if rows is None else rows[idx])}")


#: the flat read calls :meth:`AnalysisProcessor.process_chunk` only where ``process`` is this one
_OWN_PROCESS = AnalysisProcessor.process


def _where(meta: Mapping) -> str:
    """Return ``file entries a-b`` of a chunk (what every chunk error begins with)."""
    name = meta.get("filename", meta.get("dataset"))
    return f"{name} entries {meta.get('entrystart')}-{meta.get('entrystop')}"


def _entries(meta: Mapping, rows: np.ndarray) -> str:
    """Return the file entry numbers of chunk ``rows``, the first few of them."""
    start = int(meta.get("entrystart") or 0)
    shown = ", ".join(str(start + int(r)) for r in rows[:5])
    return f"entr{'y' if len(rows) == 1 else 'ies'} {shown}{', ...' if len(rows) > 5 else ''}"


def _warn_non_finite(meta: Mapping, n_bad: int) -> None:
    if n_bad:
        warnings.warn(
            f"{meta['dataset']} {meta.get('filename')} entries {meta.get('entrystart')}-"
            f"{meta.get('entrystop')}: {n_bad} event(s) with NaN/inf features are "
            "excluded from scoring and from the feature export",
            HepsieveWarning,
            stacklevel=3,
        )
