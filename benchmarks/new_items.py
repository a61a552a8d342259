"""The new-item test: items no training sequence holds, recommended on the day they arrive by their features.

A random share of the catalogue (5%, drawn once with `--withhold-seed`) is withheld from training entirely: every
interaction with a withheld item is removed from the training and validation inputs, so the model never sees
one (a user whose held-out test item is withheld loses one more known item to the training data's split, the
last, which it holds out as its own test item; a user left with no item is not trained on and is served as a
new user).
Each seed trains the defaults with the item features through every stage (`recgpt train --stages all
--item-features`), chooses the two-step m on its own validation split (`Run.evaluate`), and is then grown to
the whole catalogue as `recgpt export --item-features` grows it (`export.catalogue.extend_catalogue`): the
withheld items join with their features alone. The paper's protocol on every user's real test item (full
ranking over the whole catalogue, history excluded, histories with their withheld items, now known by their
features): HR@10 / NDCG@10 of all test users, of those whose test item is withheld ("new items"; an id-only
model scores 0 there by construction: it has no such item) and of the others. The same of each user's
second-to-last item ("valid_recgpt_1", the prompt-tuned model's one step), on which settings for new items
(`item_id_dropout`) are chosen: that item was withheld from training too wherever it is a withheld item.

Beside it, a popularity-within-category baseline that reads the same features file: each item scored by how
often the user's history holds its values (categories, brand: the share of its values, averaged), ties broken by
training popularity ("category_popularity"; a withheld item has none, so it ranks after known items with the
same values), and the same without popularity ("category_only", ties broken at random).

Long and resumable as `seeds.py` is: the JSON is rewritten after each seed, a rerun skips the seeds it holds and
an interrupted run resumes from its last epoch.

    python benchmarks/new_items.py --data ../shared/data/Beauty.txt \
        --item-features ../shared/data/Beauty_item2attributes.json --json benchmarks/results/new_items_Beauty.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lab import configs, machine, mean_std, utc_now  # noqa: E402
from recgpt_tf.config import PromptConfig  # noqa: E402
from recgpt_tf.data import Dataset, Vocabulary  # noqa: E402
from recgpt_tf.data.dataset import EvalSplit  # noqa: E402
from recgpt_tf.data.item_features import CatalogueFeatures, ItemFeatures, read_item_features  # noqa: E402
from recgpt_tf.data.readers import load_interactions  # noqa: E402
from recgpt_tf.evaluation.evaluate import PROTOCOL, model_ranks  # noqa: E402
from recgpt_tf.evaluation.metrics import ranking_metrics  # noqa: E402
from recgpt_tf.evaluation.variants import metrics_for_sizes, two_step_sweep  # noqa: E402
from recgpt_tf.export.catalogue import extend_catalogue  # noqa: E402
from recgpt_tf.files import write_json  # noqa: E402
from recgpt_tf.runs import Run  # noqa: E402

SUBSETS = ("all", "new_items", "known_items")
METRICS = ("HR@10", "NDCG@10")


def withheld_items(interactions: dict[str, list[str]], fraction: float, seed: int) -> set[str]:
    """A random `fraction` of the catalogue's items (drawn in the order items first appear)."""
    items = list(dict.fromkeys(item for sequence in interactions.values() for item in sequence))
    rng = np.random.default_rng(seed)
    return set(rng.choice(items, size=round(fraction * len(items)), replace=False).tolist())


def training_interactions(interactions: dict[str, list[str]], withheld: set[str]) -> dict[str, list[str]]:
    """Each user's items without the withheld ones; the test item stays last where it is not withheld."""
    kept = {}
    for user, items in interactions.items():
        sequence = [item for item in items[:-1] if item not in withheld] + [item for item in items[-1:] if item not in withheld]
        if sequence:
            kept[user] = sequence
    return kept


def report_vocabulary(train: Dataset, features: ItemFeatures, withheld: set[str]) -> Vocabulary:
    """The whole catalogue as the export grows it: the trained items, then the withheld ones in the file's order
    (`features` holds only the data's items, each with values)."""
    return Vocabulary([*train.item_vocab.tokens, *(item for item in features.items if item in withheld)])


def subsets(split: EvalSplit, num_trained: int) -> dict[str, np.ndarray]:
    """The test users of each subset: all, those whose target is a withheld item (ids past the trained
    catalogue's), the others."""
    new = split.targets > num_trained
    return {"all": np.ones(len(split), bool), "new_items": new, "known_items": ~new}


def subset(split: EvalSplit, mask: np.ndarray) -> EvalSplit:
    index = np.flatnonzero(mask)
    return EvalSplit(split.users[index], [split.histories[i] for i in index], split.targets[index])


def by_subset(ranks: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {name: {m: ranking_metrics(ranks[mask])[m] for m in METRICS} for name, mask in masks.items()}


def category_baseline(split: EvalSplit, features: ItemFeatures, vocab, counts: np.ndarray, with_popularity: bool) -> np.ndarray:
    """[users] 0-based ranks of the test items under the popularity-within-category baseline (see the module)."""
    tokens = {token: j for j, token in enumerate(dict.fromkeys(t for item in vocab.tokens for t in features.tokens(item)))}
    holds = np.zeros((vocab.size + 1, len(tokens)), np.float32)  # row 0 padding; item id i is row i
    for i, item in enumerate(vocab.tokens, start=1):
        values = [tokens[t] for t in dict.fromkeys(features.tokens(item))]
        holds[i, values] = 1.0 / max(len(values), 1)
    popularity = np.zeros(vocab.size + 1)
    popularity[1 : len(counts) + 1] = counts[: vocab.size]
    rng = np.random.default_rng(0)
    tie = rng.random(vocab.size + 1) * 1e-9 + (popularity / (popularity.max() + 1.0) * 1e-6 if with_popularity else 0.0)
    binary = (holds > 0).astype(np.float32)
    ranks = np.empty(len(split), np.int64)
    for start in range(0, len(split), 1024):
        rows = range(start, min(start + 1024, len(split)))
        held = np.zeros((len(rows), len(tokens)), np.float32)
        known = [split.histories[u][split.histories[u] <= vocab.size] for u in rows]  # an OOV id scores nothing
        for r, history in enumerate(known):
            held[r] = binary[history].sum(axis=0)
        scores = held @ holds.T + tie  # (users, N + 1)
        scores[:, 0] = -np.inf
        for r, u in enumerate(rows):
            scores[r, known[r]] = -np.inf
            target = split.targets[u]
            # An OOV target, or one in the history, is ranked past every cutoff (as `target_ranks` does).
            ranks[u] = np.sum(scores[r] > scores[r, target]) if target <= vocab.size and np.isfinite(scores[r, target]) else vocab.size
    return ranks


def run_seed(args, interactions, withheld, features, seed: int) -> dict:
    train = Dataset.from_interactions(training_interactions(interactions, withheld), name=args.data.stem)
    encoded = CatalogueFeatures.build(features, train.item_vocab.tokens)

    capped = {"epochs": args.epochs} if args.epochs else {}
    changes = {**encoded.model_settings(), "item_id_dropout": args.item_id_dropout}
    model_config, train_config = configs(train.num_items, train.num_users, changes, {"seed": seed, **capped})
    run = Run.create(args.runs / f"{args.data.stem}_{args.name}@seed{seed}", train, model_config, seed=seed, item_features=encoded)
    start = time.perf_counter()
    summaries = run.train(train, "all", train_config, PromptConfig.from_options(epochs=args.epochs), verbose=2)
    report = run.evaluate(train)  # the two-step m, chosen on the training data's own validation split
    sizes = {int(k): v["m"] for k, v in report["two_step_per_k"]["recgpt"].items()}
    models = {stage: extend_catalogue(run.load_model(stage), run.item_vocab, encoded, features) for stage in ("pretrain", "prompt")}
    vocab, catalogue = models["prompt"][1], models["prompt"][2]
    if vocab.tokens != report_vocabulary(train, features, withheld).tokens:
        raise AssertionError("the grown catalogue is not the baseline's")
    whole = Dataset.from_interactions(interactions, item_vocab=vocab, user_vocab=run.user_vocab)
    test, valid = whole.split("test"), whole.split("valid")
    masks, valid_masks = subsets(test, train.num_items), subsets(valid, train.num_items)
    row = {
        "seed": seed,
        "catalogue": catalogue,
        "test_users": {name: int(mask.sum()) for name, mask in masks.items()},
        "stage_valid": {stage: s["valid"] for stage, s in summaries.items()},
        # Each user's second-to-last item, the same way: what a setting for new items is chosen on.
        "valid_users": {name: int(mask.sum()) for name, mask in valid_masks.items()},
        "valid_recgpt_1": by_subset(model_ranks(models["prompt"][0], valid), valid_masks),
        "two_step_m": sizes[10],
        "pretrain": by_subset(model_ranks(models["pretrain"][0], test), masks),
        "recgpt_1": by_subset(model_ranks(models["prompt"][0], test), masks),
        "recgpt": {
            name: {m: metrics_for_sizes(two_step_sweep(models["prompt"][0], subset(test, mask)), sizes)[m] for m in METRICS}
            for name, mask in masks.items()
        },
        "train_seconds": round(sum(s["seconds"] for s in summaries.values()), 1),
        "run_seconds": round(time.perf_counter() - start, 1),
        "finished": utc_now(),
    }
    return row


def summary(rows: list[dict]) -> dict:
    return {
        variant: {name: {m: mean_std([row[variant][name][m] for row in rows]) for m in METRICS} for name in SUBSETS}
        for variant in ("pretrain", "recgpt_1", "recgpt", "valid_recgpt_1")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--item-features", type=Path, required=True)
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--withhold-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--runs", type=Path, default=Path("runs/new_items"))
    parser.add_argument("--item-id-dropout", type=float, default=0.0, help="the model's item_id_dropout")
    parser.add_argument("--name", default=None, help="the setting's row (default: defaults, or id_dropout_P)")
    parser.add_argument("--epochs", type=int, help="cap every stage at this many epochs: a check that the test runs, not a result")
    args = parser.parse_args()
    args.name = args.name or ("defaults" if not args.item_id_dropout else f"id_dropout_{args.item_id_dropout:g}")

    interactions = load_interactions(args.data)
    in_data = {item for items in interactions.values() for item in items}
    every = read_item_features(args.item_features)
    features = ItemFeatures(every.columns, {item: values for item, values in every.items.items() if item in in_data and every.tokens(item)})
    withheld = withheld_items(interactions, args.fraction, args.withhold_seed)
    report = json.loads(args.json.read_text()) if args.json.exists() else {}
    drawn = {"fraction": args.fraction, "seed": args.withhold_seed, "items": len(withheld)}
    if report.get("withheld", drawn) != drawn:
        raise SystemExit(f"{args.json} holds runs with other withheld items ({report['withheld']}); write to another file")
    report.update(
        dataset=args.data.stem,
        item_features=str(args.item_features),
        machine=machine(),
        protocol=PROTOCOL
        + " over the whole catalogue (withheld items by their features); m chosen on validation; mean ± sample std over seeds",
        withheld=drawn,
        **({"epochs_cap": args.epochs} if args.epochs else {}),
    )
    if "baseline" not in report:
        train = Dataset.from_interactions(training_interactions(interactions, withheld))
        vocab = report_vocabulary(train, features, withheld)
        test = Dataset.from_interactions(interactions, item_vocab=vocab, user_vocab=train.user_vocab).split("test")
        counts = train.item_counts()[1 : train.num_items + 1]
        masks = subsets(test, train.num_items)
        report["baseline"] = {
            name: by_subset(category_baseline(test, features, vocab, counts, popularity), masks)
            for name, popularity in (("category_popularity", True), ("category_only", False))
        }
        write_json(args.json, report)
        print(f"baseline: {json.dumps(report['baseline'])}", flush=True)
    entry = report.setdefault("settings", {}).setdefault(args.name, {"item_id_dropout": args.item_id_dropout, "runs": {}})
    runs = entry["runs"]
    for seed in args.seeds:
        if str(seed) in runs:
            continue
        runs[str(seed)] = run_seed(args, interactions, withheld, features, seed)
        entry["summary"] = {"seeds": sorted(int(s) for s in runs), **summary(list(runs.values()))}
        write_json(args.json, report)
        print(f"{args.name} seed {seed}: {json.dumps(runs[str(seed)])}", flush=True)


if __name__ == "__main__":
    main()
