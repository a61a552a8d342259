"""`recgpt serve`: a TF-Serving-compatible endpoint for development and CI.

A stand-in for `tensorflow_model_server`, which cannot be installed here: it
speaks the same gRPC and REST APIs and executes SignatureDefs the same way, so
clients and exports tested against it work unchanged against the real server.
Production deployments use TF Serving itself (serving/deploy/).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Callable

import grpc

from recgpt_tf.errors import RecGPTError
from recgpt_tf.serving.grpc_api import add_services
from recgpt_tf.serving.rest_api import make_rest_server
from recgpt_tf.serving.servable import Limits, ModelManager

log = logging.getLogger("recgpt.serve")


class LocalServer:
    """gRPC + REST endpoint over an export base.

    Args:
        export_base: Model base (EXPORT_BASE/NAME/VERSION/...).
        host: Interface to listen on (loopback unless told otherwise).
        grpc_port, rest_port: Ports; 0 picks a free one (see `.grpc_port`, `.rest_port`).
        workers: Threads answering requests.
        max_queued: Requests waiting for a worker beyond which new ones get RESOURCE_EXHAUSTED.
        limits: Request bounds.
        poll_seconds: How often to look for new versions.
    """

    def __init__(
        self,
        export_base: Path | str,
        host: str = "127.0.0.1",
        grpc_port: int = 8500,
        rest_port: int = 8501,
        workers: int = 8,
        limits: Limits | None = None,
        poll_seconds: float = 2.0,
        max_queued: int = 256,
    ) -> None:
        self.limits = limits or Limits()
        self.manager = ModelManager(export_base, self.limits, poll_seconds)
        self.host = host
        options = [
            ("grpc.max_receive_message_length", self.limits.max_message_bytes),
            ("grpc.max_send_message_length", self.limits.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port already served makes this server fail, not share it
        ]
        self.grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers), options=options, maximum_concurrent_rpcs=workers + max_queued
        )
        add_services(self.grpc_server, self.manager)
        try:
            self.grpc_port = self.grpc_server.add_insecure_port(f"{host}:{grpc_port}")
        except RuntimeError:  # grpc's "Failed to bind"
            self.grpc_port = 0
        if self.grpc_port == 0:
            raise RecGPTError(f"cannot listen for gRPC on {host}:{grpc_port}: the port is in use (or not this host's)")
        try:
            self.rest_server = make_rest_server(self.manager, host, rest_port, max_concurrent=workers)
        except OSError as error:
            self.grpc_server.stop(0)
            raise RecGPTError(f"cannot listen for REST on {host}:{rest_port}: {error.strerror} (is the port in use?)") from None
        self.rest_port = self.rest_server.server_address[1]
        self._rest_thread: threading.Thread | None = None

    def start(self) -> "LocalServer":
        self.manager.start()  # loads and warms up the newest versions before accepting requests
        self.grpc_server.start()
        self._rest_thread = threading.Thread(target=self.rest_server.serve_forever, name="recgpt-rest", daemon=True)
        self._rest_thread.start()
        log.info("serving %s: gRPC %s:%d, REST %s:%d", self.manager.base, self.host, self.grpc_port, self.host, self.rest_port)
        return self

    def stop(self, grace: float = 5.0) -> None:
        self.manager.stop()
        self.rest_server.shutdown()
        self.rest_server.server_close()
        self.grpc_server.stop(grace).wait()

    def serve_until_signalled(self, on_ready: Callable[[], None] | None = None) -> None:
        """Blocks until SIGTERM or SIGINT, then shuts down cleanly (in-flight requests finish). `on_ready`
        runs once the handlers are installed (a "ready" line printed earlier could be answered by a
        SIGTERM that still kills the process)."""
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        if on_ready is not None:
            on_ready()
        done.wait()
        log.info("shutting down")
        self.stop()

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(grace=1.0)
