"""The partitioned index on geometries no trained model chose: does its promised recall hold on queries
the tuning never saw, how fast is it against exact search at batch 1 and 64, and how long does the export
take to tune it?

Geometries (item embeddings and queries drawn with numpy, seeded; d = 64):
- clustered: items in `--clusters` Gaussian clusters (centres N(0, I), items at spread 0.35 around them),
  each item scaled by a log-normal norm (σ 0.5), so no small head of large-norm items holds the answers;
  queries are noisy cluster centres.
- near_uniform: the same with a spread of 3.0, so wide the clusters merge into an almost uniform cloud,
  where a partition has little to exploit.
Each build of a geometry gets `--sample-requests` queries per recall step (as an export's sample requests,
1,024 by default: half tune, half check the promise; drawn anew for each build, whose k-means partition is
also its own) and every build is then measured on the same 512 fresh queries per step that neither half
saw, each with 20 random "history" exclusions. The index is built and tuned exactly as the export does
(`build_index`, target recall@10, time budget); a refusal is recorded with its message. A build keeps its
promise when its recall on the fresh queries reaches the target; the fresh mean is also compared with the
interval the export states (mean ± 1.645 standard errors on its held-out half).

    python benchmarks/index_geometry.py --items 1000000 --json benchmarks/results/index_geometry_1000000.json
    python benchmarks/index_geometry.py --geometries clustered --builds 5 --json benchmarks/results/index_geometry_1000000_builds.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from lab import stamp, write_report
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
    parser.add_argument("--builds", type=int, default=1, help="exports of each geometry, each with its own sample requests and partition")
    parser.add_argument("--sample-requests", type=int, default=1024, help="per recall step, as a run keeps them (half tune, half check)")
    parser.add_argument("--fresh-queries", type=int, default=512, help="per recall step, seen by no build")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    report = stamp(
        {
            "items": args.items,
            "clusters": args.clusters,
            "recall_target": args.recall_target,
            "sample_requests": args.sample_requests,
            "fresh_queries": args.fresh_queries,
            "geometries": {},
        }
    )
    if args.json.exists():  # resume: builds already measured are kept
        report["geometries"] = json.loads(args.json.read_text()).get("geometries", {})
    for name in args.geometries:
        builds = report["geometries"].setdefault(name, {"builds": []})["builds"]
        report["geometries"][name]["summary"] = summarise(builds)
        if len(builds) >= args.builds:  # measured already (a resumed run): summarised anew only
            continue
        table, _, centres = geometry(name, args.items, args.clusters, args.seed)
        fresh = query_sets(centres, args.items, args.fresh_queries, np.random.default_rng(args.seed + 1))
        exact = BruteForceIndex(table)
        fresh_exact = {step: top_k(exact, q, e, K) for step, (q, e) in fresh.items()}
        for build in range(len(builds), args.builds):
            samples = query_sets(centres, args.items, args.sample_requests, np.random.default_rng(args.seed + 100 + build))
            builds.append(measure_build(table, samples, fresh, fresh_exact, exact, args, timings=build == 0))
            print(name, build, json.dumps(builds[-1]), flush=True)
            report["geometries"][name]["summary"] = summarise(builds)
            write_report(args.json, report)  # partial results survive an interruption
    write_report(args.json, report)
    print(json.dumps({name: entry.get("summary") for name, entry in report["geometries"].items()}, indent=2))


def measure_build(table, samples, fresh, fresh_exact, exact, args, timings: bool) -> dict:
    """One export's index: refused, or its stated recall and interval beside its recall on the fresh queries."""
    start = time.perf_counter()
    try:
        index, info = build_index("partitioned", table, samples, K, args.recall_target, tuning_seconds=args.tuning_seconds)
    except IndexRecallError as error:
        return {"refused": str(error), "build_and_tune_seconds": round(time.perf_counter() - start, 1)}
    entry = {
        "build_and_tune_seconds": round(time.perf_counter() - start, 1),
        "leaves_to_search": info["leaves_to_search"],
        "num_leaves": info["num_leaves"],
        "queries": info["queries"],
        "export_reported_recall": info["recall"],
        "export_reported_recall_interval": info.get("recall_interval"),
        "export_reported_probability_recall": info["probability_recall"],
        "export_reported_probability_recall_interval": info.get("probability_recall_interval"),
    }
    measured = recalls(index, fresh, fresh_exact, K)
    entry["fresh_recall"], entry["fresh_probability_recall"] = measured["recall"], measured["probability_recall"]
    entry["fresh_recall_meets_target"] = min(measured["recall"].values()) >= args.recall_target
    if timings:
        for batch in (1, MAX_SERVING_BATCH):
            mine, theirs = search_p50_ms(index, fresh, K, batch=batch), search_p50_ms(exact, fresh, K, batch=batch)
            entry[f"batch_{batch}"] = {"index_ms": mine, "exact_ms": theirs, "ratio": mine / theirs}
    return entry


def summarise(builds: list[dict]) -> dict:
    """How many builds were refused and, of the published ones, how many kept their promise on the fresh
    queries: the target, and the low end of the interval they stated (each step); how many fell inside it."""
    kept = [b for b in builds if "refused" not in b]

    def against_interval(build: dict, inside: bool) -> bool:
        stated = build.get("export_reported_recall_interval") or {}
        fresh = build["fresh_recall"]
        return bool(stated) and all(low <= fresh[step] and (not inside or fresh[step] <= high) for step, (low, high) in stated.items())

    return {
        "builds": len(builds),
        "refused": len(builds) - len(kept),
        "fresh_recall_meets_target": sum(b["fresh_recall_meets_target"] for b in kept),
        "fresh_recall_at_or_above_stated_low": sum(against_interval(b, inside=False) for b in kept),
        "fresh_recall_within_stated_interval": sum(against_interval(b, inside=True) for b in kept),
        "fresh_recall_worst_step": [round(min(b["fresh_recall"].values()), 4) for b in kept],
        "stated_low_worst_step": [round(min(low for low, _ in b["export_reported_recall_interval"].values()), 4) for b in kept],
    }


if __name__ == "__main__":
    main()
