"""Pre-training throughput and peak memory per task at a large catalogue: one process against a local
parameter-server cluster (a coordinator, workers and parameter servers on 127.0.0.1).

The data is `trained_catalogue.py`'s synthetic process (1M users over 1M items by default). Each mode
runs in a fresh process (a strategy must exist before TensorFlow starts), builds the package's model and
input pipeline as `recgpt train` does (sampled softmax, the configured batching), and times a fixed number
of training steps after warm-up. Sequences/s = steps x batch / seconds. Peak memory: each process's
high-water resident set (VmHWM). Results are written after every mode.

`--input memory` holds the data set in every process (`Dataset`); `--input stream` writes it once as
8 TFRecord shards and trains as `recgpt train "shards-*.tfrecord.gz"` does (`StreamedDataset`: one
scan for the vocabularies and a validation sample, then each worker streams its own shards).

On a 2-core machine every task shares the same two cores: the cluster rows show what the split costs
(RPCs, the coordinator) and where the memory goes, not a speed-up.

`--item-features M` trains with item features: each item holds M values drawn at random from
`--feature-values` (what they are does not matter to the cost, only how many); `--label` names the rows, so
that the same file can hold the rows of two versions of the code, run with the package on `PYTHONPATH`.

    python benchmarks/distributed_throughput.py --json benchmarks/results/distributed_throughput.json [--input stream]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import recgpt_tf  # noqa: F401, E402  (first: it selects Keras 2, which TFRS needs)
from lab import (  # noqa: E402
    add_catalogue_arguments,
    make_dataset,
    utc_now,
)
from recgpt_tf.config import ModelConfig, TrainConfig  # noqa: E402
from recgpt_tf.data import write_examples  # noqa: E402
from recgpt_tf.data.streaming import StreamedDataset  # noqa: E402
from recgpt_tf.files import write_json  # noqa: E402
from recgpt_tf.training.distribute import free_local_ports  # noqa: E402
from recgpt_tf.training.fit import build_model, make_optimizer  # noqa: E402
from recgpt_tf.training.pretrain import pretraining_data  # noqa: E402

# The arguments that define a measurement: passed to each mode's process and kept in the JSON.
RECIPE = (
    "items",
    "users",
    "topics",
    "mean_length",
    "seed",
    "batch_size",
    "steps",
    "warmup_steps",
    "input",
    "item_features",
    "feature_values",
)
RESULT = "RESULT "  # the prefix of the child's result line (TensorFlow may log after it)
SHARDS = 8  # streamed input: enough files for 8 workers


def _peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> dict:
    """One mode, in this process (TF_CONFIG already set for the parameter-server coordinator)."""
    strategy_name = "single" if args.mode == "single" else "parameter-server"
    start = time.perf_counter()
    vocabulary_files = None
    if args.input == "stream":
        dataset = StreamedDataset.scan([str(args.shards / "train-*.tfrecord.gz")], validation_users=1000)
        vocabulary_files = (args.shards / "items.txt", args.shards / "users.txt")
        dataset.item_vocab.save(vocabulary_files[0])
        dataset.user_vocab.save(vocabulary_files[1])
    else:
        dataset = make_dataset(args)
    data_seconds = time.perf_counter() - start
    features = {"num_feature_values": args.feature_values, "max_item_features": args.item_features} if args.item_features else {}
    model_config = ModelConfig(
        num_items=dataset.num_items, num_users=dataset.num_users, hidden_size=64, intermediate_size=256, num_layers=1, dropout=0.2,
        **features,
    )  # fmt: skip
    train_config = TrainConfig(objective="sampled_softmax", batch_size=args.batch_size, strategy=strategy_name, seed=args.seed)
    strategy, train_data, steps_per_epoch = pretraining_data(dataset, model_config.max_length, train_config, vocabulary_files)
    if steps_per_epoch is None:
        train_data = train_data.repeat()  # one process: the fits below take fixed numbers of steps
    with strategy.scope():
        model = build_model(model_config, train_config.objective)
        model.set_item_frequencies(dataset.item_counts())
        if args.item_features:
            values = np.random.default_rng(args.seed).integers(1, args.feature_values + 1, (dataset.num_items + 2, args.item_features))
            values[[0, -1]] = 0  # padding and the OOV item hold none
            model.set_item_features(values)
        model.compile(optimizer=make_optimizer(train_config, lambda: args.warmup_steps + args.steps))
    # The first fit traces and warms up; the second, on the same compiled step, is timed end to end
    # (a parameter-server fit returns once every scheduled step has run on a worker).
    model.fit(train_data, epochs=1, steps_per_epoch=args.warmup_steps, verbose=0)
    start = time.perf_counter()
    model.fit(train_data, epochs=1, steps_per_epoch=args.steps, verbose=0)
    seconds = time.perf_counter() - start
    return {
        "data_seconds": data_seconds,
        "timed_steps": args.steps,
        "seconds": seconds,
        "sequences_per_second": args.steps * args.batch_size / seconds,
        "peak_rss_mb": {"coordinator" if strategy_name != "single" else "process": _peak_rss_mb()},
    }


def run_mode(args: argparse.Namespace, mode: str) -> dict:
    """Runs `mode` in fresh processes (and its cluster's servers) and returns its figures."""
    command = [sys.executable, __file__, "--child", "--mode", mode, *_passthrough(args)]
    env = dict(os.environ)
    servers = []
    if mode.startswith("parameter-server"):
        workers, ps = (int(x) for x in mode.split(":")[1].split("x"))
        ports = free_local_ports(1 + workers + ps)
        cluster = {
            "chief": [f"127.0.0.1:{ports[0]}"],
            "worker": [f"127.0.0.1:{p}" for p in ports[1 : 1 + workers]],
            "ps": [f"127.0.0.1:{p}" for p in ports[1 + workers :]],
        }
        recgpt = os.path.join(os.path.dirname(sys.executable), "recgpt")
        for kind, count in (("worker", workers), ("ps", ps)):
            for index in range(count):
                task_env = {**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})}
                servers.append(
                    (
                        f"{kind}_{index}",
                        subprocess.Popen([recgpt, "cluster-task"], env=task_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                    )
                )
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
    try:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = process.communicate(timeout=args.timeout)[0]
        server_peaks = {name: _peak_rss_mb(server.pid) for name, server in servers}
    finally:
        for _, server in servers:
            server.kill()
    results = [line[len(RESULT) :] for line in output.splitlines() if line.startswith(RESULT)]
    if process.returncode != 0 or not results:
        return {"error": f"exit {process.returncode}", "output_tail": output[-2000:]}
    result = json.loads(results[-1])
    result["peak_rss_mb"].update(server_peaks)
    return result


def write_shards(args: argparse.Namespace) -> None:
    """The synthetic data as `SHARDS` TFRecord files in `args.shards` (once: kept for later runs)."""
    if list(args.shards.glob("train-*.tfrecord.gz")):
        return
    args.shards.mkdir(parents=True, exist_ok=True)
    dataset = make_dataset(args)
    items = dataset.item_vocab.tokens
    interactions = {str(user): [items[i - 1] for i in sequence] for user, sequence in zip(dataset.users, dataset.sequences)}
    write_examples(interactions, args.shards / "train.tfrecord.gz", SHARDS)


def _passthrough(args: argparse.Namespace) -> list[str]:
    return [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in RECIPE] + [f"--shards={args.shards}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_catalogue_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per mode")
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["single", "parameter-server:1x2", "parameter-server:2x2"],
        help="single, or parameter-server:WORKERSxPS",
    )
    parser.add_argument("--input", choices=("memory", "stream"), default="memory")
    parser.add_argument("--shards", type=Path, default=Path("/tmp/recgpt-throughput-shards"), help="streamed input: where the shards go")
    parser.add_argument("--item-features", type=int, default=0, help="values per item (0: id only)")
    parser.add_argument("--feature-values", type=int, default=10_000, help="distinct feature values")
    parser.add_argument("--label", default="", help="appended to each row's name")
    parser.add_argument("--timeout", type=int, default=3000)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/distributed_throughput.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="single", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(RESULT + json.dumps(child(args)), flush=True)
        return

    if args.input == "stream":
        write_shards(args)
    report = json.loads(args.json.read_text()) if args.json.exists() else {}
    report.update(
        measured=utc_now(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}",
        recipe={k: getattr(args, k) for k in RECIPE if k != "input"}  # "modes": input memory, "streamed_modes": stream
        | {"objective": "sampled_softmax", "num_layers": 1, "optimizer": "Adam (the package's)"},
    )
    modes = report.setdefault("modes" if args.input == "memory" else "streamed_modes", {})
    for mode in args.modes:
        row = f"{mode} ({args.label})" if args.label else mode
        if row in modes and "error" not in modes[row]:
            continue  # measured by an earlier run
        modes[row] = run_mode(args, mode)
        print(row, json.dumps(modes[row]), flush=True)
        write_json(args.json, report)


if __name__ == "__main__":
    main()
