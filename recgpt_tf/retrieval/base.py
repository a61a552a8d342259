"""The retrieval interface every item index implements.

In the spirit of `tfrs.layers.factorized_top_k.TopK`: an index is built over the
candidate table once, then queried for the top-k with exclusions. Evaluation,
`AutoRegressiveRecall` and the serving graph all call `query_with_exclusions`,
so brute force, the ScaNN op and the partitioned index are interchangeable.
"""

from __future__ import annotations

from typing import ClassVar

import tensorflow as tf


class ItemIndex(tf.Module):
    """Top-k items 1..N by inner product with a query.

    Args:
        candidates: [N, d] float32 item embeddings; row j is item id j + 1.
        name: Module name (variables are saved under it).

    Subclasses implement `query_with_exclusions` and `get_config`.
    """

    kind: ClassVar[str] = ""

    def __init__(self, candidates, name: str) -> None:
        super().__init__(name=name)
        candidates = tf.convert_to_tensor(candidates, tf.float32)
        if candidates.shape.rank != 2 or candidates.shape[0] < 1:
            raise ValueError(f"candidates must be a non-empty [N, d] table; got shape {candidates.shape}")
        self.num_items = int(candidates.shape[0])
        self.dimension = int(candidates.shape[1])
        # Exact float32 embeddings: brute force scores them, the approximate
        # indexes re-score their best candidates with them, so output scores are exact.
        self.candidates = tf.Variable(candidates, trainable=False, name="candidates")

    def query_with_exclusions(self, queries: tf.Tensor, exclusions: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
        """The best `k` items per query, never an excluded one.

        Args:
            queries: [B, d] float32.
            exclusions: [B, E] int32 item ids to skip (0 = none; see `retrieval.exclusions`).
            k: List length (a Python int, at most N).

        Returns:
            (scores [B, k] float32, item ids [B, k] int32), best first. Scores are
            exact inner products.
        """
        raise NotImplementedError

    def __call__(self, queries: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Top-k without exclusions: (scores [B, k], ids [B, k])."""
        queries = tf.convert_to_tensor(queries, tf.float32)
        return self.query_with_exclusions(queries, tf.zeros([tf.shape(queries)[0], 0], tf.int32), k)

    def get_config(self) -> dict:
        """The index's kind and search parameters (recorded in the export's recgpt.json)."""
        return {"kind": self.kind}
