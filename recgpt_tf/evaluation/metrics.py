"""HR@k and NDCG@k from 0-based ranks of the held-out item (paper section 5)."""

from __future__ import annotations

import numpy as np

from recgpt_tf.errors import ConfigError

CUTOFFS = (5, 10, 20)


def per_user_metrics(ranks: np.ndarray, cutoffs: tuple[int, ...] = CUTOFFS) -> dict[str, np.ndarray]:
    """Each user's HR@k and NDCG@k: {"HR@5": [num_users] float64, ..., "NDCG@5": ..., ...}, HR keys first,
    from [num_users] 0-based ranks (see `ranking_metrics`, their means)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hits = {k: ranks < k for k in cutoffs}
    out = {f"HR@{k}": hits[k].astype(np.float64) for k in cutoffs}
    gain = 1.0 / np.log2(ranks + 2.0)
    out.update({f"NDCG@{k}": np.where(hits[k], gain, 0.0) for k in cutoffs})
    return out


def ranking_metrics(ranks: np.ndarray, cutoffs: tuple[int, ...] = CUTOFFS) -> dict[str, float]:
    """Averages HR@k and NDCG@k over users.

    Args:
        ranks: [num_users] 0-based rank of each user's held-out item among all
            candidates (history excluded); a held-out item that was excluded has a
            rank beyond every cutoff.
        cutoffs: The k values.

    Returns:
        {"HR@5": .., "HR@10": .., ..., "NDCG@5": .., ...}, HR keys first.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise ConfigError("ranks", "is empty: no users to evaluate (a user needs three or more items for the leave-one-out split)")
    return {name: float(values.mean()) for name, values in per_user_metrics(ranks, cutoffs).items()}
