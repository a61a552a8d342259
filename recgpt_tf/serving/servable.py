"""Loaded model versions, executed the way TF Serving executes them.

A `Servable` is one SavedModel version: its MetaGraph is loaded into a session
and a request runs the SignatureDef's tensor names (`Session.run(outputs,
feed_dict={input tensor names: values})`), exactly TF Serving's path, so what
passes here passes there. A `ModelManager` watches EXPORT_BASE/NAME, loads the
newest version, replays its warmup file, and only then switches requests to it;
the previous version keeps serving the requests already holding it.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf

from recgpt_tf.contract import RECOMMEND_SIGNATURE, WARMUP_FILE, pad_histories, version_numbers
from recgpt_tf.errors import RecGPTError

log = logging.getLogger("recgpt.serve")


class ServingError(RecGPTError):
    """A request failed with a gRPC status code (mapped to HTTP for REST)."""

    HTTP = {
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
        grpc.StatusCode.FAILED_PRECONDITION: 400,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.INTERNAL: 500,
    }

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return self.HTTP.get(self.code, 500)


class Limits:
    """What one request may cost. Defaults serve any real history.

    Args:
        max_batch: Largest batch (rows) per request.
        max_history: A longer history row is answered from its most recent
            `max_history` items (the model excludes at most its most recent 1000).
        max_history_hard: Beyond this many items in a row the request is refused.
        max_message_bytes: Largest request message (gRPC and REST body).
    """

    def __init__(
        self, max_batch: int = 256, max_history: int = 1000, max_history_hard: int = 1_000_000, max_message_bytes: int = 64 << 20
    ) -> None:
        self.max_batch = max_batch
        self.max_history = max_history
        self.max_history_hard = max_history_hard
        self.max_message_bytes = max_message_bytes


def _shape_text(shape: tf.TensorShape | list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def trim_history(values: np.ndarray, limit: int) -> np.ndarray:
    """Keeps each row's most recent `limit` non-empty items, right-padded with ""."""
    return pad_histories([[t for t in row if t not in (b"", "")][-limit:] for row in values], fill=b"")


class Servable:
    """One loaded SavedModel version."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name, self.version, self.path = name, version, path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
        self.signatures = {k: v for k, v in self.meta_graph.signature_def.items() if not k.startswith("__")}

    def signature(self, name: str | None):
        """(name, SignatureDef) of the signature `name`, serving_default when empty, as TF Serving resolves it."""
        name = name or RECOMMEND_SIGNATURE
        if not isinstance(name, str) or name not in self.signatures:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f'Serving signature name: "{name}" not found in signature def')
        return name, self.signatures[name]

    def signature_def_map(self):
        """The version's signatures as GetModelMetadata returns them (a `SignatureDefMap`)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, value in self.meta_graph.signature_def.items():
            signature_map.signature_def[key].CopyFrom(value)
        return signature_map

    def run(self, signature_name: str, inputs: dict, limits: Limits) -> dict[str, np.ndarray]:
        """Validates `inputs` ({name: TensorProto}) against the SignatureDef and runs it."""
        signature_name, signature = self.signature(signature_name)
        missing = sorted(set(signature.inputs) - set(inputs))
        if missing:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"input '{missing[0]}' is missing (expected: {', '.join(sorted(signature.inputs))})"
            )
        extra = sorted(set(inputs) - set(signature.inputs))
        if extra:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{extra[0]}' is not an input of signature {signature_name}")
        feeds, batch = {}, None
        for key, info in signature.inputs.items():
            proto = inputs[key]
            if proto.dtype != info.dtype:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{key}' must be {tf.dtypes.as_dtype(info.dtype).name}, got {tf.dtypes.as_dtype(proto.dtype).name}",
                )
            expected = tf.TensorShape(info.tensor_shape)
            try:
                value = tf.make_ndarray(proto)
            except Exception as error:  # malformed proto contents
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{key}' cannot be decoded: {error}") from None
            if value.ndim != expected.rank:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{key}' must have rank {expected.rank} {_shape_text(expected)}, got shape {list(value.shape)}",
                )
            if value.shape[0] == 0:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{key}' has an empty batch")
            if value.shape[0] > limits.max_batch:
                raise ServingError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED, f"input '{key}' batch {value.shape[0]} exceeds the limit {limits.max_batch}"
                )
            if batch is not None and value.shape[0] != batch:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{key}' has batch {value.shape[0]}, other inputs {batch}")
            batch = value.shape[0]
            if value.ndim == 2:
                if value.shape[1] > limits.max_history_hard:
                    raise ServingError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"input '{key}' has {value.shape[1]} items per row, above the limit {limits.max_history_hard}",
                    )
                if value.shape[1] > limits.max_history:
                    value = trim_history(value, limits.max_history)
            feeds[info.name] = value
        fetches = {key: info.name for key, info in signature.outputs.items()}
        try:
            return self.session.run(fetches, feed_dict=feeds)
        except tf.errors.InvalidArgumentError as error:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, error.message) from None
        except tf.errors.OpError as error:
            raise ServingError(grpc.StatusCode.INTERNAL, error.message) from None

    def warm_up(self, limits: Limits) -> int:
        """Replays assets.extra/tf_serving_warmup_requests; returns the number replayed."""
        from tensorflow_serving.apis import prediction_log_pb2

        path = self.path / "assets.extra" / WARMUP_FILE
        if not path.exists():
            return 0
        count = 0
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
            self.run(request.model_spec.signature_name, dict(request.inputs), limits)
            count += 1
        return count

    def close(self) -> None:
        self.session.close()


class ModelManager:
    """Serves the newest complete version under EXPORT_BASE/NAME for every model there.

    Args:
        export_base: The TF Serving model base (one folder per model name).
        limits: Request bounds.
        poll_seconds: How often to look for new versions.
    """

    def __init__(self, export_base: Path | str, limits: Limits | None = None, poll_seconds: float = 2.0) -> None:
        self.base = Path(export_base)
        self.limits = limits or Limits()
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._servables: dict[str, Servable] = {}
        self._retired: list[tuple[float, Servable]] = []
        self._failed: dict[tuple[str, int], str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def names(self) -> list[str]:
        return sorted(p.name for p in self.base.iterdir() if p.is_dir() and not p.name.startswith(".")) if self.base.is_dir() else []

    def poll(self) -> None:
        """Loads any newer version (warmup first), then switches to it."""
        for name in self.names():
            versions = version_numbers(self.base / name)
            if not versions:
                continue
            newest = versions[-1]
            current = self._servables.get(name)
            if (current is not None and current.version >= newest) or (name, newest) in self._failed:
                continue
            try:
                start = time.perf_counter()
                servable = Servable(name, newest, self.base / name / str(newest))
                replayed = servable.warm_up(self.limits)
            except Exception as error:  # a bad version must not take the endpoint down
                self._failed[(name, newest)] = str(error)
                log.error("model %s version %d failed to load: %s", name, newest, error)
                continue
            with self._lock:
                previous = self._servables.get(name)
                self._servables[name] = servable
                if previous is not None:
                    self._retired.append((time.monotonic(), previous))
            log.info("model %s version %d AVAILABLE (%d warmup requests, %.1fs)", name, newest, replayed, time.perf_counter() - start)
        self._close_retired()

    def _close_retired(self, grace: float = 30.0) -> None:
        # Requests that picked a version before the switch finish on it; close it later.
        now = time.monotonic()
        with self._lock:
            keep = [(t, s) for t, s in self._retired if now - t < grace]
            done = [s for t, s in self._retired if now - t >= grace]
            self._retired = keep
        for servable in done:
            servable.close()

    def get(self, name: str, version: int | None = None) -> Servable:
        with self._lock:
            servable = self._servables.get(name)
        if servable is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        if version is not None and version != servable.version:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Specific({name}, {version})")
        return servable

    def status(self, name: str, version: int | None = None) -> list[tuple[int, str, str]]:
        """(version, state, error) rows for a model name (one version's, when given), as GetModelStatus reports them."""
        rows = []
        with self._lock:
            servable = self._servables.get(name)
        if servable is not None:
            rows.append((servable.version, "AVAILABLE", ""))
        rows += [(v, "END", msg) for (n, v), msg in self._failed.items() if n == name]
        if not rows:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        if version is not None:
            rows = [row for row in rows if row[0] == version]
            if not rows:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
        return rows

    def start(self) -> None:
        self.poll()

        def loop() -> None:
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.poll()
                except Exception as error:  # keep polling whatever happens
                    log.error("polling %s failed: %s", self.base, error)

        self._thread = threading.Thread(target=loop, name="recgpt-model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
