"""Export-time tuning: the cheapest search setting whose recall target holds on queries it never saw.

Recall is measured the way the serving graph uses the index: each query set
(h1 with the history excluded, h2 with the history and the first step's items
excluded) asks for the top k, and recall@k is the share of the exact top k
(brute force, same exclusions) the index returns, averaged over queries.

Recall counts every exact item alike, but the items a user picks are the likely ones, and an index can
miss exactly those (Beauty: HR@10 lost 1.8% at recall@10 0.974, 0.9% at 0.961). So a second measure,
probability recall, weights each exact item by the model's probability (a softmax of the exact top-k
scores): the share of the exact list's expected hits the index keeps. Both must reach the target.

The run's sample requests are split in two. On the tuning half, every query set must reach the target
with its lower 95% confidence bound (mean − 1.645·s/√n), not its mean: the fewest leaves that pass on the
mean are biased low (a winner's curse), and the promise would not hold on other queries. That bound also
keeps the margin the held-out check will take, so that the setting chosen is not one at the edge. The
held-out half then measures the recall the export reports, with its interval (mean ± 1.645 standard
errors), and the export is refused unless the interval's low end reaches the target: the promise is a
statement about requests neither half has seen, judged as the tuning is. Tuning stops
at a time budget. Among the settings that pass, the one fastest relative to exact search at its worse of
batch 1 and the server's largest batch is kept.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import numpy as np
import tensorflow as tf

from recgpt_tf.config import ExportConfig
from recgpt_tf.contract import AUTO_INDEX, INDEX_CHOICES, INDEX_KINDS, PARTITIONED_MIN_ITEMS
from recgpt_tf.errors import IndexRecallError, check_choice
from recgpt_tf.retrieval.base import ItemIndex
from recgpt_tf.retrieval.brute_force import BruteForceIndex
from recgpt_tf.retrieval.partitioned import PartitionedIndex
from recgpt_tf.retrieval.scann_artifacts import default_num_leaves, train_kmeans_partition
from recgpt_tf.retrieval.scann_op import ScannOpIndex

QuerySets = Mapping[str, tuple[np.ndarray, np.ndarray]]  # name → (queries [Q, d], exclusions [Q, E])
# One-sided 95% normal quantile: the tuning recall's lower confidence bound must reach the target.
_Z95 = 1.645
# The held-out check's margin the tuning keeps, in its standard errors. Simulated (tests/test_retrieval.py: 512
# queries a half, recall@10 of settings 0.001 apart): the first setting to pass the tuning then passes a fresh
# check 34% of the time with no margin, 82% with 1.0 and 92% with 1.5, for 0.002 more true recall.
_CHECK_MARGIN = 1.5
# TF Serving's batching (batching_parameters.txt) hands the model batches of up to this many requests.
MAX_SERVING_BATCH = 64
# Share of the tuning time budget the search over settings may take; the rest times the settings found
# (a setting that searches many leaves is slow to time at batch 64), so the whole tuning keeps to the budget.
SEARCH_SHARE = 0.6


class _OutOfTime(Exception):
    """The tuning time budget ran out."""


def split_query_sets(query_sets: QuerySets, held_out_share: float = 0.5, seed: int = 0) -> tuple[dict, dict]:
    """(tuning, held-out) halves of every query set: the same random rows of each (the steps of one request
    stay together)."""
    size = min(len(q) for q, _ in query_sets.values())
    order = np.random.default_rng(seed).permutation(size)
    cut = max(1, int(round(size * (1 - held_out_share))))
    tune_rows, held_rows = order[:cut], order[cut:]
    tuning = {name: (q[tune_rows], e[tune_rows]) for name, (q, e) in query_sets.items()}
    held_out = {name: (q[held_rows], e[held_rows]) for name, (q, e) in query_sets.items()} if len(held_rows) else tuning
    return tuning, held_out


def _standard_error(per_query: np.ndarray) -> float:
    """The standard error of a mean recall from its per-query values (0 for fewer than 2)."""
    return float(np.std(per_query, ddof=1) / np.sqrt(len(per_query))) if len(per_query) > 1 else 0.0


def recall_lower_bound(per_query: np.ndarray, held_out: int | None = None) -> float:
    """One-sided 95% lower confidence bound of a mean recall from its per-query values.

    With `held_out` (the number of queries a later check will judge the same setting on), the bound is
    lowered further by the margin that check's own bound will take (1.645·s/√held_out, s estimated here),
    half again (`_CHECK_MARGIN`) for the luck of the first setting to pass: a setting that passes is one
    whose held-out bound is expected to pass too, rather than one at the edge that the check refuses.
    """
    spread = np.std(per_query, ddof=1) if len(per_query) > 1 else 0.0  # s; 0 for a single query
    check = _CHECK_MARGIN / np.sqrt(held_out) if held_out else 0.0
    return float(np.mean(per_query) - _Z95 * spread * (1 / np.sqrt(len(per_query)) + check))


def recall_interval(per_query: np.ndarray) -> list[float]:
    """[low, high]: the mean recall ± 1.645 standard errors (two-sided 90%; the low end is the one-sided 95%
    lower bound the promise is judged by)."""
    mean, error = float(np.mean(per_query)), _standard_error(per_query)
    return [mean - _Z95 * error, mean + _Z95 * error]


def recall_at_k(
    index: ItemIndex,
    reference: ItemIndex | np.ndarray,
    queries: np.ndarray,
    exclusions: np.ndarray,
    k: int,
    weights: np.ndarray | None = None,
) -> float:
    """Mean share of the exact top-k that `index` returns (weighted: see `per_query_recall`).

    Args:
        reference: An exact index, or its top-k ids [Q, k] for these queries, computed once.
    """
    return float(np.mean(per_query_recall(returned(index, reference, queries, exclusions, k), weights)))


def returned(index: ItemIndex, reference: ItemIndex | np.ndarray, queries: np.ndarray, exclusions: np.ndarray, k: int) -> np.ndarray:
    """[Q, k] bool: whether `index` returns each of the exact top-k (`reference`: an exact index, or its ids)."""
    exact = reference if isinstance(reference, np.ndarray) else top_k(reference, queries, exclusions, k)[1]
    approx = top_k(index, queries, exclusions, k)[1]
    return (exact[:, :, np.newaxis] == approx[:, np.newaxis, :]).any(axis=-1)


def per_query_recall(hits: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """[Q] share of each query's exact top-k returned (`hits`, from `returned`): each exact item counts 1/k,
    or its weight in `weights` [Q, k] (rows summing to 1, in the reference's order; e.g. `probability_weights`).
    A slot the exact search could not fill (every other item excluded: id 0) counts as returned when the
    index cannot fill it either."""
    return (hits * (np.full(hits.shape, 1.0 / hits.shape[1]) if weights is None else weights)).sum(axis=1)


def probability_weights(scores: np.ndarray) -> np.ndarray:
    """[Q, k] each exact top-k item's share of the model's probability mass over the exact top-k (a softmax
    of its scores); uniform for a row with no finite score.

    A model trained with the catalogue softmax scores items with its log-probabilities up to a constant per
    query, so the share of this mass a list returns is the share of the exact list's expected hits it keeps:
    what HR@k through the index loses, which plain recall does not see when the items an index misses are
    the likely ones (Beauty: a partitioned index at recall@10 0.974 lost 1.8% of HR@10, one at 0.961 lost
    0.9%; docs/results.md).
    """
    finite = np.isfinite(scores)
    top = np.where(finite, scores, -np.inf).max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)  # a row with no finite score: no shares, weighed uniformly below
    shares = np.where(finite, np.exp(np.where(finite, scores - top, 0.0)), 0.0)
    total = shares.sum(axis=1, keepdims=True)
    return np.where(total > 0, shares / np.maximum(total, np.finfo(shares.dtype).tiny), 1.0 / scores.shape[1])


def recalls(
    index: ItemIndex, sets: dict[str, tuple[np.ndarray, np.ndarray]], exact: dict[str, tuple[np.ndarray, np.ndarray]], k: int
) -> dict:
    """{"recall": {set: value}, "probability_recall": {set: value}, and each one's "..._interval": {set: [low,
    high]}}: for each named set of (queries, exclusions), the mean share of the exact top-k that `index`
    returns, plain and weighted by the model's probabilities, with its `recall_interval`, from one search of
    `index` (`exact[set]`: the reference's top-k (scores, ids) for it)."""
    measured: dict[str, dict] = {"recall": {}, "probability_recall": {}, "recall_interval": {}, "probability_recall_interval": {}}
    for name, (queries, exclusions) in sets.items():
        scores, ids = exact[name]
        hits = returned(index, ids, queries, exclusions, k)
        for measure, weights in (("recall", None), ("probability_recall", probability_weights(scores))):
            per_query = per_query_recall(hits, weights)
            measured[measure][name] = float(np.mean(per_query))
            measured[f"{measure}_interval"][name] = recall_interval(per_query)
    return measured


def top_k(index: ItemIndex, queries: np.ndarray, exclusions: np.ndarray, k: int, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """([Q, k] scores, [Q, k] ids) of the top k from `index`, `batch` queries at a time (bounds the [batch, N]
    or [batch, candidates, d] blocks an index builds)."""
    parts = [
        [t.numpy() for t in index.query_with_exclusions(tf.constant(queries[i : i + batch]), tf.constant(exclusions[i : i + batch]), k)]
        for i in range(0, len(queries), batch)
    ]
    if not parts:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def search_p50_ms(index: ItemIndex, query_sets: QuerySets, k: int, repeats: int = 40, batch: int = 1) -> float:
    """Median time of one search of `batch` queries (a traced function, as in the SavedModel)."""
    search = tf.function(lambda q, e: index.query_with_exclusions(q, e, k))
    repeats = repeats if batch == 1 else max(3, repeats // 8)
    rows = []
    for q, e in query_sets.values():
        tiled = np.resize(np.arange(len(q)), max(len(q), batch * repeats))  # enough rows for `repeats` batches
        rows += [(tf.constant(q[tiled[i : i + batch]]), tf.constant(e[tiled[i : i + batch]])) for i in range(0, batch * repeats, batch)][
            :repeats
        ]
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


def tune_leaves(
    indexes: Mapping[str, tuple[ItemIndex, list[int]]],
    query_sets: QuerySets,
    k: int,
    target: float,
    seconds: float = ExportConfig.tuning_seconds,
    max_batch: int = MAX_SERVING_BATCH,
) -> tuple[ItemIndex, dict]:
    """For each index and depth, the fewest leaves whose tuning recall passes `target` (lower confidence
    bound); of those, the fastest against exact search; then its recall on the held-out queries.

    Args:
        indexes: label → (an index with `num_leaves` and `configure(leaves, depth)`,
            the depths to try: re-scored or re-ordered candidates).
        query_sets: Real queries and their exclusions (split here into tuning and held-out halves).
        k: The list length recall is measured at.
        target: Recall@k every query set must reach, on queries the tuning never saw.
        seconds: Time budget of the tuning: the search over settings stops at `SEARCH_SHARE` of it, and the
            settings found by then are timed while it lasts (the cheapest first, always at least one).
        max_batch: The largest batch the server hands the model (timed beside batch 1).

    Returns:
        (the chosen index, configured; a report: held-out recall, tuning recall and its bound, times at
        batch 1 and `max_batch` against exact search, every setting tried).

    Raises:
        IndexRecallError: if no setting passes within the budget, or the chosen one falls short on the
            held-out queries, naming the recall reached and what to change.
    """
    start = time.perf_counter()
    deadline = start + SEARCH_SHARE * seconds  # the rest of the budget times the settings found
    tuning, held_out = split_query_sets(query_sets)
    held_out_size = len(next(iter(held_out.values()))[0]) if held_out is not tuning else None
    any_index = next(iter(indexes.values()))[0]
    reference = BruteForceIndex(any_index.candidates)
    exact = {name: top_k(reference, q, e, k) for name, (q, e) in tuning.items()}  # (scores, ids)
    # Each measure's weights per query set: plain recall, and recall weighted by the model's probabilities.
    measures = {
        "recall": dict.fromkeys(exact),
        "probability_recall": {name: probability_weights(scores) for name, (scores, _) in exact.items()},
    }
    finalists, best_seen, stopped = [], {}, False
    for label, (index, depths) in indexes.items():
        for depth in depths:
            bounds: dict[int, dict[str, float]] = {}

            def passes(leaves: int) -> bool:
                if time.perf_counter() > deadline:
                    raise _OutOfTime
                index.configure(leaves, depth)
                hits = {name: returned(index, exact[name][1], q, e, k) for name, (q, e) in tuning.items()}
                bounds[leaves] = {
                    measure: {name: recall_lower_bound(per_query_recall(hits[name], weights[name]), held_out_size) for name in tuning}
                    for measure, weights in measures.items()
                }
                return min(v for by_name in bounds[leaves].values() for v in by_name.values()) >= target

            try:
                leaves = _smallest_passing(passes, index.num_leaves)
            except _OutOfTime:
                stopped, leaves = True, None
            if bounds:
                best_seen[f"{label}/{depth}"] = bounds[max(bounds)]
            if leaves is None:
                if stopped:
                    break
                continue
            index.configure(leaves, depth)
            finalists.append(
                {"label": label, "depth": depth, "leaves_to_search": leaves, "tuning_lower_bounds": bounds[leaves], "_index": index}
            )
        if stopped:
            break
    if not finalists:
        why = f"tuning stopped at its time budget of {seconds:.0f} s" if stopped else "no search setting reached it"
        raise IndexRecallError(
            f"recall@{k} >= {target} (lower 95% bound on {len(next(iter(tuning.values()))[0])} tuning queries): {why}; "
            f"best bounds reached: {best_seen}. Raise the tuning time, lower the recall target, or use the brute-force index"
        )
    exact_times = {batch: search_p50_ms(reference, query_sets, k, batch=batch) for batch in (1, max_batch)}
    timed = []
    for finalist in sorted(finalists, key=lambda f: f["leaves_to_search"]):  # the likely fastest first
        if timed and time.perf_counter() > start + seconds:
            finalist["not_timed"] = "the tuning time budget ran out"
            continue
        finalist["_index"].configure(finalist["leaves_to_search"], finalist["depth"])
        for batch in (1, max_batch):
            finalist[f"search_p50_ms_batch_{batch}"] = search_p50_ms(finalist["_index"], query_sets, k, batch=batch)
        finalist["slowest_ratio_to_exact"] = max(finalist[f"search_p50_ms_batch_{b}"] / exact_times[b] for b in (1, max_batch))
        timed.append(finalist)
    chosen = min(timed, key=lambda f: f["slowest_ratio_to_exact"])
    index = chosen["_index"]
    index.configure(chosen["leaves_to_search"], chosen["depth"])
    measured = recalls(index, held_out, {name: top_k(reference, q, e, k) for name, (q, e) in held_out.items()}, k)
    held, held_probability = measured["recall"], measured["probability_recall"]
    report = {
        "recall_target": target,
        "recall_at": k,
        "recall": held,  # measured on queries the tuning never saw: what the served index has
        "probability_recall": held_probability,  # the same, each exact item weighted by the model's probability
        # Mean ± 1.645 standard errors on the held-out queries; the promise holds when every low end reaches the target.
        "recall_interval": measured["recall_interval"],
        "probability_recall_interval": measured["probability_recall_interval"],
        "tuning_recall_lower_bound": chosen["tuning_lower_bounds"]["recall"],
        "tuning_probability_recall_lower_bound": chosen["tuning_lower_bounds"]["probability_recall"],
        "queries": {"tuning": len(next(iter(tuning.values()))[0]), "held_out": len(next(iter(held_out.values()))[0])},
        "search_p50_ms_batch_1": chosen["search_p50_ms_batch_1"],
        f"search_p50_ms_batch_{max_batch}": chosen[f"search_p50_ms_batch_{max_batch}"],
        "exact_search_p50_ms": {f"batch_{b}": t for b, t in exact_times.items()},
        "tuning_stopped_at_budget": stopped,
        "settings_tried": [{key: value for key, value in f.items() if key != "_index"} for f in finalists],
    }
    lows = [low for intervals in (measured["recall_interval"], measured["probability_recall_interval"]) for low, _ in intervals.values()]
    if min(lows) < target:
        raise IndexRecallError(
            f"the chosen setting ({chosen['label']}, {chosen['leaves_to_search']} leaves) reached recall@{k} {_rounded(held)} "
            f"(probability-weighted {_rounded(held_probability)}) on {report['queries']['held_out']} held-out queries, whose lower 95% "
            f"bound {min(lows):.4f} is below the target {target}. Export with more sample requests (a run trained before 2026-12-06 keeps "
            "256: rerun its recgpt train command, which keeps its finished stages and draws 1,024), a lower recall target, or the "
            "brute-force index"
        )
    return index, report


def _rounded(values: dict[str, float]) -> dict[str, float]:
    """Recalls for a message."""
    return {name: round(value, 4) for name, value in values.items()}


def resolve_index_kind(kind: str, num_items: int) -> str:
    """ "auto" → "partitioned" from `PARTITIONED_MIN_ITEMS` items up, else "brute-force"; other kinds unchanged."""
    check_choice("index_kind", kind, INDEX_CHOICES)
    if kind == AUTO_INDEX:
        return "partitioned" if num_items >= PARTITIONED_MIN_ITEMS else "brute-force"
    return kind


def build_index(
    kind: str,
    candidates,
    query_sets: QuerySets,
    k: int,
    recall_target: float = ExportConfig.recall_threshold,
    num_leaves: int | None = None,
    tuning_seconds: float = ExportConfig.tuning_seconds,
) -> tuple[ItemIndex, dict]:
    """An index of `kind` over `candidates` [N, d], tuned on `query_sets`.

    Args:
        kind: "brute-force", "partitioned" or "scann".
        candidates: [N, d] float32 item embeddings (row j = item id j + 1).
        query_sets: Real queries and exclusions, e.g. {"step_1": (h1, history), "step_2": (h2, ...)}.
        k: List length recall is measured at.
        recall_target: Recall@k each query set must reach.
        num_leaves: Leaves ScaNN trains (default about 2·√N).
        tuning_seconds: Time budget of building and tuning an approximate index (`tune_leaves`).

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
    # The budget also pays for training the partition, so an export's whole index step keeps to it.
    index, report = tune_leaves(indexes, query_sets, k, recall_target, max(tuning_seconds - build_seconds, 0.0))
    tune_seconds = time.perf_counter() - start - build_seconds
    return index, {**index.get_config(), **report, "build_seconds": build_seconds, "tune_seconds": tune_seconds}
