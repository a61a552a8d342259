"""What the worst in-limits `recommend_excluding` request costs the process that runs the signature (issue 33,
class 3): memory and time, for each index kind, as TF Serving would run the graph (no `recgpt serve` caps).

The request: `--rows` rows (200), each with a history of `--history` distinct items (1,000) and `--exclude`
distinct exclusions (10,000, the documented limit), against a synthetic catalogue of `--items` items (random
weights, the exporter's real graph). Each kind is exported by this checkout's package, then a fresh process
loads the SavedModel, answers one small request (warm-up), resets its high-water mark
(`/proc/self/clear_refs`), builds the inputs, answers the request, and reports its peak resident memory above
the level before the inputs were built (the inputs' own strings included, as a server holds them). The same
process then sends a row of `--exclude` + 1 exclusions, which the signature itself must refuse.

    python benchmarks/exclusion_memory.py --json benchmarks/results/exclusion_memory.json
    PYTHONPATH=/path/to/an/older/checkout python benchmarks/exclusion_memory.py --json ..._before.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

import recgpt_tf
from lab import export_synthetic, machine, synthetic_model, utc_now
from recgpt_tf.contract import EXCLUDING_SIGNATURE, METADATA_FILE
from recgpt_tf.files import write_json


def memory_mb() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def request(rng: np.random.Generator, items: int, rows: int, history: int, exclude: int) -> dict:
    """The signature's inputs: distinct catalogue ids per row ("1".."N")."""
    ids = np.array([str(i) for i in range(1, items + 1)], dtype=object)
    chosen = [rng.choice(items, size=history + exclude, replace=False) for _ in range(rows)]
    return {
        "user_id": tf.constant(np.array([str(u) for u in rng.integers(1, 1000, size=rows)], dtype=object)),
        "history": tf.constant(np.stack([ids[c[:history]] for c in chosen])),
        "exclude": tf.constant(np.stack([ids[c[history:]] for c in chosen])),
    }


def child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: one worst in-limits request and one over the limit; prints a JSON line."""
    signature = tf.saved_model.load(args.child).signatures[EXCLUDING_SIGNATURE]
    rng = np.random.default_rng(0)
    signature(**request(rng, args.items, 1, 3, 3))  # warm-up: traced functions, tables
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark starts again from here
    before = memory_mb()
    inputs = request(rng, args.items, args.rows, args.history, args.exclude)
    built = memory_mb()
    start = time.perf_counter()
    outputs = signature(**inputs)
    seconds = time.perf_counter() - start
    after = memory_mb()
    over = request(rng, args.items, 1, 3, args.exclude + 1)
    try:
        signature(**over)
        refused = None
    except tf.errors.InvalidArgumentError as error:
        refused = next((line.strip() for line in error.message.splitlines() if "limit" in line), error.message)[:300]
    print(
        json.dumps(
            {
                "rss_mb_before_inputs": before["VmRSS"],
                "inputs_mb": round(built["VmRSS"] - before["VmRSS"], 1),
                "peak_mb_above_before": round(after["VmHWM"] - before["VmRSS"], 1),
                "rss_mb_after": after["VmRSS"],
                "seconds": round(seconds, 3),
                "answered_rows": int(outputs["item_ids"].shape[0]),
                "over_limit_row_refused_in_graph": refused,
            }
        )
    )


def partitioned(model, leaves_to_search: int) -> tuple:
    """A partitioned index over the model's items searching `leaves_to_search` leaves (no tuning: the setting
    is the benchmark's, so that every checkout measures the same search)."""
    from recgpt_tf.retrieval.tuning import build_index

    rng = np.random.default_rng(0)
    queries = {"step_1": (rng.normal(size=(64, model.backbone.hidden_size)).astype(np.float32), np.zeros([64, 1], np.int32))}
    index, info = build_index("partitioned", model.candidate_embeddings().numpy(), queries, 10, recall_target=0.0)
    index.configure(leaves_to_search, index.rescore_depth)
    return index, {**info, **index.get_config()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12101)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--exclude", type=int, default=10_000)
    parser.add_argument("--kinds", default="brute-force,partitioned")
    parser.add_argument("--leaves-to-search", type=int, default=8, help="the partitioned index's setting (of about 2·√N leaves)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.child:
        return child(args)
    report = {
        "measured": utc_now(),
        "machine": machine(),
        "package": str(Path(recgpt_tf.__file__).parent),
        "request": {"rows": args.rows, "history": args.history, "exclude": args.exclude, "items": args.items},
        "kinds": {},
    }
    model = synthetic_model(args.items)
    for kind in args.kinds.split(","):
        version = export_synthetic(model, kind, index=partitioned(model, args.leaves_to_search) if kind == "partitioned" else None)
        index = json.loads((version / "assets.extra" / METADATA_FILE).read_text())["index"]
        command = [
            sys.executable,
            __file__,
            "--child",
            str(version),
            *(f"--{k}={getattr(args, k)}" for k in ("items", "rows", "history", "exclude")),
        ]
        answer = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        report["kinds"][kind] = {
            **json.loads(answer),
            "index": {k: index.get(k) for k in ("kind", "leaves_to_search", "num_leaves", "rescore_depth", "storage_dtype")},
        }
        print(kind, json.dumps(report["kinds"][kind]), flush=True)
    if args.json:
        write_json(args.json, report)


if __name__ == "__main__":
    main()
