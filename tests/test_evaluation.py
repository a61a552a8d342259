import math

import numpy as np
import pytest
import tensorflow as tf

from recgpt_tf.data import Dataset
from recgpt_tf.evaluation import evaluate_popularity, ranking_metrics, target_ranks
from recgpt_tf.retrieval import pad_exclusions


def test_metrics_against_hand_computed_cases():
    # Ranks 0, 3, 7, 12 (0-based): HR@5 = 2/4, HR@10 = 3/4, HR@20 = 4/4.
    m = ranking_metrics(np.array([0, 3, 7, 12]))
    assert m["HR@5"] == 0.5 and m["HR@10"] == 0.75 and m["HR@20"] == 1.0
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(5)) / 4)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(9)) / 4)
    assert m["NDCG@20"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(9) + 1 / math.log2(14)) / 4)
    with pytest.raises(ValueError):
        ranking_metrics(np.array([]))


def _rank(scores, histories, targets):
    # With identity candidates, query row i's score for item j + 1 is scores[i][j].
    queries = tf.constant(np.asarray(scores, np.float32))
    candidates = tf.eye(len(scores[0]))
    return target_ranks(queries, candidates, tf.constant(pad_exclusions(histories)), tf.constant(targets, tf.int32)).numpy()


def test_history_items_are_excluded_from_the_ranking():
    scores = [[9.0, 8.0, 7.0, 6.0, 5.0]]  # items 1..5
    assert _rank(scores, [[]], [4]).tolist() == [3]
    # Items 1 and 2 were in the history: they no longer outrank item 4.
    assert _rank(scores, [[1, 2]], [4]).tolist() == [1]
    # A held-out item that is itself in the history cannot be recommended: a miss.
    assert _rank(scores, [[4]], [4]).tolist() == [5]
    # An unknown (OOV, id N + 1) held-out item is a miss, not an error.
    assert _rank(scores, [[]], [6]).tolist() == [5]
    # Rows exclude only their own history.
    assert _rank(scores * 2, [[1], []], [3, 3]).tolist() == [1, 2]


def test_popularity_baseline_ranks_by_training_counts():
    ds = Dataset.from_interactions({"a": ["1", "1", "2", "3", "9"], "b": ["1", "2", "4", "2"], "c": ["1", "3", "3", "1"]})
    # Training counts (all but each user's last two items): "1" x4, "2" x2, "3" x1.
    # a: target "9", history {1, 2, 3}: "4" and "9" both have count 0, the tie
    #    goes to the lower id, so "9" ranks second (rank 1).
    # b: target "2" and c: target "1" are in their histories: misses.
    m = evaluate_popularity(ds, ds.split("test"))
    assert m["HR@5"] == pytest.approx(1 / 3)
    assert m["NDCG@5"] == pytest.approx(1 / math.log2(3) / 3)
