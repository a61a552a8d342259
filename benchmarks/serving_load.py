"""gRPC load on the local endpoint: throughput and p50/p99 at 1, 8 and 32 clients,
beside the in-process signature latency measured in the same run.

The endpoint runs in its own process (`recgpt serve`), as it would be deployed;
clients are threads of this process, each with its own channel, on loopback.

    python benchmarks/serving_load.py --items 12101 --json benchmarks/results/serving_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import recgpt_tf  # noqa: F401  (first: it selects Keras 2, which TFRS needs, before TensorFlow loads)

# isort: split

import grpc
import numpy as np
import tensorflow as tf  # noqa: E402

from lab import (  # noqa: E402
    as_tensors,
    export_synthetic,
    free_port,
    latency_summary,
    random_requests,
    synthetic_model,
    utc_now,
)
from recgpt_tf.contract import RECOMMEND_SIGNATURE  # noqa: E402
from recgpt_tf.files import write_json  # noqa: E402
from recgpt_tf.serving import GrpcClient  # noqa: E402


def load(target: str, clients: int, per_client: int, requests: list) -> dict:
    latencies, errors = [], []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        client = GrpcClient(target, "recgpt", timeout=30)
        rng = np.random.default_rng(seed)
        client.recommend(*requests[0])  # connect before the clock starts
        local = []
        for _ in range(per_client):
            users, histories = requests[int(rng.integers(len(requests)))]
            start = time.perf_counter()
            try:
                client.recommend(users, histories)
                local.append(1000 * (time.perf_counter() - start))
            except grpc.RpcError as error:  # counted and reported by status code
                errors.append(error.code().name)
        with lock:
            latencies.extend(local)
        client.close()

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = latency_summary(latencies, time.perf_counter() - start)
    out.update(clients=clients, errors=len(errors), error_codes=sorted(set(errors)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12101)
    parser.add_argument("--per-client", type=int, default=200)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/serving_load.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    path = export_synthetic(synthetic_model(args.items), "brute-force")
    requests = [random_requests(rng, args.items, 1) for _ in range(256)]

    signature = tf.saved_model.load(str(path)).signatures[RECOMMEND_SIGNATURE]
    tensors = [as_tensors(*r) for r in requests]
    for u, h in tensors[:10]:
        signature(user_id=u, history=h)
    in_process = []
    start = time.perf_counter()
    for i in range(args.per_client * 2):
        u, h = tensors[i % len(tensors)]
        t = time.perf_counter()
        signature(user_id=u, history=h)
        in_process.append(1000 * (time.perf_counter() - t))
    in_process_summary = latency_summary(in_process, time.perf_counter() - start)

    grpc_port, rest_port = free_port(), free_port()
    recgpt = os.path.join(os.path.dirname(sys.executable), "recgpt")
    server = subprocess.Popen(
        [recgpt, "serve", str(path.parent.parent), "--grpc-port", str(grpc_port), "--rest-port", str(rest_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        if "recgpt serve:" not in server.stdout.readline():
            raise SystemExit("the endpoint did not start")
        target = f"127.0.0.1:{grpc_port}"
        result = {
            "measured": utc_now(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            "cpu_count": os.cpu_count(),
            "items": args.items,
            "flavour": "brute-force",
            "in_process_batch_1": in_process_summary,
            "grpc": {str(c): load(target, c, args.per_client if c < 32 else max(50, args.per_client // 4), requests) for c in (1, 8, 32)},
        }
    finally:
        server.terminate()
        server.wait(timeout=60)
    p50_grpc, p50_local = result["grpc"]["1"]["p50_ms"], in_process_summary["p50_ms"]
    result["grpc_1_client_p50_over_in_process_p50"] = p50_grpc / p50_local
    result["grpc_1_client_p50_within_2x_plus_1ms"] = p50_grpc <= 2 * p50_local + 1.0
    write_json(args.json, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
