"""History exclusion: recommended items never include what the user already has."""

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
