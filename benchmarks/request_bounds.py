"""What the amplification requests of issue 13 cost `recgpt serve`: time to the answer and the server's
resident memory (VmRSS of the server process, and its high-water mark VmHWM) before and after.

The server runs in its own process over a brute-force export of the synthetic catalogue (Beauty-sized
by default). Cases, each sent `--repeat` times, three at once:
- grpc_broadcast: a ~60-byte PredictRequest whose `history` declares [256, 1000000] with one string_val
  (a TensorProto broadcasts a lone value to its whole shape);
- rest_long_row: one row of 1,000,000 items beside 63 empty rows in "inputs" (padded, 64M elements);
- grpc_broadcast_within_limits: a 69-byte request declaring [2, 1000000] with one string_val, inside the
  element bound (issue 20: it cost 0.26 s of server CPU; now refused for carrying 1 of 2M values);
- good: ordinary requests, before and after, to show the server still answers.
Then, one at a time (issue 20): a status request and a predict while 8 connections drip predict bodies a
byte every second (they held every REST slot), 200 predicts over one keep-alive connection, and 200 status
requests on new connections opened all at once (a listen backlog of 5 dropped their SYNs for 1 s retries).

    python benchmarks/request_bounds.py --json benchmarks/results/request_bounds.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lab import (  # noqa: E402
    drip_predict_body,
    export_synthetic,
    free_port,
    synthetic_model,
    utc_now,
)
from recgpt_tf.files import write_json  # noqa: E402
from recgpt_tf.serving import GrpcClient  # noqa: E402
from recgpt_tf.serving.client import user_proto  # noqa: E402


def memory_mb(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def broadcast_history(rows: int = 256):
    """A TensorProto of one string declaring shape [rows, 1000000]."""
    proto = tf.make_tensor_proto(np.array([b"7"], dtype=object))
    proto.tensor_shape.Clear()
    for size in (rows, 1_000_000):
        proto.tensor_shape.dim.add(size=size)
    return proto


def grpc_broadcast(target: str, rows: int = 256) -> str:
    from tensorflow_serving.apis import predict_pb2

    client = GrpcClient(target, "recgpt", timeout=120, retries=0)
    message = predict_pb2.PredictRequest()
    message.model_spec.name = "recgpt"
    message.inputs["user_id"].CopyFrom(user_proto(["1"] * rows))
    message.inputs["history"].CopyFrom(broadcast_history(rows))
    try:
        client.predictions.Predict(message, timeout=120)
        return "OK"
    except grpc.RpcError as error:
        return error.code().name
    finally:
        client.close()


def rest_long_row(port: int) -> str:
    body = json.dumps({"inputs": {"user_id": ["1"] * 64, "history": [["7"] * 1_000_000] + [[]] * 63}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/recgpt:predict", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return str(response.status)
    except urllib.error.HTTPError as error:
        return str(error.code)


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    answer = call()
    return round(time.perf_counter() - start, 4), answer


def slow_clients(port: int) -> dict:
    """Status and predict answer times while 8 connections drip bodies; 200 keep-alive predicts."""
    body = json.dumps({"instances": [{"user_id": "1", "history": ["3", "4"]}]}).encode()

    def status() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/recgpt", timeout=60) as response:
            return response.status

    def predict() -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/recgpt:predict", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status

    stop = threading.Event()
    threads = [threading.Thread(target=drip_predict_body, args=(port, stop), daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(3.0)
    try:
        during = {"status": timed(status), "predict": timed(predict)}
    finally:
        stop.set()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start = time.perf_counter()
    for _ in range(200):
        connection.request("POST", "/v1/models/recgpt:predict", body=body)
        connection.getresponse().read()
    keep_alive = time.perf_counter() - start
    connection.close()
    start = time.perf_counter()
    burst = [threading.Thread(target=status) for _ in range(200)]  # new connections, all at once
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join()
    connect_burst = time.perf_counter() - start
    return {
        "dripping_connections": len(threads),
        "status_seconds": during["status"][0],
        "status_answer": during["status"][1],
        "predict_seconds": during["predict"][0],
        "predict_answer": during["predict"][1],
        "keep_alive_200_predicts_seconds": round(keep_alive, 3),
        "burst_200_connections_status_seconds": round(connect_burst, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=12101)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/request_bounds.json"))
    args = parser.parse_args()
    path = export_synthetic(synthetic_model(args.items), "brute-force")
    grpc_port, rest_port = free_port(), free_port()
    recgpt = os.path.join(os.path.dirname(sys.executable), "recgpt")
    command = [recgpt, "serve", str(path.parent.parent), "--grpc-port", str(grpc_port), "--rest-port", str(rest_port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    target = f"127.0.0.1:{grpc_port}"
    report = {
        "measured": utc_now(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "items": args.items,
        "cases": {},
    }
    try:
        if "recgpt serve:" not in server.stdout.readline():
            raise SystemExit("the endpoint did not start")
        good = GrpcClient(target, "recgpt", timeout=30)
        good.recommend(["1"], [["3", "4"]])
        report["server_memory_mb_at_start"] = memory_mb(server.pid)
        cases = (
            ("grpc_broadcast", lambda: grpc_broadcast(target)),
            ("rest_long_row", lambda: rest_long_row(rest_port)),
            ("grpc_broadcast_within_limits", lambda: grpc_broadcast(target, rows=2)),
        )
        for name, send in cases:
            before = memory_mb(server.pid)
            start = time.perf_counter()
            with ThreadPoolExecutor(3) as pool:  # three at once, as in the report
                answers = list(pool.map(lambda _: (time.perf_counter(), send(), time.perf_counter()), range(3 * args.repeat)))
            report["cases"][name] = {
                "requests": len(answers),
                "answers": sorted({a for _, a, _ in answers}),
                "slowest_seconds": round(max(end - begin for begin, _, end in answers), 3),
                "all_seconds": round(time.perf_counter() - start, 3),
                "server_memory_mb_before": before,
                "server_memory_mb_after": memory_mb(server.pid),
            }
            print(name, json.dumps(report["cases"][name]), flush=True)
        report["good_request_after"] = len(good.recommend(["1"], [["3", "4"]])[0]["item_ids"])
        report["slow_clients"] = slow_clients(rest_port)
        print("slow_clients", json.dumps(report["slow_clients"]), flush=True)
        good.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    write_json(args.json, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
