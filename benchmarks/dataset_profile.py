"""What differs between the paper's datasets, for telling why a recipe transfers from one to another:
sequence lengths, catalogue size and item frequency in the training split, and how often a test target is
an item the model saw rarely (or never) in training.

    python benchmarks/dataset_profile.py --data ../shared/data/Beauty.txt ../shared/data/Sports_and_Outdoors.txt \
        --json benchmarks/results/dataset_profile.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lab import stamp, write_report
from recgpt_tf.data import Dataset


def profile(dataset: Dataset) -> dict:
    train = dataset.train_sequences()
    lengths = np.array([len(s) for s in train])
    counts = dataset.item_counts()[1 : dataset.num_items + 1]  # training interactions per item
    targets = dataset.split("test").targets
    target_counts = counts[targets - 1]
    return {
        "users": dataset.num_users,
        "items": dataset.num_items,
        "training_targets": int(np.maximum(lengths - 1, 0).sum()),
        "train_length": {"mean": float(lengths.mean()), "median": float(np.median(lengths)), "p90": float(np.percentile(lengths, 90))},
        "training_targets_per_item": float(np.maximum(lengths - 1, 0).sum() / dataset.num_items),
        "items_with_training_interactions_below": {str(n): float(np.mean(counts < n)) for n in (1, 5, 10)},
        "test_targets_with_training_interactions_below": {str(n): float(np.mean(target_counts < n)) for n in (1, 5, 10)},
        "top_1pct_items_share_of_training_interactions": float(np.sort(counts)[::-1][: max(1, len(counts) // 100)].sum() / counts.sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    report = stamp({"split": "leave-one-out; training split = all but each user's last two items", "datasets": {}})
    for path in args.data:
        dataset = Dataset.from_file(path)
        report["datasets"][dataset.name] = profile(dataset)
        print(dataset.name, report["datasets"][dataset.name], flush=True)
    write_report(args.json, report)


if __name__ == "__main__":
    main()
