"""The three embedded indexes side by side on a TRAINED model, in one run.

For a run directory (Beauty's, or one made by trained_catalogue.py at 100k or 1M
items) it builds each index exactly as `recgpt export` does (tuned on the run's
sample requests to recall@k >= the threshold at both steps), then measures, on
held-out requests the tuning never saw (test-split histories of other users):

- recall@10 of each recall step against exact search (h1 with the history
  excluded; h2 with the history and the first step's items excluded);
- one search p50 (batch 1 and 64) and the whole `serving_default` signature
  p50/p99 (batch 1 and 64) of the loaded SavedModel;
- index build + tuning time, export size on disk, the loaded model's resident
  memory (a fresh process per flavour: peak RSS after load and one request,
  minus the RSS after importing TensorFlow);
- with --quality, HR@10 / NDCG@10 of the whole test split computed from the
  signature's lists, per flavour (brute force = `recgpt evaluate`'s exact figure).

    python benchmarks/index_latency.py --run /tmp/trained-1m --json benchmarks/results/index_latency_1m.json
    python benchmarks/index_latency.py --run RUNS/beauty --data ../shared/data/Beauty.txt --quality --json ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import recgpt_tf  # noqa: F401  (first: it selects Keras 2, which TFRS needs, before TensorFlow loads)

# isort: split

import numpy as np
import tensorflow as tf  # noqa: E402

from lab import (  # noqa: E402
    make_dataset,
    time_calls,
    utc_now,
)
from recgpt_tf.config import ExportConfig  # noqa: E402
from recgpt_tf.contract import (  # noqa: E402
    INDEX_KINDS,
    RECOMMEND_SIGNATURE,
    pad_histories,  # noqa: E402
)
from recgpt_tf.export import RecGPTServingModule, publish_with_index, recall_queries, tuned_index  # noqa: E402
from recgpt_tf.files import write_json  # noqa: E402
from recgpt_tf.inference import split_k  # noqa: E402
from recgpt_tf.retrieval import BruteForceIndex  # noqa: E402
from recgpt_tf.retrieval.tuning import recalls, top_k  # noqa: E402
from recgpt_tf.runs import Run  # noqa: E402

K = 10


def test_requests(run: Run, args):
    """Every test-split (user, history, target) of the run's data."""
    if args.data:
        dataset = run.dataset(args.data)
    else:  # a trained_catalogue.py run: regenerate its data from the recipe
        recipe = json.loads(Path(f"{run.path}.trained_catalogue.json").read_text())["recipe"]
        dataset = make_dataset(argparse.Namespace(**recipe))
    split = dataset.split("test")
    users = dataset.user_vocab.decode(split.users)
    histories = [dataset.item_vocab.decode(h) for h in split.histories]
    targets = dataset.item_vocab.decode(split.targets)
    return list(zip(users, histories, targets))


def resident_memory_mb(path: Path, kind: str, request: tuple[list, list]) -> float:
    """Resident memory (VmRSS) a fresh process gains by loading the SavedModel and answering one request."""
    code = (
        "import tensorflow as tf\n"
        + ("import scann\n" if kind == "scann" else "")
        + "rss = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])\n"
        "base = rss()\n"
        f"sig = tf.saved_model.load({str(path)!r}).signatures[{RECOMMEND_SIGNATURE!r}]\n"
        f"sig(user_id=tf.constant({request[0]!r}), history=tf.constant({pad_histories(request[1]).tolist()!r}))\n"
        "print((rss() - base) / 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    )
    return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else float("nan")


def list_quality(signature, requests, batch: int = 512) -> dict:
    hits, gains = [], []
    for start in range(0, len(requests), batch):
        chunk = requests[start : start + batch]
        out = signature(user_id=tf.constant([u for u, _, _ in chunk]), history=tf.constant(pad_histories([h for _, h, _ in chunk])))
        for row, (_, _, target) in zip(out["item_ids"].numpy().astype(str), chunk):
            rank = list(row).index(target) if target in row else -1
            hits.append(rank >= 0)
            gains.append(1.0 / np.log2(rank + 2) if rank >= 0 else 0.0)
    return {"HR@10": float(np.mean(hits)), "NDCG@10": float(np.mean(gains)), "users": len(hits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, help="the run's data file (default: regenerate a trained_catalogue.py run's data)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--kinds", nargs="+", default=list(INDEX_KINDS))
    parser.add_argument("--measure-users", type=int, default=512)
    parser.add_argument("--first-step-size", type=int, help="m of the two-step m_n list (default: the run's evaluation, else 9)")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--recall-threshold", type=float, default=ExportConfig.recall_threshold)
    parser.add_argument("--quality", action="store_true", help="HR/NDCG@10 of the whole test split through each signature")
    args = parser.parse_args()

    run = Run.open(args.run)
    stage = "prompt" if run.has_stage("prompt") else "pretrain"
    model = run.load_model(stage)
    # m from the run's `recgpt evaluate` (chosen on validation); the paper's 9_1 for runs never evaluated.
    evaluated = (run.path / "evaluation.json").exists()
    steps = split_k(K, args.first_step_size or (run.chosen_first_step(K) if evaluated else 9))
    samples = run.sample_requests()
    requests = test_requests(run, args)
    tuning_users = set(samples["users"])
    held_out = [r for r in requests if r[0] not in tuning_users]  # users the tuning never saw
    rng = np.random.default_rng(0)
    measured = [held_out[i] for i in rng.choice(len(held_out), size=min(args.measure_users, len(held_out)), replace=False)]
    items, users = run.path / "items.txt", run.path / "users.txt"
    exact = RecGPTServingModule(model, items, users, steps)
    held_out_sets = recall_queries(exact, [u for u, _, _ in measured], [h for _, h, _ in measured])
    reference = BruteForceIndex(model.candidate_embeddings())
    held_out_exact = {name: top_k(reference, q, e, K) for name, (q, e) in held_out_sets.items()}  # (scores, ids)

    result = {
        "run": str(run.path),
        "stage": stage,
        "items": model.num_items,
        "step_sizes": list(steps),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "measured": utc_now(),
        "tuning_requests": len(samples["users"]),
        "held_out_requests": len(measured),
        "flavours": {},
    }
    base = Path(tempfile.mkdtemp(prefix="recgpt-index-latency-"))
    for kind in args.kinds:
        start = time.perf_counter()
        index, info = tuned_index(model, items, users, steps, kind, samples["users"], samples["histories"], args.recall_threshold)
        index = index or reference
        entry = {"index": info, "build_and_tune_seconds": time.perf_counter() - start}
        recall = recalls(index, held_out_sets, held_out_exact, K)
        entry["held_out_recall_at_10"], entry["held_out_probability_recall_at_10"] = recall["recall"], recall["probability_recall"]
        search = tf.function(lambda q, e: index.query_with_exclusions(q, e, K))
        q1, e1 = held_out_sets["step_1"]
        for batch in (1, 64):
            rows = [(tf.constant(q1[i : i + batch]), tf.constant(e1[i : i + batch])) for i in range(0, len(q1) - batch + 1, batch)]
            entry[f"search_batch_{batch}"] = time_calls(lambda i: search(*rows[i % len(rows)]), args.calls if batch == 1 else 40)
        start = time.perf_counter()
        path = publish_with_index(
            model,
            items,
            users,
            base,
            kind.replace("-", "_"),
            steps,
            (None if kind == "brute-force" else index, info),
            sample_users=samples["users"],
            sample_histories=samples["histories"],
        ).path
        entry["save_seconds"] = time.perf_counter() - start
        entry["export_bytes"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        signature = tf.saved_model.load(str(path)).signatures[RECOMMEND_SIGNATURE]
        for batch in (1, 64):
            chunks = [measured[i : i + batch] for i in range(0, len(measured) - batch + 1, batch)]
            tensors = [(tf.constant([u for u, _, _ in c]), tf.constant(pad_histories([h for _, h, _ in c]))) for c in chunks]
            entry[f"signature_batch_{batch}"] = time_calls(
                lambda i: signature(user_id=tensors[i % len(tensors)][0], history=tensors[i % len(tensors)][1]),
                args.calls if batch == 1 else 40,
            )
        entry["resident_memory_mb"] = resident_memory_mb(path, kind, ([measured[0][0]], [measured[0][1]]))
        if args.quality:
            entry["test_quality_through_signature"] = list_quality(signature, requests if args.data else measured)
        result["flavours"][kind] = entry
        print(json.dumps({kind: entry}, indent=2), flush=True)
        write_json(args.json, result)  # partial results survive an interruption
    flavours = result["flavours"]
    if "brute-force" in flavours:
        brute = flavours["brute-force"]
        result["ratios_to_brute_force"] = {
            kind: {f"signature_batch_{b}": f[f"signature_batch_{b}"]["p50_ms"] / brute[f"signature_batch_{b}"]["p50_ms"] for b in (1, 64)}
            for kind, f in flavours.items()
            if kind != "brute-force"
        }
    if {"partitioned", "scann"} <= set(flavours):
        result["partitioned_over_scann_search_batch_1"] = (
            flavours["partitioned"]["search_batch_1"]["p50_ms"] / flavours["scann"]["search_batch_1"]["p50_ms"]
        )
    write_json(args.json, result)
    print(json.dumps({k: v for k, v in result.items() if k != "flavours"}, indent=2))


if __name__ == "__main__":
    main()
