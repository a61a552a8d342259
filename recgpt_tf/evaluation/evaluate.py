"""The paper's protocol: leave-one-out, full ranking over all items, history excluded."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recgpt_tf.data.dataset import Dataset, EvalSplit
from recgpt_tf.evaluation.metrics import ranking_metrics
from recgpt_tf.evaluation.ranking import target_ranks
from recgpt_tf.inference.encode import HistoryEncoder, length_sorted_batches
from recgpt_tf.retrieval.exclusions import pad_exclusions

PROTOCOL = "leave-one-out, full ranking, history excluded"


def _ranks(split: EvalSplit, batch_size: int, queries_for, candidates: tf.Tensor) -> np.ndarray:
    ranks = np.empty(len(split), dtype=np.int64)
    for index in length_sorted_batches(split.histories, batch_size):
        histories = [split.histories[i] for i in index]
        queries = queries_for(index, histories)
        ranks[index] = target_ranks(queries, candidates, tf.constant(pad_exclusions(histories)), tf.constant(split.targets[index])).numpy()
    return ranks


def model_ranks(model, split: EvalSplit, batch_size: int = 1024) -> np.ndarray:
    """[num_users] 0-based ranks of the held-out items under `model` (one-step recall)."""
    encoder = HistoryEncoder.of(model)
    candidates = model.candidate_embeddings()
    return _ranks(split, batch_size, lambda index, histories: encoder.encode_batch(split.users[index], histories), candidates)


def evaluate_model(model, split: EvalSplit, batch_size: int = 1024) -> dict[str, float]:
    """HR and NDCG at 5, 10, 20 of `model`'s one-step ranking on `split`."""
    return ranking_metrics(model_ranks(model, split, batch_size))


def evaluate_popularity(dataset: Dataset, split: EvalSplit, batch_size: int = 4096) -> dict[str, float]:
    """The popularity baseline: items ranked by training interaction count."""
    counts = dataset.item_counts()[1 : dataset.num_items + 1].astype(np.float32)
    # Break ties by id so the ranking is a strict order (a 1-d "embedding").
    scores = counts + np.linspace(0.0, 1e-3, counts.size, dtype=np.float32)[::-1]
    candidates = tf.constant(scores[:, np.newaxis])
    ones = lambda index, histories: tf.ones([len(index), 1], tf.float32)  # noqa: E731
    return ranking_metrics(_ranks(split, batch_size, ones, candidates))
