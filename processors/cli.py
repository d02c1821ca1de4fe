"""The ``hepsieve`` command line: generate, run, train, evaluate, plot, demo, bench."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from hepsieve.processors.analysis import ANALYSES, get_analysis, load_object
from hepsieve.processors.errors import ConfigurationError, HepsieveError

log = logging.getLogger("hepsieve")

EPILOG = """\
data flow:
  hepsieve generate cms-hzz4l --out toys/cms             # toy ROOT files (or use real ones)
  hepsieve run cms-hzz4l --data-dir toys/cms --mode features --out results/features
  hepsieve train cms-hzz4l --features results/features/features --model mlp --out models/cms
  hepsieve evaluate cms-hzz4l --features results/features/features --models models/cms
  hepsieve run cms-hzz4l --data-dir toys/cms --models models/cms --out results/hists
  hepsieve plot results/hists
or all of it at once:  hepsieve demo --out demo
"""


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--executor", choices=("iterative", "futures", "dask"), default="dask",
                   help="coffea executor (default: dask, a local cluster unless --scheduler)")
    g.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes for futures/dask (default: all cores)")
    g.add_argument("--scheduler", help="address of an existing dask scheduler, tcp://host:port")
    g.add_argument("--chunksize", type=int, default=200_000, help="entries per chunk (default 200000)")
    g.add_argument("--maxchunks", type=int, help="process at most this many chunks per dataset "
                   "(testing; the entry check is then skipped)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of all subcommands."""
    parser = argparse.ArgumentParser(
        prog="hepsieve", description="Columnar collider-physics analysis: toy or real ntuples -> "
        "selection -> features -> ONNX classifiers -> weighted histograms and plots.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, full tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="warnings only, no hepsieve progress bars (coffea 2026.9 still draws its own)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = list(ANALYSES)

    p = sub.add_parser("generate", help="write toy files in the exact schema of the real data")
    p.add_argument("analysis", choices=names)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--events", type=int, default=20_000, help="selected events per dataset")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--datasets", nargs="+", help="only these datasets (default: all)")
    p.add_argument("--flat-csv", type=Path, metavar="DIR",
                   help="also write the flat (Kaggle-style) CSVs of the toy, where the analysis has them")
    p.add_argument("--formats", nargs="+", choices=("root", "parquet", "csv"),
                   help="higgs-uci: output formats (default root; csv = HIGGS.csv.gz UCI text)")

    p = sub.add_parser("convert", help="stream CSV(.gz) to Parquet, or the UCI HIGGS text to "
                       "ROOT/Parquet chunks")
    p.add_argument("csv", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--event-id", default="eventNumber",
                   help="column to add with the row number if the CSV lacks it (default eventNumber)")
    p.add_argument("--layout", choices=("header", "uci-higgs"), default="header",
                   help="header: CSV with a header row -> one Parquet file; uci-higgs: the UCI "
                   "HIGGS.csv(.gz) -> HIGGS_{train,test}_<i> chunks (last 500k rows = test)")
    p.add_argument("--format", choices=("root", "parquet"), default="root",
                   help="uci-higgs output format (default root, LZ4)")
    p.add_argument("--chunk-rows", type=int, default=1_000_000, help="uci-higgs rows per chunk")

    p = sub.add_parser("run", help="run the processor: histograms (with ONNX scores) or features")
    p.add_argument("analysis", choices=names)
    p.add_argument("--data-dir", type=Path, required=True,
                   help="directory holding the fileset's files (real or toy)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--mode", choices=("histograms", "features"), default="histograms",
                   help="features: also write Parquet of the model inputs for training")
    p.add_argument("--models", type=Path, help="directory of model cards + ONNX files "
                   "(default: the models shipped with hepsieve)")
    p.add_argument("--model-names", nargs="+", help="use only these models from --models")
    p.add_argument("--fileset", help="fileset JSON (default: the analysis' own)")
    p.add_argument("--datasets", nargs="+", help="only these datasets")
    p.add_argument("--score-cut", type=float, help="score threshold for the cut histogram")
    p.add_argument("--working-points", type=Path, metavar="METRICS_JSON",
                   help="per-model score cuts: the AMS working points of `hepsieve evaluate`")
    p.add_argument("--skip-bad-files", action="store_true",
                   help="skip unreadable files (listed in the summary and run.json)")
    p.add_argument("--checkpoint", type=Path, help="directory of per-chunk checkpoints; "
                   "rerunning with it resumes an interrupted run")
    _add_run_options(p)

    p = sub.add_parser("train", help="train k-fold classifiers on exported features -> ONNX + card")
    p.add_argument("analysis", choices=names)
    p.add_argument("--features", type=Path, required=True, help="feature Parquet directory")
    p.add_argument("--model", choices=("mlp", "rf", "hgb", "ada"), required=True,
                   help="mlp: PyTorch MLP; rf: RandomForest; hgb: HistGradientBoosting; "
                   "ada: AdaBoost (200 stumps)")
    p.add_argument("--out", type=Path, required=True, help="models directory")
    p.add_argument("--name", help="model name (default: the --model value)")
    p.add_argument("--feature-set", help="feature set (default: the analysis default)")
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--negative-weights", choices=("zero", "keep", "abs"), default="zero")
    p.add_argument("--epochs", type=int, help="MLP: maximum epochs")
    p.add_argument("--hidden", type=int, nargs="+", help="MLP: hidden layer widths (default 50 10 5)")
    p.add_argument("--activation", choices=("selu", "tanh", "relu"),
                   help="MLP: hidden-layer activation (default selu; tanh is ~2.4x faster in onnxruntime)")
    p.add_argument("--max-events", type=int, help="train on the first N exported events only")

    p = sub.add_parser("evaluate", help="ROC/AUC, KS, confusion matrix, F1, purity x efficiency")
    p.add_argument("analysis", choices=names)
    p.add_argument("--features", type=Path, required=True)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--out", type=Path, help="output directory (default: MODELS/evaluation)")
    p.add_argument("--threshold", type=float, help="working point (default: the analysis')")

    p = sub.add_parser("plot", help="stacked plots of a finished run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", type=Path)

    p = sub.add_parser("demo", help="everything end to end on fresh toys")
    p.add_argument("analysis", nargs="?", default="cms-hzz4l", choices=names)
    p.add_argument("--out", type=Path, default=Path("demo"))
    p.add_argument("--events", type=int, default=20_000, help="toy events per dataset")
    p.add_argument("--executor", choices=("iterative", "futures", "dask"), default="futures")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)

    p = sub.add_parser("bench", help="events/s of the processor with each executor")
    p.add_argument("analysis", choices=names)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--models", type=Path, help="model directory (default: shipped models)")
    p.add_argument("--model-names", nargs="+", help="use only these models")
    p.add_argument("--executors", nargs="+", default=["iterative", "futures", "dask"])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--chunksize", type=int, default=250_000)
    p.add_argument("--repeat", type=int, default=1,
                   help="run the whole sequence N times and report the median of each row")
    p.add_argument("--out", type=Path, default=Path("bench"))
    return parser


def _run_config(args, **overrides):
    from hepsieve.processors.runner import RunConfig

    fields = dict(analysis=args.analysis, data_dir=args.data_dir, out_dir=args.out,
                  mode=args.mode, models_dir=args.models, models=args.model_names,
                  fileset=args.fileset, datasets=args.datasets, executor=args.executor,
                  workers=args.workers, scheduler=args.scheduler, chunksize=args.chunksize,
                  maxchunks=args.maxchunks, skip_bad_files=args.skip_bad_files,
                  checkpoint=args.checkpoint,
                  score_cut=working_points(args.working_points) if args.working_points
                  else args.score_cut,
                  progress=not args.quiet)
    return RunConfig(**(fields | overrides))


def cmd_generate(args) -> None:
    """Write toy files (and the flat CSVs on request)."""
    analysis = get_analysis(args.analysis)
    options = {"formats": tuple(args.formats)} if args.formats else {}
    load_object(analysis.toy_generator)(args.out, events=args.events, seed=args.seed,
                                        datasets=args.datasets, **options)
    if args.flat_csv:
        if "flat_csv_writer" not in analysis.meta:
            raise ConfigurationError(f"--flat-csv: analysis {analysis.name} has no flat CSV form")
        paths = load_object(analysis.meta["flat_csv_writer"])(args.out, args.flat_csv)
        print(f"flat CSVs: {', '.join(str(p) for p in paths)}")


def cmd_convert(args) -> None:
    """Convert CSV files to Parquet."""
    from hepsieve.datasets.converters import csv_to_parquet, higgs_csv_to_chunks

    if args.layout == "uci-higgs":
        for src in args.csv:
            names = higgs_csv_to_chunks(src, args.out, args.format, args.chunk_rows)
            print(f"{src} -> {len(names)} chunks in {args.out}")
        return
    for src in args.csv:
        name = src.name.removesuffix(".gz").removesuffix(".csv") + ".parquet"
        rows = csv_to_parquet(src, args.out / name, event_id=args.event_id)
        print(f"{src} -> {args.out / name} ({rows} rows)")


def working_points(metrics_json: Path) -> dict[str, float]:
    """Return {model: AMS working point} from an evaluation's metrics.json."""
    try:
        models = json.loads(Path(metrics_json).read_text())["models"]
        return {name: m["ams"]["working_point"] for name, m in models.items()}
    except (OSError, KeyError, json.JSONDecodeError) as err:
        raise ConfigurationError(f"--working-points {metrics_json}: not an evaluation "
                                 f"metrics.json ({err})") from None


def cmd_run(args) -> None:
    """Run the processor and print the accounting."""
    from hepsieve.processors.runner import run

    result = run(_run_config(args))
    for dataset, acc in result.provenance["accounting"].items():
        print(f"{dataset:<28s} processed {acc['processed']:>10d} / {acc['expected']:>10d} entries")
    for model, aucs in result.provenance.get("auc_from_histograms", {}).items():
        print(f"AUC ({model}, from the score histograms): "
              + ", ".join(f"{ds} {auc:.4f}" for ds, auc in aucs.items()))
    print(f"{result.provenance['events']} events in {result.provenance['wall_s']:.1f} s = "
          f"{result.provenance['events_per_s']:.0f} events/s -> {args.out}")


def cmd_train(args) -> None:
    """Train one model kind."""
    from hepsieve.training.train import train

    hyper = {}
    if args.model == "mlp":
        hyper = {k: v for k, v in (("epochs", args.epochs), ("activation", args.activation),
                                   ("hidden", tuple(args.hidden) if args.hidden else None)) if v}
    card = train(args.analysis, args.features, args.model, args.out, feature_set=args.feature_set,
                 name=args.name, k=args.folds, seed=args.seed, max_events=args.max_events,
                 negative_weights=args.negative_weights, progress=not args.quiet, hyper=hyper)
    print(f"model card: {card}")


def cmd_evaluate(args) -> None:
    """Evaluate every model of a directory."""
    from hepsieve.training.evaluate import evaluate

    out = args.out or args.models / "evaluation"
    summary = evaluate(args.analysis, args.features, args.models, out, threshold=args.threshold,
                       is_toy=_is_toy_features(args.features))
    print(metrics_table(summary))
    print(f"metrics and plots: {out}")


def _is_toy_features(features: Path) -> bool:
    run_json = Path(features).parent / "run.json"
    return json.loads(run_json.read_text()).get("is_toy", True) if run_json.is_file() else True


def metrics_table(summary: dict) -> str:
    """Return a plain-text table of AUCs and F1 per model."""
    t = summary["threshold"]
    lines = [f"{'model':<8s} {'AUC test':>9s} {'AUC train':>10s} {'AUC per fold':>18s} "
             f"{'F1@' + str(t):>8s} {'KS p s/b':>12s} {'AMS WP':>7s} {'AMS':>6s}"]
    for name, m in summary["models"].items():
        folds = "/".join(f"{a:.4f}" for a in m["auc_test_per_fold"])
        lines.append(f"{name:<8s} {m['auc_test']:>9.4f} {m['auc_train']:>10.4f} {folds:>18s} "
                     f"{m['at_threshold']['unweighted']['f1']:>8.3f} "
                     f"{m['ks_pvalue']['signal']:>7.2f}/{m['ks_pvalue']['background']:.2f} "
                     f"{m['ams']['working_point']:>7.2f} {m['ams']['best_ams']:>6.2f}")
    return "\n".join(lines)


def cmd_plot(args) -> None:
    """Plot a finished run."""
    from hepsieve.processors.plots import plot_run

    paths = plot_run(args.run_dir, args.out)
    print(f"{len(paths)} plots in {paths[0].parent if paths else args.run_dir}")


def cmd_demo(args) -> None:
    """Generate toys, export features, train MLP and RF, evaluate, run with ONNX, plot."""
    from hepsieve.processors.plots import plot_run
    from hepsieve.processors.runner import RunConfig, run
    from hepsieve.training.evaluate import evaluate
    from hepsieve.training.train import train

    start = time.perf_counter()
    out, analysis = args.out, get_analysis(args.analysis)
    steps = 6

    def step(i, text):
        print(f"[{i}/{steps}] {text}  ({time.perf_counter() - start:.0f} s)", flush=True)

    step(1, f"generating {args.events} toy events per dataset")
    load_object(analysis.toy_generator)(out / "toys", events=args.events, seed=1)
    common = dict(analysis=args.analysis, data_dir=out / "toys", executor=args.executor,
                  workers=args.workers, chunksize=100_000, progress=not args.quiet)
    step(2, "exporting features")
    run(RunConfig(out_dir=out / "features", mode="features", **common))
    features = out / "features" / "features"
    step(3, "training MLP and RandomForest (2 folds each)")
    for kind in ("mlp", "rf"):
        train(args.analysis, features, kind, out / "models", progress=not args.quiet)
    step(4, "evaluating")
    summary = evaluate(args.analysis, features, out / "models", out / "evaluation")
    step(5, "running the processor with ONNX inference")
    cuts = (working_points(out / "evaluation" / "metrics.json")
            if analysis.meta.get("working_point") == "ams" else None)
    result = run(RunConfig(out_dir=out / "histograms", models_dir=out / "models", score_cut=cuts,
                           **common))
    step(6, "plotting")
    plot_run(out / "histograms")
    print(metrics_table(summary))
    if cuts:
        print(f"score cuts (AMS working points): {cuts}")
    print(f"processor: {result.provenance['events_per_s']:.0f} events/s; demo done in "
          f"{time.perf_counter() - start:.0f} s; outputs in {out}/")


def cmd_bench(args) -> None:
    """Time the processor with each executor on the same files."""
    from hepsieve.processors.bench import bench

    bench(args.analysis, args.data_dir, args.out, args.executors, args.workers, args.chunksize,
          args.models, args.model_names, repeat=args.repeat)


COMMANDS = {"generate": cmd_generate, "convert": cmd_convert, "run": cmd_run, "train": cmd_train,
            "evaluate": cmd_evaluate, "plot": cmd_plot, "demo": cmd_demo, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hepsieve``; returns the exit status."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        COMMANDS[args.command](args)
    except HepsieveError as err:
        if args.verbose:
            raise
        print(f"hepsieve {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
