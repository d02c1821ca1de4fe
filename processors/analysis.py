"""The Analysis definition: typed records that tie one physics case together, checked when built.

An :class:`Analysis` is a frozen value grouped into small records (DESIGN.md section 3):
``inputs`` (schema, event id, branches), ``objects`` (the per-chunk object record),
``selection`` (ordered named :class:`Step`), ``weights``, ``categories``, ``features``,
``histograms``, ``scoring``, ``style`` and optional ``tools``. A definition error raises
:class:`~hepsieve.processors.errors.ConfigurationError` naming the field when it is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hepsieve.processors.errors import ConfigurationError

if TYPE_CHECKING:  # awkward and hist load on first use: `hepsieve --help` needs neither (0.4 s)
    import awkward as ak
    import hist

#: schemas the runner can give an analysis (coffea's BaseSchema and NanoAODSchema)
SCHEMAS = ("base", "nanoaod")
#: branch type specs: a kind, optionally jagged ("var * float")
BRANCH_KINDS = ("float", "int", "bool")
#: the executors of `hepsieve run` (processors/executors.py); here, so the command line needs no coffea
EXECUTORS = ("iterative", "futures", "dask")
#: how the demo chooses each model's score cut (see :class:`Scoring`)
WORKING_POINTS = ("fixed", "ams", "significance")
#: per-event record handed between the stages (an awkward array, or the events themselves)
Record = Any


def branch_types(kind: str, *names: str) -> dict[str, str]:
    """Return ``{name: kind}`` for ``names`` (a helper to declare :attr:`Inputs.branches`)."""
    return dict.fromkeys(names, kind)


def _check_branch_spec(where: str, spec: str) -> None:
    kind = spec.removeprefix("var * ")
    if kind not in BRANCH_KINDS:
        raise ConfigurationError(
            f"{where}: branch type {spec!r} is not one of {BRANCH_KINDS} "
            "(optionally 'var * <kind>' for jagged branches)"
        )


@dataclass(frozen=True)
class FileSum:
    """A per-file total that the preflight adds up over a dataset's files into its metadata.

    ``key``: the metadata key that receives the dataset's total (e.g. ``genEventSumw``);
    ``tree``: the tree summed over its entries; ``branches``: the branch, or alternative
    names of it, the first one a file has being read (NanoAOD before v7 wrote
    ``genEventSumw_``). ``mc_only``: data files are not asked for it.
    """

    key: str
    tree: str
    branches: tuple[str, ...]
    mc_only: bool = True

    def check(self, where: str) -> None:
        """Raise ConfigurationError naming the field of the first inconsistency."""
        if not self.key or not self.tree or not self.branches or not all(self.branches):
            raise ConfigurationError(f"{where}: key, tree and branches must not be empty, got {self}")


@dataclass(frozen=True)
class Inputs:
    """What an analysis reads: the schema, the event id and the branches with their types.

    ``branches`` are required of every file, ``mc_branches`` of simulated files only (a data
    file never needs ``genWeight``), ``optional`` ones are read where a file has them.
    ``name`` tells input flavours of one analysis apart (a fileset chooses one by name).

    Hooks the preflight calls (all optional):

    * ``file_sums``: per-file totals (:class:`FileSum`, e.g. Σ genEventSumw of the NanoAOD
      ``Runs`` tree), summed over each dataset's files into its metadata;
    * ``dataset_branches(metadata)``: further branches (name -> type) that a dataset's
      metadata asks for (e.g. the HLT paths of its trigger table), required like
      ``branches``; it may reject the metadata with a ConfigurationError naming the key;
    * ``metadata_files``: metadata keys whose values are files (e.g. a golden JSON): a
      relative path is resolved against the data directory and must exist (URLs pass);
    * ``describe(branch_names)``: what a file looks like (e.g. its NanoAOD version), said in
      the preflight log, the dataset's metadata and a missing-branch error.

    ``plain_collections`` (``nanoaod`` schema): the analysis reads only the fields of its
    collections (``events.Muon.pt``, ``events.HLT[path]``, ``events.metadata``), no NanoEvents
    methods or cross-references; its TTree chunks are then read flat and grouped into plain
    records, without building coffea's NanoEvents (:func:`chunkread.nanoaod_events`).
    """

    branches: Mapping[str, str]
    event_id: str
    schema: str = "base"
    mc_branches: Mapping[str, str] = field(default_factory=dict)
    optional: Mapping[str, str] = field(default_factory=dict)
    name: str = "default"
    file_sums: tuple[FileSum, ...] = ()
    dataset_branches: Callable[[Mapping], Mapping[str, str]] | None = None
    metadata_files: tuple[str, ...] = ()
    describe: Callable[[Collection[str]], str] | None = None
    plain_collections: bool = False

    def check(self, where: str) -> None:
        """Raise ConfigurationError naming the field of the first inconsistency."""
        if self.schema not in SCHEMAS:
            raise ConfigurationError(f"{where}.schema: {self.schema!r} is not one of {SCHEMAS}")
        if self.plain_collections and self.schema != "nanoaod":
            raise ConfigurationError(f"{where}.plain_collections: only for the 'nanoaod' schema")
        if self.event_id not in self.branches:
            raise ConfigurationError(f"{where}.event_id: {self.event_id!r} is not in {where}.branches")
        for group in ("branches", "mc_branches", "optional"):
            for name, spec in getattr(self, group).items():
                _check_branch_spec(f"{where}.{group}[{name!r}]", spec)
        self._check_hooks(where)

    def _check_hooks(self, where: str) -> None:
        for i, total in enumerate(self.file_sums):
            total.check(f"{where}.file_sums[{i}]")
        keys = [t.key for t in self.file_sums]
        if len(set(keys)) != len(keys):
            raise ConfigurationError(f"{where}.file_sums: metadata keys repeat: {keys}")
        if not all(self.metadata_files):
            raise ConfigurationError(f"{where}.metadata_files: must be non-empty key names")
        for hook in ("dataset_branches", "describe"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise ConfigurationError(f"{where}.{hook}: must be callable or None")

    def required(self, is_data: bool, metadata: Mapping | None = None) -> dict[str, str]:
        """Return the branches (name -> type) a data or simulated file must have.

        With a dataset's ``metadata``, the branches ``dataset_branches`` asks for are added.
        """
        out = dict(self.branches) if is_data else {**self.branches, **self.mc_branches}
        if metadata is not None and self.dataset_branches is not None:
            extra = dict(self.dataset_branches(metadata))
            for name, spec in extra.items():
                _check_branch_spec(f"dataset_branches[{name!r}]", spec)
            out.update(extra)
        return out


@dataclass(frozen=True)
class Step:
    """One named selection step: ``mask(events, objects)`` -> bool per event.

    ``label`` (the cutflow's name for the step) is built from the step's threshold
    constants; ``inputs`` names the input flavours the step applies to (None: all).
    """

    name: str
    label: str
    mask: Callable[[Record, Record], np.ndarray]
    inputs: tuple[str, ...] | None = None


NOMINAL = "nominal"


def nominal(h: hist.Hist) -> hist.Hist:
    """Return the nominal variation of a run histogram (histograms without the axis as they are)."""
    return h[{"variation": NOMINAL}] if "variation" in h.axes.name else h


@dataclass(frozen=True)
class WeightVariation:
    """A named weight variation: factors applied to the nominal weight of simulated events.

    ``up(events, objects, meta)`` and ``down(...)`` return a factor per selected event (or
    one number); the histograms get the variations ``<name>Up`` and ``<name>Down``.
    """

    name: str
    up: Callable[[Record, Record, Mapping], np.ndarray | float]
    down: Callable[[Record, Record, Mapping], np.ndarray | float]
    description: str = ""
    requires: tuple[str, ...] = ()  # dataset metadata keys it reads (checked before any chunk)


def relative_variation(name: str, fraction: float | str, description: str = "") -> WeightVariation:
    """Return a flat variation ``1 ± fraction``; a str names a dataset metadata key holding it.

    E.g. ``relative_variation("lumi", "lumi_uncertainty")`` reads the luminosity uncertainty of
    the fileset (a normalisation systematic: a ``normsys`` in a fit).
    """

    def factor(sign: int) -> Callable[[Record, Record, Mapping], float]:
        def f(events: Record, objects: Record, meta: Mapping) -> float:
            value = meta.get(fraction) if isinstance(fraction, str) else fraction
            if value is None:
                raise ConfigurationError(
                    f"weight variation {name!r}: the fileset's metadata has no {fraction!r}"
                )
            return 1.0 + sign * float(value)

        return f

    return WeightVariation(
        name, factor(+1), factor(-1), description, requires=(fraction,) if isinstance(fraction, str) else ()
    )


@dataclass(frozen=True)
class ShapeVariation:
    """A named object variation (e.g. the lepton momentum scale) that re-runs the chunk.

    ``vary(events, objects, meta, direction)`` (direction +1 for ``<name>Up``, -1 for
    ``<name>Down``) returns the varied (events, objects); selection, observables, features,
    scores and histograms are then made again from them. The cutflow stays nominal.
    """

    name: str
    vary: Callable[[Record, Record, Mapping, int], tuple[Record, Record]]
    description: str = ""


@dataclass(frozen=True)
class Weights:
    """The nominal per-event weight and the named weight variations.

    ``nominal(events, objects, meta)`` (data: usually 1); the variations apply to simulation only.
    """

    nominal: Callable[[Record, Record, Mapping], np.ndarray]
    variations: tuple[WeightVariation, ...] = ()


@dataclass(frozen=True)
class Categories:
    """Named event categories: ``assign(observables)`` -> ``{name: mask}`` over selected events.

    With ``exclusive`` (the default) every selected event is in at most one category; the
    processor checks it. Overlapping categories (regions) set ``exclusive=False``.
    """

    names: tuple[str, ...]
    assign: Callable[[Record], Mapping[str, np.ndarray]]
    exclusive: bool = True


@dataclass(frozen=True)
class FeatureSpec:
    """Ordered model inputs, their units and how to compute them from the observables."""

    names: tuple[str, ...]
    compute: Callable[[Record], Mapping[str, Any]]
    units: tuple[str, ...]

    def columns(self, observables: Record) -> dict[str, np.ndarray]:
        """Return each feature as a numpy array (its own dtype, no copy), in ``names`` order."""
        import awkward as ak

        cols = self.compute(observables)
        layout = cols.layout if isinstance(cols, ak.Array) else None
        if isinstance(layout, ak.contents.RecordArray) and layout.is_tuple is False:
            # a record of plain columns (flat trees): their buffers, without a highlevel
            # Array per field (28 HIGGS features: 1 ms instead of 4.5 per 200k events)
            fields = {n: layout.content(n) for n in self.names if n in layout.fields}
            if len(fields) == len(self.names) and all(_plain(c) for c in fields.values()):
                return {n: np.asarray(c.data) for n, c in fields.items()}
        return {n: ak.to_numpy(cols[n]) for n in self.names}


def record(columns: Mapping[str, Any], length: int, parameters: dict | None = None) -> ak.Array:
    """Return ``columns`` (numpy or awkward arrays, each ``length`` long) as one record per entry.

    What ``ak.zip(columns, depth_limit=1)`` gives, without its broadcast of the columns against
    each other (about 2 ms per call for 20 columns): for columns already of one length.
    A shorter column is a ValueError.
    """
    import awkward as ak

    layouts = [ak.to_layout(c) for c in columns.values()]
    return ak.Array(ak.contents.RecordArray(layouts, list(columns), length=length, parameters=parameters))


def flat_values(x: Any) -> np.ndarray:
    """Return the content of a jagged per-object column (one list per event) as a flat numpy array.

    Lists by offsets over numbers (what a file read gives): the slice of their buffer, no copy
    (ak.flatten costs 0.3 ms of dispatch per call: a third of the NanoAOD lepton selection).
    """
    import awkward as ak

    layout = x.layout
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray):
        offsets = np.asarray(layout.offsets.data)
        return np.asarray(layout.content.data)[offsets[0] : offsets[-1]]
    return ak.to_numpy(ak.flatten(x, axis=1))


def _plain(content: Any) -> bool:
    """Return whether an awkward content is a one-dimensional NumPy buffer of numbers."""
    import awkward as ak

    return isinstance(content, ak.contents.NumpyArray) and content.data.ndim == 1


def regular_axis(bins: int, start: float, stop: float, name: str, label: str) -> hist.axis.Regular:
    """Return a named regular axis (a physics axis of a :class:`HistogramSpec`)."""
    import hist

    return hist.axis.Regular(bins, start, stop, name=name, label=label)


@dataclass(frozen=True)
class HistogramSpec:
    """One physics histogram: its axes, the values it is filled with and its categories.

    One physics histogram: 1 or 2 axes and ``value(observables)`` (an array, or a tuple of
    one array per axis), filled in ``categories`` (None: every category).
    """

    name: str
    axes: tuple[hist.axis.Regular, ...]
    value: Callable[[Record], Any]
    categories: tuple[str, ...] | None = None

    @property
    def axis(self) -> hist.axis.Regular:
        """Return the first physics axis."""
        return self.axes[0]

    def values(self, observables: Record) -> tuple[np.ndarray, ...]:
        """Return one numpy array per axis."""
        import awkward as ak

        out = self.value(observables)
        return tuple(ak.to_numpy(v) for v in (out if isinstance(out, tuple) else (out,)))


def histogram(
    name: str,
    bins: int,
    start: float,
    stop: float,
    label: str,
    value: Callable[[Record], Any],
    categories: tuple[str, ...] | None = None,
) -> HistogramSpec:
    """Return a 1-D :class:`HistogramSpec` whose axis is named like the histogram."""
    return HistogramSpec(name, (regular_axis(bins, start, stop, name, label),), value, categories)


@dataclass(frozen=True)
class Scoring:
    """How the classifiers enter the analysis: scored categories, score cut, binning.

    How the classifiers enter: the categories they score, the histogram also filled after
    the score cut, the default cut and the score binning (fine enough for ROC curves).

    ``working_point``: ``fixed`` uses ``score_cut``; ``ams``: the demo applies the AMS
    working point that ``hepsieve evaluate`` finds; ``significance``: the threshold that
    maximises the Asimov significance in its significance scan.

    ``reference_categories``: cut-and-count categories (e.g. a published cut-based
    selection) whose significance ``hepsieve evaluate`` reports beside the classifiers';
    their ``categories.assign`` must be computable from the exported feature columns.

    ``models_from``: other analyses whose model cards this one applies unchanged, because it
    computes the same features (names, units and definitions) from another input format;
    a card of any other analysis is refused.
    """

    categories: tuple[str, ...]
    cut_histogram: str
    score_cut: float
    score_bins: int = 50
    working_point: str = "fixed"
    reference_categories: tuple[str, ...] = ()
    models_from: tuple[str, ...] = ()


@dataclass(frozen=True)
class Style:
    """Plot labels: experiment (CMS, ATLAS, or any other name for a plain style), title, √s."""

    experiment: str
    title: str
    energy_tev: float = 13.0


@dataclass(frozen=True)
class TextBaseline:
    """A text file the benchmark reads with pandas (the notebook approach), headerless."""

    file: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Tools:
    """Optional helpers, as ``"module:function"`` (imported only when used)."""

    toy_generator: str | None = None
    flat_csv_writer: str | None = None
    text_baseline: TextBaseline | None = None


@dataclass(frozen=True)
class TrainingPolicy:
    """Training defaults: events used at most, datasets never trained on (a test split).

    ``demo_models``: the model kinds ``hepsieve demo`` trains; ``hyper``: default
    hyperparameters per model kind (``{"hgb": {"max_leaf_nodes": 15}}``), which options
    given to ``hepsieve train`` override.
    """

    max_events: int | None = None
    holdout_datasets: tuple[str, ...] = ()
    demo_models: tuple[str, ...] = ("mlp", "rf")
    hyper: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _same_events(events: Record, objects: Record) -> Record:
    return events


@dataclass(frozen=True)
class Analysis:
    """Everything one physics case needs, grouped into checked records (DESIGN.md section 3).

    ``objects(events)`` is computed once per chunk on every event and handed to the selection
    and weights; ``observables(selected_events, selected_objects)`` once on the selected
    events, for categories, features and histograms. Either may be None: the events.
    ``numba_kernels``: the analysis code calls numba-compiled functions; workers then start
    numba's compiler before their first chunk (0.55 s once per process).
    """

    name: str
    inputs: Inputs
    selection: tuple[Step, ...]
    weights: Weights
    categories: Categories
    features: Mapping[str, FeatureSpec]
    histograms: tuple[HistogramSpec, ...]
    scoring: Scoring
    style: Style
    objects: Callable[[Record], Record] | None = None
    observables: Callable[[Record, Record], Record] | None = None
    labels: Callable[[Record], np.ndarray] | None = None
    alt_inputs: tuple[Inputs, ...] = ()
    tools: Tools = field(default_factory=Tools)
    training: TrainingPolicy = field(default_factory=TrainingPolicy)
    shape_variations: tuple[ShapeVariation, ...] = ()
    numba_kernels: bool = False

    def __post_init__(self) -> None:
        _check_analysis(self)

    @property
    def variation_names(self) -> tuple[str, ...]:
        """Return ``nominal`` and every ``<name>Up``/``<name>Down`` (weight, then shape ones)."""
        names = [v.name for v in self.weights.variations] + [v.name for v in self.shape_variations]
        return (NOMINAL, *(f"{n}{d}" for n in names for d in ("Up", "Down")))

    @property
    def default_features(self) -> str:
        """Return the name of the default feature set (the first one)."""
        return next(iter(self.features))

    def feature_spec(self, name: str | None = None) -> FeatureSpec:
        """Return the named feature set (default: the first one)."""
        name = name or self.default_features
        if name not in self.features:
            raise ConfigurationError(
                f"analysis {self.name!r} has no feature set {name!r}; choose one of {sorted(self.features)}"
            )
        return self.features[name]

    def histogram(self, name: str) -> HistogramSpec:
        """Return the histogram definition called ``name``."""
        for spec in self.histograms:
            if spec.name == name:
                return spec
        raise ConfigurationError(f"analysis {self.name!r} has no histogram {name!r}")

    def input_flavour(self, name: str | None) -> Inputs:
        """Return the input flavour called ``name`` (None: the default ``inputs``)."""
        flavours = {i.name: i for i in (self.inputs, *self.alt_inputs)}
        if name is None:
            return self.inputs
        if name not in flavours:
            raise ConfigurationError(
                f"analysis {self.name!r} has no input flavour {name!r}; choose one of {sorted(flavours)}"
            )
        return flavours[name]

    def steps(self, flavour: str) -> tuple[Step, ...]:
        """Return the selection steps that apply to the input flavour ``flavour``."""
        return tuple(s for s in self.selection if s.inputs is None or flavour in s.inputs)

    def make_objects(self, events: Record) -> Record:
        """Return the object record of a chunk (the events themselves without an object stage)."""
        return events if self.objects is None else self.objects(events)

    def make_observables(self, events: Record, objects: Record) -> Record:
        """Return the observables of selected events (the events without an observables stage)."""
        return (self.observables or _same_events)(events, objects)


def _fail(analysis: Analysis, where: str, problem: str) -> None:
    raise ConfigurationError(f"analysis {analysis.name!r}: {where}: {problem}")


def _check_names(a: Analysis, where: str, names, known, what: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        _fail(a, where, f"{', '.join(map(repr, unknown))} not among the {what} {tuple(known)}")


def _check_analysis(a: Analysis) -> None:
    """Check a definition when it is built; raise ConfigurationError naming the field."""
    if not a.name:
        raise ConfigurationError("analysis: name must not be empty")
    for i, flavour in enumerate((a.inputs, *a.alt_inputs)):
        try:
            flavour.check("inputs" if i == 0 else f"alt_inputs[{i - 1}]")
        except ConfigurationError as err:
            raise ConfigurationError(f"analysis {a.name!r}: {err}") from None
    flavours = [f.name for f in (a.inputs, *a.alt_inputs)]
    if len(set(flavours)) != len(flavours):
        _fail(a, "alt_inputs", f"input flavour names repeat: {flavours}")
    variations = [v.name for v in a.weights.variations] + [v.name for v in a.shape_variations]
    bad = [n for n in variations if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n) or n == NOMINAL]
    if bad or len(set(variations)) != len(variations):
        _fail(
            a,
            "weights.variations/shape_variations",
            f"variation names must be unique identifiers (letters, digits, _), got {variations}",
        )
    for step in a.selection:
        _check_names(a, f"selection step {step.name!r}.inputs", step.inputs or (), flavours, "input flavours")
    if len({s.label for s in a.selection}) != len(a.selection):
        _fail(a, "selection", "step labels repeat")
    cats = a.categories.names
    if not cats or len(set(cats)) != len(cats):
        _fail(a, "categories.names", f"must be unique and not empty, got {cats}")
    _check_names(a, "scoring.categories", a.scoring.categories, cats, "categories")
    if not a.features:
        _fail(a, "features", "at least one feature set is needed")
    for name, spec in a.features.items():
        if len(spec.units) != len(spec.names):
            _fail(a, f"features[{name!r}].units", f"{len(spec.units)} units for {len(spec.names)} features")
    names = [h.name for h in a.histograms]
    if len(set(names)) != len(names):
        _fail(a, "histograms", f"histogram names repeat: {names}")
    for hspec in a.histograms:
        if not 1 <= len(hspec.axes) <= 2:
            _fail(a, f"histograms[{hspec.name!r}].axes", "1-D or 2-D histograms only")
        _check_names(a, f"histograms[{hspec.name!r}].categories", hspec.categories or (), cats, "categories")
    _check_names(a, "scoring.cut_histogram", (a.scoring.cut_histogram,), names, "histograms")
    _check_names(a, "scoring.reference_categories", a.scoring.reference_categories, cats, "categories")
    if a.scoring.working_point not in WORKING_POINTS:
        _fail(a, "scoring.working_point", f"{a.scoring.working_point!r} is not one of {WORKING_POINTS}")
    if a.scoring.score_bins < 2:
        _fail(a, "scoring.score_bins", "must be at least 2")
    if a.name in a.scoring.models_from or not all(a.scoring.models_from):
        _fail(a, "scoring.models_from", f"must name other analyses, got {a.scoring.models_from}")
