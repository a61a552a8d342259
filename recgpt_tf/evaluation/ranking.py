"""Full ranking over the catalogue with the user's history excluded."""

from __future__ import annotations

import tensorflow as tf

from recgpt_tf.retrieval.exclusions import exclude_scores


@tf.function(reduce_retracing=True)
def target_ranks(queries: tf.Tensor, candidates: tf.Tensor, exclusions: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """0-based rank of each target among all non-excluded items.

    rank = number of non-excluded items scoring strictly higher than the target.
    A target that is itself excluded (a repeat of a history item) or unknown to
    the model (OOV, e.g. an eval split encoded with training vocabularies) can
    never be recommended, so it gets rank N (a miss at every cutoff).

    Args:
        queries: [B, d] user representations.
        candidates: [N, d] item embeddings; row j is item id j + 1.
        exclusions: [B, E] int32 history item ids per row, 0-padded (`pad_exclusions`).
        targets: [B] int32 held-out item ids.

    Returns:
        [B] int32 ranks.
    """
    scores = exclude_scores(tf.matmul(queries, candidates, transpose_b=True), exclusions)  # (B, N)
    num_items = tf.shape(scores)[1]
    known = (targets >= 1) & (targets <= num_items)
    target_scores = tf.gather(scores, tf.clip_by_value(targets - 1, 0, num_items - 1), batch_dims=1)  # (B,)
    ranks = tf.reduce_sum(tf.cast(scores > target_scores[:, tf.newaxis], tf.int32), axis=1)
    return tf.where(tf.math.is_inf(target_scores) | ~known, num_items, ranks)
