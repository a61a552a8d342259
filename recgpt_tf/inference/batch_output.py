"""A batch output file holds exactly one job's answers, or says it does not.

    OUT                    the answers (JSON lines); appears, by a rename, only once every request is answered
    OUT.manifest.json      the completion record, written just before that rename: the model version and its
                           fingerprint, the requests' count and digest, the lines and their sha256, when
    .OUT.partial           the answers so far (complete lines), while the job runs or after it was killed
    .OUT.job.json          the job those partial answers belong to (model and requests)
    .OUT.lock              held by the process writing OUT: one writer per output

A job resumes its own partial answers only: other requests or another model (a new version published, a
run retrained) is refused with what differs, unless `overwrite` discards the old answers first. A finished
OUT is never appended to: the same job again is already done, another one is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import tensorflow as tf

from recgpt_tf.errors import ConfigError, OutputConflictError
from recgpt_tf.files import exclusive_lock, open_binary, write_json

MANIFEST_SUFFIX = ".manifest.json"


def model_identity(version: Path) -> dict:
    """What a batch output records of the SavedModel version answering it: its path, version number and
    fingerprint (TensorFlow's fingerprint.pb, which covers the graph and the variables; for a SavedModel
    written without one, the sha256 of saved_model.pb and the variables index)."""
    path = str(version) if "://" in str(version) else str(Path(version).resolve())  # a URL (gs://...) as given
    try:
        fingerprint = tf.saved_model.experimental.read_fingerprint(path).singleprint()
    except (FileNotFoundError, ValueError, RuntimeError):  # none, or unreadable
        digest = hashlib.sha256()
        for name in ("saved_model.pb", "variables/variables.index"):
            if tf.io.gfile.exists(f"{path}/{name}"):
                with tf.io.gfile.GFile(f"{path}/{name}", "rb") as handle:
                    digest.update(handle.read())
        fingerprint = f"sha256:{digest.hexdigest()}"
    return {"path": path, "version": path.rstrip("/").rpartition("/")[2], "fingerprint": fingerprint}


def requests_identity(requests: list[dict], source: str | None = None) -> dict:
    """The requests' count and a digest of their content (user, history, exclusions, in order): a job on
    other users, or on these users with other histories, has another digest."""
    digest = hashlib.sha256()
    for request in requests:
        row = [request["user_id"], list(request["history"]), request.get("exclude")]
        digest.update(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
    return {"count": len(requests), "sha256": digest.hexdigest(), "source": source}


@dataclasses.dataclass(frozen=True)
class BatchJob:
    """One job: the model version that answers and the requests it answers."""

    model: dict
    requests: dict

    def to_dict(self) -> dict:
        return {"model": self.model, "requests": self.requests}

    def differences(self, recorded: dict) -> list[str]:
        """How the job `recorded` (a job or manifest record) differs from this one, in words; empty if it is this job."""
        found = []
        old_model, old_requests = recorded.get("model", {}), recorded.get("requests", {})
        if old_model.get("path") != self.model["path"]:
            found.append(f"they came from the model at {old_model.get('path')}, not {self.model['path']}")
        elif old_model.get("fingerprint") != self.model["fingerprint"]:
            found.append(f"the SavedModel at {self.model['path']} changed since they were written (another fingerprint)")
        if old_requests.get("sha256") != self.requests["sha256"]:
            found.append(
                f"they answer other requests ({old_requests.get('count')} from {old_requests.get('source')}, "
                f"not these {self.requests['count']} from {self.requests['source']})"
            )
        return found


class BatchWriter:
    """Appends complete lines to the partial answers of a job (`BatchOutput.writing`)."""

    def __init__(self, handle, answered: int) -> None:
        self._handle = handle
        self.answered = answered  # lines in the file, those of earlier attempts included

    def write_lines(self, lines: list[str]) -> None:
        self._handle.write("".join(line + "\n" for line in lines))
        self._handle.flush()
        self.answered += len(lines)


@dataclasses.dataclass(frozen=True)
class BatchOutput:
    """The files of one batch output `path` (the module docstring)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.path.is_dir():
            raise ConfigError("out", f"names a folder ({self.path}); give a file name, e.g. {self.path / 'recs.jsonl'}")

    def _sibling(self, suffix: str, hidden: bool = True) -> Path:
        return self.path.with_name(f"{'.' if hidden else ''}{self.path.name}{suffix}")

    @property
    def manifest_path(self) -> Path:
        return self._sibling(MANIFEST_SUFFIX, hidden=False)

    @property
    def partial_path(self) -> Path:
        return self._sibling(".partial")

    @property
    def job_path(self) -> Path:
        return self._sibling(".job.json")

    def manifest(self) -> dict | None:
        """The completion record of a finished output, None when there is none (or it is unreadable)."""
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def writing(self, job: BatchJob, overwrite: bool = False) -> Iterator[BatchWriter | None]:
        """Holds the output's lock and yields a writer positioned after the answers already given to `job`,
        or None when `path` already holds `job`'s finished answers. When the block ends without an error
        the job is committed: manifest, then the rename to `path`.

        Raises:
            OutputConflictError: another process writes this output; or it holds, finished or not, another
                job's answers (and `overwrite` is off).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        busy = lambda holder: OutputConflictError(f"{self.path} is being written by {holder}; wait for it to end, or write another file")  # noqa: E731
        with exclusive_lock(self._sibling(".lock"), busy):
            if overwrite:
                for path in (self.path, self.manifest_path, self.partial_path, self.job_path):
                    path.unlink(missing_ok=True)
            if self.path.exists():
                self._check_finished(job)
                yield None
                return
            self._check_partial(job)
            write_json(self.job_path, job.to_dict())
            with self.partial_path.open("ab") as binary:
                binary.truncate(_complete_length(self.partial_path))  # a line cut by a kill is answered again
            with self.partial_path.open("a", encoding="utf-8") as handle:
                writer = BatchWriter(handle, answered=file_digest(self.partial_path)[1])
                yield writer
                handle.flush()
                os.fsync(handle.fileno())
            self._commit(job, writer.answered)

    def _check_finished(self, job: BatchJob) -> None:
        manifest = self.manifest()
        if manifest is None:
            raise OutputConflictError(
                f"{self.path} already exists and no {self.manifest_path.name} says which job wrote it; pass overwrite "
                "(--overwrite) to replace it, or write another file"
            )
        if file_digest(self.path)[0] != manifest.get("sha256"):
            raise OutputConflictError(
                f"{self.path} does not match its manifest {self.manifest_path.name} (changed since it was written); pass "
                "overwrite (--overwrite) to answer the job again, or write another file"
            )
        differences = job.differences(manifest)
        if differences:
            raise OutputConflictError(
                f"{self.path} holds another job's finished answers ({'; '.join(differences)}); pass overwrite "
                "(--overwrite) to replace them, or write another file"
            )

    def _check_partial(self, job: BatchJob) -> None:
        if not self.partial_path.exists():
            return
        try:
            recorded = json.loads(self.job_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
        differences = ["no record says which job wrote them"] if recorded is None else job.differences(recorded)
        if differences:
            answered = file_digest(self.partial_path)[1]
            raise OutputConflictError(
                f"{self.path} has {answered} unfinished answers of another job ({'; '.join(differences)}); pass overwrite "
                "(--overwrite) to start again, or rerun the job that wrote them"
            )

    def _commit(self, job: BatchJob, answered: int) -> None:
        write_json(
            self.manifest_path,
            {
                **job.to_dict(),
                "lines": answered,
                "sha256": file_digest(self.partial_path)[0],
                "completed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        self.partial_path.replace(self.path)
        self.job_path.unlink(missing_ok=True)


def _complete_length(path: Path) -> int:
    """The length of `path` up to and including its last newline."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        position = size
        while position > 0:
            step = min(1 << 16, position)
            handle.seek(position - step)
            block = handle.read(step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                return position - step + newline + 1
            position -= step
    return 0


def file_digest(path: Path | str, opener=open_binary) -> tuple[str, int]:
    """(sha256, lines) of a file's bytes as stored, read in blocks; `opener(path)` opens it (Beam's
    FileSystems for a shard on remote storage)."""
    digest, lines = hashlib.sha256(), 0
    with opener(str(path)) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            lines += block.count(b"\n")
    return digest.hexdigest(), lines
