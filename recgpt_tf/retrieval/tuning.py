"""Export-time tuning: the cheapest search setting that reaches a recall target on real queries.

Recall is measured the way the serving graph uses the index: each query set
(h1 with the history excluded, h2 with the history and the first step's items
excluded) asks for the top k, and recall@k is the share of the exact top k
(brute force, same exclusions) the index returns, averaged over queries. Every
query set must reach the target. Among the settings that do, the one with the
lowest measured batch-1 search time is kept.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf

from recgpt_tf.contract import AUTO_INDEX, INDEX_CHOICES, INDEX_KINDS, PARTITIONED_MIN_ITEMS
from recgpt_tf.errors import IndexRecallError, check_choice
from recgpt_tf.retrieval.base import ItemIndex
from recgpt_tf.retrieval.brute_force import BruteForceIndex
from recgpt_tf.retrieval.partitioned import PartitionedIndex
from recgpt_tf.retrieval.scann_artifacts import default_num_leaves, train_kmeans_partition
from recgpt_tf.retrieval.scann_op import ScannOpIndex

QuerySets = Mapping[str, tuple[np.ndarray, np.ndarray]]  # name → (queries [Q, d], exclusions [Q, E])


def recall_at_k(index: ItemIndex, reference: ItemIndex | np.ndarray, queries: np.ndarray, exclusions: np.ndarray, k: int) -> float:
    """Mean share of the exact top-k that `index` returns.

    Args:
        reference: An exact index, or its top-k ids [Q, k] for these queries, computed once.
    """
    exact = reference if isinstance(reference, np.ndarray) else exact_ids(reference, queries, exclusions, k)
    approx = exact_ids(index, queries, exclusions, k)
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx.tolist(), exact.tolist())]))


def exact_ids(index: ItemIndex, queries: np.ndarray, exclusions: np.ndarray, k: int, batch: int = 32) -> np.ndarray:
    """[Q, k] top-k ids from `index`, `batch` queries at a time (bounds the [batch, N] or
    [batch, candidates, d] blocks an index builds)."""
    return np.concatenate(
        [
            index.query_with_exclusions(tf.constant(queries[i : i + batch]), tf.constant(exclusions[i : i + batch]), k)[1].numpy()
            for i in range(0, len(queries), batch)
        ]
        or [np.zeros((0, k), np.int32)]
    )


def search_p50_ms(index: ItemIndex, query_sets: QuerySets, k: int, repeats: int = 40) -> float:
    """Median time of one batch-1 search (a traced function, as in the SavedModel)."""
    search = tf.function(lambda q, e: index.query_with_exclusions(q, e, k))
    rows = [(tf.constant(q[i : i + 1]), tf.constant(e[i : i + 1])) for q, e in query_sets.values() for i in range(min(len(q), repeats))]
    for q, e in rows[:3]:
        search(q, e)  # trace and warm up
    times = []
    for q, e in rows:
        start = time.perf_counter()
        search(q, e)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _smallest_passing(passes: Callable[[int], bool], high: int) -> int | None:
    """The smallest value in 1..high for which `passes` holds (recall grows with leaves searched).

    Doubling from 1 first, then bisecting: the search never evaluates far past the
    answer (searching every leaf of a million items for hundreds of queries at once
    is the brute force the index exists to avoid).
    """
    low, probe = 1, 1
    while not passes(probe):
        if probe >= high:
            return None
        low, probe = probe + 1, min(2 * probe, high)
    high = probe
    while low < high:
        mid = (low + high) // 2
        if passes(mid):
            high = mid
        else:
            low = mid + 1
    return low


def tune_leaves(indexes: Mapping[str, tuple[ItemIndex, list[int]]], query_sets: QuerySets, k: int, target: float) -> tuple[ItemIndex, dict]:
    """For each index and depth, the fewest leaves reaching `target`; the fastest of those wins.

    Args:
        indexes: label → (an index with `num_leaves` and `configure(leaves, depth)`,
            the depths to try: re-scored or re-ordered candidates).
        query_sets: Real queries and their exclusions.
        k: The list length recall is measured at.
        target: Recall@k every query set must reach.

    Returns:
        (the chosen index, configured; a report of every setting tried).

    Raises:
        IndexRecallError: if no setting reaches `target`, naming the best recall.
    """
    any_index = next(iter(indexes.values()))[0]
    reference = BruteForceIndex(any_index.candidates)
    exact = {name: exact_ids(reference, q, e, k) for name, (q, e) in query_sets.items()}
    finalists, best_seen = [], {}
    for label, (index, depths) in indexes.items():
        for depth in depths:
            recalls: dict[int, dict[str, float]] = {}

            def passes(leaves: int) -> bool:
                index.configure(leaves, depth)
                recalls[leaves] = {name: recall_at_k(index, exact[name], q, e, k) for name, (q, e) in query_sets.items()}
                return min(recalls[leaves].values()) >= target

            leaves = _smallest_passing(passes, index.num_leaves)
            best_seen[f"{label}/{depth}"] = recalls[max(recalls)]
            if leaves is None:
                continue
            index.configure(leaves, depth)
            finalists.append(
                {
                    "label": label,
                    "depth": depth,
                    "leaves_to_search": leaves,
                    "recall": recalls[leaves],
                    "search_p50_ms": search_p50_ms(index, query_sets, k),
                    "_index": index,
                }
            )
    if not finalists:
        raise IndexRecallError(
            f"no search setting reached recall@{k} >= {target} on the run's queries (recall searching every leaf: {best_seen})"
        )
    chosen = min(finalists, key=lambda f: f["search_p50_ms"])
    chosen["_index"].configure(chosen["leaves_to_search"], chosen["depth"])
    report = {
        "recall_target": target,
        "recall_at": k,
        "recall": chosen["recall"],
        "queries": {name: int(len(q)) for name, (q, _) in query_sets.items()},
        "search_p50_ms_batch_1": chosen["search_p50_ms"],
        "settings_tried": [{key: value for key, value in f.items() if key != "_index"} for f in finalists],
    }
    return chosen["_index"], report


def resolve_index_kind(kind: str, num_items: int) -> str:
    """ "auto" → "partitioned" from `PARTITIONED_MIN_ITEMS` items up, else "brute-force"; other kinds unchanged."""
    check_choice("index_kind", kind, INDEX_CHOICES)
    if kind == AUTO_INDEX:
        return "partitioned" if num_items >= PARTITIONED_MIN_ITEMS else "brute-force"
    return kind


def build_index(
    kind: str, candidates, query_sets: QuerySets, k: int, recall_target: float = 0.95, num_leaves: int | None = None
) -> tuple[ItemIndex, dict]:
    """An index of `kind` over `candidates` [N, d], tuned on `query_sets`.

    Args:
        kind: "brute-force", "partitioned" or "scann".
        candidates: [N, d] float32 item embeddings (row j = item id j + 1).
        query_sets: Real queries and exclusions, e.g. {"step_1": (h1, history), "step_2": (h2, ...)}.
        k: List length recall is measured at.
        recall_target: Recall@k each query set must reach.
        num_leaves: Leaves ScaNN trains (default about 2·√N).

    Returns:
        (index, metadata: its configuration, the measured recall, the settings tried, build time).

    Raises:
        IndexRecallError: if `kind` cannot reach `recall_target`.
    """
    start = time.perf_counter()
    candidates = np.asarray(candidates, np.float32)
    k = min(k, len(candidates))
    if kind == "brute-force":
        return BruteForceIndex(candidates), {"kind": kind, "recall": {name: 1.0 for name in query_sets}, "recall_at": k}
    num_leaves = num_leaves or default_num_leaves(len(candidates))
    if kind == "partitioned":
        partition = train_kmeans_partition(candidates, num_leaves)
        indexes = {
            "float32": (PartitionedIndex(candidates, partition, leaves_to_search=1, storage_dtype="float32"), [0]),
            "bfloat16": (
                PartitionedIndex(candidates, partition, leaves_to_search=1, storage_dtype="bfloat16", name="partitioned_index_bf16"),
                [2 * k, 8 * k],
            ),
        }
    elif kind == "scann":
        index = ScannOpIndex(candidates, num_leaves, leaves_to_search=num_leaves, reordering_candidates=10 * k)
        indexes = {"ah": (index, [10 * k, 50 * k, 200 * k])}  # exact re-ordering depths
    else:
        check_choice("kind", kind, INDEX_KINDS)
    build_seconds = time.perf_counter() - start
    index, report = tune_leaves(indexes, query_sets, k, recall_target)
    tune_seconds = time.perf_counter() - start - build_seconds
    return index, {**index.get_config(), **report, "build_seconds": build_seconds, "tune_seconds": tune_seconds}
