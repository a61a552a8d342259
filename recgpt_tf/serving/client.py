"""Clients for a TF Serving endpoint holding a RecGPT export (real TF Serving or `recgpt serve`).

    client = GrpcClient("localhost:8500", model="recgpt")
    client.recommend(["user-1"], [["item-3", "item-9"]])
    # [{'item_ids': [...], 'scores': [...], 'recall_step': [...]}]

Only the standard `tensorflow_serving.apis` messages are used, so the same code
talks to `tensorflow_model_server` unchanged.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from typing import Sequence

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import wrappers_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from recgpt_tf.contract import (
    EMBEDDINGS_SIGNATURE,
    EXCLUDING_SIGNATURE,
    INPUT_EXCLUDE,
    INPUT_HISTORY,
    INPUT_USER_ID,
    RECOMMEND_SIGNATURE,
    pad_histories,
    without_empty_slots,
)
from recgpt_tf.errors import ConfigError, RecGPTError

_TARGET = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):([0-9]{1,5})")


def check_target(target: str) -> str:
    """`target` if it is HOST:PORT (an IPv6 host in brackets), else `ConfigError`: without a port a gRPC
    channel would quietly dial 443."""
    match = _TARGET.fullmatch(target)
    if not match or not 0 < int(match[1]) < 65536:
        raise ConfigError("server", f"must be HOST:PORT (e.g. localhost:8500, [::1]:8500); got {target!r}")
    return target


def history_proto(histories: Sequence[Sequence[str]]) -> "tf.TensorProto":
    """The `history` input: string [batch, T], oldest first, right-padded with ""."""
    encoded = [[str(item).encode("utf-8") for item in row] for row in histories]
    return tf.make_tensor_proto(pad_histories(encoded, fill=b""), dtype=tf.string)


def user_proto(users: Sequence[str]) -> "tf.TensorProto":
    return tf.make_tensor_proto(np.array([str(u).encode("utf-8") for u in users], dtype=object), dtype=tf.string)


def _rows(outputs: dict) -> list[dict]:
    arrays = {k: tf.make_ndarray(v) for k, v in outputs.items()}
    decode = lambda a: [x.decode("utf-8") if isinstance(x, bytes) else x for x in a.tolist()]  # noqa: E731
    batch = len(next(iter(arrays.values())))
    return [
        without_empty_slots(
            {k: decode(v[i]) if v.ndim > 1 else (v[i].decode() if isinstance(v[i], bytes) else v[i].tolist()) for k, v in arrays.items()}
        )
        for i in range(batch)
    ]


class GrpcClient:
    """gRPC client (PredictionService, ModelService).

    Args:
        target: "host:port" of the gRPC endpoint.
        model: Model name (`model_spec.name`).
        timeout: Per-call deadline in seconds.
        retries: Extra attempts on UNAVAILABLE (and only on it), with exponential backoff.
        backoff: First backoff in seconds (doubles each retry).
    """

    def __init__(
        self, target: str, model: str, timeout: float = 5.0, retries: int = 3, backoff: float = 0.1, channel: grpc.Channel | None = None
    ) -> None:
        self.model = model
        self.timeout = timeout
        self.retries = retries
        if channel is None:
            check_target(target)
        self.backoff = backoff
        self.channel = channel or grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def _call(self, method, request):
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise
                time.sleep(delay)
                delay *= 2

    def _spec(self, signature: str = "", version: int | None = None) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.model, signature_name=signature)
        if version is not None:
            spec.version.CopyFrom(wrappers_pb2.Int64Value(value=version))
        return spec

    def predict(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[str]],
        signature: str = RECOMMEND_SIGNATURE,
        version: int | None = None,
        exclude: Sequence[Sequence[str]] | None = None,
    ) -> predict_pb2.PredictResponse:
        request = predict_pb2.PredictRequest(model_spec=self._spec(signature, version))
        request.inputs[INPUT_USER_ID].CopyFrom(user_proto(users))
        request.inputs[INPUT_HISTORY].CopyFrom(history_proto(histories))
        if exclude is not None:
            request.inputs[INPUT_EXCLUDE].CopyFrom(history_proto(exclude))  # the same layout: right-padded strings
        return self._call(self.predictions.Predict, request)

    def recommend(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[str]],
        version: int | None = None,
        exclude: Sequence[Sequence[str]] | None = None,
    ) -> list[dict]:
        """One dict per user: item_ids (str), scores (float), recall_step (1 or 2). With `exclude` (one list
        per user), the `recommend_excluding` signature: none of those items is returned, and a row lists fewer
        than k items when fewer are allowed (the signature's empty slots are left out)."""
        signature = RECOMMEND_SIGNATURE if exclude is None else EXCLUDING_SIGNATURE
        return _rows(self.predict(users, histories, signature, version, exclude).outputs)

    def user_embeddings(self, users: Sequence[str], histories: Sequence[Sequence[str]], version: int | None = None) -> list[dict]:
        """One dict per user: embeddings ([steps][d] floats) and first_item."""
        return _rows(self.predict(users, histories, EMBEDDINGS_SIGNATURE, version).outputs)

    def metadata(self) -> get_model_metadata_pb2.GetModelMetadataResponse:
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=self._spec(), metadata_field=["signature_def"])
        return self._call(self.predictions.GetModelMetadata, request)

    def signature_names(self) -> list[str]:
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        self.metadata().metadata["signature_def"].Unpack(signature_map)
        return sorted(k for k in signature_map.signature_def if not k.startswith("__"))

    def status(self) -> list[tuple[int, str]]:
        """(version, state name) for each version the server reports."""
        response = self._call(self.models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec()))
        state = get_model_status_pb2.ModelVersionStatus.State
        return [(s.version, state.Name(s.state)) for s in response.model_version_status]

    def close(self) -> None:
        self.channel.close()


class RestError(RecGPTError, RuntimeError):
    """A REST call failed: answered with an HTTP error (`status` is its code), or not answered at all
    (`status` None: the server could not be reached or did not answer in time)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status is not None else message)
        self.status = status


class RestClient:
    """The same calls over TF Serving's REST API ("host:port" of the REST endpoint)."""

    def __init__(self, target: str, model: str, timeout: float = 5.0) -> None:
        self.base = f"http://{check_target(target)}/v1/models/{model}"
        self.timeout = timeout

    def _request(self, path: str, payload: dict | None = None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                message = json.loads(body).get("error", body.decode())
            except ValueError:
                message = body.decode(errors="replace")
            raise RestError(error.code, message) from None
        except (urllib.error.URLError, OSError) as error:  # refused, unreachable, timed out
            reason = getattr(error, "reason", error)
            raise RestError(None, f"no answer from {self.base}: {getattr(reason, 'strerror', None) or reason}") from None

    def recommend(
        self,
        users: Sequence[str],
        histories: Sequence[Sequence[str]],
        version: int | None = None,
        exclude: Sequence[Sequence[str]] | None = None,
    ) -> list[dict]:
        path = (f"/versions/{version}" if version is not None else "") + ":predict"
        instances = [{INPUT_USER_ID: str(u), INPUT_HISTORY: [str(i) for i in h]} for u, h in zip(users, histories)]
        if exclude is not None:
            for instance, items in zip(instances, exclude):
                instance[INPUT_EXCLUDE] = [str(i) for i in items]
        signature = RECOMMEND_SIGNATURE if exclude is None else EXCLUDING_SIGNATURE
        return [
            without_empty_slots(row) for row in self._request(path, {"signature_name": signature, "instances": instances})["predictions"]
        ]

    def status(self) -> dict:
        return self._request("")

    def metadata(self) -> dict:
        return self._request("/metadata")
