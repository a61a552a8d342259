"""Batch recommendations on Apache Beam: `RunInference` with a model handler that calls the exported
SavedModel's own signature (`serving_default`, or `recommend_excluding` for requests with exclusions), so
offline lists equal online answers, on as many workers as the runner gives.

    requests (JSON lines files, or an interaction log grouped as `beam.convert` groups it)
        ──RunInference(SignatureModelHandler)──▶ JSON lines (the lines `recommend-batch` writes)
        ──WriteToText──▶ OUT-0000i-of-0000N.jsonl (each shard written whole)  ──▶ OUT.manifest.json, last

The output holds one job's answers from one model version, as the in-process batch does: the manifest
(`OUT.manifest.json`: the model version's path and fingerprint, the requests' count and an order-free digest,
the shards with their lines and sha256, when) is written after every shard is in place; the same job again
is "nothing to do", another job on the same OUT is refused unless `overwrite`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import ModelHandler, RunInference

from recgpt_tf.beam.convert import GroupSequences, ReadInteractions, input_files, replace, split_path, worker_errors
from recgpt_tf.errors import OutputConflictError
from recgpt_tf.inference.batch_output import MANIFEST_SUFFIX, BatchJob, file_digest, model_identity


class SignatureModelHandler(ModelHandler[dict, str, Any]):
    """Loads the SavedModel version once per worker and answers batches of requests ({"user_id",
    "history", "exclude"}) with its own signatures; each answer is `recommend-batch`'s JSON line."""

    def __init__(self, version: Path | str, min_batch_size: int = 1, max_batch_size: int = 256) -> None:
        self.version = str(version)
        self.batch_sizes = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}

    def load_model(self):
        import tensorflow as tf

        return tf.saved_model.load(self.version).signatures

    def run_inference(self, batch: Sequence[dict], model, inference_args: dict | None = None) -> Iterable[str]:
        from recgpt_tf.inference.batch import answer_lines

        return answer_lines(model, list(batch))

    def batch_elements_kwargs(self) -> dict:
        return self.batch_sizes

    def get_metrics_namespace(self) -> str:
        return "recgpt"


class ReadRequests(beam.PTransform):
    """PBegin → requests: the lines of JSON-lines files (each file read by one worker, errors naming
    FILE:LINE), or every user of an interaction log with their whole history."""

    def __init__(self, users: Path | str, data_format: str | None = None, columns=None) -> None:
        super().__init__()
        self.users, self.data_format, self.columns = str(users), data_format, columns

    def expand(self, pbegin):
        if self.users.endswith(".jsonl"):
            from recgpt_tf.inference.batch import read_requests

            parsed = pbegin | "Files" >> beam.Create([self.users]) | "Parse" >> beam.FlatMap(read_requests)
            return parsed | "Spread" >> beam.Reshuffle()  # one file is read by one worker; its requests go to all
        data_format, files = input_files(self.users, self.data_format)
        return (
            pbegin
            | "Read" >> ReadInteractions(files, data_format, self.columns)
            | "Group" >> GroupSequences()
            | "AsRequests" >> beam.Map(lambda s: {"user_id": s[0], "history": s[2], "exclude": None})
        )


def _is_the_same_job(recorded: dict, model: dict, source: str) -> bool:
    """Whether a Beam manifest records this model and requests file, and its shards are still as written."""
    if recorded.get("model", {}).get("fingerprint") != model["fingerprint"] or recorded.get("requests", {}).get("source") != source:
        return False
    modified = recorded.get("completed_at", "")
    for shard in recorded.get("shards", []):
        if not FileSystems.exists(shard["path"]) or _sha256_and_lines(shard["path"])[0] != shard["sha256"]:
            return False
    if "://" not in source and Path(source).exists():  # a requests file rewritten since is another job
        changed = datetime.datetime.fromtimestamp(Path(source).stat().st_mtime, datetime.timezone.utc).isoformat(timespec="seconds")
        return changed <= modified
    return True


def _sha256_and_lines(path: str) -> tuple[str, int]:
    """`file_digest` of a shard on any of Beam's file systems, its bytes as stored (no decompression)."""
    return file_digest(path, lambda p: FileSystems.open(p, compression_type="uncompressed"))


def _request_digest(request: dict) -> int:
    """A request's sha256 as an integer; their sum (mod 2**256) is a digest of the requests in any order."""
    row = [request["user_id"], list(request["history"]), request.get("exclude")]
    return int.from_bytes(hashlib.sha256(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()).digest(), "big")


def recommend_batch(
    version: Path | str,
    users: Path | str,
    out: Path | str,
    shards: int = 1,
    batch_size: int = 256,
    data_format: str | None = None,
    columns=None,
    overwrite: bool = False,
    beam_args: Sequence[str] = (),
) -> dict:
    """Answers every request of `users` into JSON-lines shards at `out` on the runner `beam_args` names.

    Returns:
        The manifest written (or found: {"complete": True, ...} when `out` already holds this job's answers).

    Raises:
        OutputConflictError: `out` holds another job's answers (and `overwrite` is off).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    from recgpt_tf.inference.batch import resolve_version

    version = version if "://" in str(version) else resolve_version(version)  # a URL: the version directory itself
    folder, name = split_path(out)
    manifest_path = folder + name + MANIFEST_SUFFIX
    model = model_identity(version)
    stem, _, suffixes = name.partition(".")
    if overwrite:
        old = [m.path for m in FileSystems.match([f"{folder}{stem}-?????-of-?????{'.' + suffixes if suffixes else ''}"])[0].metadata_list]
        FileSystems.delete([path for path in [manifest_path, *old] if FileSystems.exists(path)])
    elif FileSystems.exists(manifest_path):
        with FileSystems.open(manifest_path, compression_type="uncompressed") as handle:
            recorded = json.loads(handle.read().decode("utf-8"))
        if recorded.get("runner") == "beam" and _is_the_same_job(recorded, model, str(users)):
            return {**recorded, "complete": True}
        raise OutputConflictError(
            f"{out} holds another job's finished answers ({recorded.get('model', {}).get('path')}, {recorded.get('requests', {}).get('source')}); "
            "pass overwrite (--overwrite) to replace them, or write another file"
        )
    if "://" not in folder:
        Path(folder or ".").mkdir(parents=True, exist_ok=True)
    with worker_errors():
        with beam.Pipeline(options=PipelineOptions(list(beam_args))) as pipeline:
            requests = pipeline | "Requests" >> ReadRequests(users, data_format, columns)
            digest = (
                requests
                | "Digest" >> beam.Map(_request_digest)
                | "Together" >> beam.CombineGlobally(lambda digests: sum(digests) % (1 << 256))
            )
            count = requests | "Count" >> beam.combiners.Count.Globally()
            shards_written = (
                requests
                | "Recommend" >> RunInference(SignatureModelHandler(version, max_batch_size=batch_size))
                | "Write"
                >> beam.io.WriteToText(
                    folder + stem,
                    file_name_suffix=f".{suffixes}" if suffixes else "",
                    num_shards=shards,
                    shard_name_template="-SSSSS-of-NNNNN",
                )
            )
            _ = (
                shards_written
                | "AllShards" >> beam.combiners.ToList()
                | "Manifest"
                >> beam.Map(
                    _write_manifest,
                    manifest_path,
                    model,
                    str(users),
                    beam.pvalue.AsSingleton(count),
                    beam.pvalue.AsSingleton(digest),
                )
            )
    with FileSystems.open(manifest_path, compression_type="uncompressed") as handle:
        return json.loads(handle.read().decode("utf-8"))


def _write_manifest(shards: list[str], path: str, model: dict, source: str, count: int, digest: int) -> str:
    """The completion record, written whole (a temporary name, then a rename) after every shard is in place."""
    described = []
    for shard in sorted(shards):
        sha, lines = _sha256_and_lines(shard)
        described.append({"path": shard, "lines": lines, "sha256": sha})
    manifest = {
        **BatchJob(model=model, requests={"count": count, "unordered_sha256_sum": f"{digest:064x}", "source": source}).to_dict(),
        "runner": "beam",
        "shards": described,
        "lines": sum(shard["lines"] for shard in described),
        "completed_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    temporary = f"{path}.tmp-beam"
    with FileSystems.create(temporary) as handle:
        handle.write((json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    replace(temporary, path)
    return path
