"""Cost of one full-softmax loss + gradient step: stock `tfrs.tasks.Retrieval` vs `CatalogueRetrieval`.

The stock task pairs query i with candidate i, so a full-catalogue softmax has
to pass [own positive | catalogue] candidates with a [P, P + N] score mask and
builds dense [P, P + N] labels; `CatalogueRetrieval` names positives by
catalogue index (sparse cross-entropy). Both compute the same loss (checked
here). Shapes default to a Beauty batch: P = 1,700 positions, N = 12,101 items.

    python benchmarks/objective_cost.py --json benchmarks/results/objective_cost.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import recgpt_tf  # noqa: F401  (first: it selects Keras 2, which TFRS needs, before TensorFlow loads)

# isort: split

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from lab import utc_now
from recgpt_tf.files import write_json
from recgpt_tf.models.objectives import CatalogueRetrieval


def stock_full_softmax(task, queries, positives, table, num_items):
    catalogue_ids = tf.range(1, num_items + 1, dtype=positives.dtype)
    candidates = tf.concat([tf.gather(table, positives), table[1 : num_items + 1]], axis=0)
    own = tf.eye(tf.shape(queries)[0], dtype=tf.bool)
    mask = tf.concat([own, catalogue_ids[tf.newaxis, :] != positives[:, tf.newaxis]], axis=1)
    return task(queries, candidates, score_mask=mask, compute_metrics=False, compute_batch_metrics=False)


def time_step(loss_fn, variables, repeats: int) -> tuple[float, float]:
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        return loss, tape.gradient(loss, variables)

    loss, _ = step()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats, float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=1700)
    parser.add_argument("--items", type=int, default=12101)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/objective_cost.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    queries = tf.Variable(rng.normal(size=(args.positions, args.dim)).astype(np.float32))
    table = tf.Variable((0.1 * rng.normal(size=(args.items + 2, args.dim))).astype(np.float32))
    positives = tf.constant(rng.integers(1, args.items + 1, args.positions), tf.int32)
    mean = keras.losses.Reduction.SUM_OVER_BATCH_SIZE
    stock = tfrs.tasks.Retrieval(loss=keras.losses.CategoricalCrossentropy(from_logits=True, reduction=mean))
    ours = CatalogueRetrieval()
    stock_s, stock_loss = time_step(
        lambda: stock_full_softmax(stock, queries, positives, table, args.items), [queries, table], args.repeats
    )
    ours_s, ours_loss = time_step(
        lambda: ours(queries, table[1 : args.items + 1], positive_indices=positives - 1), [queries, table], args.repeats
    )
    if not np.isclose(stock_loss, ours_loss, rtol=1e-4):
        raise SystemExit(f"the two losses differ: {stock_loss} vs {ours_loss}")
    result = {
        "measured": utc_now(),
        "positions": args.positions,
        "items": args.items,
        "dim": args.dim,
        "stock_retrieval_ms": 1000 * stock_s,
        "catalogue_retrieval_ms": 1000 * ours_s,
        "speedup": stock_s / ours_s,
        "loss": ours_loss,
    }
    write_json(args.json, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
