"""A ScaNN-trained partitioned index searched with core TensorFlow ops only.

ScaNN trains the k-means partition at export time (`train_kmeans_partition`);
the SavedModel then holds plain tensors and the search is stock ops, so the
fast flavour runs on stock TF Serving without ScaNN's custom ops:

1. score the query against the L leaf centres and take the best
   `leaves_to_search` leaves (MatMul, TopKV2);
2. gather those leaves' items, stored leaf-contiguous in fixed blocks of
   `block_size` rows (RaggedRange, GatherV2), and score them (BatchMatMul) in the
   storage dtype (bfloat16 halves the bytes gathered; float32 is exact);
3. keep the best `rescore_depth` + E, re-score them exactly in float32, drop
   the E excluded ids and take the top k. A row whose searched leaves hold fewer
   than k allowed items (a history that covers them) is answered by exact search,
   so a list is always k allowed items.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recgpt_tf.retrieval.base import ItemIndex
from recgpt_tf.retrieval.exclusions import MINUS_INF
from recgpt_tf.retrieval.scann_artifacts import KMeansPartition

STORAGE_DTYPES = ("float32", "bfloat16")


def leaf_blocks(leaf_of_item: np.ndarray, num_leaves: int, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leaf-contiguous blocks of item ids.

    Returns:
        (block_ids [NB + 1, block_size] int32 item ids, 0 for padding, the last
        block all padding; leaf_first_block [L] int32; leaf_num_blocks [L] int32).
    """
    sizes = np.bincount(leaf_of_item, minlength=num_leaves)
    blocks_per_leaf = -(-sizes // block_size)  # ceil
    first = np.concatenate([[0], np.cumsum(blocks_per_leaf)[:-1]]).astype(np.int32)
    block_ids = np.zeros((int(blocks_per_leaf.sum()) + 1, block_size), np.int32)
    order = np.argsort(leaf_of_item, kind="stable")  # items grouped by leaf, id order inside
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank_in_leaf = np.arange(len(order)) - np.repeat(starts, sizes)
    leaves = leaf_of_item[order]
    slot = first[leaves] * block_size + rank_in_leaf
    block_ids.reshape(-1)[slot] = order + 1
    return block_ids, first, blocks_per_leaf.astype(np.int32)


class PartitionedIndex(ItemIndex):
    """Partitioned (IVF-style) search over a ScaNN k-means partition, in core TF ops.

    Args:
        candidates: [N, d] float32; row j is item id j + 1.
        partition: The trained partition (`train_kmeans_partition`).
        leaves_to_search: Leaves scored per query.
        storage_dtype: "bfloat16" or "float32" for the gathered blocks.
        rescore_depth: Candidates re-scored exactly in float32 (besides k and the
            exclusions); 0 with float32 storage, whose scores are already exact.
        block_size: Rows per gathered block (leaves are padded to a multiple).
    """

    kind = "partitioned"

    def __init__(self, candidates, partition: KMeansPartition, leaves_to_search: int, storage_dtype: str = "bfloat16",
                 rescore_depth: int = 0, block_size: int = 16, name: str = "partitioned_index") -> None:
        super().__init__(candidates, name=name)
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {', '.join(STORAGE_DTYPES)}; got {storage_dtype!r}")
        if partition.leaf_of_item.shape != (self.num_items,) or partition.centroids.shape[1] != self.dimension:
            raise ValueError(f"the partition covers {partition.leaf_of_item.shape[0]} items of dimension {partition.centroids.shape[1]}; "
                             f"the candidates are {self.num_items} x {self.dimension}")
        self.num_leaves = partition.num_leaves
        self.storage_dtype = storage_dtype
        self.block_size = int(block_size)
        self.configure(leaves_to_search, rescore_depth)
        block_ids, first, counts = leaf_blocks(partition.leaf_of_item, self.num_leaves, self.block_size)
        self.pad_block = int(block_ids.shape[0] - 1)
        self.leaf_sizes = np.bincount(partition.leaf_of_item, minlength=self.num_leaves)
        table = np.asarray(self.candidates.numpy())
        vectors = np.where((block_ids > 0)[..., None], table[np.maximum(block_ids - 1, 0)], 0.0).astype(np.float32)
        self.centroids = tf.Variable(partition.centroids, trainable=False, name="centroids")  # (L, d)
        self.block_vectors = tf.Variable(tf.cast(vectors, storage_dtype), trainable=False, name="block_vectors")  # (NB+1, S, d)
        self.block_ids = tf.Variable(block_ids, trainable=False, name="block_ids")  # (NB+1, S)
        self.leaf_first_block = tf.Variable(first, trainable=False, name="leaf_first_block")  # (L,)
        self.leaf_num_blocks = tf.Variable(counts, trainable=False, name="leaf_num_blocks")  # (L,)

    def configure(self, leaves_to_search: int, rescore_depth: int) -> None:
        """Sets the search parameters (export-time tuning calls this before saving)."""
        if not 1 <= leaves_to_search <= self.num_leaves:
            raise ValueError(f"leaves_to_search must be in 1..{self.num_leaves}; got {leaves_to_search}")
        if rescore_depth < 0:
            raise ValueError(f"rescore_depth must be >= 0; got {rescore_depth}")
        self.leaves_to_search = int(leaves_to_search)
        self.rescore_depth = int(rescore_depth)

    def expected_candidates(self) -> float:
        """Mean items scored per query if leaves were chosen in proportion to their size."""
        return float(self.leaves_to_search * self.leaf_sizes.mean())

    def _candidate_blocks(self, queries: tf.Tensor) -> tf.Tensor:
        """[B, M] block indices of each query's best leaves (padded with the empty block)."""
        leaves = tf.math.top_k(tf.matmul(queries, self.centroids, transpose_b=True), k=self.leaves_to_search).indices  # (B, l)
        first = tf.gather(self.leaf_first_block, leaves)
        count = tf.gather(self.leaf_num_blocks, leaves)  # (B, l)
        blocks = tf.ragged.range(tf.reshape(first, [-1]), tf.reshape(first + count, [-1]))  # (B·l, None)
        blocks = tf.RaggedTensor.from_row_lengths(blocks.flat_values, tf.reduce_sum(count, axis=1), validate=False)  # (B, None)
        return blocks.to_tensor(default_value=self.pad_block)

    def query_with_exclusions(self, queries, exclusions, k):
        queries = tf.convert_to_tensor(queries, tf.float32)
        exclusions = tf.convert_to_tensor(exclusions, tf.int32)
        blocks = self._candidate_blocks(queries)  # (B, M)
        batch, width = tf.shape(blocks)[0], tf.shape(blocks)[1] * self.block_size
        vectors = tf.reshape(tf.gather(self.block_vectors, blocks), [batch, width, self.dimension])  # (B, M·S, d)
        ids = tf.reshape(tf.gather(self.block_ids, blocks), [batch, width])  # (B, M·S)
        scores = tf.cast(tf.linalg.matvec(vectors, tf.cast(queries, self.storage_dtype)), tf.float32)  # (B, M·S)
        scores = tf.where(ids > 0, scores, MINUS_INF)
        depth = tf.minimum(max(self.rescore_depth, k) + tf.shape(exclusions)[1], width)
        best = tf.math.top_k(scores, k=depth)
        ids = tf.gather(ids, best.indices, batch_dims=1)  # (B, depth)
        if self.storage_dtype == "float32" and self.rescore_depth == 0:
            scores = best.values
        else:  # exact float32 scores for the best candidates
            exact = tf.gather(self.candidates, tf.maximum(ids - 1, 0))  # (B, depth, d)
            scores = tf.linalg.matvec(exact, queries)
        return self.select_candidates(queries, ids, scores, exclusions, k)

    def get_config(self) -> dict:
        return {
            "kind": self.kind,
            "num_leaves": self.num_leaves,
            "leaves_to_search": self.leaves_to_search,
            "storage_dtype": self.storage_dtype,
            "rescore_depth": self.rescore_depth,
            "block_size": self.block_size,
            "expected_candidates_per_query": self.expected_candidates(),
            "leaf_size_min_median_max": [int(self.leaf_sizes.min()), int(np.median(self.leaf_sizes)), int(self.leaf_sizes.max())],
        }
