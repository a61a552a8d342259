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


def is_excluded(ids: tf.Tensor, exclusions: tf.Tensor) -> tf.Tensor:
    """[B, C] bool: whether each candidate id [B, C] is among its row's exclusions [B, E].

    Each row's exclusions are sorted once and every candidate is looked up by binary search, so the
    memory is linear in what the request holds ([B, E] and [B, C]); comparing every candidate with every
    exclusion would build a [B, C, E] tensor (gigabytes for a request of 200 rows of 10,000 exclusions).
    """
    # A last column of the largest id keeps each row sorted and non-empty, so every position found is in range.
    exclusions = tf.pad(tf.sort(tf.cast(exclusions, ids.dtype), axis=1), [[0, 0], [0, 1]], constant_values=ids.dtype.max)  # (B, E + 1)
    # Where each id would stand in its row; searched with one spare column, as searchsorted cannot take C = 0 rows of 0.
    position = tf.searchsorted(exclusions, tf.pad(ids, [[0, 0], [0, 1]]), side="left")[:, :-1]  # (B, C)
    return tf.equal(tf.gather(exclusions, position, batch_dims=1), ids)  # (B, C)


def exclude_candidates(ids: tf.Tensor, scores: tf.Tensor, exclusions: tf.Tensor) -> tf.Tensor:
    """Scores [B, C] of candidate `ids` [B, C] with excluded ids, padding (id 0) and
    non-finite scores (ScaNN pads short rows with NaN) at -inf."""
    dropped = is_excluded(ids, exclusions) | (ids <= 0) | ~tf.math.is_finite(scores)
    return tf.where(dropped, tf.constant(MINUS_INF, scores.dtype), scores)
