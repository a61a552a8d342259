"""The partitioned index on geometries no trained model chose: does its promised recall hold on queries
the tuning never saw, how fast is it against exact search at batch 1 and 64, and how long does the export
take to tune it?

Geometries (item embeddings and queries drawn with numpy, seeded; d = 64):
- clustered: items in `--clusters` Gaussian clusters (centres N(0, I), items at spread 0.35 around them),
  each item scaled by a log-normal norm (σ 0.5), so no small head of large-norm items holds the answers;
  queries are noisy cluster centres.
- near_uniform: the same with a spread of 3.0, so wide the clusters merge into an almost uniform cloud,
  where a partition has little to exploit.
Each geometry gets 256 tuning queries per recall step (as an export's sample requests) and 512 held-out
queries per step, each with 20 random "history" exclusions. The index is built and tuned exactly as the
export does (`build_index`, target recall@10, time budget); a refusal is recorded with its message.

    python benchmarks/index_geometry.py --items 1000000 --json benchmarks/results/index_geometry_1000000.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from recgpt_tf.benchmarking import stamp, write_report
from recgpt_tf.config import ExportConfig
from recgpt_tf.errors import IndexRecallError
from recgpt_tf.retrieval import BruteForceIndex, build_index
from recgpt_tf.retrieval.tuning import MAX_SERVING_BATCH, recalls, search_p50_ms, top_k

DIM, K = 64, 10
SPREADS = {"clustered": 0.35, "near_uniform": 3.0}


def geometry(name: str, items: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item embeddings [N, d], cluster of each item, cluster centres [C, d])."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    member = rng.integers(0, clusters, size=items)
    table = centres[member] + SPREADS[name] * rng.normal(size=(items, DIM)).astype(np.float32)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    return (table * rng.lognormal(0.0, 0.5, size=(items, 1))).astype(np.float32), member, centres


def query_sets(centres: np.ndarray, items: int, count: int, rng: np.random.Generator) -> dict:
    """{"step_1", "step_2"}: queries near random cluster centres, each with 20 excluded random items."""
    sets = {}
    for step in ("step_1", "step_2"):
        chosen = centres[rng.integers(0, len(centres), size=count)]
        queries = (chosen + 0.5 * rng.normal(size=chosen.shape)).astype(np.float32)
        sets[step] = (queries, rng.integers(1, items + 1, size=(count, 20)).astype(np.int32))
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--clusters", type=int, default=4000)
    parser.add_argument("--geometries", nargs="+", default=list(SPREADS), choices=list(SPREADS))
    parser.add_argument("--recall-target", type=float, default=ExportConfig.recall_threshold)
    parser.add_argument("--tuning-seconds", type=float, default=ExportConfig.tuning_seconds)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    report = stamp({"items": args.items, "clusters": args.clusters, "recall_target": args.recall_target, "geometries": {}})
    for name in args.geometries:
        table, _, centres = geometry(name, args.items, args.clusters, args.seed)
        rng = np.random.default_rng(args.seed + 1)
        tuning, held_out = query_sets(centres, args.items, 256, rng), query_sets(centres, args.items, 512, rng)
        start = time.perf_counter()
        entry: dict = {}
        try:
            index, info = build_index("partitioned", table, tuning, K, args.recall_target, tuning_seconds=args.tuning_seconds)
        except IndexRecallError as error:
            entry = {"refused": str(error), "build_and_tune_seconds": round(time.perf_counter() - start, 1)}
        else:
            exact = BruteForceIndex(table)
            entry = {
                "build_and_tune_seconds": round(time.perf_counter() - start, 1),
                "leaves_to_search": info["leaves_to_search"],
                "num_leaves": info["num_leaves"],
                "export_reported_recall": info["recall"],
                "export_reported_probability_recall": info["probability_recall"],
            }
            measured = recalls(index, held_out, {step: top_k(exact, q, e, K) for step, (q, e) in held_out.items()}, K)
            entry["held_out_recall"], entry["held_out_probability_recall"] = measured["recall"], measured["probability_recall"]
            for batch in (1, MAX_SERVING_BATCH):
                mine, theirs = search_p50_ms(index, held_out, K, batch=batch), search_p50_ms(exact, held_out, K, batch=batch)
                entry[f"batch_{batch}"] = {"index_ms": mine, "exact_ms": theirs, "ratio": mine / theirs}
        report["geometries"][name] = entry
        print(name, entry, flush=True)
        write_report(args.json, report)  # partial results survive an interruption


if __name__ == "__main__":
    main()
