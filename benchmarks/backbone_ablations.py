"""Backbone ablations on the validation split: one change at a time, then combinations.

Every variant pre-trains from scratch on the training split and is scored on the validation split
only (leave-one-out, full ranking, history excluded; the epoch picked by validation NDCG@10, as in
every run). The test split is never read here: defaults are chosen from this table, and test figures
come afterwards from benchmarks/paper_tables.py.

Variants are written as changes to a fixed reference configuration (the defaults before issue 10), so
the table keeps its meaning when the defaults change. Results are appended to the JSON after each
variant; a rerun skips the variants already there (delete an entry to redo it).

    python benchmarks/backbone_ablations.py --data ../shared/data/Beauty.txt \
        --json benchmarks/results/backbone_ablations_Beauty.json [--only gelu post_ln]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from lab import configs, machine, utc_now  # noqa: E402
from recgpt_tf.data import Dataset  # noqa: E402
from recgpt_tf.files import write_json  # noqa: E402
from recgpt_tf.runs import Run  # noqa: E402

# The configuration the variants change: the defaults before issue 10.
REFERENCE_MODEL = dict(
    max_length=50,
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    intermediate_size=256,
    dropout=0.5,
    attention_dropout=0.5,
    activation="relu",
    layer_norm="pre",
    init_stddev=0.0,
    scale_items=True,
    use_user_embedding=True,
    user_dropout=0.1,
    position_mode="from_start",
    filter_mix=0.0,
)
REFERENCE_TRAIN = dict(
    objective="softmax",
    epochs=30,
    batch_size=256,
    learning_rate=1e-3,
    warmup_steps=0,
    learning_rate_decay="none",
    weight_decay=0.0,
    label_smoothing=0.0,
    batching="bucketed",
    target_copies=1,
    patience=5,
    seed=42,
)

# name -> (model changes, training changes, what it tests)
VARIANTS: dict[str, tuple[dict, dict, str]] = {
    "reference": ({}, {}, "the defaults before issue 10"),
    "no_user": ({"use_user_embedding": False}, {}, "user module off"),
    "user_dropout_0.3": ({"user_dropout": 0.3}, {}, "user module dropout 0.1 -> 0.3"),
    "gelu": ({"activation": "gelu"}, {}, "FFN activation ReLU -> GELU"),
    "post_ln": ({"layer_norm": "post"}, {}, "pre-LN -> post-LN (normalised embeddings)"),
    "attn_dropout_0.2": ({"attention_dropout": 0.2}, {}, "attention-weight dropout 0.5 -> 0.2"),
    "dropout_0.3": ({"dropout": 0.3, "attention_dropout": 0.3}, {}, "all dropout 0.5 -> 0.3"),
    "from_end": ({"position_mode": "from_end"}, {}, "positions counted from the most recent item"),
    "d128": ({"hidden_size": 128, "intermediate_size": 512}, {}, "width 64 -> 128"),
    "one_layer": ({"num_layers": 1}, {}, "2 blocks -> 1 (the paper's depth)"),
    "one_head": ({"num_heads": 1}, {}, "2 heads -> 1"),
    "shuffled": ({}, {"batching": "shuffled"}, "length-bucketed -> uniformly shuffled batches"),
    "batch_64": ({}, {"batch_size": 64}, "batch 256 -> 64 sequences (4x the updates)"),
    "lr_3e-3": ({}, {"learning_rate": 3e-3}, "learning rate 1e-3 -> 3e-3"),
    "epochs_60": ({}, {"epochs": 60}, "epoch cap 30 -> 60"),
    "warmup_cosine": (
        {},
        {"warmup_steps": 200, "learning_rate_decay": "cosine", "learning_rate": 2e-3},
        "lr 2e-3, 200 warm-up steps, cosine decay to 0 at the cap",
    ),
    "weight_decay": ({}, {"weight_decay": 0.01}, "AdamW, weight decay 0.01"),
    "label_smoothing": ({}, {"label_smoothing": 0.1}, "label smoothing 0.1"),
    # Combinations of the changes that helped on their own.
    "post_ln+no_user": ({"layer_norm": "post", "use_user_embedding": False}, {}, "post-LN and no user module"),
    "post_ln+no_user+gelu": (
        {"layer_norm": "post", "use_user_embedding": False, "activation": "gelu"},
        {},
        "post-LN, no user module, GELU",
    ),
    "sasrec_like": (
        {"layer_norm": "post", "activation": "gelu", "use_user_embedding": False, "init_stddev": 0.02, "scale_items": False},
        {},
        "RecBole SASRec's layout: post-LN, GELU, no user module, N(0.02) init, unscaled items",
    ),
    "init_0.02": ({"init_stddev": 0.02}, {}, "projections N(0.02) instead of Glorot"),
    "unscaled_items": ({"scale_items": False}, {}, "input item embeddings not multiplied by sqrt(d)"),
    "post_ln+copies_2": (
        {"layer_norm": "post"},
        {"target_copies": 2},
        "post-LN; each sequence twice an epoch, alternate targets (independent dropout noise)",
    ),
    "post_ln+shuffled": ({"layer_norm": "post"}, {"batching": "shuffled"}, "post-LN; uniformly shuffled batches"),
    "post_ln+token_budget": (
        {"layer_norm": "post"},
        {"batching": "token_budget"},
        "post-LN; length buckets sized to equal targets per batch",
    ),
    "post_ln+token_budget+cosine": (
        {"layer_norm": "post"},
        {"batching": "token_budget", "learning_rate_decay": "cosine"},
        "post-LN, token_budget; lr 1e-3 decayed to 0 at the 30-epoch cap (cosine)",
    ),
    "post_ln+token_budget+warmup_cosine": (
        {"layer_norm": "post"},
        {"batching": "token_budget", "learning_rate": 2e-3, "warmup_steps": 200, "learning_rate_decay": "cosine"},
        "post-LN, token_budget; lr 2e-3 after 200 warm-up steps, cosine to 0 at the cap",
    ),
    "post_ln+user_dropout_0.3": ({"layer_norm": "post", "user_dropout": 0.3}, {}, "post-LN, user module dropout 0.3"),
}

# The defaults since issue 10's first round (post-LN, token_budget batching), and single changes to them.
CURRENT_MODEL, CURRENT_TRAIN = {"layer_norm": "post"}, {"batching": "token_budget"}
CURRENT_VARIANTS = {
    "epochs_60": ({}, {"epochs": 60}, "epoch cap 30 -> 60"),
    "d128": ({"hidden_size": 128, "intermediate_size": 512}, {}, "width 64 -> 128"),
    "label_smoothing": ({}, {"label_smoothing": 0.1}, "label smoothing 0.1"),
    "weight_decay": ({}, {"weight_decay": 0.01}, "AdamW, weight decay 0.01"),
    "gelu": ({"activation": "gelu"}, {}, "FFN activation ReLU -> GELU"),
    "no_user": ({"use_user_embedding": False}, {}, "user module off"),
    "attn_dropout_0.2": ({"attention_dropout": 0.2}, {}, "attention-weight dropout 0.5 -> 0.2"),
}
CURRENT_VARIANTS["d128+label_smoothing"] = (
    {"hidden_size": 128, "intermediate_size": 512},
    {"label_smoothing": 0.1},
    "width 128 and label smoothing 0.1 (the two single changes that gained)",
)
for _name, (_model, _train, _description) in CURRENT_VARIANTS.items():
    VARIANTS[f"post_ln+token_budget+{_name}"] = (
        {**CURRENT_MODEL, **_model},
        {**CURRENT_TRAIN, **_train},
        f"post-LN, token_budget; {_description}",
    )


def run_variant(dataset: Dataset, name: str, runs: Path, seed: int | None = None) -> dict:
    """Pre-trains variant `name` (with `seed` instead of the reference's, when given) and returns its row."""
    model_changes, train_changes, description = VARIANTS[name]
    model_config, train_config = configs(
        dataset.num_items,
        dataset.num_users,
        {**REFERENCE_MODEL, **model_changes},
        {**REFERENCE_TRAIN, **train_changes, **({"seed": seed} if seed is not None else {})},
    )
    run_dir = runs / dataset.name / (name if seed is None else f"{name}@seed{seed}")
    if (run_dir / "pretrain" / "summary.json").exists():
        shutil.rmtree(run_dir)  # a finished run missing from the JSON: redo it rather than trust a stale one
    _, summary = Run.create(run_dir, dataset, model_config, seed=train_config.seed).pretrain(dataset, train_config, verbose=0)
    return {
        "description": description,
        "model_changes": model_changes,
        "train_changes": train_changes,
        "valid": summary["valid"],
        "best_epoch": summary["best_epoch"],
        "epochs": summary["epochs"],
        "train_seconds": round(summary["seconds"], 1),
        "seconds_per_epoch": round(summary["seconds_per_epoch"], 2) if summary["seconds_per_epoch"] else None,
        "finished": utc_now(),
    }


def markdown(report: dict) -> str:
    """The ablation table: validation figures of every variant, with its change from the reference."""
    reference = report["variants"].get("reference", {}).get("valid", {}).get("NDCG@10")
    lines = [
        f"{report['dataset']}, validation split ({report['protocol']}); {report['machine']}.",
        "",
        "| variant | change | valid NDCG@10 | vs reference | valid HR@10 | best epoch / run | train s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in report["variants"].items():
        ndcg = row["valid"]["NDCG@10"]
        delta = f"{(ndcg / reference - 1) * 100:+.1f}%" if reference else "—"
        lines.append(
            f"| {name} | {row['description']} | {ndcg:.4f} | {delta} | {row['valid']['HR@10']:.4f} | "
            f"{row['best_epoch']} / {row['epochs']} | {row['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), help="variants to run (default: all, in table order)")
    parser.add_argument("--seed", type=int, default=None, help="another seed than the reference's 42 (rows named VARIANT@seedN)")
    args = parser.parse_args()

    dataset = Dataset.from_file(args.data)
    report = json.loads(args.json.read_text()) if args.json.exists() else {}
    report.update(
        dataset=dataset.name,
        machine=machine(),
        protocol="validation split only: leave-one-out, full ranking, history excluded; epoch chosen on validation NDCG@10",
        reference={"model": REFERENCE_MODEL, "train": REFERENCE_TRAIN},
    )
    results = report.setdefault("variants", {})
    for variant in args.only or list(VARIANTS):
        name = variant if args.seed is None else f"{variant}@seed{args.seed}"
        if name in results:
            continue
        results[name] = run_variant(dataset, variant, args.runs, args.seed)
        valid = results[name]["valid"]
        print(
            f"{name:<18} valid NDCG@10 {valid['NDCG@10']:.4f}  HR@10 {valid['HR@10']:.4f}  "
            f"best epoch {results[name]['best_epoch']}/{results[name]['epochs']}  {results[name]['train_seconds']:.0f}s",
            flush=True,
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, report)
        args.json.with_suffix(".md").write_text(markdown(report))


if __name__ == "__main__":
    main()
