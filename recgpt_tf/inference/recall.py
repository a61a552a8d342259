"""Top-k recall from user representations, with history items excluded."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from recgpt_tf.evaluation.ranking import exclude_history, history_indices
from recgpt_tf.inference.encode import HistoryEncoder


def one_step_recall(model, users: np.ndarray, histories: Sequence[np.ndarray], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The usual one-step top-k: score every item with h1, drop history items.

    Args:
        model: A `RecGPT`.
        users: [B] user ids.
        histories: B item-id arrays, oldest first (may be empty: cold start).
        k: List length (at most N).

    Returns:
        (item ids [B, k] int32, scores [B, k] float32), best first.
    """
    if not 1 <= k <= model.num_items:
        raise ValueError(f"k must be in 1..{model.num_items}; got {k}")
    queries = HistoryEncoder(model).encode_batch(users, histories)
    scores = tf.matmul(queries, model.candidate_embeddings(), transpose_b=True)  # (B, N)
    scores = exclude_history(scores, tf.constant(history_indices(histories)))
    top = tf.math.top_k(scores, k=k)
    return top.indices.numpy().astype(np.int32) + 1, top.values.numpy()
