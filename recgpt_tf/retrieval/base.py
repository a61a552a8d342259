"""The retrieval interface every item index implements.

In the spirit of `tfrs.layers.factorized_top_k.TopK`: an index is built over the
candidate table once, then queried for the top-k with exclusions. Evaluation,
`AutoRegressiveRecall` and the serving graph all call `query_with_exclusions`,
so brute force, the ScaNN op and the partitioned index are interchangeable.
"""

from __future__ import annotations

from typing import ClassVar

import tensorflow as tf

from recgpt_tf.errors import ConfigError
from recgpt_tf.retrieval.exclusions import MINUS_INF, exclude_candidates, exclude_scores


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
            raise ConfigError("candidates", f"must be a non-empty [N, d] table; got shape {candidates.shape}")
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

    def exact_top_k(self, queries: tf.Tensor, exclusions: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Exact top-k over the whole table (scores [B, k], ids [B, k]); a slot no allowed
        item can fill (k > N − exclusions) gets id 0 and score -inf, never an excluded item."""
        top = tf.math.top_k(exclude_scores(tf.matmul(queries, self.candidates, transpose_b=True), exclusions), k=k)  # (B, N) → (B, k)
        return top.values, tf.where(top.values > MINUS_INF, top.indices + 1, 0)

    def select_candidates(
        self, queries: tf.Tensor, ids: tf.Tensor, scores: tf.Tensor, exclusions: tf.Tensor, k: int
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """The top-k of an approximate index's candidates, exclusions applied.

        A row left with fewer than k allowed candidates (its history covers what
        was searched) is answered by `exact_top_k` instead, so every row gets k
        allowed items; the exact search runs only for the rows that need it.

        Args:
            queries: [B, d].
            ids: [B, C] int32 candidate ids (0 = padding).
            scores: [B, C] float32 exact scores of the candidates.
            exclusions: [B, E] int32.
            k: List length.
        """
        scores = exclude_candidates(ids, scores, exclusions)
        short = tf.reduce_sum(tf.cast(scores > MINUS_INF, tf.int32), axis=1) < k  # (B,)
        width = tf.shape(scores)[1]
        padded_scores = tf.pad(scores, [[0, 0], [0, tf.maximum(k - width, 0)]], constant_values=MINUS_INF)  # at least k columns
        padded_ids = tf.pad(ids, [[0, 0], [0, tf.maximum(k - width, 0)]])
        top = tf.math.top_k(padded_scores, k=k)
        values, found = top.values, tf.gather(padded_ids, top.indices, batch_dims=1)

        def with_exact_rows():  # the short rows only: an exact search costs [rows, N]
            rows = tf.where(short)  # (S, 1)
            exact_values, exact_ids = self.exact_top_k(tf.gather(queries, rows[:, 0]), tf.gather(exclusions, rows[:, 0]), k)
            return tf.tensor_scatter_nd_update(values, rows, exact_values), tf.tensor_scatter_nd_update(found, rows, exact_ids)

        return tf.cond(tf.reduce_any(short), with_exact_rows, lambda: (values, found))

    def __call__(self, queries: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Top-k without exclusions: (scores [B, k], ids [B, k])."""
        queries = tf.convert_to_tensor(queries, tf.float32)
        return self.query_with_exclusions(queries, tf.zeros([tf.shape(queries)[0], 0], tf.int32), k)

    def get_config(self) -> dict:
        """The index's kind and search parameters (recorded in the export's recgpt.json)."""
        return {"kind": self.kind}
