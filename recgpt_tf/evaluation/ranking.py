"""Full ranking over the catalogue with the user's history excluded."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf


def history_indices(histories: Sequence[np.ndarray]) -> np.ndarray:
    """[M, 2] int32 (row, item id) pairs of every history item, for exclusion."""
    rows = np.repeat(np.arange(len(histories), dtype=np.int32), [len(h) for h in histories])
    items = np.concatenate(histories).astype(np.int32) if len(histories) else np.zeros(0, np.int32)
    return np.stack([rows, items], axis=1)


@tf.function(reduce_retracing=True)
def exclude_history(scores: tf.Tensor, excluded: tf.Tensor) -> tf.Tensor:
    """Sets excluded (row, item id) scores to -inf.

    Args:
        scores: [B, N] scores; column j is item id j + 1.
        excluded: [M, 2] int32 (row, item id); ids outside 1..N are ignored.

    Returns:
        [B, N] scores with the excluded entries at -inf.
    """
    num_items = tf.shape(scores)[1]
    keep = (excluded[:, 1] >= 1) & (excluded[:, 1] <= num_items)
    excluded = tf.boolean_mask(excluded, keep)
    index = tf.stack([excluded[:, 0], excluded[:, 1] - 1], axis=1)
    minus_inf = tf.fill(tf.shape(index)[:1], tf.constant(-np.inf, scores.dtype))
    return tf.tensor_scatter_nd_update(scores, index, minus_inf)


@tf.function(reduce_retracing=True)
def target_ranks(queries: tf.Tensor, candidates: tf.Tensor, excluded: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """0-based rank of each target among all non-excluded items.

    rank = number of non-excluded items scoring strictly higher than the target.
    A target that is itself excluded (a repeat of a history item) can never be
    recommended, so it gets rank N (a miss at every cutoff).

    Args:
        queries: [B, d] user representations.
        candidates: [N, d] item embeddings; row j is item id j + 1.
        excluded: [M, 2] int32 (row, item id) history pairs.
        targets: [B] int32 held-out item ids.

    Returns:
        [B] int32 ranks.
    """
    scores = exclude_history(tf.matmul(queries, candidates, transpose_b=True), excluded)  # (B, N)
    target_scores = tf.gather(scores, targets - 1, batch_dims=1)  # (B,)
    ranks = tf.reduce_sum(tf.cast(scores > target_scores[:, tf.newaxis], tf.int32), axis=1)
    return tf.where(tf.math.is_inf(target_scores), tf.shape(scores)[1], ranks)
