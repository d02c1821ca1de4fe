"""Statistics hand-off: a run's histograms -> fit inputs for pyhf, cabinetry and combine.

``hepsieve stats RUN_DIR`` (DESIGN.md section 7) sums datasets into the fileset's processes
and the data periods into ``data_obs``, and writes into ``RUN_DIR/fit/`` (atomically):

* ``histograms.root`` in the layout combine and cabinetry read: ``<channel>/<process>``,
  ``<channel>/<process>_<syst>Up|Down`` and ``<channel>/data_obs`` (TH1D with fTsumw = Σw,
  fTsumw2 = Σw², fEntries = the number of fills);
* ``workspace.json``: a pyhf workspace of the same histograms: a normfactor ``mu`` on the
  signal processes, ``staterror`` from the variances, and each declared variation as a
  ``normsys`` where it only scales a sample (the luminosity, flat scale factors) or a
  ``normsys`` + shape-only ``histosys`` where it changes the shape (cabinetry's NormPlusShape,
  combine's ``shape``);
* ``datacard.txt``: a combine shape datacard for the same histograms;
* ``significance.json``: the expected (pre-fit Asimov, μ = 1) and observed discovery
  significance and μ̂ with its uncertainty, from pyhf, with all uncertainties, with the
  statistical ones only (data and simulation) and with the data's alone.

Channels are the run's categories; a name starting with a digit gets a ``ch_`` prefix
(combine bin names must start with a letter): category ``4e`` is channel ``ch_4e``. Only the
in-range bins enter the fit; a 2-D histogram is unrolled into one axis of its bins.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hist
import numpy as np
import uproot

from hepsieve.processors.analysis import NOMINAL
from hepsieve.processors.errors import ConfigurationError
from hepsieve.processors.outputs import load_histograms, output_dir, to_root
from hepsieve.processors.provenance import RunRecord

log = logging.getLogger(__name__)
FIT_DIR = "fit"
FIT_FILES = ("histograms.root", "workspace.json", "datacard.txt", "significance.json")
POI = "mu"
POI_BOUNDS = (0.0, 10.0)  # pyhf's default for a normfactor: μ̂ is bounded below by 0
DATA_OBS = "data_obs"
LUMI = "lumi"
#: a variation whose ratio to the nominal is this flat across bins only scales the sample
FLAT_RTOL = 1e-9
#: the rows of the significance table: (key, label, declared systematics, MC statistics)
UNCERTAINTY_SETS = (
    ("all", "stat. + syst.", True, True),
    ("stat", "stat. (data + MC)", False, True),
    ("data_stat", "stat. (data only)", False, False),
)


@dataclass(frozen=True)
class Process:
    """A fileset process: its label, role (signal, background, data), colour and datasets."""

    name: str
    label: str
    role: str
    color: str | None
    datasets: tuple[str, ...]


def processes(record: RunRecord) -> dict[str, Process]:
    """Return the run's processes in fileset order, each with the datasets summed into it.

    Without a ``processes`` map in the fileset, every dataset is its own process with the
    role of its metadata (``background`` if it has none).
    """
    declared = record.processes or {}
    grouped: dict[str, list[str]] = {name: [] for name in declared}
    roles: dict[str, str] = {}
    for dataset, meta in record.datasets_meta.items():
        name = meta.get("process", dataset)
        grouped.setdefault(name, []).append(dataset)
        roles.setdefault(name, "data" if meta.get("is_data") else meta.get("role", "background"))
    return {
        name: Process(
            name,
            declared.get(name, {}).get("label", name),
            declared.get(name, {}).get("role", roles.get(name, "background")),
            declared.get(name, {}).get("color"),
            tuple(datasets),
        )
        for name, datasets in grouped.items()
        if datasets
    }


def process_sum(h: hist.Hist, datasets: Sequence[str], category: str, variation: str) -> hist.Hist | None:
    """Return the sum over ``datasets`` of a run histogram at one category and variation.

    None if none of the datasets was filled (a dataset never filled is not on the axis).
    """
    present = [d for d in datasets if d in h.axes["dataset"]]
    if not present or category not in h.axes["category"]:
        return None
    if "variation" in h.axes.name and variation not in h.axes["variation"]:
        return None
    parts = [
        h[
            {"dataset": d, "category": category}
            | ({"variation": variation} if "variation" in h.axes.name else {})
        ]
        for d in present
    ]
    return sum(parts[1:], parts[0].copy())


def fills(h: hist.Hist, datasets: Sequence[str], category: str, variation: str) -> int:
    """Return the number of fills of ``datasets`` in one category and variation (TH1 fEntries)."""
    counts = (h.metadata or {}).get("fills", {}) if isinstance(h.metadata, dict) else {}
    return int(sum(counts.get((d, category, variation), 0) for d in datasets))


def channel_name(category: str) -> str:
    """Return the fit channel of a category: the category, ``ch_`` before a leading digit."""
    return category if category[:1].isalpha() else f"ch_{category}"


@dataclass
class Template:
    """One histogram of the fit: in-range contents and variances, its 1-D hist and fills."""

    h: hist.Hist
    entries: int

    @property
    def values(self) -> np.ndarray:
        """Return the in-range bin contents."""
        return np.asarray(self.h.values(), dtype=np.float64)

    @property
    def variances(self) -> np.ndarray:
        """Return the in-range bin variances (Σw²)."""
        return np.asarray(self.h.variances(), dtype=np.float64)


@dataclass
class Sample:
    """A process in one channel: the nominal template and the varied ones per systematic."""

    process: Process
    nominal: Template
    variations: dict[str, tuple[Template, Template]] = field(default_factory=dict)


@dataclass
class Channel:
    """One fit channel (a category): its samples, data_obs and whether data_obs is real data."""

    name: str
    category: str
    samples: dict[str, Sample]
    data: Template
    has_data: bool

    @property
    def data_process(self) -> Process:
        """Return the pseudo-process data_obs is (the data periods, or the background sum)."""
        return Process(DATA_OBS, "Data", "data", None, ())


@dataclass
class FitInputs:
    """Everything the fit outputs are made of, and what was left out of them and why."""

    histogram: str
    channels: list[Channel]
    systematics: tuple[str, ...]
    record: RunRecord
    notes: list[str] = field(default_factory=list)
    fit: list[Channel] = field(default_factory=list)  # the channels without their all-empty bins
    lumi_uncertainty: float | None = None  # from the fileset where no ``lumi`` variation is declared
    negative_bins: list[dict[str, Any]] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        """Return True when data_obs holds real data (not the background expectation)."""
        return any(c.has_data for c in self.channels)


def _unrolled(h: hist.Hist) -> hist.Hist:
    """Return a 1-D histogram as it is, a 2-D one unrolled into one axis of its in-range bins."""
    if h.ndim == 1:
        return h
    values, variances = h.values().ravel(), h.variances().ravel()
    out = hist.Hist(
        hist.axis.Regular(len(values), 0, len(values), name="bin", label="bin"), storage=hist.storage.Weight()
    )
    out.view()["value"], out.view()["variance"] = values, variances
    return out


def default_histogram(record: RunRecord, hists: dict[str, hist.Hist]) -> str:
    """Return the histogram ``hepsieve stats`` fits by default.

    The analysis' cut histogram after the score cut of the run's first model
    (``<cut>_<model>_pass``, e.g. ``m4l_mlp_pass``: the mass spectrum at the working point);
    without models, the analysis' ``scoring.cut_histogram`` itself.
    """
    for model in record.models:
        passed = [n for n in hists if n.endswith(f"_{model}_pass")]
        if passed:
            return passed[0]
    from hepsieve.processors.analyses import get_analysis

    return get_analysis(record.analysis_ref).scoring.cut_histogram


def systematic_names(h: hist.Hist) -> tuple[str, ...]:
    """Return the systematics on a histogram's variation axis: ``X`` for each ``XUp``/``XDown``."""
    if "variation" not in h.axes.name:
        return ()
    names = list(h.axes["variation"])
    return tuple(n[:-2] for n in names if n.endswith("Up") and f"{n[:-2]}Down" in names)


def _template(h: hist.Hist, datasets: Sequence[str], category: str, variation: str) -> Template | None:
    one = process_sum(h, datasets, category, variation)
    return None if one is None else Template(_unrolled(one), fills(h, datasets, category, variation))


def _sample(h: hist.Hist, process: Process, category: str, systematics: Sequence[str]) -> Sample | None:
    nominal = _template(h, process.datasets, category, NOMINAL)
    if nominal is None or not np.any(nominal.values != 0):
        return None
    sample = Sample(process, nominal)
    for syst in systematics:
        up = _template(h, process.datasets, category, f"{syst}Up")
        down = _template(h, process.datasets, category, f"{syst}Down")
        if up is not None and down is not None:
            sample.variations[syst] = (up, down)
    return sample


def _data_obs(h: hist.Hist, procs: dict[str, Process], category: str, samples: dict[str, Sample]):
    """Return data_obs (the data periods summed) and True, or the background expectation and False."""
    data_sets = [d for p in procs.values() if p.role == "data" for d in p.datasets]
    data = _template(h, data_sets, category, NOMINAL) if data_sets else None
    if data is not None:
        return data, True
    backgrounds = [s.nominal.h for s in samples.values() if s.process.role != "signal"]
    total = sum(backgrounds[1:], backgrounds[0].copy()) if backgrounds else None
    if total is None:
        total = next(iter(samples.values())).nominal.h * 0
    return Template(total, 0), False


def _channel(h, procs, category, systematics, inputs: FitInputs) -> Channel | None:
    samples = {}
    for name, process in procs.items():
        if process.role == "data":
            continue
        sample = _sample(h, process, category, systematics)
        if sample is None:
            inputs.notes.append(f"{category}: process {name!r} is empty there and left out")
            continue
        samples[name] = sample
        for i in np.flatnonzero(sample.nominal.values < 0):
            inputs.negative_bins.append(
                {
                    "channel": channel_name(category),
                    "process": name,
                    "bin": int(i),
                    "value": float(sample.nominal.values[i]),
                }
            )
    if not samples:
        inputs.notes.append(f"{category}: no simulated process has events there; the category is left out")
        return None
    data, has_data = _data_obs(h, procs, category, samples)
    return Channel(channel_name(category), category, samples, data, has_data)


def fit_inputs(
    run_dir: str | Path, histogram: str | None = None, categories: Sequence[str] | None = None
) -> FitInputs:
    """Return the processes and data_obs of one histogram of a run, per category (channel)."""
    record = RunRecord.read(run_dir)
    hists = load_histograms(run_dir)
    name = histogram or default_histogram(record, hists)
    if name not in hists:
        raise ConfigurationError(
            f"--histogram {name!r}: {run_dir} has no such histogram; it has {sorted(hists)}"
        )
    h = hists[name]
    known = list(h.axes["category"])
    unknown = [c for c in categories or () if c not in known]
    if unknown:
        raise ConfigurationError(f"--categories {unknown}: histogram {name!r} has the categories {known}")
    procs = processes(record)
    if not any(p.role == "signal" for p in procs.values()):
        raise ConfigurationError(f"{run_dir}: no process of the run has the role 'signal': nothing to fit")
    inputs = FitInputs(name, [], systematic_names(h), record)
    for category in categories or known:
        channel = _channel(h, procs, category, inputs.systematics, inputs)
        if channel is not None:
            inputs.channels.append(channel)
    _check_fit_inputs(inputs, run_dir)
    inputs.fit = fit_channels(inputs)
    inputs.lumi_uncertainty = _fileset_lumi_uncertainty(record, inputs.systematics)
    for note in inputs.notes:
        log.debug("%s", note)  # `hepsieve stats` prints them
    for neg in inputs.negative_bins:
        log.warning("negative content %(value).4g in bin %(bin)d of %(process)s in %(channel)s (kept)", neg)
    return inputs


def _fileset_lumi_uncertainty(record: RunRecord, systematics: Sequence[str]) -> float | None:
    """Return the fileset's luminosity uncertainty where no ``lumi`` variation is declared, else None.

    It then enters the fit as a normsys on every simulated sample.
    """
    if LUMI in systematics:
        return None
    values = {m.get("lumi_uncertainty") for m in record.datasets_meta.values() if not m.get("is_data")}
    value = values.pop() if len(values) == 1 else None
    return None if value is None else float(value)


def _check_fit_inputs(inputs: FitInputs, run_dir: str | Path) -> None:
    """Raise ConfigurationError where no valid fit can be made of the inputs (saying why)."""
    where = f"{run_dir}: histogram {inputs.histogram!r}"
    if not inputs.channels:
        raise ConfigurationError(f"{where}: no category has simulated events")
    if not any(s.process.role == "signal" for c in inputs.channels for s in c.samples.values()):
        raise ConfigurationError(f"{where}: the signal is empty in every category: nothing to fit")
    for channel in inputs.channels:
        total = np.sum([s.nominal.values for s in channel.samples.values()], axis=0)
        background, data = background_sum(channel), channel.data.values
        # a bin without positive background and without data is left out of the fit (fit_channels)
        bad = np.flatnonzero(((total < 0) & (background > 0)) | ((background <= 0) & (data > 0)))
        if len(bad):
            raise ConfigurationError(
                f"{where}, category {channel.category!r}: bins {bad.tolist()} have a background "
                f"expectation {background[bad].tolist()} (total {total[bad].tolist()}) that cannot "
                f"describe their data {data[bad].tolist()}; choose a coarser histogram (--histogram) "
                "or fewer categories"
            )


def background_sum(channel: Channel) -> np.ndarray:
    """Return the nominal background expectation per bin of a channel."""
    backgrounds = [s.nominal.values for s in channel.samples.values() if s.process.role != "signal"]
    return np.sum(backgrounds, axis=0) if backgrounds else np.zeros_like(channel.data.values)


# --- the systematics: normsys where a variation only scales a sample, + histosys otherwise ---


def _is_flat(nominal: np.ndarray, varied: np.ndarray, factor: float) -> bool:
    return bool(np.allclose(varied, nominal * factor, rtol=FLAT_RTOL, atol=1e-12 * np.abs(nominal).max()))


def variation_kind(nominal: np.ndarray, up: np.ndarray, down: np.ndarray) -> tuple[str, float, float]:
    """Return how a variation enters the fit: (kind, hi, lo) with the normalisation factors.

    kind ``none`` (no effect), ``normsys`` (it scales the sample by hi/lo), ``shape``
    (a normsys hi/lo plus a shape-only histosys) or ``histosys`` (full up/down templates,
    where a yield is not positive and no normalisation factor exists).
    """
    total, total_up, total_down = nominal.sum(), up.sum(), down.sum()
    if min(total, total_up, total_down) <= 0:
        same = np.allclose(up, nominal, rtol=0, atol=0) and np.allclose(down, nominal, rtol=0, atol=0)
        return ("none" if same else "histosys"), 1.0, 1.0
    hi, lo = total_up / total, total_down / total
    if _is_flat(nominal, up, hi) and _is_flat(nominal, down, lo):
        return ("none" if hi == lo == 1.0 else "normsys"), float(hi), float(lo)
    return "shape", float(hi), float(lo)


def _systematic_modifiers(sample: Sample) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    nominal = sample.nominal.values
    for syst, (up, down) in sample.variations.items():
        kind, hi, lo = variation_kind(nominal, up.values, down.values)
        if kind in ("normsys", "shape"):
            out.append({"name": syst, "type": "normsys", "data": {"hi": hi, "lo": lo}})
        if kind == "shape":
            out.append(
                {
                    "name": syst,
                    "type": "histosys",
                    "data": {"hi_data": (up.values / hi).tolist(), "lo_data": (down.values / lo).tolist()},
                }
            )
        elif kind == "histosys":
            out.append(
                {
                    "name": syst,
                    "type": "histosys",
                    "data": {"hi_data": up.values.tolist(), "lo_data": down.values.tolist()},
                }
            )
    return out


def _modifiers(
    sample: Sample, channel: Channel, systematics: bool, mc_stat: bool, lumi: float | None
) -> list[dict[str, Any]]:
    mods: list[dict[str, Any]] = []
    if systematics and lumi:
        mods.append({"name": LUMI, "type": "normsys", "data": {"hi": 1 + lumi, "lo": 1 - lumi}})
    if sample.process.role == "signal":
        mods.append({"name": POI, "type": "normfactor", "data": None})
    has_stat = any(np.any(s.nominal.variances > 0) for s in channel.samples.values())
    if mc_stat and has_stat:
        mods.append(
            {
                "name": f"staterror_{channel.name}",
                "type": "staterror",
                "data": np.sqrt(sample.nominal.variances).tolist(),
            }
        )
    return mods + (_systematic_modifiers(sample) if systematics else [])


def workspace_spec(inputs: FitInputs, systematics: bool = True, mc_stat: bool = True) -> dict[str, Any]:
    """Return the pyhf workspace of the fit inputs (schema ``workspace.json``, version 1.0.0).

    ``systematics``: the declared variations as normsys/histosys; ``mc_stat``: the
    simulation's statistical uncertainty as staterror (Barlow-Beeston lite per bin).
    """
    channels = [
        {
            "name": c.name,
            "samples": [
                {
                    "name": name,
                    "data": s.nominal.values.tolist(),
                    "modifiers": _modifiers(s, c, systematics, mc_stat, inputs.lumi_uncertainty),
                }
                for name, s in c.samples.items()
            ],
        }
        for c in inputs.fit
    ]
    parameters = [{"name": POI, "bounds": [list(POI_BOUNDS)], "inits": [1.0]}]
    return {
        "channels": channels,
        "observations": [{"name": c.name, "data": c.data.values.tolist()} for c in inputs.fit],
        "measurements": [{"name": "measurement", "config": {"poi": POI, "parameters": parameters}}],
        "version": "1.0.0",
    }


def _fit_bins(channel: Channel) -> np.ndarray:
    """Return the mask of the bins a fit keeps: those with a positive background expectation.

    Without one, pyhf's Poisson term is undefined at a zero expectation, and the
    background-only hypothesis of the discovery test cannot describe the signal's Asimov data
    (q0 would be infinite). Such bins hold no data (else the inputs were refused).
    """
    return background_sum(channel) > 0


def _masked(sample: Sample, keep: np.ndarray) -> Sample:
    """Return the sample with only the bins in ``keep`` (templates as plain arrays)."""

    def cut(t: Template) -> Template:
        h = hist.Hist(hist.axis.Integer(0, int(keep.sum()), name="bin"), storage=hist.storage.Weight())
        h.view()["value"], h.view()["variance"] = t.values[keep], t.variances[keep]
        return Template(h, t.entries)

    variations = {k: (cut(up), cut(down)) for k, (up, down) in sample.variations.items()}
    return Sample(sample.process, cut(sample.nominal), variations)


def fit_channels(inputs: FitInputs) -> list[Channel]:
    """Return the channels as the fit sees them: bins without background left out (with a note)."""
    out = []
    for c in inputs.channels:
        keep = _fit_bins(c)
        if keep.all():
            out.append(c)
            continue
        signal = sum(s.nominal.values[~keep].sum() for s in c.samples.values() if s.process.role == "signal")
        inputs.notes.append(
            f"{c.category}: bins {np.flatnonzero(~keep).tolist()} have no background expectation "
            f"(signal there: {signal:.3g} events, no data); the workspace leaves them out "
            "(histograms.root keeps every bin)"
        )
        if not keep.any():
            continue
        samples = {name: _masked(s, keep) for name, s in c.samples.items()}
        samples = {name: s for name, s in samples.items() if np.any(s.nominal.values != 0)}
        data = _masked(Sample(c.data_process, c.data), keep).nominal
        out.append(Channel(c.name, c.category, samples, data, c.has_data))
    if not any(s.process.role == "signal" for c in out for s in c.samples.values()):
        raise ConfigurationError(
            f"histogram {inputs.histogram!r}: no signal is left where there is background: nothing to fit"
        )
    return out


# --- the outputs: histograms.root, datacard.txt, significance ---


def write_fit_root(inputs: FitInputs, path: Path) -> None:
    """Write ``<channel>/<process>``, ``<channel>/<process>_<syst>Up|Down``, ``<channel>/data_obs``."""
    with uproot.recreate(path) as fout:
        for c in inputs.channels:
            for name, s in c.samples.items():
                fout[f"{c.name}/{name}"] = to_root(s.nominal.h, s.nominal.entries, name, s.process.label)
                for syst, pair in s.variations.items():
                    for direction, t in zip(("Up", "Down"), pair, strict=True):
                        key = f"{name}_{syst}{direction}"
                        fout[f"{c.name}/{key}"] = to_root(
                            t.h, t.entries, key, f"{s.process.label} {syst}{direction}"
                        )
            title = "data" if c.has_data else "data_obs = the background expectation (no data in the run)"
            fout[f"{c.name}/{DATA_OBS}"] = to_root(c.data.h, c.data.entries, DATA_OBS, title)


def _card_value(kind: str, hi: float, lo: float, shape_kind: bool) -> str:
    if kind == "none":
        return "-"
    if shape_kind:
        return "1"
    return f"{lo:.6g}/{hi:.6g}"


def _card_systematics(inputs: FitInputs, columns: list[tuple[Channel, str]]) -> list[str]:
    """Return one datacard line per systematic: ``lnN`` where it only scales, ``shape`` otherwise."""
    lines = []
    if inputs.lumi_uncertainty:
        u = inputs.lumi_uncertainty
        lines.append(
            " ".join([f"{LUMI:<24}", "lnN", *(f"{f'{1 - u:.6g}/{1 + u:.6g}':>14}" for _ in columns)])
        )
    for syst in inputs.systematics:
        kinds = []
        for c, name in columns:
            s = c.samples[name]
            up, down = s.variations.get(syst, (s.nominal, s.nominal))
            kinds.append(variation_kind(s.nominal.values, up.values, down.values))
        if all(k == "none" for k, _, _ in kinds):
            continue
        shape = any(k in ("shape", "histosys") for k, _, _ in kinds)
        values = [_card_value(k, hi, lo, shape) for k, hi, lo in kinds]
        lines.append(" ".join([f"{syst:<24}", "shape" if shape else "lnN", *(f"{v:>14}" for v in values)]))
    return lines


def datacard(inputs: FitInputs, root_name: str = "histograms.root") -> str:
    """Return a combine shape datacard of the fit histograms (``shapes`` from ``root_name``)."""
    columns = [(c, name) for c in inputs.channels for name in c.samples]
    signals = [n for n, p in processes(inputs.record).items() if p.role == "signal"]
    backgrounds = [n for n, p in processes(inputs.record).items() if p.role == "background"]
    ids = {n: -i for i, n in enumerate(signals)} | {n: i + 1 for i, n in enumerate(backgrounds)}
    rule = "-" * 80

    def row(head: str, cells: Sequence[object]) -> str:
        return " ".join([f"{head:<31}", *(f"{v!s:>14}" for v in cells)])

    lines = [
        f"# combine shape datacard written by hepsieve stats: histogram {inputs.histogram!r}",
        "# data_obs: " + ("the data" if inputs.has_data else "the background expectation (no data)"),
        f"imax {len(inputs.channels)}  number of channels",
        f"jmax {len({n for _, n in columns}) - 1}  number of processes minus 1",
        "kmax *  number of nuisance parameters",
        rule,
        f"shapes * * {root_name} $CHANNEL/$PROCESS $CHANNEL/$PROCESS_$SYSTEMATIC",
        rule,
        row("bin", [c.name for c in inputs.channels]),
        row("observation", [-1] * len(inputs.channels)),
        rule,
        row("bin", [c.name for c, _ in columns]),
        row("process", [n for _, n in columns]),
        row("process", [ids[n] for _, n in columns]),
        row("rate", [-1] * len(columns)),
        rule,
        *_card_systematics(inputs, columns),
        "* autoMCStats 0",
    ]
    return "\n".join(lines) + "\n"


def _pyhf(minuit: bool = False) -> Any:
    """Return pyhf on the numpy backend: scipy's optimiser, or minuit (for the uncertainty on μ̂)."""
    import pyhf

    optimizer = pyhf.optimize.minuit_optimizer(tolerance=1e-4) if minuit else pyhf.optimize.scipy_optimizer()
    pyhf.set_backend("numpy", optimizer)
    return pyhf


def _fit_mu(data: Any, model: Any) -> dict[str, float]:
    """Return μ̂ and its (HESSE) uncertainty of a maximum-likelihood fit of ``data``."""
    pyhf = _pyhf(minuit=True)
    pars = pyhf.infer.mle.fit(data, model, return_uncertainties=True)
    index = model.config.poi_index
    mu, unc = float(pars[index][0]), float(pars[index][1])
    low, high = model.config.suggested_bounds()[index]
    return {"mu_hat": mu, "mu_unc": unc, "at_bound": bool(np.isclose(mu, low) or np.isclose(mu, high))}


def _discovery(data: Any, model: Any) -> dict[str, float]:
    """Return the discovery significance Z = √q0 of ``data`` (asymptotic, μ ≥ 0) and its p-value."""
    pyhf = _pyhf()
    q0 = float(
        pyhf.infer.test_statistics.q0(
            0.0, data, model, model.config.suggested_init(), model.config.suggested_bounds(),
            model.config.suggested_fixed(),
        )
    )  # fmt: skip
    from scipy.stats import norm

    z = float(np.sqrt(max(q0, 0.0)))
    return {"Z": z, "p0": float(norm.sf(z)), "q0": q0}


def significance(spec: dict[str, Any], has_data: bool) -> dict[str, Any]:
    """Return the expected (Asimov, μ = 1, nuisances at their nominal values) and observed results.

    Each: the discovery significance Z (from q0) and μ̂ ± its uncertainty; observed is None
    when the run has no data (data_obs is then the background expectation).
    """
    pyhf = _pyhf()
    workspace = pyhf.Workspace(spec)
    model = workspace.model()
    asimov = model.expected_data(model.config.suggested_init())
    expected = _discovery(asimov, model) | _fit_mu(asimov, model)
    observed = None
    if has_data:
        data = workspace.data(model)
        observed = _discovery(data, model) | _fit_mu(data, model)
    return {"expected": expected, "observed": observed}


def significance_table(results: dict[str, Any]) -> str:
    """Return the printed table of significance.json: one row per uncertainty set."""
    head = f"{'uncertainties':<20} {'Z exp.':>7} {'Z obs.':>7} {'mu-hat exp.':>15} {'mu-hat obs.':>15}"
    lines = [f"{results['histogram']} in {', '.join(results['channels'])}", head, "-" * len(head)]
    for row in results["results"].values():
        exp, obs = row["expected"], row["observed"]
        z_obs = f"{obs['Z']:7.3f}" if obs else f"{'-':>7}"
        mu_obs = f"{obs['mu_hat']:6.3f} ± {obs['mu_unc']:<6.3f}" if obs else f"{'-':>15}"
        lines.append(
            f"{row['label']:<20} {exp['Z']:7.3f} {z_obs} "
            f"{exp['mu_hat']:6.3f} ± {exp['mu_unc']:<6.3f} {mu_obs}"
        )
    if not results["has_data"]:
        lines.append("no data in the run: observed values are not defined")
    return "\n".join(lines)


def _results(inputs: FitInputs, run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the full workspace spec and the significance.json content."""
    pyhf = _pyhf()
    specs = {
        key: workspace_spec(inputs, systematics=syst, mc_stat=stat) for key, _, syst, stat in UNCERTAINTY_SETS
    }
    pyhf.schema.validate(specs["all"], "workspace.json")
    results = {
        key: {"label": label, "systematics": syst, "mc_stat": stat}
        | significance(specs[key], inputs.has_data)
        for key, label, syst, stat in UNCERTAINTY_SETS
    }
    summary = {
        "run_dir": str(run_dir),
        "histogram": inputs.histogram,
        "channels": [c.name for c in inputs.channels],
        "processes": sorted({n for c in inputs.channels for n in c.samples}),
        "systematics": list(inputs.systematics),
        "has_data": inputs.has_data,
        "is_toy": inputs.record.is_toy,
        "lumi_pb": inputs.record.lumi_pb,
        "poi": POI,
        "method": "pyhf asymptotic q0 (discovery) and a minuit maximum-likelihood fit; "
        "expected: the Asimov data set at mu = 1 with every nuisance at its nominal value",
        "results": results,
        "notes": inputs.notes,
        "negative_bins": inputs.negative_bins,
    }
    return specs["all"], summary


def write_fit(
    run_dir: str | Path, histogram: str | None = None, categories: Sequence[str] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write ``RUN_DIR/fit/`` (atomically) and return it with the significance.json content."""
    run_dir = Path(run_dir)
    inputs = fit_inputs(run_dir, histogram, categories)
    spec, summary = _results(inputs, run_dir)
    with output_dir(run_dir / FIT_DIR) as out:
        write_fit_root(inputs, out.tmp / "histograms.root")
        (out.tmp / "workspace.json").write_text(json.dumps(spec, indent=1))
        (out.tmp / "datacard.txt").write_text(datacard(inputs))
        (out.tmp / "significance.json").write_text(json.dumps(summary, indent=1))
        path = out.commit()
    return path, summary
