"""Warm-started retraining on a simulated day 2 of Beauty: does tomorrow's run reach today's quality in a
fraction of the epochs?

Day 2 is the paper's file. Day 1 is the same file before 5% of the users and 5% of the items existed (those
users absent, those items taken out of every sequence) and without the last interaction of a random 30% of
the other users: day 2 adds users, items and interactions. Three pre-trainings with the defaults, each in its
own run directory (resumable: rerun the command and finished runs are kept, an interrupted one resumes):
day 1 from scratch; day 2 from scratch; day 2 warm-started from day 1 (`Run.train(warm_start=...)`).
Reported: each run's validation NDCG@10 per evaluated epoch (history.csv), and the warm start's before its
first epoch (its summary's `warm_start.valid_before_training`); the epoch at which the warm
start first reaches the from-scratch run's best validation NDCG@10; and every run's test figures.
`--warm-learning-rate` / `--warm-warmup-steps` train the warm start on its own schedule (its run
directory then names them).

    python benchmarks/warm_start.py --data ../shared/data/Beauty.txt --json benchmarks/results/warm_start_Beauty.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

import numpy as np

from lab import stamp, write_report
from recgpt_tf.config import TrainConfig
from recgpt_tf.data import Dataset, load_interactions
from recgpt_tf.evaluation import evaluate_model
from recgpt_tf.runs import Run
from recgpt_tf.training import MONITOR


def day_one(interactions: dict[str, list[str]], share: float, new_items: float, new_users: float, seed: int) -> dict[str, list[str]]:
    """Day 1 of a catalogue that grows into `interactions` (day 2): a random `new_users` share of the users
    and a random `new_items` share of the items do not exist yet (the items are taken out of every
    sequence), and a random `share` of the remaining users lack their last interaction (kept when that
    would leave fewer than 3 items, the least leave-one-out needs). Users left without items are absent."""
    rng = np.random.default_rng(seed)
    users = list(interactions)
    catalogue = sorted({item for items in interactions.values() for item in items})
    later_users = set(rng.choice(users, size=int(new_users * len(users)), replace=False))
    later_items = set(rng.choice(catalogue, size=int(new_items * len(catalogue)), replace=False))
    known = [u for u in users if u not in later_users]
    cut = set(rng.choice(known, size=int(share * len(known)), replace=False))
    day = {}
    for user in known:
        items = [item for item in interactions[user] if item not in later_items]
        items = items[:-1] if user in cut and len(items) > 3 else items
        if items:
            day[user] = items
    return day


def curve(run: Run) -> list[float]:
    with (run.stage_dir("pretrain") / "history.csv").open() as handle:
        return [float(row[MONITOR]) for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--share", type=float, default=0.3, help="users whose last interaction day 1 lacks")
    parser.add_argument("--new-items", type=float, default=0.05, help="share of the items first seen on day 2")
    parser.add_argument("--new-users", type=float, default=0.05, help="share of the users first seen on day 2")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="cap (default: TrainConfig's); small values only to smoke-test")
    parser.add_argument("--warm-learning-rate", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--warm-warmup-steps", type=int, default=TrainConfig.warmup_steps)
    parser.add_argument("--runs", type=Path, default=Path("runs/warm_start"))
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    full = load_interactions(args.data)
    days = {
        "day1": Dataset.from_interactions(day_one(full, args.share, args.new_items, args.new_users, args.seed), "day1"),
        "day2": Dataset.from_interactions(full, "day2"),
    }
    config = TrainConfig(seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
    warm_config = dataclasses.replace(config, learning_rate=args.warm_learning_rate, warmup_steps=args.warm_warmup_steps)
    schedule = "" if warm_config == config else f"_lr{args.warm_learning_rate:g}_warmup{args.warm_warmup_steps}"
    runs = {}
    # Day 1 and the warm start depend on how day 1 was cut; day 2 from scratch does not (reused across cuts).
    cut = f"s{args.share}_i{args.new_items}_u{args.new_users}_seed{args.seed}"
    directories = {"day1": f"day1_{cut}", "day2_scratch": f"day2_scratch_seed{args.seed}", "day2_warm": f"day2_warm_{cut}{schedule}"}
    for name, dataset, warm in (("day1", days["day1"], None), ("day2_scratch", days["day2"], None), ("day2_warm", days["day2"], "day1")):
        run = Run.create(args.runs / directories[name], dataset, seed=args.seed)
        source = args.runs / directories[warm] if warm else None
        run.train(dataset, "pretrain", warm_config if warm else config, verbose=2, warm_start=source)
        runs[name] = run
    report = stamp(
        {
            "data": str(args.data),
            "share": args.share,
            "new_items": args.new_items,
            "new_users": args.new_users,
            "seed": args.seed,
            "warm_learning_rate": args.warm_learning_rate,
            "warm_warmup_steps": args.warm_warmup_steps,
            "runs": {},
        }
    )
    for name, run in runs.items():
        dataset = days["day1" if name == "day1" else "day2"]
        summary = run.summary("pretrain")
        report["runs"][name] = {
            "valid_ndcg10_per_epoch": curve(run),
            "best_epoch": summary["best_epoch"],
            "epochs": summary["epochs"],
            "valid": summary["valid"],
            "test": evaluate_model(run.load_model("pretrain"), dataset.split("test")),
            "train_seconds": round(summary["seconds"], 1),
            **({"warm_start": summary["warm_start"]} if "warm_start" in summary else {}),
        }
    scratch, warm = report["runs"]["day2_scratch"], report["runs"]["day2_warm"]
    target = max(scratch["valid_ndcg10_per_epoch"])
    reached = next((i + 1 for i, v in enumerate(warm["valid_ndcg10_per_epoch"]) if v >= target), None)
    report["warm_reaches_scratch_best_at_epoch"] = reached
    report["scratch_best_epoch"] = scratch["best_epoch"]
    report["epoch_ratio"] = reached / scratch["best_epoch"] if reached else None
    write_report(args.json, report)
    print({k: report[k] for k in ("warm_reaches_scratch_best_at_epoch", "scratch_best_epoch", "epoch_ratio")})


if __name__ == "__main__":
    main()
