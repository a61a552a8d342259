"""The embedded retrieval index: ScaNN parameters from the catalogue size, and its measured recall."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def scann_parameters(num_items: int, k: int) -> dict:
    """ScaNN settings scaled to the catalogue.

    Partitioning into ~√N leaves and searching ~√N/… of them keeps the search
    sub-linear; asymmetric hashing scores the searched leaves; an exact re-score
    of the best `num_reordering_candidates` recovers the order, which is what
    keeps recall high. Small catalogues get few leaves (searching most of them).
    """
    num_leaves = max(1, min(2000, int(round(math.sqrt(num_items)))))
    # Below ~50k items an exact matmul is already cheap: scan every leaf and let
    # the index only save the sort; above, search a shrinking share of leaves.
    fraction = 1.0 if num_items < 50_000 else (0.2 if num_items < 300_000 else 0.1)
    return {
        "num_leaves": num_leaves,
        "num_leaves_to_search": max(1, int(math.ceil(num_leaves * fraction))),
        "dimensions_per_block": 2,
        "num_reordering_candidates": max(500, 10 * k),
    }


def build_scann(candidates: tf.Tensor, k: int, params: dict):
    """A `tfrs.layers.factorized_top_k.ScaNN` over candidates (row j = item id j + 1)."""
    try:
        import tensorflow_recommenders as tfrs

        import scann  # noqa: F401  (registers the Scann>… ops)
    except ImportError as error:  # pragma: no cover - scann is a dependency
        raise ImportError("the ScaNN index needs the scann package: pip install 'scann[tf]==1.4.2'") from error
    index = tfrs.layers.factorized_top_k.ScaNN(k=k, distance_measure="dot_product", **params)
    ids = tf.range(1, int(candidates.shape[0]) + 1, dtype=tf.int32)
    return index.index(candidates, identifiers=ids)


def index_recall(index, candidates: tf.Tensor, queries: tf.Tensor, k: int) -> float:
    """Mean recall@k of the index against exact search for `queries` [Q, d]."""
    k = min(k, int(candidates.shape[0]))
    exact = tf.math.top_k(tf.matmul(queries, candidates, transpose_b=True), k=k).indices.numpy() + 1
    _, approx = index(queries, k=k)
    approx = approx.numpy()
    overlap = [len(set(a.tolist()) & set(e.tolist())) / k for a, e in zip(approx, exact)]
    return float(np.mean(overlap))
