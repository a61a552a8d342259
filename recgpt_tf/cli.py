"""The `recgpt` command line (contract in the README's CLI reference)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from recgpt_tf.config import OBJECTIVES, ModelConfig, TrainConfig, write_json
from recgpt_tf.data.readers import FORMATS, DataFormatError

STAGES = ("pretrain",)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ModelConfig/TrainConfig field (except the data-derived sizes)."""
    group = parser.add_argument_group("model and training (defaults are the tuned ones)")
    for config in (ModelConfig, TrainConfig):
        for field in dataclasses.fields(config):
            if field.name in ("num_items", "num_users"):
                continue
            flag = f"--{field.name.replace('_', '-')}"
            if isinstance(field.default, bool):
                group.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=None, metavar="BOOL")
            elif field.name == "objective":
                group.add_argument(flag, choices=OBJECTIVES, default=None)
            else:
                group.add_argument(flag, type=type(field.default), default=None)


def _configs(args: argparse.Namespace, num_items: int, num_users: int) -> tuple[ModelConfig, TrainConfig]:
    pick = lambda cls: {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}  # noqa: E731
    return ModelConfig(num_items=num_items, num_users=num_users, **pick(ModelConfig)), TrainConfig(**pick(TrainConfig))


def cmd_train(args: argparse.Namespace) -> int:
    from recgpt_tf.data.dataset import Dataset
    from recgpt_tf.training.pretrain import pretrain

    dataset = Dataset.from_file(args.data, args.format)
    model_config, train_config = _configs(args, dataset.num_items, dataset.num_users)
    print(f"{args.data}: {dataset.num_users} users, {dataset.num_items} items, {dataset.num_interactions} interactions")
    _, summary = pretrain(dataset, args.out, model_config, train_config, verbose=0 if args.quiet else 1)
    print(
        f"pre-training done: {summary['epochs']} epochs ({summary['seconds']:.0f}s), best epoch {summary['best_epoch']}, "
        f"valid HR@10 {summary['valid'].get('HR@10', float('nan')):.4f} NDCG@10 {summary['valid'].get('NDCG@10', float('nan')):.4f}; "
        f"weights in {Path(args.out) / 'pretrain'}"
    )
    return 0


def evaluate_run(run_dir: Path, data: Path, data_format: str | None = None) -> dict:
    """The `evaluate --json` document for a trained run (architecture.md)."""
    from recgpt_tf.evaluation.evaluate import PROTOCOL, evaluate_model
    from recgpt_tf.runs import Run

    run = Run.open(run_dir)
    dataset = run.dataset(data, data_format)
    test = dataset.split("test")
    results = {"pretrain": evaluate_model(run.load_model("pretrain"), test)}
    train_seconds = 0.0
    for stage in STAGES:
        summary = run.path / stage / "summary.json"
        if summary.is_file():
            import json

            train_seconds += float(json.loads(summary.read_text()).get("seconds", 0.0))
    return {
        "dataset": dataset.name,
        "users": len(test),
        "items": dataset.num_items,
        "protocol": PROTOCOL,
        "results": results,
        "train_seconds": train_seconds,
    }


def _print_results(report: dict) -> None:
    keys = ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20")
    print(f"{report['dataset']}: {report['users']} users, {report['items']} items ({report['protocol']}), test split")
    print(f"{'variant':<20}" + "".join(f"{k:>9}" for k in keys))
    for name, metrics in report["results"].items():
        print(f"{name:<20}" + "".join(f"{metrics[k]:>9.4f}" for k in keys))


def cmd_evaluate(args: argparse.Namespace) -> int:
    report = evaluate_run(Path(args.run_dir), Path(args.data), args.format)
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
    from recgpt_tf.inference.recall import one_step_recall
    from recgpt_tf.training.pretrain import pretrain

    start = time.perf_counter()
    out = Path(args.out)
    if args.data:
        dataset = Dataset.from_file(args.data, args.format)
        data_path = Path(args.data)
    else:
        out.mkdir(parents=True, exist_ok=True)
        data_path = out / "synthetic.txt"
        sequences = synthetic_sequences(seed=args.seed)
        data_path.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in sequences.items()))
        dataset = Dataset.from_file(data_path)
    print(f"[1/3] data {data_path}: {dataset.num_users} users, {dataset.num_items} items, {dataset.num_interactions} interactions")
    model_config, train_config = _configs(args, dataset.num_items, dataset.num_users)
    if args.epochs is None:
        train_config.epochs = 30
    run_dir = out / "run"
    print(f"[2/3] pre-training ({train_config.objective}, up to {train_config.epochs} epochs) into {run_dir}")
    model, summary = pretrain(dataset, run_dir, model_config, train_config, verbose=0 if args.quiet else 1)
    print("[3/3] evaluation (test split)")
    report = evaluate_run(run_dir, data_path, args.format)
    report["results"]["popularity"] = evaluate_popularity(dataset, dataset.split("test"))
    _print_results(report)
    write_json(out / "metrics.json", report)

    test = dataset.split("test")
    user, history = test.users[0], test.histories[0]
    items, scores = one_step_recall(model, user[None], [history], k=10)
    print(f"\nuser {dataset.user_vocab.decode([user])[0]}: history (most recent last) {' '.join(dataset.item_vocab.decode(history[-10:]))}")
    print(f"top 10: {' '.join(dataset.item_vocab.decode(items[0]))}")
    print(f"held-out next item: {dataset.item_vocab.decode([test.targets[0]])[0]}")
    print(f"\ndone in {time.perf_counter() - start:.0f}s: run {run_dir}, metrics {out / 'metrics.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recgpt", description="RecGPT on TensorFlow: train, evaluate, recommend.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model on DATA into RUN_DIR (resumes an interrupted run)")
    train.add_argument("data", type=Path)
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument("--format", choices=FORMATS, default=None, help="data format (default: from the suffix)")
    train.add_argument("--stages", choices=STAGES, default="pretrain")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="paper-protocol evaluation of a trained run on DATA")
    evaluate.add_argument("run_dir", type=Path)
    evaluate.add_argument("data", type=Path)
    evaluate.add_argument("--format", choices=FORMATS, default=None)
    evaluate.add_argument("--json", type=Path, default=None, help="write the results document here")
    evaluate.set_defaults(func=cmd_evaluate)

    quick = sub.add_parser("quickstart", help="synthetic data (or --data) → train → evaluate → recommend")
    quick.add_argument("--data", type=Path, default=None, help="your own data file instead of the built-in synthetic set")
    quick.add_argument("--format", choices=FORMATS, default=None)
    quick.add_argument("--out", type=Path, default=Path("recgpt-quickstart"))
    quick.add_argument("--quiet", action="store_true")
    _add_config_flags(quick)
    quick.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataFormatError, FileNotFoundError, ValueError) as error:
        print(f"recgpt {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
