"""Evaluation of list-producing variants (two-step recall) and of every RecGPT variant.

Two-step lists differ per k (k = m + n), so HR@k and NDCG@k of a two-step variant
come from its own k-list. The split m_n is chosen per k on the validation split
(best NDCG@k, ties to the larger m) and only then applied to the test split.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from recgpt_tf.data.dataset import EvalSplit
from recgpt_tf.evaluation.metrics import CUTOFFS
from recgpt_tf.inference.encode import length_sorted_batches
from recgpt_tf.inference.recall import AutoRegressiveRecall
from recgpt_tf.retrieval import ItemIndex
from recgpt_tf.retrieval.exclusions import pad_exclusions


def list_gain(items: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hit [B], ndcg [B]) of each target in its recommendation list [B, k]."""
    match = items == targets[:, None]
    hit = match.any(axis=1)
    rank = match.argmax(axis=1)
    return hit.astype(np.float64), np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)


def two_step_sweep(
    model, split: EvalSplit, cutoffs: Sequence[int] = CUTOFFS, batch_size: int = 1024, index: ItemIndex | None = None
) -> dict[int, dict[int, tuple[float, float]]]:
    """HR@k and NDCG@k of two-step recall for every k in `cutoffs` and m in 1..k.

    h2 depends only on i1* (the best step-1 item), not on m, so both user vectors
    are computed once; for each m the list is step 1's top-m followed by step 2's
    ranking with history and those m items removed — exactly what
    `AutoRegressiveRecall.recommend(..., (m, k - m))` returns.

    Args:
        index: Retrieval for both steps (default: exact, `BruteForceIndex`).

    Returns:
        {k: {m: (HR@k, NDCG@k)}}.
    """
    recall = AutoRegressiveRecall(model, index)
    kmax = max(cutoffs)
    sums = {k: {m: np.zeros(2) for m in range(1, k + 1)} for k in cutoffs}
    for rows in length_sorted_batches(split.histories, batch_size):
        histories = [split.histories[i] for i in rows]
        targets = split.targets[rows]
        vectors, _ = recall.user_vectors(split.users[rows], histories, num_steps=2)
        exclusions = tf.constant(pad_exclusions(histories))
        depth = min(2 * kmax, model.num_items)
        tops = [recall.index.query_with_exclusions(vectors[:, g], exclusions, depth)[1].numpy() for g in range(2)]
        first, second = tops
        for k in cutoffs:
            for m in range(1, k + 1):
                head = first[:, :m]
                # Step 2's ranking without the m listed items; its first k - m remain.
                keep = ~(second[:, :, None] == head[:, None, :]).any(axis=2)
                order = np.argsort(~keep, axis=1, kind="stable")[:, : k - m]
                tail = np.take_along_axis(second, order, axis=1)
                hit, ndcg = list_gain(np.concatenate([head, tail], axis=1), targets)
                sums[k][m] += [hit.sum(), ndcg.sum()]
    n = len(split)
    return {k: {m: (float(v[0] / n), float(v[1] / n)) for m, v in by_m.items()} for k, by_m in sums.items()}


def choose_first_step_sizes(valid_sweep: dict[int, dict[int, tuple[float, float]]]) -> dict[int, int]:
    """Per k, the m with the best validation NDCG@k (ties: larger m, the simpler list)."""
    return {k: max(by_m, key=lambda m: (by_m[m][1], m)) for k, by_m in valid_sweep.items()}


def metrics_for_sizes(sweep: dict[int, dict[int, tuple[float, float]]], sizes: dict[int, int]) -> dict[str, float]:
    """The metrics document (HR@k, NDCG@k) with m = sizes[k] for each k."""
    out = {f"HR@{k}": sweep[k][sizes[k]][0] for k in sorted(sweep)}
    out.update({f"NDCG@{k}": sweep[k][sizes[k]][1] for k in sorted(sweep)})
    return out
