"""Ask a RecGPT model on TF Serving for recommendations over gRPC, with nothing but
tensorflow-serving-api: the request a client team writes, in TF Serving's own idiom.

    python serving/examples/grpc_predict.py --server localhost:8500 --model recgpt --user 42 --history 7,19,3

It works unchanged against `tensorflow_model_server` and against `recgpt serve`.
The signature contract: inputs `user_id` string [batch] and `history` string [batch, T]
(oldest first, right-padded with ""); outputs `item_ids`, `scores`, `recall_step` [batch, k].
"""

from __future__ import annotations

import argparse

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def recommend(stub, model: str, user: str, history: list[str], timeout: float) -> list[tuple[str, float, int]]:
    """(item, score, recall step) for one user, best first."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.array([user], dtype=object)))
    request.inputs["history"].CopyFrom(tf.make_tensor_proto(np.array([history or [""]], dtype=object)))
    response = stub.Predict(request, timeout)
    items = tf.make_ndarray(response.outputs["item_ids"])[0]
    scores = tf.make_ndarray(response.outputs["scores"])[0]
    steps = tf.make_ndarray(response.outputs["recall_step"])[0]
    return [(item.decode(), float(score), int(step)) for item, score, step in zip(items, scores, steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="localhost:8500", help="host:port of the gRPC endpoint")
    parser.add_argument("--model", default="recgpt")
    parser.add_argument("--user", required=True)
    parser.add_argument("--history", default="", help="comma-separated item ids, oldest first")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds")
    args = parser.parse_args()

    with grpc.insecure_channel(args.server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        rows = recommend(stub, args.model, args.user, [h for h in args.history.split(",") if h], args.timeout)
    for rank, (item, score, step) in enumerate(rows, start=1):
        print(f"{rank:>3}. {item:<20} score {score:8.4f}  step {step}")


if __name__ == "__main__":
    main()
