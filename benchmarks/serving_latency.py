"""In-process latency of the exported recommend signature, ScaNN vs brute force.

Builds a RecGPT over a synthetic catalogue of N items (weights random: latency
does not depend on training), exports both flavours with the real exporter,
loads each SavedModel and times the `serving_default` signature at batch 1 and
batch 64 (p50/p99 over repeated calls), and, in the same run, the raw ScaNN
search alone (the floor: the signature runs two of them).

    python benchmarks/serving_latency.py --items 1000000 --json benchmarks/results/latency_1m.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_export import MAX_HISTORY, STEPS, as_tensors, export_synthetic, random_requests, synthetic_model  # noqa: E402

import tensorflow as tf  # noqa: E402

from recgpt_tf.contract import RECOMMEND_SIGNATURE  # noqa: E402
from recgpt_tf.export import build_scann, scann_parameters  # noqa: E402
from recgpt_tf.export.index import index_recall  # noqa: E402


def percentiles(fn, repeats: int) -> dict:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "calls": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--hidden-size", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.items
    model = synthetic_model(n, args.hidden_size)
    work = Path(tempfile.mkdtemp(prefix="recgpt-latency-"))
    result = {"items": n, "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
              "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "step_sizes": list(STEPS)}
    # scann_xla: the same ScaNN export with XLA-compiled decoder passes (`recgpt export --jit-compile`).
    for key, flavour, jit in (("scann", "scann", False), ("brute_force", "brute-force", False), ("scann_xla", "scann", True)):
        start = time.perf_counter()
        path = export_synthetic(model, flavour, work, name=key, jit_compile=jit)
        meta = json.loads((path / "assets.extra" / "recgpt.json").read_text())
        signature = tf.saved_model.load(str(path)).signatures[RECOMMEND_SIGNATURE]
        result[key] = {"export_seconds": time.perf_counter() - start, "index": meta["index"]}
        for batch in (1, 64):
            u, h = as_tensors(*random_requests(rng, n, batch))
            result[key][f"batch_{batch}"] = percentiles(lambda: signature(user_id=u, history=h), args.repeats if batch == 1 else max(20, args.repeats // 4))
    # The floor: one raw ScaNN search over the same table, same parameters, k as the signature asks.
    candidates = model.candidate_embeddings()
    index = build_scann(candidates, sum(STEPS), scann_parameters(n, sum(STEPS)))
    result["ann_search_only"] = {"k": sum(STEPS) + 30}
    for batch in (1, 64):
        queries = tf.constant(rng.normal(size=(batch, args.hidden_size)).astype(np.float32))
        result["ann_search_only"][f"batch_{batch}"] = percentiles(lambda: index(queries, k=sum(STEPS) + 30), args.repeats)
    result["ann_search_only"]["recall_random_queries"] = index_recall(index, candidates, tf.constant(rng.normal(size=(64, args.hidden_size)).astype(np.float32)), sum(STEPS))
    # One decoder pass alone (the signature runs two): the part of the cost that is not retrieval.
    result["decoder_pass_only"] = {}
    for batch in (1, 64):
        users, histories = random_requests(rng, n, batch)
        ids = tf.constant([[int(i) for i in h] + [0] * (MAX_HISTORY - len(h)) for h in histories], tf.int32)
        inputs = {"user_id": tf.constant([int(u) for u in users], tf.int32), "item_ids": ids, "segment_ids": tf.zeros_like(ids)}
        decode = tf.function(lambda x: model.backbone(x, training=False))
        result["decoder_pass_only"][f"batch_{batch}"] = percentiles(lambda: decode(inputs), args.repeats)
    s, b, a = result["scann"]["batch_1"]["p50_ms"], result["brute_force"]["batch_1"]["p50_ms"], result["ann_search_only"]["batch_1"]["p50_ms"]
    x = result["scann_xla"]["batch_1"]["p50_ms"]
    result["ratios_batch_1"] = {"scann_over_brute_force": s / b, "scann_over_two_searches": s / (2 * a),
                                "scann_xla_over_brute_force": x / b, "scann_xla_over_two_searches": x / (2 * a)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
