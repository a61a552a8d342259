"""The `recgpt` command line (contract in the README's CLI reference)."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import re
import sys
import textwrap
import time
from pathlib import Path

from recgpt_tf.config import DATA_SIZED_FIELDS, STAGE_PLANS, TRAIN_CHOICES, ExportConfig, ModelConfig, PromptConfig, TrainConfig
from recgpt_tf.contract import INDEX_CHOICES, INDEX_KINDS, PARTITIONED_MIN_ITEMS
from recgpt_tf.data.readers import FORMATS, parse_columns, write_sequences
from recgpt_tf.errors import ConfigError, RecGPTError
from recgpt_tf.files import native_log_to, write_json
from recgpt_tf.serving.client import RestError

TFRECORD, TFRECORD_SUFFIX = "tfrecord", ".tfrecord"  # streamed input for `recgpt train`

# The flags each command takes (filled by `build_parser`), to name a refused option by its flag.
_COMMAND_FLAGS: dict[str, frozenset[str]] = {}
# API argument names whose flag is not --argument-name.
_FLAGS = {
    "data_format": "--format",
    "index_kind": "--index",
    "kind": "--index",
    "num_steps": "--steps",
}


# The ModelConfig/TrainConfig flags `--help` shows; the others (the tuned architecture and schedule details) take
# flags too, named in the help's last lines and described in docs/cli.md.
_SHOWN_SETTINGS = ("max_length", "hidden_size", "num_layers", "objective", "epochs", "batch_size", "learning_rate", "seed", "strategy")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ModelConfig/TrainConfig field (except the data-derived sizes); `_SHOWN_SETTINGS` in --help."""
    group = parser.add_argument_group("model and training (defaults are the tuned ones)")
    more = []
    for config in (ModelConfig, TrainConfig):
        for field in dataclasses.fields(config):
            if field.name in DATA_SIZED_FIELDS:
                continue
            flag = f"--{field.name.replace('_', '-')}"
            shown = field.name in _SHOWN_SETTINGS
            if not shown:
                more.append(flag)
            described = f"default {'from the other settings' if field.default is None else field.default}" if shown else argparse.SUPPRESS
            if isinstance(field.default, bool):
                group.add_argument(
                    flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=None, metavar="BOOL", help=described
                )
            elif field.name in TRAIN_CHOICES:
                group.add_argument(flag, choices=TRAIN_CHOICES[field.name], default=None, help=described)
            else:  # a field whose default is None (decided by the other settings) takes a float
                kind = float if field.default is None else type(field.default)
                group.add_argument(flag, type=kind, default=None, metavar="N" if kind is int else "X", help=described)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # the epilog's lines as written: flags unbroken
    parser.epilog = textwrap.fill(f"More settings (docs/cli.md): {' '.join(more)}.", 78, break_on_hyphens=False)


def _columns(text: str) -> dict[str, str]:
    try:
        return parse_columns(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(error.problem) from None


def _add_data_flags(
    parser: argparse.ArgumentParser, formats: tuple[str, ...] = FORMATS, help: str = "data format (default: from the suffix)"
) -> None:
    """--format and --columns, for a command that reads an interaction file."""
    parser.add_argument("--format", choices=formats, default=None, help=help)
    parser.add_argument(
        "--columns",
        type=_columns,
        default=None,
        metavar="user=COL,item=COL,time=COL",
        help="which named columns of a CSV/TSV header or Parquet table hold the user, item and time (default: found by name)",
    )


def _add_item_features_flags(parser: argparse.ArgumentParser, help: str) -> None:
    """--item-features FILE and its --item-features-format."""
    from recgpt_tf.data.item_features import FEATURE_FORMATS

    parser.add_argument("--item-features", type=Path, default=None, metavar="FILE", help=help + " (docs/item_features.md)")
    parser.add_argument(
        "--item-features-format",
        choices=FEATURE_FORMATS,
        default=None,
        metavar="FORMAT",
        help=f"{'|'.join(FEATURE_FORMATS)} (default: FILE's suffix)",
    )


def _beam(module: str):
    """recgpt_tf.beam.MODULE, or a usage error that says how to install Apache Beam."""
    import importlib

    try:
        return importlib.import_module(f"recgpt_tf.beam.{module}")
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("apache_beam"):
            raise
        raise ConfigError("runner", 'needs Apache Beam: pip install "recgpt-tf[beam]" (".[beam]" in a checkout)') from None


def _add_runner_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """--runner; the Beam pipeline options after it (--direct_num_workers=2, --project=...) pass through."""
    parser.add_argument("--runner", default=None, metavar="RUNNER", help=help + "; further --options go to Beam's PipelineOptions")


def _configs(args: argparse.Namespace) -> tuple[dict, TrainConfig]:
    """The model flags given (changes to the run's architecture) and the training configuration."""
    pick = lambda cls: {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}  # noqa: E731
    return pick(ModelConfig), TrainConfig(**pick(TrainConfig))


def _stage_line(name: str, summary: dict, where: Path) -> str:
    valid = summary["valid"]
    return (
        f"{name} {'already trained with these settings, kept' if summary.get('already_trained') else 'done'}: {summary['epochs']} epochs ({summary['seconds']:.0f}s), best epoch {summary['best_epoch']}, "
        f"valid HR@10 {valid.get('HR@10', float('nan')):.4f} NDCG@10 {valid.get('NDCG@10', float('nan')):.4f}; weights in {where}"
    )


def _train(args: argparse.Namespace, dataset, run_dir: Path, stages: str):
    """Creates (or reopens, for later stages) the run and trains `stages`, printing one line per stage."""
    from recgpt_tf.runs import Run, architecture_for
    from recgpt_tf.training.distribute import make_strategy

    warm_start = getattr(args, "warm_start", None)
    model_changes, train_config = _configs(args)
    make_strategy(train_config.strategy)  # before any model: a multi-worker strategy must come first
    created_from = dataset if stages in ("pretrain", "all") else None  # later stages open the run as it is
    features = None
    if getattr(args, "item_features", None) is not None:
        if not created_from:
            raise ConfigError("item_features", f"are read when pre-training; stages {stages!r} train on with the run's own")
        features = _catalogue_features(args, dataset.item_vocab.tokens)
        model_changes.update(features.model_settings())
    model_config = architecture_for(run_dir, dataset, warm_start, **model_changes) if created_from else None
    run = Run.for_task(run_dir, train_config.strategy, created_from, model_config, seed=train_config.seed, item_features=features)
    prompt_config = PromptConfig.from_options(args.prompt_window, args.epochs)
    names = {"pretrain": "pre-training", "prompt": f"prompt-tuning (K={prompt_config.prompt_window})", "finetune": "fine-tuning"}
    run.train(
        dataset,
        stages,
        train_config,
        prompt_config,
        warm_start=warm_start,
        verbose=0 if args.quiet else 1,
        on_stage_end=lambda stage, summary: print(_stage_line(names[stage], summary, run.stage_dir(stage))),
    )
    return run


def _catalogue_features(args: argparse.Namespace, items: list[str]):
    """--item-features read and encoded for the catalogue `items`, with its console line."""
    from recgpt_tf.data.item_features import CatalogueFeatures, read_item_features

    features = CatalogueFeatures.build(read_item_features(args.item_features, args.item_features_format), items)
    print(f"{args.item_features}: {features.describe()}")
    return features


def cmd_train(args: argparse.Namespace) -> int:
    from recgpt_tf.data.dataset import Dataset
    from recgpt_tf.runs import Run

    if args.stages in ("prompt", "finetune"):
        dataset = Run.open(args.out).dataset(args.data, args.format, args.columns)
    elif args.format == TFRECORD or (args.format is None and TFRECORD_SUFFIX in Path(args.data).name):
        from recgpt_tf.data.streaming import DEFAULT_VALIDATION_USERS, StreamedDataset

        if args.stages != "pretrain":  # checked before the scan, which reads every file
            raise ConfigError(
                "stages",
                f"must be pretrain for TFRecord input, which pre-training streams; got {args.stages} (prompt-tuning needs the data file)",
            )

        sampled = DEFAULT_VALIDATION_USERS if args.validation_users is None else args.validation_users
        dataset = StreamedDataset.scan([str(args.data)], name=Path(args.data).name.split(".")[0].rstrip("-_*?"), validation_users=sampled)
        print(f"{args.data}: {len(dataset.files)} TFRecord files streamed; validation on {len(dataset.sample.users)} sampled users")
    else:
        dataset = Dataset.from_file(args.data, args.format, columns=args.columns)
    print(f"{args.data}: {dataset.num_users} users, {dataset.num_items} items, {dataset.num_interactions} interactions")
    _train(args, dataset, Path(args.out), args.stages)
    return 0


def _print_results(report: dict) -> None:
    keys = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")
    print(f"{report['dataset']}: {report['users']} users, {report['items']} items ({report['protocol']}), test split")
    print(f"{'variant':<20}" + "".join(f"{k:>9}" for k in keys))
    for name, metrics in report["results"].items():
        print(f"{name:<20}" + "".join(f"{metrics[k]:>9.4f}" for k in keys))
    if report.get("two_step"):
        print(f"two-step split for k=10 (chosen on validation): m={report['two_step']['m']}, n={report['two_step']['n']}")


def _note_unfinished(run) -> None:
    for stage in run.unfinished_stages():
        print(f"note: stage {stage!r} of {run.path} did not finish (interrupted, or failed); only finished stages are used")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from recgpt_tf.runs import Run

    run = Run.open(args.run_dir)
    _note_unfinished(run)
    report = run.evaluate(run.dataset(args.data, args.format, args.columns))  # the export reads the chosen m from the run
    _print_results(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(args.json), report)
        print(f"wrote {args.json}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from recgpt_tf.data.dataset import Dataset
    from recgpt_tf.data.synthetic import synthetic_sequences
    from recgpt_tf.evaluation.evaluate import evaluate_popularity

    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.data:
        data_path = Path(args.data)
    else:
        data_path = out / "synthetic.txt"
        write_sequences(synthetic_sequences(seed=0 if args.seed is None else args.seed), data_path)
    dataset = Dataset.from_file(data_path, args.format, columns=args.columns)
    print(f"[1/5] data {data_path}: {dataset.num_users} users, {dataset.num_items} items, {dataset.num_interactions} interactions")
    _, train_config = _configs(args)
    run_dir = out / "run"
    print(
        f"[2/5] pre-training (up to {train_config.epochs} epochs), then prompt-tuning (K={PromptConfig.from_options(args.prompt_window).prompt_window}), into {run_dir}"
    )
    run = _train(args, dataset, run_dir, "all")

    print("[3/5] evaluation (test split; two-step m chosen on validation)")
    report = run.evaluate(dataset)
    report["results"]["popularity"] = evaluate_popularity(dataset, dataset.split("test"))  # the baseline, for the printout only
    _print_results(report)
    write_json(out / "metrics.json", report)

    print("[4/5] export (one SavedModel per index flavour, TF Serving layout)")
    exports = out / "exports"
    with native_log_to(run_dir / "logs" / "export.log") as native_log:
        for flavour in INDEX_KINDS:  # stock ops: brute-force, partitioned (ScaNN-trained); ScaNN's own ops: scann
            name = "recgpt" if flavour == "brute-force" else f"recgpt_{flavour}"
            published = run.export(exports, name, flavour)
            print(f"  {flavour:<11} → {published.path}")
    print(f"  (TensorFlow's and ScaNN's build log: {native_log})")

    print("[5/5] serving: local TF-Serving-compatible endpoint, one gRPC request")
    with native_log_to(native_log):
        _serve_and_ask(exports, dataset)
    print(f"\ndone in {time.perf_counter() - start:.0f}s: run {run_dir}, metrics {out / 'metrics.json'}, exports {exports}")
    print(f"next: `recgpt serve {exports}` and `recgpt recommend --server 127.0.0.1:8500 --model recgpt --user U --history a,b,c`")
    return 0


def _serve_and_ask(exports: Path, dataset) -> None:
    from recgpt_tf.serving import GrpcClient, LocalServer

    test = dataset.split("test")
    user = dataset.user_vocab.decode(test.users[:1])[0]
    history = dataset.item_vocab.decode(test.histories[0])
    with LocalServer(exports, grpc_port=0, rest_port=0) as server:
        target = f"127.0.0.1:{server.grpc_port}"
        client = GrpcClient(target, "recgpt", timeout=30)
        row = client.recommend([user], [history])[0]
        print(f"  gRPC {target}, model 'recgpt', version status {client.status()}")
        client.close()
    print(f"\n  user {user}, history (oldest → newest, last 10): {' '.join(history[-10:])}")
    print(f"  held-out next item: {dataset.item_vocab.decode([test.targets[0]])[0]}")
    print("  recommended over gRPC:")
    for rank, (item, score, step) in enumerate(zip(row["item_ids"], row["scores"], row["recall_step"]), start=1):
        print(f"  {rank:>4}. item {item:<8} score {score:7.3f}  (recall step {step})")


def cmd_export(args: argparse.Namespace) -> int:
    from recgpt_tf.runs import Run

    run = Run.open(args.run_dir)
    _note_unfinished(run)
    catalogue = None
    if args.item_features is not None:
        from recgpt_tf.data.item_features import read_item_features

        catalogue = read_item_features(args.item_features, args.item_features_format)
    with native_log_to(run.log_dir("export") / "export.log"):
        published = run.export(
            args.export_base,
            args.name,
            index_kind=args.index,
            top_k=args.top_k,
            first_step_size=args.first_step_size,
            steps=args.steps,
            recall_threshold=args.recall_threshold,
            tuning_seconds=args.tuning_seconds,
            version=args.version,
            jit_compile=args.jit_compile,
            item_features=catalogue,
        )
    meta = published.metadata
    index = meta["index"]
    intervals = index.get("recall_interval", {})
    recall = ", ".join(
        f"{step} {value:.3f}" + (f" [{intervals[step][0]:.3f}, {intervals[step][1]:.3f}]" if step in intervals else "")
        for step, value in index.get("recall", {}).items()
    )
    print(
        f"published {published.path} ({index['kind']} index, {meta['stage']} weights, steps {'_'.join(map(str, meta['step_sizes']))}"
        + (f"; recall@{index['recall_at']} against exact search: {recall}" if recall else "")
        + ")"
    )
    if "catalogue" in meta:
        c = meta["catalogue"]
        print(
            f"catalogue: {c['items']:,} items served, {c['trained_items']:,} trained, {c['feature_only_items']:,} by their features "
            f"alone ({c['feature_only_with_unknown_values_only']:,} of them by values the run never knew); "
            f"{c['left_out_without_values']:,} of {args.item_features} left out (no feature value to score them by)"
        )
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from recgpt_tf.data.examples import shard_paths, vocabulary_paths, write_examples, write_vocabularies
    from recgpt_tf.data.readers import load_interactions

    if args.runner:
        convert = _beam("convert").convert
        count = convert(args.data, args.out, args.shards, args.format, args.columns, ["--runner", args.runner, *args.beam_args])
    else:
        interactions = load_interactions(args.data, args.format, args.columns)
        count = write_examples(interactions, args.out, args.shards)
        write_vocabularies(interactions, args.out)
    where = args.out if args.shards == 1 else f"{args.shards} shards ({shard_paths(args.out, args.shards)[0].name}, …)"
    on = f" on Beam's {args.runner}" if args.runner else ""
    print(f"wrote {count} examples (user_id, item_ids) to {where}{on}; vocabularies {vocabulary_paths(args.out)['items.txt'].name}, …")
    return 0


def cmd_recommend_batch(args: argparse.Namespace) -> int:
    from recgpt_tf.inference.batch import read_requests, recommend_batch
    from recgpt_tf.inference.batch_output import BatchOutput

    BatchOutput(args.out)  # a bad --out is refused before the requests are read or a run exported
    if args.shards != 1 and not args.runner:
        raise ConfigError("shards", "applies to a Beam job (--runner); one process writes one file")
    model = Path(args.model)
    if (model / "config.json").is_file():  # a run directory: answer through an export of its current weights
        from recgpt_tf.runs import Run

        with native_log_to(model / "logs" / "export" / "export.log"):
            model = Run.open(model).current_export(model / "batch_export")
    if args.runner:
        recommend_on_beam = _beam("inference").recommend_batch
        beam_args = ["--runner", args.runner, *args.beam_args]
        manifest = recommend_on_beam(
            model, args.users, args.out, args.shards, args.batch_size, args.format, args.columns, args.overwrite, beam_args
        )
        done = "already held this job's answers" if manifest.get("complete") else "wrote"
        print(
            f"{done} {manifest['lines']} users' recommendations in {len(manifest['shards'])} shards beside {args.out} on Beam's {args.runner}, with {manifest['model']['path']}"
        )
        return 0
    requests = list(read_requests(args.users, args.format, args.columns))
    stats = recommend_batch(
        model, requests, args.out, args.batch_size, progress=not args.quiet, overwrite=args.overwrite, source=str(args.users)
    )
    if stats["complete"]:
        print(f"{args.out} already holds this job's finished answers ({stats['skipped']} users, {stats['version']}); nothing to do")
        return 0
    rate = f", {stats['users_per_second']:.0f} users/s" if stats["users_per_second"] else ""
    resumed = f" (resumed after {stats['skipped']} already answered)" if stats["skipped"] else ""
    print(
        f"wrote {stats['users']} users' recommendations to {args.out}{resumed} in {stats['seconds']:.1f} s{rate}, with {stats['version']}"
    )
    return 0


def cmd_cluster_task(args: argparse.Namespace) -> int:
    from recgpt_tf.training.distribute import cluster_spec, serve_cluster_task

    task = cluster_spec().get("task", {})
    print(
        f"recgpt cluster-task: {task.get('type')} {task.get('index')} of a parameter-server cluster (TF_CONFIG); Ctrl-C stops it",
        flush=True,
    )
    serve_cluster_task()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from recgpt_tf.serving import Limits, LocalServer

    try:
        import scann  # noqa: F401  (registers the ScaNN ops, like the ScaNN-enabled TF Serving image)
    except ImportError:
        print("scann is not importable: only brute-force exports will load", file=sys.stderr)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    limits = Limits(max_batch=args.max_batch, max_history=args.max_history, max_elements=args.max_elements)
    server = LocalServer(args.export_base, args.host, args.grpc_port, args.rest_port, args.workers, limits, args.poll_seconds)
    server.start()
    server.serve_until_signalled(
        on_ready=lambda: print(
            f"recgpt serve: {args.export_base} on gRPC {args.host}:{server.grpc_port}, REST {args.host}:{server.rest_port} "
            "(a development stand-in for tensorflow_model_server; Ctrl-C or SIGTERM stops it)",
            flush=True,
        )
    )
    return 0


def _json_list(argument: str, text: str) -> list[str]:
    """A JSON list of id strings from a flag (ids may hold commas)."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ConfigError(argument, f"is not JSON: {error}") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(argument, f"must be a JSON list of item id strings; got {text!r}")
    return value


def cmd_recommend(args: argparse.Namespace) -> int:
    from recgpt_tf.serving import GrpcClient, RestClient

    if args.history_json is not None:
        history = _json_list("history_json", args.history_json)
    else:
        history = [h for h in args.history.split(",") if h] if args.history else []
    exclude = None
    if args.exclude_json is not None:
        exclude = _json_list("exclude_json", args.exclude_json)
    elif args.exclude:
        exclude = [item for item in args.exclude.split(",") if item]
    if args.rest:
        rows = RestClient(args.server, args.model, timeout=args.timeout).recommend(
            [args.user], [history], args.version, exclude=exclude and [exclude]
        )
    else:
        rows = GrpcClient(args.server, args.model, timeout=args.timeout).recommend(
            [args.user], [history], args.version, exclude=exclude and [exclude]
        )
    row = rows[0]
    print(f"user {args.user}, history {' '.join(history) or '(empty: cold start)'}")
    for rank, (item, score, step) in enumerate(zip(row["item_ids"], row["scores"], row["recall_step"]), start=1):
        print(f"{rank:>3}. {item:<20} score {score:8.4f}  step {step}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recgpt", description="RecGPT on TensorFlow: train, evaluate, recommend.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model on DATA into RUN_DIR (resumes an interrupted run)")
    train.add_argument("data", type=Path)
    train.add_argument("--out", type=Path, required=True, help="run directory")
    _add_data_flags(
        train,
        (*FORMATS, TFRECORD),
        "data format (default: from the suffix); tfrecord (DATA may be a glob of shards, `recgpt convert --shards`) "
        "streams pre-training from the files",
    )
    train.add_argument(
        "--validation-users",
        type=int,
        default=None,
        metavar="N",
        help="tfrecord: users sampled to validate on (50,000)",
    )
    train.add_argument(
        "--stages", choices=list(STAGE_PLANS), default="all", help="all = pretrain then prompt; finetune = the paper's baseline"
    )
    train.add_argument(
        "--warm-start",
        type=Path,
        default=None,
        metavar="OLD_RUN",
        help="start pre-training from an earlier run (yesterday's): known ids keep their rows",
    )
    _add_item_features_flags(train, "items' categorical features: item_id, then columns of values")
    train.add_argument(
        "--prompt-window",
        type=int,
        default=None,
        metavar="K",
        help=f"K, prompts generated before each real item (0..6; {PromptConfig.prompt_window})",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="paper-protocol evaluation of a trained run on DATA")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("data", type=Path)
    _add_data_flags(evaluate)
    evaluate.add_argument("--json", type=Path, default=None, help="write the results document here")
    evaluate.set_defaults(func=cmd_evaluate)

    export = sub.add_parser("export", help="publish a trained run as a TF Serving SavedModel version")
    export.add_argument("run_dir", type=Path)
    export.add_argument("export_base", type=Path)
    export.add_argument("--name", required=True, help="model name (directory under EXPORT_BASE, model_spec.name)")
    export.add_argument(
        "--index",
        choices=INDEX_CHOICES,
        default=ExportConfig.index_kind,
        help=f"auto: partitioned from {PARTITIONED_MIN_ITEMS:,} items up, brute-force below",
    )
    export.add_argument("--top-k", type=int, default=ExportConfig.top_k)
    export.add_argument("--first-step-size", type=int, default=None, help="m; default: chosen on validation by `recgpt evaluate`")
    export.add_argument("--steps", type=int, default=ExportConfig.steps, help="generation steps G (2 = the paper's two-step recall)")
    export.add_argument(
        "--recall-threshold", type=float, default=ExportConfig.recall_threshold, help="held-out recall an approximate index must reach"
    )
    export.add_argument(
        "--tuning-seconds", type=float, default=ExportConfig.tuning_seconds, help="time budget of building and tuning the index"
    )
    export.add_argument("--version", type=int, default=None, help="default: the next free version number")
    _add_item_features_flags(export, "today's catalogue: every item of FILE is served, an untrained one by its features")
    export.add_argument(
        "--jit-compile",
        action="store_true",
        help="XLA-compile the decoder passes (faster on CPU; TF Serving needs --xla_cpu_compilation_enabled=true)",
    )
    export.set_defaults(func=cmd_export)

    serve = sub.add_parser("serve", help="TF-Serving-compatible local endpoint (gRPC + REST) over an export base")
    serve.add_argument("export_base", type=Path)
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    serve.add_argument("--grpc-port", type=int, default=8500)
    serve.add_argument("--rest-port", type=int, default=8501)
    serve.add_argument("--workers", type=int, default=8)
    serve.add_argument("--max-batch", type=int, default=256)
    serve.add_argument("--max-history", type=int, default=1000, help="longer histories are answered from their most recent items")
    serve.add_argument(
        "--max-elements",
        type=int,
        default=2_000_000,
        help="most elements (rows x items) one input may declare; larger requests get RESOURCE_EXHAUSTED before any tensor is built",
    )
    serve.add_argument("--poll-seconds", type=float, default=2.0)
    serve.set_defaults(func=cmd_serve)

    convert = sub.add_parser("convert", help="write DATA as TFRecord tf.Examples for the TFX Trainer module (.gz: GZIP)")
    convert.add_argument("data", type=Path)
    convert.add_argument("out", type=Path)
    _add_data_flags(convert)
    convert.add_argument("--shards", type=int, default=1, help="write N files NAME-0000i-of-0000N (users round-robin)")
    _add_runner_flag(convert, "run the conversion as an Apache Beam pipeline on RUNNER (DirectRunner, FlinkRunner, ...)")
    convert.set_defaults(func=cmd_convert)

    batch = sub.add_parser(
        "recommend-batch", help="top-k for every user of a file through the exported signature (offline = online); resumable"
    )
    batch.add_argument("model", type=Path, help="a SavedModel version, a model directory (newest version) or a run directory")
    batch.add_argument("users", type=Path, help="an interaction file (each user's whole history) or JSON lines of requests")
    batch.add_argument(
        "--out", type=Path, required=True, help="JSON lines, one per user, and OUT.manifest.json, both once complete; rerun to resume"
    )
    batch.add_argument("--overwrite", action="store_true", help="discard what --out holds from another job (finished or not)")
    _add_data_flags(batch)
    batch.add_argument("--batch-size", type=int, default=256)
    _add_runner_flag(batch, "answer on an Apache Beam pipeline (RunInference) on RUNNER, into --shards JSON-lines files")
    batch.add_argument("--shards", type=int, default=1, help="with --runner: OUT-0000i-of-0000N files, written whole")
    batch.add_argument("--quiet", action="store_true")
    batch.set_defaults(func=cmd_recommend_batch)

    cluster_task = sub.add_parser(
        "cluster-task", help="run this process as the worker or parameter server TF_CONFIG names (--strategy parameter-server)"
    )
    cluster_task.set_defaults(func=cmd_cluster_task)

    recommend = sub.add_parser("recommend", help="ask a TF Serving endpoint (real or `recgpt serve`) for recommendations")
    recommend.add_argument("--server", required=True, help="HOST:PORT (gRPC, or REST with --rest)")
    recommend.add_argument("--model", required=True)
    recommend.add_argument("--user", required=True)
    given = recommend.add_mutually_exclusive_group()
    given.add_argument("--history", default="", help="comma-separated item ids, oldest first")
    given.add_argument("--history-json", default=None, help='the history as a JSON list, for ids holding commas: \'["a,1", "b"]\'')
    excluded = recommend.add_mutually_exclusive_group()
    excluded.add_argument("--exclude", default="", help="comma-separated items never to return (the recommend_excluding signature)")
    excluded.add_argument("--exclude-json", default=None, help="the items never to return as a JSON list")
    recommend.add_argument("--version", type=int, default=None)
    recommend.add_argument("--rest", action="store_true")
    recommend.add_argument("--timeout", type=float, default=5.0)
    recommend.set_defaults(func=cmd_recommend)

    quick = sub.add_parser("quickstart", help="synthetic data (or --data) → train → evaluate → recommend")
    quick.add_argument("--data", type=Path, default=None, help="your own data file instead of the built-in synthetic set")
    _add_data_flags(quick)
    quick.add_argument("--out", type=Path, default=Path("recgpt-quickstart"))
    quick.add_argument("--quiet", action="store_true")
    quick.add_argument("--prompt-window", type=int, default=None, help=f"K ({PromptConfig.prompt_window})")
    _add_config_flags(quick)
    quick.set_defaults(func=cmd_quickstart)
    for name, command in sub.choices.items():  # read from each command's help: argparse keeps its actions private
        _COMMAND_FLAGS[name] = frozenset(re.findall(r"--[a-z][a-z0-9-]*", command.format_help()))
    return parser


def _message(error: ConfigError, command: str) -> str:
    """The library's message, with an argument's API name replaced by the command's flag for it (if it has one)."""
    flag = _FLAGS.get(error.argument, f"--{error.argument.replace('_', '-')}")
    if flag in _COMMAND_FLAGS.get(command, ()):
        return f"{flag} {error.problem}"
    return str(error)


# Exit statuses: 0 done; 1 the work failed (bad data, a refused export, a full disk); 2 a usage error
# (argparse's own, or an option the library refused); 3 the server failed or could not be reached.
EXIT_FAILED, EXIT_USAGE, EXIT_SERVER = 1, 2, 3
# The machine, not the program: a full disk or quota, a read-only file system, a denied permission.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    args.beam_args = unknown
    if unknown and not getattr(args, "runner", None):  # Beam's options only follow --runner
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    import grpc

    # Only what the library raises on purpose, and a server's answer, become one line; anything
    # else is a bug and keeps its traceback.
    try:
        return args.func(args)
    except ConfigError as error:  # a usage error, as argparse's own
        print(f"recgpt {args.command}: error: {_message(error, args.command)}", file=sys.stderr)
        return EXIT_USAGE
    except RestError as error:
        print(f"recgpt {args.command}: {error}", file=sys.stderr)
        return EXIT_SERVER
    except RecGPTError as error:
        print(f"recgpt {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except grpc.RpcError as error:
        print(f"recgpt {args.command}: {error.code().name}: {error.details()}", file=sys.stderr)
        return EXIT_SERVER
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRNOS:
            raise
        print(f"recgpt {args.command}: error: {error.strerror}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
