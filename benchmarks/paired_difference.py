"""How far apart two recipes are on one split, with the noise of the split's users: a paired comparison.

The seed spread says how much a recipe's figure moves with its seed; it does not say how much two recipes'
figures differ by the luck of which users hold out which items. Each arm is one or more runs (its seeds);
each run's one-step ranking of every user's held-out item is scored (`model_ranks`: leave-one-out, full
ranking, history excluded), each user's HR@10 and NDCG@10 are averaged over the arm's seeds, and the
difference of the two arms is taken user by user. Its mean is the difference of the arms' means. Two
sources of noise are reported: over users (paired, so what both arms find easy or hard cancels), what
the seed spread does not show; and over seeds (each arm's spread of its runs' means, as if unpaired,
which overstates it for arms that share pre-trained weights). The standard error combines both; a
difference smaller than about twice it is not a finding.

    python benchmarks/paired_difference.py --data ../shared/data/Beauty.txt \
        --a runs/seeds/Beauty/defaults+all@seed{1,2,3} --a-stage prompt \
        --b runs/seeds/Beauty/sasrec_ce_layout@seed{1,2,3} --json benchmarks/results/paired_Beauty.json

`--by-target-popularity` also splits the difference by how often each user's held-out item occurs in the
training sequences, and reweights the validation users to the test split's mix of those buckets: if a lead on
validation that test does not show comes from the splits' different mixes of popular targets, the reweighted
validation difference predicts the test one.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np

from lab import machine, utc_now  # noqa: E402
from recgpt_tf.evaluation.evaluate import model_ranks  # noqa: E402
from recgpt_tf.evaluation.metrics import per_user_metrics  # noqa: E402
from recgpt_tf.files import write_json  # noqa: E402
from recgpt_tf.runs import Run  # noqa: E402

CUTOFF = 10
SPLITS = ("valid", "test")
# Buckets of a held-out item's count in the training sequences: 0, 1-4, 5-19, 20-99, 100 and more.
POPULARITY_EDGES = (1, 5, 20, 100)


def arm_scores(paths: list[Path], stage: str, data: Path, trained_on: dict) -> tuple[dict, dict]:
    """Per split and metric, [num_users] scores averaged over the arm's runs, and each run's mean. Every run
    must have trained on the data whose statistics are `trained_on` (users are paired by position)."""
    sums: dict = {}
    per_run: dict = {}
    for path in paths:
        run = Run.open(path)
        if run.config.get("statistics") != trained_on:
            raise SystemExit(f"{path} trained on other data than {paths[0]}: its users cannot be paired")
        dataset = run.dataset(data)
        model = run.load_model(stage)
        for split in SPLITS:
            for metric, values in per_user_metrics(model_ranks(model, dataset.split(split)), (CUTOFF,)).items():
                sums[(split, metric)] = sums.get((split, metric), 0.0) + values
                per_run.setdefault(split, {}).setdefault(metric, []).append(round(float(values.mean()), 5))
    return {key: total / len(paths) for key, total in sums.items()}, per_run


def seed_error(means: list[float]) -> float:
    """Squared standard error of an arm's mean over its runs (0 for one run)."""
    return statistics.variance(means) / len(means) if len(means) > 1 else 0.0


def compare(a: dict, b: dict, runs_a: dict, runs_b: dict) -> dict:
    """Per split and metric: each arm's mean, the paired difference, its standard errors over users, over
    seeds and combined, and a normal 95% interval on the combined one."""
    result: dict = {}
    for (split, metric), scores_a in a.items():
        difference = scores_a - b[(split, metric)]
        users = float(difference.std(ddof=1) / math.sqrt(len(difference)))
        seeds = math.sqrt(seed_error(runs_a[split][metric]) + seed_error(runs_b[split][metric]))
        error = math.hypot(users, seeds)
        mean = float(difference.mean())
        result.setdefault(split, {})[metric] = {
            "a": round(float(scores_a.mean()), 5),
            "b": round(float(b[(split, metric)].mean()), 5),
            "difference": round(mean, 5),
            "standard_error_users": round(users, 5),
            "standard_error_seeds": round(seeds, 5),
            "standard_error": round(error, 5),
            "interval_95": [round(mean - 1.96 * error, 5), round(mean + 1.96 * error, 5)],
            "users": len(difference),
        }
    return result


def popularity_buckets(run_path: Path, data: Path) -> dict[str, np.ndarray]:
    """Per split, each evaluated user's bucket (an index into POPULARITY_EDGES' intervals) of their held-out
    item's count in the training sequences."""
    dataset = Run.open(run_path).dataset(data)
    counts = dataset.item_counts()
    return {split: np.searchsorted(POPULARITY_EDGES, counts[dataset.split(split).targets], side="right") for split in SPLITS}


def bucket_label(bucket: int) -> str:
    edges = (0, *POPULARITY_EDGES)
    if bucket == len(POPULARITY_EDGES):
        return f"{edges[bucket]}+"
    low, high = edges[bucket], edges[bucket + 1] - 1
    return str(low) if low == high else f"{low}-{high}"


def by_popularity(a: dict, b: dict, buckets: dict[str, np.ndarray]) -> dict:
    """Per split and bucket, the users' share and each metric's paired difference (± its standard error over
    users; None where the bucket has too few users); and the validation difference with validation's buckets
    weighted to test's shares, over the buckets with at least two users on validation (renormalised)."""
    result: dict = {"buckets": {}, "valid_at_test_shares": {}}
    count = len(POPULARITY_EDGES) + 1
    shares = {split: np.bincount(buckets[split], minlength=count) / len(buckets[split]) for split in SPLITS}
    for (split, metric), scores_a in a.items():
        difference = scores_a - b[(split, metric)]
        rows = result["buckets"].setdefault(split, {})
        for bucket in range(count):
            chosen = difference[buckets[split] == bucket]
            row = rows.setdefault(bucket_label(bucket), {"share": round(float(shares[split][bucket]), 4), "users": len(chosen)})
            enough = len(chosen) > 1
            row[metric] = {
                "difference": round(float(chosen.mean()), 5) if enough else None,
                "standard_error_users": round(float(chosen.std(ddof=1) / math.sqrt(len(chosen))), 5) if enough else None,
            }
    for metric in sorted({metric for _, metric in a}):
        rows = [result["buckets"]["valid"][bucket_label(bucket)][metric] for bucket in range(count)]
        kept = [(weight, row) for weight, row in zip(shares["test"], rows) if row["difference"] is not None]
        total = sum(weight for weight, _ in kept)
        mean = sum(weight * row["difference"] for weight, row in kept) / total
        error = math.sqrt(sum((weight * row["standard_error_users"]) ** 2 for weight, row in kept)) / total
        result["valid_at_test_shares"][metric] = {"difference": round(mean, 5), "standard_error_users": round(error, 5)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--a", type=Path, nargs="+", required=True, help="arm A: one run per seed")
    parser.add_argument("--a-stage", default="pretrain", choices=("pretrain", "prompt", "finetune"))
    parser.add_argument("--b", type=Path, nargs="+", required=True, help="arm B: one run per seed")
    parser.add_argument("--b-stage", default="pretrain", choices=("pretrain", "prompt", "finetune"))
    parser.add_argument("--json", type=Path, required=True, help="comparisons are kept by name; a rerun replaces its own")
    parser.add_argument("--name", default=None, help="the comparison's key in the JSON (default: A vs B)")
    parser.add_argument("--by-target-popularity", action="store_true", help="also by the held-out item's training count")
    args = parser.parse_args()

    trained_on = Run.open(args.a[0]).config.get("statistics")
    scores_a, runs_a = arm_scores(args.a, args.a_stage, args.data, trained_on)
    scores_b, runs_b = arm_scores(args.b, args.b_stage, args.data, trained_on)
    name = args.name or f"{args.a[0].name.split('@')[0]}:{args.a_stage} vs {args.b[0].name.split('@')[0]}:{args.b_stage}"
    report = json.loads(args.json.read_text()) if args.json.exists() else {}
    report.update(
        machine=machine(),
        protocol="leave-one-out, full ranking, history excluded; one-step ranking of each run's stage; "
        "per-user scores averaged over each arm's seeds; paired difference A - B over users; standard error over "
        "users (paired) and over seeds (each arm's runs, unpaired), combined",
    )
    report.setdefault("comparisons", {})[name] = {
        "a": {"runs": [str(p) for p in args.a], "stage": args.a_stage, "per_run": runs_a},
        "b": {"runs": [str(p) for p in args.b], "stage": args.b_stage, "per_run": runs_b},
        "splits": compare(scores_a, scores_b, runs_a, runs_b),
        "measured": utc_now(),
    }
    if args.by_target_popularity:
        report["comparisons"][name]["by_target_popularity"] = popularity = by_popularity(
            scores_a, scores_b, popularity_buckets(args.a[0], args.data)
        )
        line = lambda metric, row: f"{metric} {row['difference']:+.4f} ± {row['standard_error_users']:.4f}"  # noqa: E731
        for split, rows in popularity["buckets"].items():
            for label, row in rows.items():
                figures = [line(metric, row[metric]) for metric in sorted(row) if "@" in metric and row[metric]["difference"] is not None]
                print(f"{split} target count {label} ({row['share']:.1%} of users): " + ("  ".join(figures) or "too few users"))
        print("valid at test's shares: " + "  ".join(line(metric, row) for metric, row in popularity["valid_at_test_shares"].items()))
    write_json(args.json, report)
    for split, metrics in report["comparisons"][name]["splits"].items():
        for metric, row in metrics.items():
            print(
                f"{name} {split} {metric}: A {row['a']:.4f}  B {row['b']:.4f}  A - B {row['difference']:+.4f} "
                f"± {row['standard_error']:.4f} (users {row['standard_error_users']:.4f}, seeds {row['standard_error_seeds']:.4f}; "
                f"95%: {row['interval_95'][0]:+.4f} to {row['interval_95'][1]:+.4f})"
            )


if __name__ == "__main__":
    main()
