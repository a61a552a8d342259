"""Seconds of one pre-training epoch (training only, no validation) for model and training variants.

Each variant builds the model and the default `token_budget` batches for the data file, trains five
warm-up steps, then one timed epoch. Variants run one after another in this process, so compare them
within one run (the machine's speed varies from day to day).

    python benchmarks/epoch_cost.py ../shared/data/Beauty.txt --json benchmarks/results/epoch_cost_Beauty.json \\
        --variant width64:hidden_size=64,intermediate_size=256,label_smoothing=0 --variant default:
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import tf_keras as keras  # noqa: E402

from lab import configs, machine, utc_now  # noqa: E402
from recgpt_tf.data import Dataset  # noqa: E402
from recgpt_tf.experimental import LabModelConfig  # noqa: E402
from recgpt_tf.files import write_json  # noqa: E402
from recgpt_tf.training.fit import build_model, make_optimizer  # noqa: E402
from recgpt_tf.training.pretrain import pretraining_data  # noqa: E402


def parse_variant(text: str) -> tuple[str, dict, dict]:
    """`NAME:field=value,…` → (name, model changes, training changes): fields of `ModelConfig` or of the lab's
    `LabModelConfig` are the model's, the others the schedule's; a value is an int, a float or else a string
    (`objective=bce`)."""
    name, _, assignments = text.partition(":")
    model_fields = {f.name for f in dataclasses.fields(LabModelConfig)}
    model_changes, train_changes = {}, {}
    for assignment in filter(None, assignments.split(",")):
        field, _, value = assignment.partition("=")
        (model_changes if field in model_fields else train_changes)[field] = _value(value)
    return name, model_changes, train_changes


def _value(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def epoch_seconds(dataset: Dataset, model_changes: dict, train_changes: dict) -> float:
    """Seconds of one epoch of `model.fit` on `dataset`'s training split, after five traced warm-up steps."""
    model_config, train_config = configs(dataset.num_items, dataset.num_users, model_changes, train_changes)
    train_config = train_config.for_catalogue(dataset.num_items)
    keras.utils.set_random_seed(train_config.seed)
    _, batches, _ = pretraining_data(dataset, model_config.max_length, train_config, None)
    model = build_model(model_config, train_config.objective, label_smoothing=train_config.label_smoothing)
    model.set_item_frequencies(dataset.item_counts())
    model.compile(optimizer=make_optimizer(train_config, lambda: int(batches.reduce(0, lambda n, _: n + 1))))
    model.fit(batches.take(5), epochs=1, verbose=0)  # traces the step
    start = time.perf_counter()
    model.fit(batches, epochs=1, verbose=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--variant", action="append", required=True, help="NAME:field=value,… (ModelConfig or TrainConfig fields)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    dataset = Dataset.from_file(args.data)
    rows = {}
    for text in args.variant:
        name, model_changes, train_changes = parse_variant(text)
        rows[name] = {"model": model_changes, "train": train_changes, "epoch_seconds": epoch_seconds(dataset, model_changes, train_changes)}
        print(name, f"{rows[name]['epoch_seconds']:.1f} s", flush=True)
    measured = utc_now()
    write_json(args.json, {"measured": measured, "machine": machine(), "data": str(args.data), "variants": rows})


if __name__ == "__main__":
    main()
