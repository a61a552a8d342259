"""The retrieval interface: every index honours exclusions and returns exact scores;
the partitioned index reads ScaNN's partition correctly and equals brute force when
it searches every leaf; tuning reaches its target or refuses."""

import numpy as np
import pytest
import tensorflow as tf

from recgpt_tf.retrieval import (
    BruteForceIndex, IndexRecallError, PartitionedIndex, ScannOpIndex, build_index, exclusion_mask, pad_exclusions,
    train_kmeans_partition,
)
from recgpt_tf.retrieval.partitioned import leaf_blocks

NUM_ITEMS, DIM, K, LEAVES = 2000, 8, 10, 16


@pytest.fixture(scope="module")
def table():
    # Clustered, like trained item embeddings: 12 directions, items scattered around them.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, DIM))
    return (centres[rng.integers(0, 12, NUM_ITEMS)] + 0.3 * rng.normal(size=(NUM_ITEMS, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def queries():
    return np.random.default_rng(1).normal(size=(32, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def partition(table):
    return train_kmeans_partition(table, num_leaves=LEAVES)


def _indexes(table, partition):
    yield BruteForceIndex(table)
    yield PartitionedIndex(table, partition, leaves_to_search=6, storage_dtype="float32")
    yield PartitionedIndex(table, partition, leaves_to_search=6, storage_dtype="bfloat16", rescore_depth=20)
    yield ScannOpIndex(table, num_leaves=LEAVES, leaves_to_search=6, reordering_candidates=100)


def test_pad_exclusions_and_mask():
    padded = pad_exclusions([[3, 1], [], [2]])
    np.testing.assert_array_equal(padded, [[3, 1], [0, 0], [2, 0]])
    mask = exclusion_mask(tf.constant([[3, 1, 3, 0, 99]]), 4).numpy()  # duplicates, padding, out of range
    np.testing.assert_array_equal(mask, [[True, False, True, False]])


def test_leaf_blocks_layout_by_hand():
    # items 1..5 in leaves [1, 0, 1, 1, 0]; blocks of 2 rows.
    block_ids, first, counts = leaf_blocks(np.array([1, 0, 1, 1, 0]), num_leaves=2, block_size=2)
    np.testing.assert_array_equal(block_ids, [[2, 5], [1, 3], [4, 0], [0, 0]])  # leaf 0, leaf 1 (2 blocks), empty pad block
    np.testing.assert_array_equal(first, [0, 1])
    np.testing.assert_array_equal(counts, [1, 2])


def test_scanns_partition_is_read_back_exactly(table, partition):
    assert partition.centroids.shape == (LEAVES, DIM) and partition.leaf_of_item.shape == (NUM_ITEMS,)
    # ScaNN assigns each item to its nearest centre (squared L2): the centres read back must reproduce that.
    nearest = ((table[:, None, :] - partition.centroids[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(nearest, partition.leaf_of_item)


def test_every_index_honours_exclusions_and_returns_exact_scores(table, partition, queries):
    exact = BruteForceIndex(table)
    _, best = exact(queries, K)
    exclusions = np.concatenate([best.numpy()[:, :4], np.zeros((len(queries), 2), np.int32)], axis=1)  # each row's top 4 banned
    for index in _indexes(table, partition):
        scores, ids = index.query_with_exclusions(tf.constant(queries), tf.constant(exclusions), K)
        scores, ids = scores.numpy(), ids.numpy()
        assert ids.shape == (len(queries), K) and (ids >= 1).all() and (ids <= NUM_ITEMS).all(), index.kind
        for row, banned in zip(ids, exclusions):
            assert len(set(row)) == K and not set(row) & set(banned[banned > 0]), index.kind
        np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries, table[ids - 1]), rtol=1e-5, atol=1e-5)
        assert (np.diff(scores, axis=1) <= 1e-6).all(), index.kind  # best first


@pytest.mark.parametrize("dtype, depth", [("float32", 0), ("bfloat16", 30)])
def test_partitioned_search_of_every_leaf_equals_brute_force(table, partition, queries, dtype, depth):
    index = PartitionedIndex(table, partition, leaves_to_search=partition.num_leaves, storage_dtype=dtype, rescore_depth=depth)
    exclusions = tf.constant(pad_exclusions([[1, 2, 3]] * len(queries)))
    np.testing.assert_array_equal(index.query_with_exclusions(queries, exclusions, K)[1],
                                  BruteForceIndex(table).query_with_exclusions(queries, exclusions, K)[1])


def test_partitioned_falls_back_to_exact_search_when_exclusions_empty_the_searched_leaves(table, partition, queries):
    index = PartitionedIndex(table, partition, leaves_to_search=1, storage_dtype="float32")
    leaf = np.argmax(queries[:1] @ partition.centroids.T)
    members = np.flatnonzero(partition.leaf_of_item == leaf) + 1
    exclusions = tf.constant(members[np.newaxis].astype(np.int32))  # the whole searched leaf is history
    scores, ids = index.query_with_exclusions(queries[:1], exclusions, K)
    expected_scores, expected = BruteForceIndex(table).query_with_exclusions(queries[:1], exclusions, K)
    np.testing.assert_array_equal(ids, expected)


def test_tuning_reaches_the_target_with_fewer_leaves_than_all(table, queries):
    exclusions = np.zeros((len(queries), 1), np.int32)
    index, report = build_index("partitioned", table, {"step_1": (queries, exclusions)}, K, recall_target=0.9, num_leaves=LEAVES)
    assert report["recall"]["step_1"] >= 0.9 and report["kind"] == "partitioned"
    assert 1 <= index.leaves_to_search < LEAVES and report["settings_tried"]
    # The cheapest passing setting: one leaf fewer would miss the target (for the chosen storage and depth).
    if index.leaves_to_search > 1:
        index.configure(index.leaves_to_search - 1, index.rescore_depth)
        from recgpt_tf.retrieval import recall_at_k

        assert recall_at_k(index, BruteForceIndex(table), queries, exclusions, K) < 0.9
    with pytest.raises(IndexRecallError, match="no search setting reached recall@10 >= 1.01"):
        build_index("partitioned", table, {"step_1": (queries, exclusions)}, K, recall_target=1.01, num_leaves=LEAVES)
