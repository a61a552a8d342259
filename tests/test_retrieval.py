"""The retrieval interface: every index honours exclusions and returns exact scores;
the partitioned index reads ScaNN's partition correctly and equals brute force when
it searches every leaf; tuning reaches its target or refuses."""

import numpy as np
import pytest
import tensorflow as tf

from recgpt_tf.errors import IndexRecallError
from recgpt_tf.retrieval import (
    BruteForceIndex,
    PartitionedIndex,
    ScannOpIndex,
    build_index,
    exclude_scores,
    pad_exclusions,
    recall_at_k,
    train_kmeans_partition,
)
from recgpt_tf.retrieval.exclusions import is_excluded
from recgpt_tf.retrieval.partitioned import leaf_blocks
from recgpt_tf.retrieval.scann_artifacts import import_scann, read_partition
from recgpt_tf.retrieval.tuning import per_query_recall, probability_weights, recall_lower_bound, returned, split_query_sets, top_k

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


INDEXES = {
    "brute-force": lambda table, partition: BruteForceIndex(table),
    "partitioned-float32": lambda table, partition: PartitionedIndex(table, partition, leaves_to_search=6, storage_dtype="float32"),
    "partitioned-bfloat16": lambda table, partition: PartitionedIndex(
        table, partition, leaves_to_search=6, storage_dtype="bfloat16", rescore_depth=20
    ),
    "scann": lambda table, partition: ScannOpIndex(table, num_leaves=LEAVES, leaves_to_search=6, reordering_candidates=100),
}


@pytest.fixture(scope="module", params=sorted(INDEXES))
def index(request, table, partition):
    return INDEXES[request.param](table, partition)


def test_pad_exclusions_and_mask():
    padded = pad_exclusions([[3, 1], [], [2]])
    np.testing.assert_array_equal(padded, [[3, 1], [0, 0], [2, 0]])
    scores = exclude_scores(tf.ones([1, 4]), tf.constant([[3, 1, 3, 0, 99]])).numpy()  # duplicates, padding, out of range
    np.testing.assert_array_equal(scores, [[-np.inf, 1.0, -np.inf, 1.0]])


def test_leaf_blocks_layout_by_hand():
    # items 1..7 in leaves [1, 0, 1, 1, 0, 1, 1]; blocks of 2 rows, chunks of at most 2 blocks.
    block_ids, chunk_blocks, chunk_leaf = leaf_blocks(np.array([1, 0, 1, 1, 0, 1, 1]), num_leaves=3, block_size=2, blocks_per_chunk=2)
    # leaf 0: items 2, 5 (one block); leaf 1: items 1, 3, 4, 6 (a full chunk) then 7 (a second chunk); leaf 2 empty.
    np.testing.assert_array_equal(block_ids, [[2, 5], [1, 3], [4, 6], [7, 0], [0, 0]])  # the last block is the empty pad
    np.testing.assert_array_equal(chunk_blocks, [[0, 4], [1, 2], [3, 4]])
    np.testing.assert_array_equal(chunk_leaf, [0, 1, 1])


def test_scanns_partition_is_read_back_exactly(table, queries, tmp_path):
    """The centres and leaves read back must route exactly as ScaNN's own searcher does: searching one
    leaf, ScaNN returns the best items of the leaf whose centre scores highest. (Not "each item sits
    at its nearest centre": ScaNN's k-means is randomly seeded, and after it re-seeds an empty cluster
    its final assignment need not be the nearest centre; re-seeding can also leave two equal centres,
    so a leaf that ties the best within float rounding is ScaNN's to pick.)"""
    scann_ops_pybind, _ = import_scann()
    searcher = (
        scann_ops_pybind.builder(table, 20, "dot_product")
        .tree(num_leaves=LEAVES, num_leaves_to_search=1, training_sample_size=NUM_ITEMS)
        .score_brute_force()
        .build()
    )
    searcher.serialize(str(tmp_path))
    partition = read_partition(tmp_path)
    assert partition.centroids.shape == (LEAVES, DIM) and partition.leaf_of_item.shape == (NUM_ITEMS,)
    for query in queries:
        found, _ = searcher.search(query, final_num_neighbors=20, leaves_to_search=1)
        (leaf,) = set(partition.leaf_of_item[found].tolist())  # one leaf searched
        scores = partition.centroids @ query
        assert scores[leaf] >= scores.max() - 1e-5 * abs(scores.max())  # ScaNN searched the best-scoring centre
        members = np.flatnonzero(partition.leaf_of_item == leaf)
        best = members[np.argsort(-(table[members] @ query), kind="stable")][: len(found)]
        assert len(found) == min(20, len(members)) and set(found.tolist()) == set(best.tolist())


def test_every_index_honours_exclusions_and_returns_exact_scores(index, table, queries):
    _, best = BruteForceIndex(table)(queries, K)
    exclusions = np.concatenate([best.numpy()[:, :4], np.zeros((len(queries), 2), np.int32)], axis=1)  # each row's top 4 banned
    scores, ids = index.query_with_exclusions(tf.constant(queries), tf.constant(exclusions), K)
    scores, ids = scores.numpy(), ids.numpy()
    assert ids.shape == (len(queries), K) and (ids >= 1).all() and (ids <= NUM_ITEMS).all()
    for row, banned in zip(ids, exclusions):
        assert len(set(row)) == K and not set(row) & set(banned[banned > 0])
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries, table[ids - 1]), rtol=1e-5, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_every_index_answers_an_empty_batch_and_no_exclusions(index, queries):
    scores, ids = index.query_with_exclusions(tf.zeros([0, DIM]), tf.zeros([0, 3], tf.int32), K)
    assert scores.shape == (0, K) and ids.shape == (0, K)
    _, ids = index(queries[:2], K)  # [B, 0] exclusions
    assert ids.shape == (2, K) and (ids.numpy() >= 1).all()


def test_rows_whose_searched_leaves_are_all_history_get_exact_lists(index, table, queries):
    """Row 0's history is every item but the K it scores lowest, which no search of the
    best leaves holds; row 1 has no history. Row 0 must still get exactly those K."""
    allowed = np.argsort(table @ queries[0])[:K] + 1
    history = np.setdiff1d(np.arange(1, NUM_ITEMS + 1), allowed)
    exclusions = tf.constant(pad_exclusions([history.tolist(), []]))
    scores, ids = index.query_with_exclusions(queries[:2], exclusions, K)
    expected_scores, expected = BruteForceIndex(table).query_with_exclusions(queries[:2], exclusions, K)
    assert sorted(ids.numpy()[0].tolist()) == sorted(allowed.tolist())
    np.testing.assert_array_equal(ids[0], expected[0])
    np.testing.assert_allclose(scores[0], expected_scores[0], rtol=1e-5)
    assert len(set(ids.numpy()[1])) == K and (ids.numpy()[1] > 0).all()  # no history: any K real items


def test_slots_no_allowed_item_can_fill_are_empty_not_history():
    table = np.eye(4, dtype=np.float32)
    scores, ids = BruteForceIndex(table).query_with_exclusions(tf.ones([1, 4]), tf.constant([[1, 2]]), 3)
    assert sorted(ids.numpy()[0][:2].tolist()) == [3, 4] and ids.numpy()[0][2] == 0 and scores.numpy()[0][2] == -np.inf


def test_exclusion_matching_is_the_set_membership_it_replaces():
    rng = np.random.default_rng(5)
    for _ in range(50):
        rows, width, banned = rng.integers(0, 4), rng.integers(0, 40), rng.integers(0, 15)
        ids, exclusions = rng.integers(0, 20, size=(rows, width)), rng.integers(0, 20, size=(rows, banned))
        expected = (ids[:, :, None] == exclusions[:, None, :]).any(axis=2) if banned else np.zeros((rows, width), bool)
        np.testing.assert_array_equal(is_excluded(tf.constant(ids, tf.int32), tf.constant(exclusions, tf.int32)), expected)


@pytest.mark.reliability
def test_exclusions_cost_memory_linear_in_the_request_for_every_index(index):
    """No tensor of the search grows as rows x candidates x exclusions: at 200 rows of 11,000 exclusions (the
    documented worst request) the largest has fewer elements than the exclusions themselves times a few."""
    rows, banned = 200, 11_000
    search = tf.function(lambda q, e: index.query_with_exclusions(q, e, K)).get_concrete_function(
        tf.TensorSpec([rows, DIM], tf.float32), tf.TensorSpec([rows, banned], tf.int32)
    )
    largest = max(
        (int(np.prod(output.shape)) for op in _all_ops(search.graph) for output in op.outputs if output.shape.is_fully_defined()),
        default=0,
    )
    assert largest <= 4 * rows * banned, f"a tensor of {largest} elements"


def _all_ops(graph):
    """The ops of `graph` and of the functions it calls (tf.cond branches)."""
    yield from graph.get_operations()
    for function in graph._functions.values():  # noqa: SLF001
        yield from _all_ops(function.graph) if hasattr(function, "graph") else ()


@pytest.mark.parametrize("dtype, depth", [("float32", 0), ("bfloat16", 30)])
def test_partitioned_search_of_every_leaf_equals_brute_force(table, partition, queries, dtype, depth):
    index = PartitionedIndex(table, partition, leaves_to_search=partition.num_leaves, storage_dtype=dtype, rescore_depth=depth)
    exclusions = tf.constant(pad_exclusions([[1, 2, 3]] * len(queries)))
    np.testing.assert_array_equal(
        index.query_with_exclusions(queries, exclusions, K)[1], BruteForceIndex(table).query_with_exclusions(queries, exclusions, K)[1]
    )


def test_tuning_keeps_its_promise_on_queries_it_never_saw(table, queries):
    exclusions = np.zeros((len(queries), 1), np.int32)
    sets = {"step_1": (queries, exclusions)}
    index, report = build_index("partitioned", table, sets, K, recall_target=0.9, num_leaves=LEAVES)
    tuning, held_out = split_query_sets(sets)
    assert report["queries"] == {"tuning": len(tuning["step_1"][0]), "held_out": len(held_out["step_1"][0])}
    assert report["recall"]["step_1"] == recall_at_k(index, BruteForceIndex(table), *held_out["step_1"], K) >= 0.9  # held out
    assert report["tuning_recall_lower_bound"]["step_1"] >= 0.9 and report["kind"] == "partitioned"
    assert report["tuning_probability_recall_lower_bound"]["step_1"] >= 0.9 and report["probability_recall"]["step_1"] >= 0.9
    assert 1 <= index.leaves_to_search < LEAVES and report["settings_tried"] and "search_p50_ms_batch_64" in report
    # The cheapest setting whose tuning lower bounds both pass: one leaf fewer would not.
    if index.leaves_to_search > 1:
        index.configure(index.leaves_to_search - 1, index.rescore_depth)
        scores, ids = top_k(BruteForceIndex(table), *tuning["step_1"], K)
        hits = returned(index, ids, *tuning["step_1"], K)
        held = len(held_out["step_1"][0])
        bounds = [recall_lower_bound(per_query_recall(hits, w), held) for w in (None, probability_weights(scores))]
        assert min(bounds) < 0.9
    low, high = report["recall_interval"]["step_1"]  # the promise, judged on the held-out queries
    assert 0.9 <= low <= report["recall"]["step_1"] <= high and report["probability_recall_interval"]["step_1"][0] >= 0.9
    with pytest.raises(IndexRecallError, match="recall@10 >= 1.01 .*no search setting reached it"):
        build_index("partitioned", table, sets, K, recall_target=1.01, num_leaves=LEAVES)
    with pytest.raises(IndexRecallError, match="stopped at its time budget of 0 s"):  # bounded: never a hang
        build_index("partitioned", table, sets, K, recall_target=0.9, num_leaves=LEAVES, tuning_seconds=0.0)


def test_probability_recall_weighs_a_missed_item_by_the_models_probability(table, queries):
    """An index that loses each query's top item keeps 9 of 10 items but less than 9/10 of the expected hits."""
    exact = BruteForceIndex(table)
    none = np.zeros((len(queries), 1), np.int32)
    scores, ids = top_k(exact, queries, none, K)
    weights = probability_weights(scores)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    assert (np.diff(weights, axis=1) <= 1e-7).all()  # the higher the score, the larger the share
    missing_top = ids[:, :1]  # excluded: the "index" returns the exact list without its top item
    hits = returned(exact, ids, queries, missing_top, K)
    np.testing.assert_allclose(per_query_recall(hits), 0.9)
    np.testing.assert_allclose(per_query_recall(hits, weights), 1.0 - weights[:, 0], rtol=1e-6)
    assert (1.0 - weights[:, 0] < 0.9).all()
    # A row whose every exact slot is unfilled (all scores -inf) weighs its slots alike instead of NaN.
    np.testing.assert_allclose(probability_weights(np.full((1, K), -np.inf)), 1.0 / K)


def test_the_lower_bound_is_below_the_mean_and_tightens_with_more_queries():
    values = np.random.default_rng(0).uniform(0.8, 1.0, size=400)
    assert recall_lower_bound(values[:25]) < recall_lower_bound(values) < np.mean(values)


def test_the_largest_norm_items_are_scored_for_every_query(table, partition, queries):
    boosted = table.copy()
    boosted[6] = 50.0 * queries[0] / np.linalg.norm(queries[0])  # item 7: the best item for query 0 by far, in whatever leaf
    head = PartitionedIndex(boosted, partition, leaves_to_search=1, storage_dtype="float32", head_size=1)
    assert head.get_config()["head_size"] == 1
    scores, ids = head.query_with_exclusions(queries[:1], tf.zeros([1, 0], tf.int32), K)
    assert ids.numpy()[0][0] == 7 and len(set(ids.numpy()[0])) == K
    # Item 7 is also excluded like any other item, and never listed twice.
    _, ids = head.query_with_exclusions(queries[:1], tf.constant([[7]]), K)
    assert 7 not in ids.numpy()[0] and len(set(ids.numpy()[0])) == K


@pytest.mark.reliability
def test_a_setting_tuned_with_the_checks_margin_keeps_its_promise_on_fresh_queries():
    """Settings of rising recall, each query's recall a tenth of 10 draws: the cheapest setting whose tuning
    bound passes is judged on fresh queries by the same bound. Tuned without the check's margin, it sits at the
    edge and most of its checks refuse it; with the margin (`tuning._CHECK_MARGIN`), about nine in ten pass."""
    rng = np.random.default_rng(0)
    target, size, settings = 0.95, 512, np.linspace(0.93, 0.99, 61)
    draw = lambda p: rng.binomial(10, p, size=size) / 10  # noqa: E731
    kept = {False: [], True: []}
    for _ in range(200):
        for margin in (False, True):
            chosen = next(p for p in settings if recall_lower_bound(draw(p), size if margin else None) >= target)
            kept[margin].append(recall_lower_bound(draw(chosen)) >= target)  # the held-out check, on fresh queries
    assert np.mean(kept[True]) >= 0.85 and np.mean(kept[False]) <= 0.5, {k: np.mean(v) for k, v in kept.items()}
