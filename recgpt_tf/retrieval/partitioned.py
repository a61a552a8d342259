"""A ScaNN-trained partitioned index searched with core TensorFlow ops only.

ScaNN trains the k-means partition at export time (`train_kmeans_partition`);
the SavedModel then holds plain tensors and the search is stock ops, so the
fast flavour runs on stock TF Serving without ScaNN's custom ops:

1. score the query against the leaf centres and take the best
   `leaves_to_search` leaf chunks (MatMul, TopKV2): items are stored
   leaf-contiguous in fixed blocks of `block_size` rows, and a leaf larger than
   `blocks_per_chunk` blocks is split into chunks that share its centre;
2. gather the chunks' blocks (GatherV2, one dense [B, l, blocks] block list)
   and score them (BatchMatMulV2) in the storage dtype (bfloat16 halves the
   bytes gathered; float32 is exact);
   The `head_size` items of largest norm are kept apart and scored for every
   query (see `PartitionedIndex`);
3. with bfloat16 (or a `rescore_depth`), keep the best `rescore_depth` + E and
   re-score them exactly in float32; drop the E excluded ids; take the top k. A row whose searched leaves hold fewer
   than k allowed items (a history that covers them) is answered by exact search,
   so a list is always k allowed items.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recgpt_tf.errors import ConfigError, check_choice
from recgpt_tf.retrieval.base import ItemIndex
from recgpt_tf.retrieval.exclusions import MINUS_INF, exclude_candidates
from recgpt_tf.retrieval.scann_artifacts import KMeansPartition

STORAGE_DTYPES = ("float32", "bfloat16")


def leaf_blocks(leaf_of_item: np.ndarray, num_leaves: int, block_size: int, blocks_per_chunk: int):
    """Leaf-contiguous blocks of item ids, grouped in chunks of at most `blocks_per_chunk` blocks.

    k-means leaves differ in size; a leaf larger than a chunk is split into
    several chunks that share its centre, so every chunk is a fixed-width row of
    block indices and the search gathers a dense [B, chunks, blocks] block list
    (one Gather) instead of building ragged ranges.

    Returns:
        (block_ids [NB + 1, block_size] int32 item ids, 0 for padding, the last
        block all padding; chunk_blocks [C, blocks_per_chunk] int32 block indices,
        padded with the empty block NB; chunk_leaf [C] int32, the leaf of each chunk).
    """
    order = np.argsort(leaf_of_item, kind="stable")  # items grouped by leaf, id order inside
    sizes = np.bincount(leaf_of_item, minlength=num_leaves)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    chunk_items = block_size * blocks_per_chunk
    rows, chunk_leaf = [], []
    for leaf in range(num_leaves):
        members = order[starts[leaf] : starts[leaf] + sizes[leaf]] + 1
        for begin in range(0, len(members), chunk_items):
            rows.append(members[begin : begin + chunk_items])
            chunk_leaf.append(leaf)
    blocks_of = [-(-len(r) // block_size) for r in rows]  # ceil
    block_ids = np.zeros((sum(blocks_of) + 1, block_size), np.int32)
    chunk_blocks = np.full((len(rows), blocks_per_chunk), len(block_ids) - 1, np.int32)
    next_block = 0
    for c, (row, count) in enumerate(zip(rows, blocks_of)):
        block_ids.reshape(-1)[next_block * block_size : next_block * block_size + len(row)] = row
        chunk_blocks[c, :count] = np.arange(next_block, next_block + count)
        next_block += count
    return block_ids, chunk_blocks, np.asarray(chunk_leaf, np.int32)


def default_head_size(num_items: int) -> int:
    """0.5% of the catalogue, at most 2,048 items (at 1M items, 0.2%)."""
    return int(min(2048, np.ceil(0.005 * num_items)))


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
        blocks_per_chunk: Blocks per searched chunk (default: a median leaf);
            larger leaves are split into chunks that share their centre.
        head_size: The items with the largest norms, scored for every query
            instead of through their leaves (default `default_head_size(N)`).
            Inner-product search wants them most often, and an L2 k-means
            partition routes to them worst: on Beauty, most targets the
            partitioned search lost were among the top 0.5% of item norms.
    """

    kind = "partitioned"

    def __init__(
        self,
        candidates,
        partition: KMeansPartition,
        leaves_to_search: int,
        storage_dtype: str = "bfloat16",
        rescore_depth: int = 0,
        block_size: int = 16,
        blocks_per_chunk: int | None = None,
        head_size: int | None = None,
        name: str = "partitioned_index",
    ) -> None:
        super().__init__(candidates, name=name)
        check_choice("storage_dtype", storage_dtype, STORAGE_DTYPES)
        if partition.leaf_of_item.shape != (self.num_items,) or partition.centroids.shape[1] != self.dimension:
            raise ConfigError(
                "partition",
                f"covers {partition.leaf_of_item.shape[0]} items of dimension {partition.centroids.shape[1]}; "
                f"the candidates are {self.num_items} x {self.dimension}",
            )
        self.leaf_sizes = np.bincount(partition.leaf_of_item, minlength=partition.num_leaves)
        self.storage_dtype = storage_dtype
        self.block_size = int(block_size)
        self.blocks_per_chunk = int(blocks_per_chunk or max(1, -(-int(np.median(self.leaf_sizes)) // self.block_size)))
        self.head_size = int(min(self.num_items, default_head_size(self.num_items) if head_size is None else head_size))
        table = self.candidates.numpy()  # (N, d)
        # The head goes to an extra leaf (id L) whose chunks are searched for every query.
        norms = np.linalg.norm(table, axis=1)
        leaf_of_item = partition.leaf_of_item.copy()
        leaf_of_item[np.argsort(-norms, kind="stable")[: self.head_size]] = partition.num_leaves
        block_ids, chunk_blocks, chunk_leaf = leaf_blocks(leaf_of_item, partition.num_leaves + 1, self.block_size, self.blocks_per_chunk)
        routed = chunk_leaf < partition.num_leaves
        head_blocks = chunk_blocks[~routed].reshape(-1)
        head_blocks = head_blocks[head_blocks != len(block_ids) - 1]  # without the padding block
        chunk_blocks, chunk_leaf = chunk_blocks[routed], chunk_leaf[routed]
        self.num_kmeans_leaves = partition.num_leaves
        self.num_leaves = len(chunk_leaf)  # the searchable units: chunks of leaves
        self.configure(leaves_to_search, rescore_depth)
        vectors = np.where((block_ids > 0)[..., None], table[np.maximum(block_ids - 1, 0)], 0.0).astype(np.float32)
        self.centroids = tf.Variable(partition.centroids[chunk_leaf], trainable=False, name="centroids")  # (C, d): each chunk's leaf centre
        self.chunk_blocks = tf.Variable(chunk_blocks, trainable=False, name="chunk_blocks")  # (C, blocks_per_chunk)
        self.block_vectors = tf.Variable(tf.cast(vectors, storage_dtype), trainable=False, name="block_vectors")  # (NB+1, S, d)
        self.block_ids = tf.Variable(block_ids, trainable=False, name="block_ids")  # (NB+1, S)
        self.head_blocks = tf.Variable(head_blocks.astype(np.int32), trainable=False, name="head_blocks")  # (H_blocks,)

    def configure(self, leaves_to_search: int, rescore_depth: int) -> None:
        """Sets the search parameters (export-time tuning calls this before saving)."""
        if not 1 <= leaves_to_search <= self.num_leaves:
            raise ConfigError("leaves_to_search", f"must be in 1..{self.num_leaves}; got {leaves_to_search}")
        if rescore_depth < 0:
            raise ConfigError("rescore_depth", f"must be >= 0; got {rescore_depth}")
        self.leaves_to_search = int(leaves_to_search)
        self.rescore_depth = int(rescore_depth)

    def query_with_exclusions(self, queries, exclusions, k):
        queries = tf.convert_to_tensor(queries, tf.float32)
        chunks = tf.math.top_k(tf.matmul(queries, self.centroids, transpose_b=True), k=self.leaves_to_search).indices  # (B, l)
        batch = tf.shape(queries)[0]
        blocks = tf.concat(
            [
                tf.reshape(tf.gather(self.chunk_blocks, chunks), [batch, -1]),  # (B, l · blocks_per_chunk)
                tf.tile(self.head_blocks[tf.newaxis], [batch, 1]),
            ],
            axis=1,
        )  # (B, M): the routed chunks, then the head
        width = (self.leaves_to_search * self.blocks_per_chunk + int(self.head_blocks.shape[0])) * self.block_size
        vectors = tf.reshape(tf.gather(self.block_vectors, blocks), [batch, width, self.dimension])  # (B, M·S, d)
        ids = tf.reshape(tf.gather(self.block_ids, blocks), [batch, width])  # (B, M·S), 0 = padding
        # (B, M·S, d) @ (B, d, 1): measured a little faster than matvec on CPU at batch 1 and 64.
        scores = tf.cast(tf.matmul(vectors, tf.cast(queries, self.storage_dtype)[:, :, tf.newaxis])[:, :, 0], tf.float32)  # (B, M·S)
        if self.storage_dtype != "float32" or self.rescore_depth:
            # Keep the best allowed candidates, then score them exactly in float32. Excluding first keeps the
            # depth (and the [B, depth, d] gather) independent of how many items a request excludes.
            exclusions = tf.convert_to_tensor(exclusions, tf.int32)
            depth = min(max(self.rescore_depth, k), width)
            best = tf.math.top_k(exclude_candidates(ids, scores, exclusions), k=depth)
            ids = tf.where(best.values > MINUS_INF, tf.gather(ids, best.indices, batch_dims=1), 0)  # (B, depth)
            scores = tf.linalg.matvec(tf.gather(self.candidates, tf.maximum(ids - 1, 0)), queries)  # (B, depth)
        return self.select_candidates(queries, ids, scores, exclusions, k)

    def get_config(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "num_kmeans_leaves": self.num_kmeans_leaves,
            "num_leaves": self.num_leaves,
            "leaves_to_search": self.leaves_to_search,
            "storage_dtype": self.storage_dtype,
            "rescore_depth": self.rescore_depth,
            "block_size": self.block_size,
            "blocks_per_chunk": self.blocks_per_chunk,
            "head_size": self.head_size,
            "leaf_size_min_median_max": [int(self.leaf_sizes.min()), int(np.median(self.leaf_sizes)), int(self.leaf_sizes.max())],
        }
