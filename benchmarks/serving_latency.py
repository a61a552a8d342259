"""The worst case: signature latency over a RecGPT with RANDOM weights.

Random embeddings are near-orthogonal, the hardest geometry for a partitioned
index, and random-weight queries are not what a trained model asks; the figures
that judge the indexes come from `index_latency.py` on trained models. This one
exports every flavour over a synthetic catalogue of N items (recall threshold 0,
so the tuning's chosen setting is whatever is cheapest on these random queries)
and times the `serving_default` signature at batch 1 and 64, and one decoder pass.

    python benchmarks/serving_latency.py --items 1000000 --json benchmarks/results/latency_1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import recgpt_tf  # noqa: F401  (first: it selects Keras 2, which TFRS needs, before TensorFlow loads)

# isort: split

import numpy as np
import tensorflow as tf  # noqa: E402

from lab import (  # noqa: E402
    SYNTHETIC_MAX_HISTORY as MAX_HISTORY,
)
from lab import (
    SYNTHETIC_STEPS as STEPS,
)
from lab import (
    as_tensors,
    export_synthetic,
    random_requests,
    synthetic_model,
    time_calls,
    utc_now,
)
from recgpt_tf.contract import RECOMMEND_SIGNATURE  # noqa: E402
from recgpt_tf.files import write_json  # noqa: E402


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
    result = {
        "items": n,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "measured": utc_now(),
        "step_sizes": list(STEPS),
    }
    # scann_xla: the same ScaNN export with XLA-compiled decoder passes (`recgpt export --jit-compile`).
    flavours = (
        ("brute_force", "brute-force", False),
        ("partitioned", "partitioned", False),
        ("scann", "scann", False),
        ("scann_xla", "scann", True),
    )
    for key, flavour, jit in flavours:
        start = time.perf_counter()
        path = export_synthetic(model, flavour, work, name=key, jit_compile=jit)
        meta = json.loads((path / "assets.extra" / "recgpt.json").read_text())
        signature = tf.saved_model.load(str(path)).signatures[RECOMMEND_SIGNATURE]
        result[key] = {"export_seconds": time.perf_counter() - start, "index": meta["index"]}
        for batch in (1, 64):
            u, h = as_tensors(*random_requests(rng, n, batch))
            result[key][f"batch_{batch}"] = time_calls(
                lambda _: signature(user_id=u, history=h), args.repeats if batch == 1 else max(20, args.repeats // 4), warmup=5
            )
    # One decoder pass alone (the signature runs two): the part of the cost that is not retrieval.
    result["decoder_pass_only"] = {}
    for batch in (1, 64):
        users, histories = random_requests(rng, n, batch)
        ids = tf.constant([[int(i) for i in h] + [0] * (MAX_HISTORY - len(h)) for h in histories], tf.int32)
        inputs = {"user_id": tf.constant([int(u) for u in users], tf.int32), "item_ids": ids, "segment_ids": tf.zeros_like(ids)}
        decode = tf.function(lambda x: model.backbone(x, training=False))
        result["decoder_pass_only"][f"batch_{batch}"] = time_calls(lambda _: decode(inputs), args.repeats, warmup=5)
    b = result["brute_force"]["batch_1"]["p50_ms"]
    result["ratios_batch_1"] = {f"{key}_over_brute_force": result[key]["batch_1"]["p50_ms"] / b for key, _, _ in flavours[1:]}
    write_json(args.json, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
