"""Exclusions: what a recommendation list must never contain (history items, items
an earlier recall step already listed). The one implementation every index,
the evaluation and the serving graph use.

Exclusions travel as a dense [B, E] int32 tensor of item ids per row, 0 where a
row has fewer than E (0 is the padding id, never a candidate).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from recgpt_tf.contract import right_pad

MINUS_INF = float("-inf")


def pad_exclusions(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """[B, E] int32 from B id lists of any lengths (E = the longest, at least 1), 0-padded."""
    return right_pad(rows)


def exclude_scores(scores: tf.Tensor, exclusions: tf.Tensor) -> tf.Tensor:
    """`scores` [B, N] (column j = item id j + 1) with the excluded entries at -inf.

    A scatter of the B·E excluded entries (ids outside 1..N are ignored): no
    [B, N] mask is built, which matters at a million items.
    """
    exclusions = tf.convert_to_tensor(exclusions, tf.int32)
    batch, width = tf.shape(exclusions)[0], tf.shape(exclusions)[1]
    rows = tf.repeat(tf.range(batch), width)
    flat = tf.reshape(exclusions, [-1])
    keep = (flat >= 1) & (flat <= tf.shape(scores)[1])
    index = tf.stack([tf.boolean_mask(rows, keep), tf.boolean_mask(flat, keep) - 1], axis=1)
    return tf.tensor_scatter_nd_update(scores, index, tf.fill(tf.shape(index)[:1], tf.constant(MINUS_INF, scores.dtype)))


def exclude_candidates(ids: tf.Tensor, scores: tf.Tensor, exclusions: tf.Tensor) -> tf.Tensor:
    """Scores [B, C] of candidate `ids` [B, C] with excluded ids, padding (id 0) and
    non-finite scores (ScaNN pads short rows with NaN) at -inf."""
    clash = tf.reduce_any(tf.equal(ids[:, :, tf.newaxis], tf.cast(exclusions, ids.dtype)[:, tf.newaxis, :]), axis=2)  # (B, C)
    return tf.where(clash | (ids <= 0) | ~tf.math.is_finite(scores), tf.constant(MINUS_INF, scores.dtype), scores)
