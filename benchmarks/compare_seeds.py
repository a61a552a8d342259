"""Two `seeds.py` reports of the same recipes and seeds, row by row: how far each figure moved.

A refactor that should change nothing (issue 35 moved the lab's options out of the product) is checked by
training the same recipes at the same seed before and after it (`seeds.py --epochs 2` keeps that short)
and comparing here; a regenerated table is compared with the one it replaces the same way. Two recipes are
compared seed by seed with `--before-recipe` / `--after-recipe` (item features against the id-only
defaults): each figure's mean move over the seeds and its standard error (the moves' sample std / √seeds).

    python benchmarks/compare_seeds.py --before OLD.json --after NEW.json --json benchmarks/results/OUT.json
    python benchmarks/compare_seeds.py --before benchmarks/results/seeds_Beauty.json --before-recipe defaults+all \
        --after benchmarks/results/seeds_Beauty_features.json --after-recipe defaults+features+all \
        --json benchmarks/results/features_Beauty_paired.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from lab import machine, utc_now

# The figures a row holds, by where they sit in it.
SECTIONS = ("valid", "test")


def figures(row: dict) -> dict[str, float]:
    """{"valid/NDCG@10": ..., "test/HR@10": ..., "stage_valid/prompt/NDCG@10": ...} of a seeds.py row."""
    out = {f"{section}/{name}": value for section in SECTIONS for name, value in row.get(section, {}).items()}
    for stage, metrics in row.get("stage_valid", {}).items():
        out.update({f"stage_valid/{stage}/{name}": value for name, value in metrics.items()})
    out.update({f"valid_ndcg10_by_epoch/{epoch}": value for epoch, value in row.get("valid_ndcg10_by_epoch", {}).items()})
    return out


def compare(before: dict, after: dict, pairs: dict[str, str] | None = None) -> dict:
    """Per recipe and seed in both reports: each figure before and after, and the largest move. `pairs`
    ({after's recipe: before's}) compares recipes of other names; default, each with its own name."""
    rows = {}
    for recipe, entry in after.get("recipes", {}).items():
        if pairs is not None and recipe not in pairs:
            continue
        for seed, row in entry.get("runs", {}).items():
            old = before.get("recipes", {}).get((pairs or {}).get(recipe, recipe), {}).get("runs", {}).get(seed)
            if old is None:
                continue
            a, b = figures(old), figures(row)
            shared = sorted(set(a) & set(b))
            moves = {name: b[name] - a[name] for name in shared}
            rows[f"{recipe}@{seed}"] = {
                "figures": {name: {"before": a[name], "after": b[name]} for name in shared},
                "largest_move": max((abs(v) for v in moves.values()), default=None),
                "epochs": {"before": old.get("epochs"), "after": row.get("epochs")},
            }
    return rows


def paired(rows: dict) -> dict:
    """Each figure every row holds: its mean move over the rows (seeds) and the standard error of that mean."""
    shared = set.intersection(*(set(row["figures"]) for row in rows.values())) if rows else set()
    out = {}
    for name in sorted(shared):
        moves = [row["figures"][name]["after"] - row["figures"][name]["before"] for row in rows.values()]
        out[name] = {
            "mean_move": statistics.fmean(moves),
            "standard_error": statistics.stdev(moves) / len(moves) ** 0.5 if len(moves) > 1 else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--note", default="", help="what was compared, recorded in the report")
    parser.add_argument("--before-recipe", help="compare this recipe of --before ...")
    parser.add_argument("--after-recipe", help="... with this one of --after, seed by seed")
    args = parser.parse_args()
    before, after = json.loads(args.before.read_text()), json.loads(args.after.read_text())
    pairs = {args.after_recipe: args.before_recipe} if args.after_recipe else None
    rows = compare(before, after, pairs)
    report = {
        "machine": machine(),
        "recorded": utc_now(),
        "note": args.note,
        "before": {"file": str(args.before), "machine": before.get("machine"), "epochs_cap": before.get("epochs_cap")},
        "after": {"file": str(args.after), "machine": after.get("machine"), "epochs_cap": after.get("epochs_cap")},
        "rows": rows,
        "largest_move": max((row["largest_move"] or 0.0 for row in rows.values()), default=None),
        **({"recipes": {"before": args.before_recipe, "after": args.after_recipe}, "paired": paired(rows)} if pairs else {}),
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    for name, row in rows.items():
        print(f"{name:28} largest move {row['largest_move']:.2e} over {len(row['figures'])} figures")


if __name__ == "__main__":
    main()
