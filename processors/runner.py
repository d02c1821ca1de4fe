"""Run an analysis over a fileset: preflight -> execute (coffea Runner) -> account -> write.

The Python API for notebooks::

    from hepsieve.processors import RunConfig, run
    result = run(RunConfig("cms-hzz4l", "toys/cms", executor="iterative"))
    result.histograms["m4l"], result.cutflow["VBF_HToZZTo4mu"]

``out_dir=None`` (the default) writes nothing; give a directory to write the outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from coffea.nanoevents import BaseSchema, NanoAODSchema
from coffea.processor.executor import _PROTECTED_NAMES as PROTECTED_METADATA
from coffea.processor.executor import FileMeta, WorkItem

from hepsieve.datasets.filesets import ResolvedFileset, load_fileset_spec, resolve_fileset
from hepsieve.datasets.remote import RemotePolicy, is_remote
from hepsieve.models.scorer import OnnxScorer, default_models_dir, load_scorers
from hepsieve.processors.analyses import get_analysis, ship_by_value
from hepsieve.processors.analysis import Analysis, Inputs
from hepsieve.processors.checkpoints import IdentityCheckpointer, run_identity
from hepsieve.processors.chunkread import close_all
from hepsieve.processors.clusters import ClusterOptions
from hepsieve.processors.cutflow import cutflow_table
from hepsieve.processors.errors import ChunkReadError, ConfigurationError, CutflowMismatchError, HepsieveError
from hepsieve.processors.executors import (
    EXECUTORS,
    HepsieveRunner,
    hepsieve_cause,
    quiet_console,
    quiet_tracebacks,
    started_early,
    worker_map,
    worker_peak_rss_mb,
)
from hepsieve.processors.metrics import auc_from_histograms
from hepsieve.processors.outputs import OutputDir, attach_fills, check_writable_dir, output_dir, write_outputs
from hepsieve.processors.processor import MODES, AnalysisProcessor
from hepsieve.processors.provenance import RunRecord

log = logging.getLogger(__name__)
#: Inputs.schema -> coffea schema (NanoAODSchema: Muon/Electron/Jet behaviours)
SCHEMA_CLASSES = {"base": BaseSchema, "nanoaod": NanoAODSchema}


def _default_workers() -> int:
    return os.cpu_count() or 1


@dataclass
class RunConfig:
    """Options of one run.

    Options of one run; paths may be ``str`` or ``Path``, the analysis a name, ``module:ATTR``
    or an :class:`~hepsieve.processors.Analysis`. ``out_dir=None`` writes no files.
    """

    analysis: str | Analysis
    data_dir: str | Path | None  # None: the fileset holds absolute paths or URLs only
    out_dir: str | Path | None = None
    mode: str = "histograms"  # or "features"
    models_dir: str | Path | None = None  # None: shipped models (histograms mode)
    models: list[str] | None = None  # subset of model names
    fileset: str | Path | None = None  # JSON path or name; None: the analysis' own
    datasets: list[str] | None = None
    executor: str = "dask"
    workers: int = field(default_factory=_default_workers)
    scheduler: str | None = None
    # two 100k-entry clusters: uproot reads TTrees of 100k baskets at ~10M events/s per core in
    # 100k/200k steps, half that in 500k/1M steps (issue 14's measurement, 31 float columns)
    chunksize: int = 200_000
    maxchunks: int | None = None
    skip_bad_files: bool = False
    checkpoint: str | Path | None = None
    score_cut: float | dict[str, float] | None = None  # one cut, or {model: cut}
    variations: list[str] | None = None  # None: all the analysis declares; [] none
    progress: bool = True
    cluster: ClusterOptions | None = None  # dask workers in batch jobs (dask-jobqueue)
    preflight_on_workers: bool | None = None  # None: on the dask workers when the fileset has URLs
    remote_timeout_s: float = 30.0  # per read of a URL (preflight and chunks)
    remote_retries: int = 2  # retries of a URL read after a transient failure

    def __post_init__(self) -> None:
        for name in ("data_dir", "out_dir", "models_dir", "checkpoint"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        if self.mode not in MODES:
            raise ConfigurationError(f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.executor not in EXECUTORS:
            raise ConfigurationError(f"--executor {self.executor!r}: choose one of {', '.join(EXECUTORS)}")
        if self.chunksize < 1 or self.workers < 1:
            raise ConfigurationError("--chunksize and --workers must be positive")
        if self.cluster is not None and self.executor != "dask":
            raise ConfigurationError(f"--cluster {self.cluster.kind} runs dask workers: use --executor dask")
        if self.mode == "features" and self.out_dir is None:
            raise ConfigurationError("--mode features writes Parquet files: give an output directory")


@dataclass
class RunResult:
    """What a run produced: merged histograms, cutflow, provenance and output files."""

    histograms: dict
    cutflow: dict
    record: RunRecord
    files: list[Path]

    @property
    def provenance(self) -> dict[str, Any]:
        """Return the run record as the dict written to ``run.json``."""
        return self.record.to_dict()


def _fileset_hash(resolved: ResolvedFileset) -> str:
    # sizes from the preflight (a URL has no local stat); a preprocessed file's: its uuid
    desc = {
        ds: {
            f: resolved.file_meta[f]["filesize"] or resolved.file_meta[f]["uuid"].hex() for f in spec["files"]
        }
        for ds, spec in resolved.fileset.items()
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


def metadata_cache(resolved: ResolvedFileset, tree: str, chunksize: int | None = None) -> dict:
    """Return coffea's file metadata of every file, from the preflight.

    Entries, UUID and the dataset's metadata, from the preflight that already opened each
    file: coffea then skips its own preprocessing pass (0.8 s for the 12 UCI HIGGS files).
    With ``chunksize``, ``clusters`` holds the chunk boundaries coffea's ``align_clusters``
    may choose from (:func:`chunk_boundaries`).
    """
    out = {}
    for ds, entry in resolved.fileset.items():
        for path in entry["files"]:
            meta = {**entry["metadata"], **resolved.file_meta[path]}
            if chunksize is not None and "clusters" in meta:
                meta["clusters"] = chunk_boundaries(meta["clusters"], chunksize)
            out[FileMeta(ds, path, tree)] = meta
    return out


def chunk_boundaries(clusters: list[int], chunksize: int) -> list[int]:
    """Return the chunk boundaries of a file: whole clusters, a cluster longer than a chunk split.

    Clusters are joined as coffea's ``align_clusters`` joins them (a chunk ends at the first
    cluster boundary at least ``chunksize`` entries after its start), so each basket is read and
    decompressed once; a chunk still longer than ``chunksize`` is cut into
    ``round(length / chunksize)`` equal parts, coffea's own chunking of a file, so a one-cluster
    file is chunked exactly as without alignment. The runner hands coffea these boundaries with
    a target chunk of 1 entry: coffea then starts a chunk at each of them.
    """
    joined = [clusters[0]]
    for c in clusters[1:]:
        if c >= joined[-1] + chunksize:
            joined.append(c)
    if joined[-1] != clusters[-1]:
        joined.append(clusters[-1])
    out = [joined[0]]
    for start, stop in itertools.pairwise(joined):
        n = max(round((stop - start) / chunksize), 1)
        size = math.ceil((stop - start) / n)
        out += [min(start + size * i, stop) for i in range(1, n + 1)]
    return sorted(set(out))


def check_accounting(
    output: dict, resolved: ResolvedFileset, complete: bool, skip_bad_files: bool = False
) -> dict[str, dict]:
    """Compare processed with expected entries, per dataset and per file.

    A complete run must have processed every entry of every file, once: otherwise
    CutflowMismatchError (no output is written). With ``skip_bad_files``, the entries of
    chunks that could not be read are reported as ``lost`` (file -> entries) instead.
    """
    per_file, summary = output.get("entries", {}), {}
    for dataset, entry in resolved.fileset.items():
        expected = resolved.entries[dataset]
        processed = output.get("cutflow", {}).get(dataset, {}).get("input", {}).get("n", 0)
        files = {f: (resolved.file_meta[f]["numentries"], per_file.get(f, 0)) for f in entry["files"]}
        lost = {f: want - got for f, (want, got) in files.items() if got < want}
        summary[dataset] = {"expected": expected, "processed": processed, "lost": lost}
        over = [f for f, (want, got) in files.items() if got > want]
        if processed != sum(got for _, got in files.values()) or over:
            raise CutflowMismatchError(
                f"dataset {dataset}: entries counted twice or out of the files "
                f"({over or 'cutflow input != entries read'}); nothing was written"
            )
        if complete and lost and not skip_bad_files:
            raise CutflowMismatchError(
                f"dataset {dataset}: processed {processed} entries but the input files hold {expected} "
                f"(missing: {lost}); the output is incomplete and was not written"
            )
    return summary


def _scorers(config: RunConfig, analysis: Analysis) -> list[OnnxScorer]:
    if config.mode != "histograms":
        return []
    models_dir = Path(config.models_dir) if config.models_dir else default_models_dir(analysis)
    if config.models_dir is None and not any(models_dir.glob("*.json")):
        log.warning("no shipped models for %s: filling kinematic histograms only", analysis.name)
        return []
    threads = 0 if config.executor == "iterative" else 1
    return load_scorers(models_dir, analysis, threads=threads, names=config.models)


def check_variation_metadata(
    analysis: Analysis, resolved: ResolvedFileset, variations: tuple[str, ...]
) -> None:
    """Check that every simulated dataset has the metadata the chosen weight variations read."""
    for wv in analysis.weights.variations:
        if f"{wv.name}Up" not in variations:
            continue
        for dataset, entry in resolved.fileset.items():
            missing = [k for k in wv.requires if entry["metadata"].get(k) is None]
            if missing and not entry["metadata"].get("is_data"):
                raise ConfigurationError(
                    f"dataset {dataset}: weight variation {wv.name!r} needs {missing} in "
                    "the fileset (or run without it: --variations ...)"
                )


def _checkpointer(
    config: RunConfig, analysis: Analysis, proc: AnalysisProcessor
) -> IdentityCheckpointer | None:
    """Return the checkpointer of this run's identity (saying so when older checkpoints differ)."""
    if config.checkpoint is None:
        return None
    checkpointer = IdentityCheckpointer(config.checkpoint, run_identity(analysis, proc.identity()))
    others = checkpointer.other_identities()
    if others:
        log.warning(
            "--checkpoint %s holds chunks of %d other configuration(s) (analysis code, models, "
            "cuts, mode or library versions differ): they are not reused",
            config.checkpoint,
            len(others),
        )
    return checkpointer


def work_items(resolved: ResolvedFileset, tree: str, chunksize: int, maxchunks: int | None) -> list[WorkItem]:
    """Return the chunks of every file: coffea ``preprocess``'s steps where given, else coffea's own.

    Files without steps are cut exactly as coffea's Runner cuts them (``FileMeta.chunks``).
    """
    cache, items = metadata_cache(resolved, tree), []
    for dataset, entry in resolved.fileset.items():
        chunks: list[WorkItem] = []
        preload = frozenset(entry["preload"]) if "preload" in entry else None
        for path in entry["files"]:
            meta = cache[FileMeta(dataset, path, tree)]
            if path not in resolved.steps:
                chunks += FileMeta(dataset, path, tree, meta, preload).chunks(chunksize, False)
                continue
            user = {k: v for k, v in meta.items() if k not in PROTECTED_METADATA}
            chunks += [
                WorkItem(dataset, path, tree, start, stop, meta["uuid"], user, preload)
                for start, stop in resolved.steps[path]
                if stop > start
            ]
        items += chunks[:maxchunks] if maxchunks is not None else chunks
    return items


def _uproot_options(config: RunConfig, fmt: str) -> dict:
    """Return the uproot options of a run's reads.

    uproot's default array cache (100 MB per file) copies every column it reads; coffea reads
    each column of a chunk once, so the copies bought nothing (measured: ~0.1 us of ~1 us per
    UCI HIGGS event); ``timeout`` bounds each read of a URL.
    """
    return {"array_cache": None, "timeout": config.remote_timeout_s} if fmt == "root" else {}


def _execute(
    config: RunConfig,
    analysis: Analysis,
    spec: dict,
    resolved: ResolvedFileset,
    proc: AnalysisProcessor,
    checkpointer: IdentityCheckpointer | None,
    ready: Callable[[], tuple[Any, float]],
) -> tuple[dict, tuple]:
    """Run coffea's Runner; return (output, (start-up s, processing wall s, worker peak RSS)).

    ``ready()`` returns the executor (started early, see :func:`started_early`) and its start-up.
    """
    schema = SCHEMA_CLASSES[analysis.input_flavour(spec.get("inputs")).schema]
    ex, startup = ready()  # started beside the input checks; startup: its own start, not processing
    # aligned: chunks follow the files' clusters (not for coffea preprocess steps, given as work items)
    aligned = spec.get("format", "root") == "root" and not resolved.steps
    start = time.perf_counter()
    runner = HepsieveRunner(
        executor=ex,
        schema=schema,
        # aligned: coffea starts a chunk at every boundary of chunk_boundaries()
        chunksize=1 if aligned else config.chunksize,
        maxchunks=config.maxchunks,
        checkpointer=checkpointer,
        format=spec.get("format", "root"),
        metadata_cache=metadata_cache(resolved, spec["tree"], config.chunksize if aligned else None),
        align_clusters=aligned,
        skipbadfiles=(ChunkReadError,) if config.skip_bad_files else False,
    )
    uproot_options = _uproot_options(config, runner.format)
    items = work_items(resolved, spec["tree"], config.chunksize, config.maxchunks) if resolved.steps else None
    chunks = resolved.fileset if items is None else items
    quiet = not log.isEnabledFor(logging.DEBUG)
    try:
        with quiet_console(not config.progress), quiet_tracebacks(quiet):
            output = runner(chunks, proc, treename=spec["tree"], uproot_options=uproot_options)
    except Exception as err:
        ours = hepsieve_cause(err)
        if ours is not None:
            raise ours from err
        raise HepsieveError(f"processing {analysis.name} failed: {type(err).__name__}: {err}") from err
    finally:
        close_all()  # the files the iterative executor's flat reads kept open in this process
    elapsed = time.perf_counter() - start
    return output, (startup, elapsed, worker_peak_rss_mb(ex))


def _record(
    config: RunConfig,
    analysis: Analysis,
    resolved: ResolvedFileset,
    spec: dict,
    proc: AnalysisProcessor,
    timing: tuple,
    accounting: dict,
) -> RunRecord:
    startup, elapsed, worker_rss = timing
    n_events = sum(v["processed"] for v in accounting.values())
    ref = config.analysis if isinstance(config.analysis, str) else analysis.name
    lost = [
        f"{f} ({n} entries lost: a chunk could not be read)"
        for v in accounting.values()
        for f, n in v["lost"].items()
    ]
    return RunRecord(
        command=" ".join(sys.argv), analysis=analysis.name, analysis_ref=ref, mode=config.mode,
        config={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items() if k != "analysis"}
        | {"analysis": ref},
        is_toy=resolved.is_toy, data_dir=str(Path(config.data_dir).resolve()) if config.data_dir else None,
        fileset={ds: list(v["files"]) for ds, v in resolved.fileset.items()},
        datasets_meta={ds: v["metadata"] for ds, v in resolved.fileset.items()},
        fileset_sha256=_fileset_hash(resolved),
        processes=spec.get("processes"), lumi_pb=spec.get("lumi_pb"),
        skipped_files=resolved.skipped + (lost if config.maxchunks is None else []),
        accounting=accounting,
        models={s.name: {"card": str(s.card.path), "feature_set": s.feature_set, "onnx_sha256": s.hashes}
                for s in proc.scorers},
        score_cut=proc.score_cut, events=n_events, executor_start_s=startup, wall_s=elapsed,
        events_per_s=n_events / elapsed if elapsed > 0 else None, worker_max_rss_mb=worker_rss,
    )  # fmt: skip


def collect_features(output: dict, run_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Gather the chunks' feature files into ``run_dir/features``; return the manifest.

    Every file a chunk result references (written now, or by a checkpointed earlier run) is
    placed under ``features/<dataset>/`` and checked to hold its rows. The directory is new
    (atomic outputs) and chunk files are named by file and entry range, so the export holds
    each event exactly once.
    """
    manifest: dict[str, list[dict[str, Any]]] = {}
    for dataset, files in sorted(output.get("feature_files", {}).items()):
        for path, rows in sorted(files.items()):
            src, dst = Path(path), run_dir / "features" / dataset / Path(path).name
            if src.resolve() != dst.resolve():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            if pq.ParquetFile(dst).metadata.num_rows != rows:
                raise CutflowMismatchError(f"{dst}: holds a different number of rows than its chunk exported")
            manifest.setdefault(dataset, []).append({"file": str(dst.relative_to(run_dir)), "events": rows})
    return manifest


def _prepare(config: RunConfig) -> tuple[Analysis, dict, Inputs]:
    analysis = get_analysis(config.analysis)
    if config.executor != "iterative":
        ship_by_value(analysis)
    spec = load_fileset_spec(config.fileset or analysis.name)
    if config.checkpoint is not None:
        check_writable_dir(Path(config.checkpoint), "--checkpoint")
    return analysis, spec, analysis.input_flavour(spec.get("inputs"))


def preflight_on_workers(config: RunConfig, spec: dict) -> bool:
    """Return whether the input files are checked by the executor's workers, not by this process.

    Asked for with ``preflight_on_workers``; by default, with dask workers (local cluster,
    ``--scheduler``, ``--cluster``) when the fileset reads files over the network, so that this
    process needs to see neither the files nor a shared file system.
    """
    if config.preflight_on_workers is not None:
        return config.preflight_on_workers
    files = (f for entry in spec["datasets"].values() for f in entry["files"])
    return config.executor == "dask" and any(is_remote(f) for f in files)


def _preflight(config: RunConfig, spec: dict, flavour: Inputs, executor: Any | None) -> ResolvedFileset:
    """Check the input files: here in threads, or on the executor's workers when given."""
    return resolve_fileset(
        spec,
        config.data_dir,
        flavour,
        datasets=config.datasets,
        skip_bad_files=config.skip_bad_files,
        content_ids=config.checkpoint is not None,
        policy=RemotePolicy(config.remote_timeout_s, config.remote_retries),
        check_map=worker_map(executor) if executor is not None else None,
    )


def run(config: RunConfig) -> RunResult:
    """Run ``config.analysis``; return the results and write them to ``out_dir`` if given.

    The outputs are written into a temporary sibling of ``out_dir`` and moved into place only
    when complete; a failed run leaves ``out_dir`` as it was.
    """
    analysis, spec, flavour = _prepare(config)
    on_workers = preflight_on_workers(config, spec)
    executor_args = (config.executor, config.workers, config.scheduler, config.progress)
    with (
        started_early(*executor_args, cluster=config.cluster, numba=analysis.numba_kernels) as ready,
        output_dir(config.out_dir) if config.out_dir is not None else contextlib.nullcontext() as target,
    ):
        # the workers check the files when this process may not see them: wait for them first
        resolved = _preflight(config, spec, flavour, ready()[0] if on_workers else None)
        proc = AnalysisProcessor(
            analysis,
            _scorers(config, analysis),
            mode=config.mode,
            score_cut=config.score_cut,
            variations=config.variations,
        )
        check_variation_metadata(analysis, resolved, proc.variations)
        checkpointer = _checkpointer(config, analysis, proc)
        if target is not None:
            proc.features_dir = str((checkpointer.dir if checkpointer else target.tmp) / "features")
        log.info(
            "%s: %d datasets, %d entries, executor=%s workers=%d chunksize=%d",
            analysis.name,
            len(resolved.fileset),
            resolved.total_entries,
            config.executor if config.cluster is None else f"dask on {config.cluster.kind} jobs",
            config.workers,
            config.chunksize,
        )
        output, timing = _execute(config, analysis, spec, resolved, proc, checkpointer, ready)
        result = _finish(config, analysis, spec, resolved, proc, output, timing, target)
    if target is not None:
        result.files = [target.out / f.name for f in result.files]
    _report(result, resolved)
    return result


def _finish(
    config: RunConfig,
    analysis: Analysis,
    spec: dict,
    resolved: ResolvedFileset,
    proc: AnalysisProcessor,
    output: dict,
    timing: tuple,
    target: OutputDir | None,
) -> RunResult:
    """Account for every entry, build the run record, write and commit the outputs."""
    accounting = check_accounting(output, resolved, config.maxchunks is None, config.skip_bad_files)
    record = _record(config, analysis, resolved, spec, proc, timing, accounting)
    record.reused_chunks = int(output.get("reused_chunks", 0)) if config.checkpoint else None
    if proc.scorers and {"signal", "background"} <= set(analysis.categories.names):
        record.auc_from_histograms = auc_from_histograms(output["histograms"])
    attach_fills(output.get("histograms", {}), output.get("fills", {}))
    files: list[Path] = []
    if target is not None:
        if config.mode == "features":
            record.feature_files = collect_features(output, target.tmp)
        files = write_outputs(target.tmp, output.get("histograms"), output.get("cutflow", {}), record)
        target.commit()
    return RunResult(output.get("histograms", {}), output.get("cutflow", {}), record, files)


def _report(result: RunResult, resolved: ResolvedFileset) -> None:
    record = result.record
    log.info("cutflow:\n%s", cutflow_table(result.cutflow))
    log.info(
        "processed %d events in %.1f s (%.0f events/s)",
        record.events,
        record.wall_s,
        record.events_per_s or 0,
    )
    if record.auc_from_histograms:
        log.info("AUC from the score histograms: %s", record.auc_from_histograms)
    if record.skipped_files:
        log.warning("left out of this run:\n  %s", "\n  ".join(record.skipped_files))
