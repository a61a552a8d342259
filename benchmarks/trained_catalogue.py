"""A RecGPT trained over a large synthetic catalogue (100k to 1M+ items), for index benchmarks.

An ANN index must be judged on the geometry a trained model produces: item
embeddings pulled into clusters by co-occurrence, and queries (h1, h2) that sit
near the items they predict. Random vectors are the worst case, not the usual
one. This script makes such a model honestly on the 2-core machine:

- Data: `recgpt_tf.data.synthetic`'s process (topics with Zipf popularity, a
  successor item per item, users drifting among favourite topics), drawn for
  all users at once with numpy so a million items and users take seconds.
- Model: the package's `RecGPT` (d 64, 1 block, 2 heads), objective
  `sampled_softmax` (in-batch negatives with log-Q correction: a full softmax
  over 1M items per position is what does not fit 2 cores), optimiser Adagrad,
  whose sparse updates touch only the rows a batch used (Adam's moment decay
  rewrites the whole 1M-row tables at every step).
- It writes a run directory (`recgpt export RUN_DIR ...` works on it) and a
  `RUN_DIR.trained_catalogue.json` beside it with the data statistics, the training time, and
  HR@10 / NDCG@10 on a sample of test users (paper protocol) beside popularity,
  to show the model learned the structure. Interrupted, it resumes (Keras
  `BackupAndRestore`); a finished run is reused.

    python benchmarks/trained_catalogue.py --items 1000000 --users 1000000 --out /tmp/trained-1m
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import recgpt_tf  # noqa: F401  (first: it selects Keras 2, which TFRS needs, before TensorFlow loads)

# isort: split

import numpy as np
import tf_keras as keras

from lab import add_catalogue_arguments, make_dataset, utc_now
from recgpt_tf.config import ModelConfig, TrainConfig
from recgpt_tf.data import Dataset
from recgpt_tf.data.pipeline import training_dataset
from recgpt_tf.evaluation import evaluate_model, evaluate_popularity
from recgpt_tf.files import write_json
from recgpt_tf.runs import Run
from recgpt_tf.training.fit import build_model


def subsample(split, count: int, seed: int):
    chosen = np.random.default_rng(seed).choice(len(split), size=min(count, len(split)), replace=False)
    return type(split)(split.users[chosen], [split.histories[i] for i in chosen], split.targets[chosen])


def train(dataset: Dataset, args, out: Path):
    """Trains into `out` (a run directory), writes pretrain/summary.json; resumes after an interruption."""
    model_config = ModelConfig(
        num_items=dataset.num_items, num_users=dataset.num_users, hidden_size=64, intermediate_size=256, num_layers=1, dropout=0.2
    )
    train_config = TrainConfig(
        objective="sampled_softmax", epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed
    )
    run = Run.create(out, dataset, model_config, seed=args.seed)
    run.begin_stage("pretrain", {**train_config.to_dict(), "optimizer": "adagrad"})
    keras.utils.set_random_seed(args.seed)
    model = build_model(model_config, train_config.objective)
    model.set_item_frequencies(dataset.item_counts())
    model.compile(optimizer=keras.optimizers.Adagrad(learning_rate=args.learning_rate))
    data = training_dataset(
        dataset.users, dataset.train_sequences(), model_config.max_length, args.batch_size, seed=args.seed, batching="bucketed"
    )  # as measured
    start = time.perf_counter()
    history = model.fit(
        data, epochs=args.epochs, verbose=2, callbacks=[keras.callbacks.BackupAndRestore(str(run.stage_dir("pretrain") / "backup"))]
    )
    model.save_weights(str(run.stage_dir("pretrain") / "weights"))
    run.finish_stage(
        "pretrain",
        {
            "train_seconds": time.perf_counter() - start,
            "epochs": len(history.history.get("loss", [])),
            "loss_per_epoch": [float(v) for v in history.history.get("loss", [])],
        },
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_catalogue_arguments(parser)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=0.3)
    parser.add_argument("--eval-users", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out = args.out
    report_path = Path(f"{out}.trained_catalogue.json")  # beside the run: only `Run` writes inside it
    if report_path.exists():
        print(f"{out}: already trained and measured; reusing it")
        return

    start = time.perf_counter()
    dataset = make_dataset(args)
    data_seconds = time.perf_counter() - start
    trained = (out / "pretrain" / "summary.json").exists()
    # Trained by an earlier process that stopped before measuring: measure only.
    model = Run.open(out).load_model("pretrain") if trained else train(dataset, args, out)
    test = subsample(dataset.split("test"), args.eval_users, args.seed)
    train_counts = dataset.item_counts(dataset.train_sequences())[1 : dataset.num_items + 1]
    report = {
        "measured": utc_now(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "recipe": vars(args) | {"out": str(out), "objective": "sampled_softmax", "optimizer": "adagrad", "num_layers": 1, "dropout": 0.2},
        "statistics": dataset.statistics(),
        "items_seen_in_training": int((train_counts > 0).sum()),
        "data_seconds": data_seconds,
        "training": Run.open(out).summary("pretrain"),
        "test_sample_users": len(test),
        "test_sample": evaluate_model(model, test, batch_size=64),  # [64, N] score rows: 256 MB at 1M items
        "test_sample_popularity": evaluate_popularity(dataset, test, batch_size=64),
    }
    write_json(report_path, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
