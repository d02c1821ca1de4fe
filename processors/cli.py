"""The ``hepsieve`` command line (argparse only; the work is done in the modules it calls)."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

from hepsieve.processors.analysis import EXECUTORS
from hepsieve.processors.clusters import CLUSTERS, ClusterOptions
from hepsieve.processors.errors import ConfigurationError, HepsieveError
from hepsieve.training.kinds import ACTIVATIONS, MODEL_KINDS, NEGATIVE_WEIGHT_POLICIES

log = logging.getLogger("hepsieve")
ANALYSIS_HELP = "a registered name (see `hepsieve analyses`) or module:ATTRIBUTE of your own Analysis"

EPILOG = """\
data flow:
  hepsieve generate cms-hzz4l --out toys/cms             # toy ROOT files (or use real ones)
  hepsieve run cms-hzz4l --data-dir toys/cms --mode features --out results/features
  hepsieve train cms-hzz4l --features results/features/features --model mlp --out models/cms
  hepsieve evaluate cms-hzz4l --features results/features/features --models models/cms
  hepsieve run cms-hzz4l --data-dir toys/cms --models models/cms --out results/hists
  hepsieve stats results/hists                           # fit/: templates, pyhf, datacard, Z
  hepsieve plot results/hists
or all of it at once:  hepsieve demo --out demo
"""


def _cpus() -> int:
    return os.cpu_count() or 1


def _execution_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="dask",
        help="coffea executor (default: dask, a local cluster unless --scheduler)",
    )
    g.add_argument(
        "--workers", type=int, default=_cpus(), help="worker processes for futures/dask (default: all cores)"
    )
    g.add_argument("--scheduler", help="address of an existing dask scheduler, tcp://host:port")
    g.add_argument("--chunksize", type=int, default=200_000, help="entries per chunk (default 200000)")
    g.add_argument(
        "--maxchunks",
        type=int,
        help="process at most this many chunks per dataset (testing; the entry check is then skipped)",
    )
    g.add_argument(
        "--preflight-on-workers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="check the input files on the workers, not here (default: with dask workers, when the "
        "fileset has remote URLs): no shared file system needed",
    )
    g.add_argument(
        "--remote-timeout", type=float, default=30.0, help="seconds per read of a URL (default 30)"
    )
    g.add_argument(
        "--remote-retries",
        type=int,
        default=2,
        help="retries of a URL read after a transient failure (default 2)",
    )
    _cluster_options(p)


def _cluster_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("batch system (dask-jobqueue; --workers = worker processes in all)")
    g.add_argument("--cluster", choices=CLUSTERS, help="run the dask workers as jobs of this batch system")
    g.add_argument("--cores", type=int, default=1, help="cores per job: one single-threaded worker each (1)")
    g.add_argument("--memory", help="memory per job, e.g. 4GB (default 2GB per core)")
    g.add_argument("--walltime", help="job time limit, e.g. 01:00:00")
    g.add_argument("--queue", help="queue / partition")
    g.add_argument("--account", help="account / project to charge")
    g.add_argument(
        "--job-directive",
        action="append",
        default=[],
        metavar="LINE",
        help="extra job directive without its prefix (repeatable), e.g. --job-directive='--qos=short'",
    )
    g.add_argument("--cluster-config", type=Path, metavar="YAML", help="profile of dask-jobqueue options")
    g.add_argument(
        "--adapt", type=int, nargs=2, metavar=("MIN", "MAX"), help="adaptive scaling between MIN and MAX"
    )
    g.add_argument(
        "--job-timeout", type=float, default=300.0, help="seconds to wait for the first jobs to start (300)"
    )
    g.add_argument(
        "--job-log-dir",
        type=Path,
        default=Path("hepsieve-jobs"),
        help="job script and job logs (hepsieve-jobs)",
    )


def cluster_options(args) -> ClusterOptions | None:
    """Return the batch-system options of the command line (None without --cluster)."""
    if not getattr(args, "cluster", None):
        return None
    return ClusterOptions(
        args.cluster,
        cores=args.cores,
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        job_directives=tuple(args.job_directive),
        profile=str(args.cluster_config) if args.cluster_config else None,
        adapt=tuple(args.adapt) if args.adapt else None,
        job_timeout_s=args.job_timeout,
        log_dir=str(args.job_log_dir),
    )


def _parse_generate(sub) -> None:
    p = sub.add_parser("generate", help="write toy files in the exact schema of the real data")
    p.add_argument("analysis", help=ANALYSIS_HELP)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--events", type=int, default=20_000, help="selected events per dataset")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--datasets", nargs="+", help="only these datasets (default: all)")
    p.add_argument(
        "--flat-csv",
        type=Path,
        metavar="DIR",
        help="also write the flat (Kaggle-style) CSVs of the toy, where the analysis has them",
    )
    p.add_argument(
        "--formats",
        nargs="+",
        choices=("root", "parquet", "csv"),
        help="higgs-uci: output formats (default root; csv = HIGGS.csv.gz UCI text)",
    )


def _parse_convert(sub) -> None:
    p = sub.add_parser(
        "convert", help="stream CSV(.gz) to Parquet, or the UCI HIGGS text to ROOT/Parquet chunks"
    )
    p.add_argument("csv", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--analysis",
        help="cast each column to this analysis' declared type (any column order; extra columns "
        "left out; a missing one is an error): " + ANALYSIS_HELP,
    )
    p.add_argument("--inputs", help="with --analysis: its input flavour (default: its first)")
    p.add_argument(
        "--event-id",
        help="column to add with the row number if the CSV lacks it "
        "(default: the analysis' event id, else eventNumber)",
    )
    p.add_argument(
        "--layout",
        choices=("header", "uci-higgs"),
        default="header",
        help="header: CSV with a header row -> one Parquet file; uci-higgs: the UCI "
        "HIGGS.csv(.gz) -> HIGGS_{train,test}_<i> chunks (last 500k rows = test)",
    )
    p.add_argument(
        "--format",
        choices=("root", "parquet"),
        default="root",
        help="uci-higgs output format (default root, LZ4)",
    )
    p.add_argument("--chunk-rows", type=int, default=1_000_000, help="uci-higgs rows per chunk")


def _parse_run(sub) -> None:
    p = sub.add_parser("run", help="run the processor: histograms (with ONNX scores) or features")
    p.add_argument("analysis", help=ANALYSIS_HELP)
    p.add_argument(
        "--data-dir",
        type=Path,
        help="directory of the fileset's files named without a path (not needed for absolute paths, URLs)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--mode",
        choices=("histograms", "features"),
        default="histograms",
        help="features: also write Parquet of the model inputs for training",
    )
    p.add_argument(
        "--models",
        type=Path,
        help="directory of model cards + ONNX files (default: the models shipped with hepsieve)",
    )
    p.add_argument("--model-names", nargs="+", help="use only these models from --models")
    p.add_argument("--fileset", help="fileset JSON path or shipped name (default: the analysis' own)")
    p.add_argument("--datasets", nargs="+", help="only these datasets")
    p.add_argument("--score-cut", type=float, help="score threshold for the cut histogram")
    p.add_argument(
        "--working-points",
        type=Path,
        metavar="METRICS_JSON",
        help="per-model score cuts: the AMS working points of `hepsieve evaluate`",
    )
    p.add_argument(
        "--skip-bad-files",
        action="store_true",
        help="skip unreadable files (listed in the summary and run.json)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="directory of per-chunk checkpoints; rerunning with it resumes an interrupted run",
    )
    _execution_options(p)


def _parse_train(sub) -> None:
    p = sub.add_parser("train", help="train k-fold classifiers on exported features -> ONNX + card")
    p.add_argument("analysis", help=ANALYSIS_HELP)
    p.add_argument("--features", type=Path, required=True, help="feature Parquet directory")
    p.add_argument(
        "--model",
        choices=tuple(MODEL_KINDS),
        required=True,
        help="; ".join(f"{k}: {v.description}" for k, v in MODEL_KINDS.items()),
    )
    p.add_argument("--out", type=Path, required=True, help="models directory")
    p.add_argument("--name", help="model name (default: the --model value)")
    p.add_argument("--feature-set", help="feature set (default: the analysis' first)")
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--negative-weights",
        choices=NEGATIVE_WEIGHT_POLICIES,
        default="zero",
        help="zero: left out of the training; keep: signed; abs: flipped",
    )
    p.add_argument("--epochs", type=int, help="MLP: maximum epochs")
    p.add_argument("--hidden", type=int, nargs="+", help="MLP: hidden layer widths (default 50 10 5)")
    p.add_argument(
        "--activation",
        choices=ACTIVATIONS,
        help="MLP: hidden-layer activation (default selu; tanh is ~2.4x faster in onnxruntime)",
    )
    p.add_argument("--max-events", type=int, help="train on the first N exported events only")


def _parse_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="ROC/AUC, KS, confusion matrix, F1, purity x efficiency, AMS")
    p.add_argument("analysis", help=ANALYSIS_HELP)
    p.add_argument("--features", type=Path, required=True)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--out", type=Path, help="output directory (default: MODELS/evaluation)")
    p.add_argument("--threshold", type=float, help="working point (default: the analysis')")


def _parse_plot(sub) -> None:
    p = sub.add_parser("plot", help="stacked plots of a finished run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--signal-overlay",
        action="store_true",
        help="draw the signal also as a line over the stack",
    )
    p.add_argument("--signal-below", action="store_true", help="stack the signal at the bottom, not on top")
    p.add_argument("--log-rejection", action="store_true", help="ROC as background rejection on a log axis")


def _parse_stats(sub) -> None:
    p = sub.add_parser(
        "stats", help="fit inputs of a finished run: ROOT templates, pyhf workspace, datacard, significance"
    )
    p.add_argument("run_dir", type=Path, help="the --out of a finished `hepsieve run`")
    p.add_argument(
        "--histogram",
        help="the histogram to fit (default: the cut histogram after the first model's working point)",
    )
    p.add_argument("--categories", nargs="+", help="the categories (fit channels) to use (default: all)")


def _parse_demo(sub) -> None:
    p = sub.add_parser("demo", help="everything end to end on fresh toys (or on real files)")
    p.add_argument("analysis", nargs="?", default="cms-hzz4l", help=ANALYSIS_HELP)
    p.add_argument("--out", type=Path, default=Path("demo"))
    p.add_argument(
        "--data-dir",
        type=Path,
        help="run on the real files in DIR instead of toys (CSV inputs are converted first)",
    )
    p.add_argument("--events", type=int, default=20_000, help="toy events per dataset")
    p.add_argument("--executor", choices=EXECUTORS, default="futures")
    p.add_argument("--workers", type=int, default=_cpus())


def _parse_bench(sub) -> None:
    p = sub.add_parser("bench", help="events/s of the processor per executor, beside floor loops")
    p.add_argument("analysis", help=ANALYSIS_HELP)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--models", type=Path, help="model directory (default: shipped models)")
    p.add_argument("--model-names", nargs="+", help="use only these models")
    p.add_argument("--executors", nargs="+", choices=EXECUTORS, default=list(EXECUTORS))
    p.add_argument("--workers", type=int, default=_cpus())
    p.add_argument(
        "--chunksize", type=int, default=200_000, help="entries per chunk (default 200000: two clusters)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the whole sequence N times and report the median of each row",
    )
    p.add_argument(
        "--growth",
        type=int,
        nargs="+",
        metavar="EVENTS",
        help="also time whole `hepsieve run` commands on the first files holding EVENTS events "
        "each (e.g. 1000000 3000000 11000000) and fit fixed + per-event cost",
    )
    p.add_argument("--growth-executor", choices=EXECUTORS, default="dask")
    p.add_argument(
        "--all-variations",
        action="store_true",
        help="fill every systematic variation (default: nominal only, as the baselines do)",
    )
    p.add_argument("--out", type=Path, default=Path("bench"))
    _cluster_options(p)


def _parse_fileset(sub) -> None:
    p = sub.add_parser(
        "fileset", help="write a coffea fileset (files or URLs + the analysis' dataset metadata)"
    )
    p.add_argument("analysis", help=ANALYSIS_HELP)
    p.add_argument(
        "sources",
        nargs="+",
        help="directories, files, URLs (root://, https://, s3://, file://) or .txt lists of them",
    )
    p.add_argument("--out", type=Path, required=True, help="fileset JSON to write")
    p.add_argument(
        "--fileset", help="dataset names and metadata from this fileset (default: the analysis' own)"
    )
    p.add_argument("--datasets", nargs="+", help="only these datasets")


def _parse_analyses(sub) -> None:
    sub.add_parser("analyses", help="list the available analyses and where they come from")


def _parse_card(sub) -> None:
    p = sub.add_parser("card", help="write a model card for ONNX fold models trained elsewhere")
    p.add_argument("analysis", help=ANALYSIS_HELP)
    p.add_argument(
        "--onnx",
        type=Path,
        nargs="+",
        required=True,
        help="one ONNX file per fold, in fold order (fold i scores event %% k == i)",
    )
    p.add_argument("--name", required=True, help="model name")
    p.add_argument("--out", type=Path, required=True, help="models directory (ONNX files copied in)")
    p.add_argument("--feature-set", help="feature set of the analysis (default: its first)")
    p.add_argument("--output-name", required=True, help="ONNX output holding P(signal)")
    p.add_argument("--output-column", type=int, help="its column, for a 2-D output")
    p.add_argument("--description", default="", help="what the model is")


PARSERS = (
    _parse_generate,
    _parse_convert,
    _parse_run,
    _parse_train,
    _parse_evaluate,
    _parse_plot,
    _parse_stats,
    _parse_demo,
    _parse_bench,
    _parse_fileset,
    _parse_analyses,
    _parse_card,
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of all subcommands."""
    parser = argparse.ArgumentParser(
        prog="hepsieve",
        description="Columnar collider-physics analysis: toy or real ntuples -> "
        "selection -> features -> ONNX classifiers -> weighted histograms and plots.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, full tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in PARSERS:
        add(sub)
    return parser


# --- the commands: each turns its arguments into one library call and prints the result ---


def cmd_generate(args) -> None:
    """Write toy files (and the flat CSVs on request)."""
    from hepsieve.processors.analyses import get_analysis, load_object
    from hepsieve.processors.pipeline import toy_generator

    analysis = get_analysis(args.analysis)
    options = {"formats": tuple(args.formats)} if args.formats else {}
    toy_generator(analysis)(args.out, events=args.events, seed=args.seed, datasets=args.datasets, **options)
    if args.flat_csv:
        if not analysis.tools.flat_csv_writer:
            raise ConfigurationError(f"--flat-csv: analysis {analysis.name} has no flat CSV form")
        writer = cast(Callable[..., list[Path]], load_object(analysis.tools.flat_csv_writer))
        paths = writer(args.out, args.flat_csv)
        print(f"flat CSVs: {', '.join(str(p) for p in paths)}")


def cmd_convert(args) -> None:
    """Convert CSV files to Parquet (or the UCI HIGGS text to chunks)."""
    from hepsieve.datasets.converters import csv_schema, csv_to_parquet, higgs_csv_to_chunks

    if args.layout == "uci-higgs":
        for src in args.csv:
            names = higgs_csv_to_chunks(src, args.out, args.format, args.chunk_rows)
            print(f"{src} -> {len(names)} chunks in {args.out}")
        return
    schema = None
    if args.analysis:
        from hepsieve.processors.analyses import get_analysis

        analysis = get_analysis(args.analysis)
        flavour = analysis.input_flavour(args.inputs)
        schema = csv_schema(flavour, f"analysis {analysis.name!r} (inputs {flavour.name!r})")
    for src in args.csv:
        name = src.name.removesuffix(".gz").removesuffix(".csv") + ".parquet"
        rows = csv_to_parquet(src, args.out / name, event_id=args.event_id or "eventNumber", schema=schema)
        print(f"{src} -> {args.out / name} ({rows} rows)")


def _score_cut(args) -> float | dict[str, float] | None:
    """Return --score-cut, or the working points of --working-points METRICS_JSON."""
    if not args.working_points:
        return args.score_cut
    # only here: training.evaluate imports scikit-learn, scipy.stats and numba (3 s of every run)
    from hepsieve.training.evaluate import working_points

    return working_points(args.working_points)


def _run_config(args):
    from hepsieve.processors.runner import RunConfig

    return RunConfig(
        analysis=args.analysis,
        data_dir=args.data_dir,
        out_dir=args.out,
        mode=args.mode,
        models_dir=args.models,
        models=args.model_names,
        fileset=args.fileset,
        datasets=args.datasets,
        executor=args.executor,
        workers=args.workers,
        scheduler=args.scheduler,
        chunksize=args.chunksize,
        maxchunks=args.maxchunks,
        skip_bad_files=args.skip_bad_files,
        checkpoint=args.checkpoint,
        score_cut=_score_cut(args),
        progress=not args.quiet,
        cluster=cluster_options(args),
        preflight_on_workers=args.preflight_on_workers,
        remote_timeout_s=args.remote_timeout,
        remote_retries=args.remote_retries,
    )


def cmd_run(args) -> None:
    """Run the processor and print the accounting."""
    from hepsieve.processors.runner import run

    record = run(_run_config(args)).record
    for dataset, acc in record.accounting.items():
        print(f"{dataset:<28s} processed {acc['processed']:>10d} / {acc['expected']:>10d} entries")
    for model, aucs in (record.auc_from_histograms or {}).items():
        print(
            f"AUC ({model}, from the score histograms): "
            + ", ".join(f"{ds} {auc:.4f}" for ds, auc in aucs.items())
        )
    print(
        f"{record.events} events in {record.wall_s:.1f} s = {record.events_per_s or 0:.0f} "
        f"events/s -> {args.out}"
    )


def cmd_train(args) -> None:
    """Train one model kind."""
    from hepsieve.processors.analyses import get_analysis
    from hepsieve.training.train import train

    hyper = dict(get_analysis(args.analysis).training.hyper.get(args.model, {}))  # the analysis' defaults
    if args.model == "mlp":
        hyper |= {
            k: v
            for k, v in (
                ("epochs", args.epochs),
                ("activation", args.activation),
                ("hidden", tuple(args.hidden) if args.hidden else None),
            )
            if v
        }
    card = train(
        args.analysis,
        args.features,
        args.model,
        args.out,
        feature_set=args.feature_set,
        name=args.name,
        k=args.folds,
        seed=args.seed,
        max_events=args.max_events,
        negative_weights=args.negative_weights,
        progress=not args.quiet,
        hyper=hyper,
    )
    print(f"model card: {card}")


def cmd_evaluate(args) -> None:
    """Evaluate every model of a directory."""
    from hepsieve.processors.provenance import RunRecord
    from hepsieve.training.evaluate import evaluate, metrics_table, significance_table

    run_dir = Path(args.features).parent
    is_toy = RunRecord.read(run_dir).is_toy if (run_dir / "run.json").is_file() else True
    out = args.out or args.models / "evaluation"
    summary = evaluate(
        args.analysis, args.features, args.models, out, threshold=args.threshold, is_toy=is_toy
    )
    print(metrics_table(summary))
    print(significance_table(summary))
    print(f"metrics and plots: {out}")


def cmd_plot(args) -> None:
    """Plot a finished run."""
    from hepsieve.processors.plots import plot_run

    paths = plot_run(
        args.run_dir,
        args.out,
        signal_on_top=not args.signal_below,
        signal_overlay=args.signal_overlay,
        log_rejection=args.log_rejection,
    )
    print(f"{len(paths)} plots in {paths[0].parent if paths else args.run_dir}")


def cmd_stats(args) -> None:
    """Write RUN_DIR/fit/ and print the significance table."""
    from hepsieve.processors.statistics import significance_table, write_fit

    out, summary = write_fit(args.run_dir, args.histogram, args.categories)
    print(significance_table(summary))
    for note in summary["notes"]:
        print(f"note: {note}")
    print(f"fit inputs (histograms.root, workspace.json, datacard.txt, significance.json): {out}")


def cmd_demo(args) -> None:
    """Everything end to end on fresh toys."""
    from hepsieve.processors.pipeline import demo
    from hepsieve.training.evaluate import metrics_table, significance_table

    done = demo(
        args.analysis,
        args.out,
        events=args.events,
        executor=args.executor,
        workers=args.workers,
        progress=not args.quiet,
        data_dir=args.data_dir,
    )
    print(metrics_table(done.summary))
    print(significance_table(done.summary))
    if done.score_cuts:
        print(f"score cuts (working points): { {k: round(v, 4) for k, v in done.score_cuts.items()} }")
    _print_demo_significance(done)
    print(
        f"processor: {done.result.record.events_per_s or 0:.0f} events/s; demo done in "
        f"{done.seconds:.0f} s; outputs in {args.out}/"
    )


def _print_demo_significance(done) -> None:
    """Print the significance table of the demo's final run (or why there is none)."""
    from hepsieve.processors.statistics import significance_table

    if done.significance is None:
        print(f"no significance table: {done.no_fit_reason}")
        return
    print(significance_table(done.significance))
    print(f"fit inputs: {Path(done.significance['run_dir']) / 'fit'}")


def cmd_bench(args) -> None:
    """Time the processor with each executor on the same files."""
    from hepsieve.processors.bench import bench

    bench(
        args.analysis,
        args.data_dir,
        args.out,
        args.executors,
        args.workers,
        args.chunksize,
        args.models,
        args.model_names,
        repeat=args.repeat,
        growth_sizes=args.growth,
        growth_executor=args.growth_executor,
        all_variations=args.all_variations,
        cluster=cluster_options(args),
    )


def cmd_fileset(args) -> None:
    """Write a coffea fileset of files or URLs with the analysis' dataset metadata."""
    from hepsieve.datasets.filesets import build_fileset, list_sources, load_fileset_spec, write_fileset
    from hepsieve.processors.analyses import get_analysis

    spec = load_fileset_spec(args.fileset or get_analysis(args.analysis).name)
    fileset, unmatched = build_fileset(spec, list_sources(args.sources), args.datasets)
    for location in unmatched:
        log.warning("%s: its name matches no dataset of the fileset: left out", location)
    if not fileset:
        raise ConfigurationError(f"no file of {' '.join(args.sources)} matches a dataset of the fileset")
    for name in sorted(set(args.datasets or spec["datasets"]) - set(fileset)):
        log.warning("dataset %s: no file found", name)
    path = write_fileset(fileset, args.out)
    for name, entry in fileset.items():
        print(f"{name:<28s} {len(entry['files']):>5d} file(s)")
    print(f"fileset: {path} (hepsieve run {args.analysis} --fileset {path} ...)")


def cmd_analyses(args) -> None:
    """List the available analyses."""
    from hepsieve.processors.analyses import available

    for entry in available():
        print(f"{entry.name:<16s} {entry.target:<52s} {entry.source}")
    print("\nor any module:ATTRIBUTE holding a hepsieve.processors.Analysis")


def cmd_card(args) -> None:
    """Write a model card for externally trained ONNX fold models."""
    from hepsieve.models.scorer import card_onnx_models
    from hepsieve.processors.analyses import get_analysis

    path = card_onnx_models(
        get_analysis(args.analysis),
        args.name,
        args.onnx,
        args.out,
        args.output_name,
        output_column=args.output_column,
        feature_set=args.feature_set,
        description=args.description,
    )
    print(f"model card: {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hepsieve``; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    # other libraries (matplotlib, numba, distributed) speak only at WARNING unless --verbose
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    log.setLevel(level)
    try:
        globals()[f"cmd_{args.command}"](args)
    except HepsieveError as err:
        if args.verbose:
            raise
        print(f"hepsieve {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = (
            " (checkpointed chunks are kept: rerun the same command to resume)"
            if getattr(args, "checkpoint", None)
            else ""
        )
        written = "; no output was written" if args.command == "run" else ""
        print(f"hepsieve {args.command}: interrupted{written}{resume}", file=sys.stderr)
        return 130
    return 0


def _one_line(err: BaseException) -> str:
    """Return an error message on one line (``-v`` shows the whole of it and the traceback)."""
    text = " ".join(str(err).split())
    return text if len(text) <= 600 else f"{text[:600]} ... (-v for all of it)"


def _import_vector_without_sympy() -> None:
    """Import ``vector`` without its sympy backend; ``sympy`` itself stays importable.

    vector imports sympy whenever it is installed (torch needs it, so training installs have
    it): 0.34 s of every command's start, for symbolic vectors no hepsieve command uses.
    Nothing is changed when either module is already imported.
    """
    if "vector" in sys.modules or "sympy" in sys.modules:
        return
    sys.modules["sympy"] = None  # type: ignore[assignment]  # import sympy -> ImportError
    try:
        import vector  # noqa: F401
    except ImportError:
        pass  # vector is a dependency; its absence is reported where it is used
    finally:
        del sys.modules["sympy"]


def console_main() -> None:
    """Run the ``hepsieve`` command: :func:`main`, then exit without finalising the interpreter.

    Tearing down the modules of coffea, numba, onnxruntime and dask took 0.5-0.65 s after
    every command (a sixth of a whole 1M-event run). The exit handlers still run and the
    streams are flushed; a non-daemon thread still running (none is expected) gets the normal
    exit, which waits for it.
    """
    _import_vector_without_sympy()
    status = main()
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(status)
    atexit._run_exitfuncs()  # the interpreter's exit handlers, without its teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    console_main()
