"""ScaNN's own searcher as TF ops (`Scann>ScannSearchBatched`): fast, but only a
process that imports scann (or a ScaNN-linked TF Serving) can run the export."""

from __future__ import annotations

import uuid

import numpy as np
import tensorflow as tf

from recgpt_tf.errors import ConfigError
from recgpt_tf.retrieval.base import ItemIndex
from recgpt_tf.retrieval.scann_artifacts import import_scann


class ScannOpIndex(ItemIndex):
    """A ScaNN tree + asymmetric-hashing searcher with exact re-scoring, embedded as TF ops.

    Args:
        candidates: [N, d] float32; row j is item id j + 1.
        num_leaves: k-means leaves ScaNN trains.
        leaves_to_search: Leaves searched per query.
        reordering_candidates: Candidates re-scored exactly after AH scoring.
        dimensions_per_block: AH sub-space width.
        training_sample_size: Items the k-means and AH trainers sample.
    """

    kind = "scann"

    def __init__(
        self,
        candidates,
        num_leaves: int,
        leaves_to_search: int,
        reordering_candidates: int,
        dimensions_per_block: int = 2,
        training_sample_size: int = 250_000,
        name: str = "scann_index",
    ) -> None:
        super().__init__(candidates, name=name)
        _, scann_ops = import_scann()
        self.num_leaves = int(min(num_leaves, self.num_items))
        self.dimensions_per_block = int(dimensions_per_block)
        self.training_sample_size = int(min(self.num_items, training_sample_size))
        self.configure(leaves_to_search, reordering_candidates)
        table = np.asarray(self.candidates.numpy())
        builder = scann_ops.builder(table, 10, "dot_product").tree(
            num_leaves=self.num_leaves,
            num_leaves_to_search=self.leaves_to_search,
            training_sample_size=self.training_sample_size,
        )
        builder = builder.score_ah(self.dimensions_per_block, anisotropic_quantization_threshold=0.2).reorder(self.reordering_candidates)
        self._searcher = builder.build(shared_name=f"{name}/{uuid.uuid4()}").serialize_to_module()

    def configure(self, leaves_to_search: int, reordering_candidates: int) -> None:
        """Sets the search parameters (the searcher takes them per call, so no retraining)."""
        if not 1 <= leaves_to_search <= self.num_leaves:
            raise ConfigError("leaves_to_search", f"must be in 1..{self.num_leaves}; got {leaves_to_search}")
        self.leaves_to_search = int(leaves_to_search)
        self.reordering_candidates = int(reordering_candidates)

    def query_with_exclusions(self, queries, exclusions, k):
        _, scann_ops = import_scann()
        queries = tf.convert_to_tensor(queries, tf.float32)
        exclusions = tf.convert_to_tensor(exclusions, tf.int32)
        wanted = tf.minimum(k + tf.shape(exclusions)[1], self.num_items)  # enough that k survive the exclusions
        searcher = scann_ops.searcher_from_module(self._searcher)

        def search():  # rows (B, ≤ wanted): ScaNN pads short rows with index 0 and a NaN score
            rows, scores = searcher.search_batched(
                queries,
                final_num_neighbors=wanted,
                leaves_to_search=self.leaves_to_search,
                pre_reorder_num_neighbors=tf.maximum(wanted, self.reordering_candidates),
            )
            return tf.cast(rows, tf.int32), tf.cast(scores, tf.float32)

        def no_queries():  # ScaNN's op fails on an empty batch
            return tf.zeros([0, wanted], tf.int32), tf.zeros([0, wanted], tf.float32)

        rows, scores = tf.cond(tf.shape(queries)[0] > 0, search, no_queries)
        # Padding would read as item 1: mark it, then the shared selection drops it.
        valid = tf.math.is_finite(scores)
        ids = tf.where(valid, rows + 1, 0)
        return self.select_candidates(queries, ids, scores, exclusions, k)

    def get_config(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "num_leaves": self.num_leaves,
            "leaves_to_search": self.leaves_to_search,
            "reordering_candidates": self.reordering_candidates,
            "dimensions_per_block": self.dimensions_per_block,
            "training_sample_size": self.training_sample_size,
        }
