"""Pre-training quality on the paper's datasets, next to the paper's rows.

Trains RecGPT with the default configuration (or overrides) on each dataset,
selects the epoch on validation NDCG@10, and reports validation and test
HR/NDCG@{5,10,20} under the paper's protocol, the popularity baseline, the
objective, epochs, seconds per epoch, sequences per second and the time of one
full-ranking evaluation of every user.

    python benchmarks/quality.py --json results/quality.json --markdown results/quality.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from lab import machine, pretraining_markdown, pretraining_report, utc_now
from recgpt_tf.config import ModelConfig, TrainConfig
from recgpt_tf.data import Dataset
from recgpt_tf.runs import Run

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_DATA = [SHARED / "Beauty.txt", SHARED / "Sports_and_Outdoors.txt"]


def run_one(path: Path, model_overrides: dict, train_config: TrainConfig, run_root: Path) -> dict:
    dataset = Dataset.from_file(path)
    model_config = ModelConfig(num_items=dataset.num_items, num_users=dataset.num_users, **model_overrides)
    Run.create(run_root / dataset.name, dataset, model_config, seed=train_config.seed).pretrain(dataset, train_config, verbose=2)
    return pretraining_report(run_root / dataset.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/quality.json"))
    parser.add_argument("--markdown", type=Path, default=Path("benchmarks/results/quality.md"))
    parser.add_argument("--runs", type=Path, default=Path("runs/quality"))
    for field in dataclasses.fields(TrainConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=None)
    for field in dataclasses.fields(ModelConfig):
        if field.name in ("num_items", "num_users"):
            continue
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(field.default, bool) else type(field.default)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=None)
    args = parser.parse_args()

    train_config = TrainConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None}
    )
    model_overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ModelConfig)
        if f.name not in ("num_items", "num_users") and getattr(args, f.name) is not None
    }
    when = utc_now()
    results = [run_one(path, model_overrides, train_config, args.runs) for path in args.data]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"measured": when, "machine": machine(), "results": results}, indent=2) + "\n")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(pretraining_markdown(results, when))
    print(pretraining_markdown(results, when))


if __name__ == "__main__":
    main()
