"""Exact retrieval: one matmul over the whole catalogue, then top-k (stock TF ops)."""

from __future__ import annotations

import tensorflow as tf

from recgpt_tf.retrieval.base import ItemIndex


class BruteForceIndex(ItemIndex):
    """Scores every item: exact, O(N·d) per query; the reference the others are measured against.

    Args:
        candidates: [N, d] float32; row j is item id j + 1.
    """

    kind = "brute-force"

    def __init__(self, candidates, name: str = "brute_force_index") -> None:
        super().__init__(candidates, name=name)

    def query_with_exclusions(self, queries, exclusions, k):
        return self.exact_top_k(tf.convert_to_tensor(queries, tf.float32), exclusions, k)
