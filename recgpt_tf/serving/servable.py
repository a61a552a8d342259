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
import re
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf

from recgpt_tf.contract import INPUT_EXCLUDE, INPUT_HISTORY, MAX_EXCLUDE, RECOMMEND_SIGNATURE, WARMUP_FILE, pad_histories, version_numbers
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

    Every bound is checked on what a request *declares* (a TensorProto's shape, a JSON row's
    length) before any tensor is built from it: a TensorProto with one value broadcasts to
    its whole declared shape, so a 64-byte message could otherwise ask for gigabytes.

    Args:
        max_batch: Largest batch (rows) per request.
        max_history: A longer history row is answered from its most recent
            `max_history` items (the model excludes at most its most recent 1000).
        max_history_hard: Beyond this many items in a row the request is refused.
        max_elements: Largest number of elements one input may declare (rows x items):
            about 16 bytes each once built, so 2M bound an input to ~32 MB.
        max_message_bytes: Largest request message (gRPC and REST body).
        max_exclude: Most items one row of `exclude` (recommend_excluding) may list; a longer row is
            refused, never cut (an item cut from it could be recommended).
    """

    def __init__(
        self,
        max_batch: int = 256,
        max_history: int = 1000,
        max_history_hard: int = 1_000_000,
        max_elements: int = 2_000_000,
        max_message_bytes: int = 16 << 20,
        max_exclude: int = MAX_EXCLUDE,
    ) -> None:
        self.max_batch = max_batch
        self.max_history = max_history
        self.max_history_hard = max_history_hard
        self.max_elements = max_elements
        self.max_message_bytes = max_message_bytes
        self.max_exclude = max_exclude

    def check_shape(self, key: str, shape: list[int]) -> None:
        """Raises RESOURCE_EXHAUSTED when an input of `shape` (declared, not yet built) is over a bound."""
        if shape and shape[0] > self.max_batch:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"input '{key}' batch {shape[0]} exceeds the limit {self.max_batch}")
        if len(shape) == 2 and shape[1] > self.max_history_hard:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"input '{key}' has {shape[1]} items per row, above the limit {self.max_history_hard}"
            )
        elements = int(np.prod(shape, dtype=np.float64))
        if elements > self.max_elements:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"input '{key}' declares {elements} elements (shape {shape}), above the limit {self.max_elements}",
            )


def _shape_text(shape: tf.TensorShape | list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _declared_shape(key: str, proto) -> list[int]:
    """The shape a TensorProto declares, checked before anything is built from it."""
    if proto.tensor_shape.unknown_rank:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{key}' has an unknown rank")
    shape = [int(d.size) for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{key}' declares a negative dimension: {shape}")
    return shape


# Lines of a TensorFlow error that say where, not what ("Graph execution error:", the node's traceback).
_WHERE_LINES = re.compile(r"^(Graph execution error:|Detected at node|File \"|\s*$)")


def failure_line(error: BaseException) -> str:
    """One line saying what failed: the first line of `error` that is not TensorFlow's preamble."""
    text = error.message if isinstance(error, tf.errors.OpError) else str(error)
    lines = [line.strip() for line in text.splitlines() if not _WHERE_LINES.match(line.strip())]
    return f"{type(error).__name__}: {lines[0]}" if lines else repr(error)


def _carried_values(proto) -> int:
    """How many element values a TensorProto actually carries (packed bytes or a typed repeated field)."""
    if proto.tensor_content:
        return len(proto.tensor_content) // max(1, tf.dtypes.as_dtype(proto.dtype).size)
    fields = ("string_val", "float_val", "double_val", "int_val", "int64_val", "bool_val", "half_val", "uint32_val", "uint64_val")
    return max(len(getattr(proto, field)) for field in fields)


def trim_history(values: np.ndarray, limit: int) -> np.ndarray:
    """Keeps each row's most recent `limit` non-empty items, right-padded with ""."""
    return pad_histories([[t for t in row if t not in (b"", "")][-limit:] for row in values], fill=b"")


def _fingerprint(path: Path) -> tuple:
    """What a version directory holds now (names, sizes, modification times): a failed load is retried
    once this changes."""
    try:
        return tuple(sorted((str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in path.rglob("*") if f.is_file()))
    except OSError:  # files moving while we look: different from any recorded state
        return (time.monotonic(),)


def read_version_labels(export_base: Path) -> dict[str, dict[str, int]]:
    """{model: {label: version}} from EXPORT_BASE/models.config (TF Serving's ModelServerConfig text);
    {} when there is none. A file that does not parse is logged and ignored (labels then resolve to nothing)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = export_base / "models.config"
    if not path.is_file():
        return {}
    try:
        config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    except (text_format.ParseError, OSError, UnicodeDecodeError) as error:
        log.error("%s is not a ModelServerConfig (%s): version labels are ignored", path, error)
        return {}
    return {model.name: dict(model.version_labels) for model in config.model_config_list.config}


class Servable:
    """One loaded SavedModel version."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name, self.version, self.path = name, version, path
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        tf_log, level = tf.get_logger(), tf.get_logger().level
        tf_log.setLevel("ERROR")  # the v1 loader is deprecated in TF 2, but it is TF Serving's own path (a session)
        try:
            with self.graph.as_default():
                self.meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
        except Exception:
            self.session.close()
            raise
        finally:
            tf_log.setLevel(level)
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
            shape = _declared_shape(key, proto)
            if len(shape) != expected.rank:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{key}' must have rank {expected.rank} {_shape_text(expected)}, got shape {shape}",
                )
            if shape[0] == 0:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{key}' has an empty batch")
            if batch is not None and shape[0] != batch:
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{key}' has batch {shape[0]}, other inputs {batch}")
            batch = shape[0]
            limits.check_shape(key, shape)  # before the tensor exists
            declared, carried = int(np.prod(shape)), _carried_values(proto)
            if carried != declared:
                # TensorFlow would repeat the last value over the declared shape: a 69-byte message could cost
                # a 2M-element tensor. A request pays for the elements it sends, so it must send them all.
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{key}' declares shape {shape} ({declared} elements) but carries {carried} values; send every element",
                )
            try:
                value = tf.make_ndarray(proto)
            except Exception as error:  # malformed proto contents
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{key}' cannot be decoded: {error}") from None
            if key == INPUT_EXCLUDE and value.shape[1] > limits.max_exclude:  # as the signature refuses it, before it is built
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{key}' lists {value.shape[1]} items per row, above the limit {limits.max_exclude}",
                )
            if key == INPUT_HISTORY and value.shape[1] > limits.max_history:
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
    """Serves the newest loadable version under EXPORT_BASE/NAME for every model there.

    The version policy, TF Serving's "latest 1" made fail-safe:
    - the newest version that loads (and answers its warmup requests) serves; one that fails is
      reported (GetModelStatus: END with the error) and the next older one is tried, so a broken
      newest version never leaves a model unserved while an older one works;
    - a version that failed is retried once its files change (a slow copy that was incomplete);
    - a version whose directory is removed is unloaded: the model falls back to the newest
      remaining loadable version, or is no longer served;
    - requests holding the previous version finish on it (it is closed after a grace period).
    Version labels (`model_spec.version_label`) resolve through EXPORT_BASE/models.config's
    `version_labels`, as in TF Serving; an unknown label is an error, never the newest version.

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
        self._failed: dict[tuple[str, int], tuple[tuple, str]] = {}  # (name, version) -> (files fingerprint, error)
        self._labels: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def names(self) -> list[str]:
        return sorted(p.name for p in self.base.iterdir() if p.is_dir() and not p.name.startswith(".")) if self.base.is_dir() else []

    def poll(self) -> None:
        """Brings every model to the newest loadable version (see the class docstring)."""
        names = self.names()
        self._labels = read_version_labels(self.base)
        for name in set(self._servables) - set(names):
            self._switch(name, None)  # the model's directory is gone
        for name in names:
            try:
                self._poll_model(name)
            except Exception as error:  # one model's odd directory never stops the others being polled
                log.error("polling %s failed: %s", self.base / name, error)
        self._close_retired()

    def _poll_model(self, name: str) -> None:
        versions = version_numbers(self.base / name)
        with self._lock:
            for key in [k for k in self._failed if k[0] == name and k[1] not in versions]:
                del self._failed[key]  # removed: nothing left to report or retry
        current = self._servables.get(name)
        serving = current.version if current is not None and current.version in versions else None
        for version in reversed(versions):
            if version == serving:
                return  # nothing newer loads: keep serving it
            path = self.base / name / str(version)
            fingerprint = _fingerprint(path)
            failed = self._failed.get((name, version))
            if failed is not None and failed[0] == fingerprint:
                continue  # failed on these very files; tried again when they change
            servable = None
            try:
                start = time.perf_counter()
                servable = Servable(name, version, path)
                replayed = servable.warm_up(self.limits)
            except Exception as error:  # a bad version must not take the endpoint down
                if servable is not None:
                    servable.close()
                with self._lock:
                    self._failed[(name, version)] = (fingerprint, failure_line(error))
                log.error("model %s version %d failed to load: %s", name, version, error)
                continue
            with self._lock:
                self._failed.pop((name, version), None)
            self._switch(name, servable)
            log.info("model %s version %d AVAILABLE (%d warmup requests, %.1fs)", name, version, replayed, time.perf_counter() - start)
            return
        if current is not None and serving is None:
            self._switch(name, None)
            log.error("model %s: version %d was removed and no other version loads; not serving it", name, current.version)

    def _switch(self, name: str, servable: Servable | None) -> None:
        with self._lock:
            previous = self._servables.pop(name, None)
            if servable is not None:
                self._servables[name] = servable
            if previous is not None:
                self._retired.append((time.monotonic(), previous))

    def _close_retired(self, grace: float = 30.0) -> None:
        # Requests that picked a version before the switch finish on it; close it later.
        now = time.monotonic()
        with self._lock:
            keep = [(t, s) for t, s in self._retired if now - t < grace]
            done = [s for t, s in self._retired if now - t >= grace]
            self._retired = keep
        for servable in done:
            servable.close()

    def resolve_label(self, name: str, label: str) -> int:
        """The version `label` names for model `name` in models.config (INVALID_ARGUMENT when none)."""
        version = self._labels.get(name, {}).get(label)
        if version is None:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        return version

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
        with self._lock:
            failed = sorted(self._failed.items())
        rows += [(v, "END", msg) for (n, v), (_, msg) in failed if n == name]
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
