"""Atomic file writes: readers (TF Serving polling an export base, a resumed run) never see half a file.
`exclusive_lock`: one process at a time writes a run directory or an output file. And `native_log_to`,
which keeps the C++ libraries' log lines in a file instead of the console."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def atomic_siblings(*paths: Path | str) -> Iterator[list[Path]]:
    """Yields a hidden sibling (.NAME.tmp) of each of `paths` for the block to write, missing parent
    directories created. When the block ends, each is renamed over its path (atomic on one filesystem); when
    it raises, they are deleted, so a failed write leaves neither a partial file nor a stray sibling."""
    paths = [Path(path) for path in paths]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    temporary = [path.with_name(f".{path.name}.tmp") for path in paths]
    try:
        yield temporary
    except BaseException:
        for tmp in temporary:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, path in zip(temporary, paths):
        tmp.replace(path)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Writes `text` to `path` through `atomic_siblings`."""
    with atomic_siblings(path) as (tmp,):
        tmp.write_text(text)


def write_json(path: Path | str, payload: dict[str, Any]) -> None:
    """Writes `payload` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def open_binary(path: str):
    """`open(path, "rb")`: the local default of the readers that take an `opener` (Beam's FileSystems.open
    for remote storage)."""
    return open(path, "rb")


@contextlib.contextmanager
def exclusive_lock(lock_file: Path | str, refusal: Callable[[str], Exception]) -> Iterator[None]:
    """Holds `lock_file` (an flock, naming this process inside it) while the block runs; a second holder is
    refused with `refusal(holder)`, where holder names the process holding it. The operating system releases
    the lock of a process that dies, so a lock left by a killed process is taken over, with a message."""
    lock_file = Path(lock_file)
    handle = lock_file.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise refusal(handle.read().strip() or "another process") from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            print(f"{lock_file}: taking over the lock of {previous}, which is no longer running", file=sys.stderr)
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
    finally:
        handle.close()  # releases the lock


@contextlib.contextmanager
def native_log_to(path: Path | str) -> Iterator[Path]:
    """While the block runs, what native code writes to stderr (TensorFlow's graph optimiser and ScaNN's
    index builder log through C++ straight to file descriptor 2, unaffected by TF_CPP_MIN_LOG_LEVEL) is
    appended to `path` instead of the console, and so is what Python log handlers created earlier write
    to stderr (TensorFlow's own Python logger among them); `print(..., file=sys.stderr)` still reaches
    the console. Nothing is lost: the lines are in `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    python_stderr = sys.stderr
    with path.open("ab") as log:
        console = os.dup(2)
        try:
            os.dup2(log.fileno(), 2)
            sys.stderr = os.fdopen(os.dup(console), "w", buffering=1)
            yield path
        finally:
            if sys.stderr is not python_stderr:
                sys.stderr.flush()
                sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(console, 2)
            os.close(console)
