"""TF Serving's REST API over a `ModelManager`.

    POST /v1/models/NAME[/versions/V|/labels/L]:predict   {"instances": [...]} or {"inputs": {...}}
    GET  /v1/models/NAME[/versions/V|/labels/L]           version status
    GET  /v1/models/NAME[/versions/V|/labels/L]/metadata  signature defs
Errors answer {"error": message} with 400 (INVALID_ARGUMENT), 404 (NOT_FOUND),
429 (RESOURCE_EXHAUSTED) or 500.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from recgpt_tf.contract import pad_histories
from recgpt_tf.serving.servable import Limits, ModelManager, ServingError

log = logging.getLogger("recgpt.serve")
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?(?P<tail>:predict|/metadata)?$")


def _bad(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _string_bytes(key: str, value) -> bytes:
    """One element of a string input: text (sent as UTF-8) or TF Serving's binary form {"b64": "..."}."""
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad(f"input '{key}' holds a string that is not valid Unicode (a lone surrogate escape)") from None
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, binascii.Error):
            raise _bad(f"input '{key}' holds a \"b64\" value that is not base64") from None
    raise _bad(f"input '{key}' must be strings (or {{\"b64\": ...}} objects)")


def _tensor(key: str, value, dtype: tf.dtypes.DType, limits: Limits):
    """A JSON value as a TensorProto of the signature's dtype; ragged string rows are right-padded with "".

    Ragged rows are checked against `limits` in the shape they would be padded to, before padding, so
    one long row beside many empty ones cannot blow up; rows over `max_history` are then cut by
    `Servable.run`, as for gRPC.
    """
    if dtype == tf.string:
        ragged = isinstance(value, list) and value and all(isinstance(v, list) for v in value)
        if ragged:
            limits.check_shape(key, [len(value), max(len(row) for row in value)])
            value = [[_string_bytes(key, v) for v in row] for row in value]
            array = pad_histories(value, fill=b"")
        else:
            array = np.array(value, dtype=object)
            limits.check_shape(key, list(array.shape))
            array = np.vectorize(lambda v: _string_bytes(key, v), otypes=[object])(array) if array.size else array
        limits.check_shape(key, list(array.shape))
        return tf.make_tensor_proto(array, dtype=tf.string)
    try:
        array = np.array(value)
        limits.check_shape(key, list(array.shape))
        return tf.make_tensor_proto(array, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise _bad(f"input '{key}' cannot be read as {dtype.name}: {error}") from None


def _jsonable(value: np.ndarray):
    if value.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b, otypes=[object])(value).tolist()
    return value.tolist()


class _DeadlineReader:
    """The connection's reader, with one deadline for a whole request: each read may wait only for what is
    left of it, so a client that drips a byte at a time cannot stretch a request past it (the socket's own
    timeout applies to each read alone)."""

    def __init__(self, raw, connection: socket.socket, seconds: float) -> None:
        self.raw, self.connection = raw, connection
        self.deadline = time.monotonic() + seconds

    def _wait_budget(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request was not received within its deadline")
        self.connection.settimeout(left)

    def readline(self, limit: int = -1) -> bytes:
        self._wait_budget()
        return self.raw.readline(limit)

    def read1(self, size: int) -> bytes:
        self._wait_budget()
        return self.raw.read1(size)

    def __getattr__(self, name):
        return getattr(self.raw, name)


class RestHandler(BaseHTTPRequestHandler):
    """One connection. A request's line, headers and body must arrive within `timeout` seconds together;
    predict bodies are read in full before a predict slot is taken, so slow senders hold no slot, and
    status and metadata requests take none at all: a readiness probe never waits behind predicts."""

    manager: ModelManager  # set by make_rest_server
    slots: threading.BoundedSemaphore  # set by make_rest_server
    server_version = "recgpt-tf-serving"
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds for a whole request (an idle keep-alive connection is closed after as long)
    # An answer leaves in one write (a buffered writer, flushed once): written apart, as the unbuffered
    # default does, the body waits for the client's delayed ACK of the headers, ~40 ms a request.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self.rfile = _DeadlineReader(self.rfile, self.connection, self.timeout)

    def handle_one_request(self) -> None:
        self.rfile.deadline = time.monotonic() + self.timeout
        super().handle_one_request()

    def log_message(self, fmt, *args) -> None:  # quiet: requests are not logged one by one
        log.debug(fmt, *args)

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _route(self):
        match = _PATH.match(self.path.split("?")[0])
        if not match:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"unknown path {self.path}")
        version = int(match["version"]) if match["version"] else None
        if match["label"]:
            version = self.manager.resolve_label(match["name"], match["label"])
        return match["name"], version, match["tail"] or ""

    def _guard(self, handler) -> None:
        self._body_read = False
        try:
            status, payload = handler()
        except TimeoutError:
            # The body did not arrive in time: answer nothing more on this connection (it may be half-sent).
            self.close_connection = True
            self._send_quietly(408, {"error": "the request body was not received within the request deadline"})
            return
        except ServingError as error:
            status, payload = error.http_status, {"error": error.message}
        except Exception as error:  # never let a request take the endpoint down
            log.exception("REST request failed")
            status, payload = 500, {"error": f"{type(error).__name__}: {error}"}
        if not self._body_read and self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            # An unread body would be parsed as the next request on this connection: close it instead.
            self.close_connection = True
        self._send_quietly(status, payload)

    def _send_quietly(self, status: int, payload: dict) -> None:
        self.connection.settimeout(self.timeout)  # the answer gets its own time, whatever the request left
        try:
            self._send(status, payload)
        except OSError:
            pass  # the client went away

    @contextlib.contextmanager
    def _predict_slot(self) -> Iterator[None]:
        """Holds one of the bounded predict slots; a request that finds none within the request timeout is
        told to come back rather than queued without end."""
        if not self.slots.acquire(timeout=self.timeout):
            raise ServingError(grpc.StatusCode.UNAVAILABLE, "the server is busy; retry")
        try:
            yield
        finally:
            self.slots.release()

    def _read_json_body(self):
        """The request body as JSON, within the size limit (the connection closes when it is not read)."""
        declared = self.headers.get("Content-Length")
        try:
            length = int(declared) if declared is not None else 0
        except ValueError:
            raise _bad(f"Content-Length {declared!r} is not a number") from None
        if length < 0:
            raise _bad(f"Content-Length {length} is negative")
        if length > self.manager.limits.max_message_bytes:
            raise ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"request body of {length} bytes exceeds {self.manager.limits.max_message_bytes}"
            )
        chunks, left = [], length
        while left:
            chunk = self.rfile.read1(min(left, 1 << 16))
            if not chunk:
                raise _bad(f"the request body ended after {length - left} of its {length} bytes")
            chunks.append(chunk)
            left -= len(chunk)
        raw = b"".join(chunks)
        self._body_read = True
        try:
            return json.loads(raw or b"{}")
        except RecursionError:
            raise _bad("request body is nested too deeply") from None
        except ValueError as error:
            raise _bad(f"request body is not JSON: {error}") from None

    def do_GET(self) -> None:
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _get(self):
        name, version, tail = self._route()
        if tail == ":predict":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "predict needs POST")
        if tail == "/metadata":
            servable = self.manager.get(name, version)
            return 200, {
                "model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": json_format.MessageToDict(servable.signature_def_map())},
            }
        rows = self.manager.status(name, version)
        return 200, {
            "model_version_status": [
                {"version": str(v), "state": state, "status": {"error_code": "OK" if not msg else "UNKNOWN", "error_message": msg}}
                for v, state, msg in rows
            ]
        }

    def _post(self):
        name, version, tail = self._route()
        if tail != ":predict":
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"POST {self.path}: only :predict accepts POST")
        body = self._read_json_body()  # in full, before a slot is taken
        if not isinstance(body, dict):
            raise _bad("request body must be a JSON object")
        with self._predict_slot():
            return self._predict(name, version, body)

    def _predict(self, name: str, version: int | None, body: dict):
        servable = self.manager.get(name, version)
        signature_name, signature = servable.signature(body.get("signature_name"))
        dtypes = {k: tf.dtypes.as_dtype(v.dtype) for k, v in signature.inputs.items()}
        if ("instances" in body) == ("inputs" in body):
            raise _bad('the body needs exactly one of "instances" (row format) or "inputs" (columnar format)')
        if "instances" in body:
            instances = body["instances"]
            if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
                raise _bad('"instances" must be a list of objects keyed by input name')
            if not instances:
                raise _bad("'instances' is an empty batch")
            columns = {key: [inst.get(key) for inst in instances] for key in set().union(*instances)}
            for key, values in columns.items():
                if any(v is None for v in values):
                    raise _bad(f"input '{key}' is missing from some instances")
        else:
            columns = body["inputs"]
            if not isinstance(columns, dict):
                raise _bad('"inputs" must be an object keyed by input name')
        inputs = {key: _tensor(key, value, dtypes.get(key, tf.string), self.manager.limits) for key, value in columns.items()}
        outputs = servable.run(signature_name, inputs, self.manager.limits)
        if "instances" in body:
            rows = len(next(iter(outputs.values())))
            return 200, {"predictions": [{k: _jsonable(v[i : i + 1])[0] for k, v in outputs.items()} for i in range(rows)]}
        return 200, {"outputs": {k: _jsonable(v) for k, v in outputs.items()}}


class _RestServer(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog (socketserver's default is 5): a burst of new connections waits to be accepted
    # instead of having its SYNs dropped and retried a second later.
    request_queue_size = 128


def make_rest_server(manager: ModelManager, host: str, port: int, max_concurrent: int = 8) -> ThreadingHTTPServer:
    """A REST server on `host:port` answering from `manager`, at most `max_concurrent` predicts at a time."""
    handler = type("BoundRestHandler", (RestHandler,), {"manager": manager, "slots": threading.BoundedSemaphore(max_concurrent)})
    return _RestServer((host, port), handler)
