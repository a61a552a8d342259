"""Offline batch recommendations through the exported signature itself, so tonight's e-mail list and
tomorrow's online answer are the same computation.

    recgpt recommend-batch EXPORT_BASE/NAME/VERSION users.csv --out recs.jsonl

Requests are every user of an interaction file (any format the readers take: the user's whole history)
or a JSON-lines file of {"user_id": ..., "history": [...]} (optionally "exclude": [...], which uses the
`recommend_excluding` signature). Answers are JSON lines {"user_id", "item_ids", "scores",
"recall_step"}, in request order, strict JSON: a row lists the allowed items only, so it is shorter than k
when a request excludes all but a few. The output holds one job's answers (`batch_output`): a killed job
reruns from its last complete line, another job on the same file is refused, and the file appears under
its name, with a manifest beside it, only once complete.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import tensorflow as tf

from recgpt_tf.contract import (
    EXCLUDING_SIGNATURE,
    INPUT_EXCLUDE,
    INPUT_HISTORY,
    INPUT_USER_ID,
    OUTPUT_ITEM_IDS,
    OUTPUT_RECALL_STEP,
    OUTPUT_SCORES,
    RECOMMEND_SIGNATURE,
    pad_histories,
    version_numbers,
    without_empty_slots,
)
from recgpt_tf.errors import ConfigError, DataFormatError, RecGPTError, RunDirectoryError
from recgpt_tf.inference.batch_output import BatchJob, BatchOutput, model_identity, requests_identity


def resolve_version(path: Path | str) -> Path:
    """The SavedModel version `path` names: a version directory, or a model directory (its newest version)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = version_numbers(path)
    if versions and (path / str(versions[-1]) / "saved_model.pb").is_file():
        return path / str(versions[-1])
    raise RunDirectoryError(f"{path}: neither a SavedModel version (no saved_model.pb) nor a model directory with versions")


def read_requests(path: Path | str, data_format: str | None = None, columns: Mapping[str, str] | None = None) -> Iterator[dict]:
    """Requests in file order: JSON lines (`.jsonl`, UTF-8), or each user of an interaction file with their
    history (`columns` maps an interaction table's columns, as `load_interactions` does)."""
    from recgpt_tf.data.readers import load_interactions, text_lines

    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        for user, items in load_interactions(path, data_format, columns).items():
            yield {"user_id": user, "history": items, "exclude": None}
        return
    if columns:
        raise ConfigError("columns", "applies to interaction tables, not to JSON-lines requests (their keys are user_id, history, exclude)")
    if not path.is_file():
        raise DataFormatError(path, None, "no such file")
    for number, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError as error:
            raise DataFormatError(path, number, f"is not JSON: {error}") from None
        if not isinstance(request, dict) or not isinstance(request.get("user_id"), str):
            raise DataFormatError(path, number, 'expected {"user_id": "...", "history": ["...", ...]}')
        for key in ("history", "exclude"):
            value = request.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise DataFormatError(path, number, f"{key!r} must be a list of item id strings")
        yield {"user_id": request["user_id"], "history": request.get("history", []), "exclude": request.get("exclude")}


def recommend_batch(
    version: Path | str,
    requests: list[dict],
    out: Path | str,
    batch_size: int = 256,
    progress: bool = True,
    overwrite: bool = False,
    source: str | None = None,
) -> dict:
    """Answers `requests` with the SavedModel's own signature into `out` (JSON lines), resuming after the
    answers a killed run of the same job left (`batch_output`).

    Args:
        version: A SavedModel version directory (or a model directory: its newest version).
        requests: Dicts with "user_id", "history" and optionally "exclude" (`read_requests`).
        out: The JSON-lines file written; it appears once complete, with OUT.manifest.json beside it.
        batch_size: Requests per signature call.
        progress: Show a Keras progress bar (one line per update when the output is not a terminal).
        overwrite: Discard what `out` holds (finished or partial answers of another job) first.
        source: Where the requests came from (a file name), recorded in the manifest.

    Returns:
        {"users": answered by this call, "skipped": answered by an earlier attempt, "complete": whether
        `out` already held this job's finished answers, "seconds", "users_per_second", "version"}.

    Raises:
        OutputConflictError: `out` holds another job's answers, or another process writes it.
    """
    import tf_keras as keras

    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1; got {batch_size}")
    version, output = resolve_version(version), BatchOutput(Path(out))
    job = BatchJob(model=model_identity(version), requests=requests_identity(requests, source))
    answered, skip, start = 0, 0, time.perf_counter()
    with output.writing(job, overwrite) as writer:
        if writer is not None:
            signatures = tf.saved_model.load(str(version)).signatures
            skip = min(writer.answered, len(requests))
            bar = keras.utils.Progbar(len(requests), unit_name="user") if progress and sys.stdout.isatty() else None
            for begin in range(skip, len(requests), batch_size):
                batch = requests[begin : begin + batch_size]
                writer.write_lines(answer_lines(signatures, batch))
                answered += len(batch)
                if bar is not None:
                    bar.update(begin + len(batch))
            if bar is not None:
                bar.update(len(requests), finalize=True)
        else:
            skip = len(requests)
    seconds = time.perf_counter() - start
    return {
        "users": answered,
        "skipped": skip,
        "complete": writer is None,
        "seconds": seconds,
        "users_per_second": answered / seconds if answered and seconds else None,
        "version": str(version),
    }


def answer_lines(signatures, batch: list[dict]) -> list[str]:
    """One signature call per kind of request in `batch` (with and without exclusions); a JSON line per
    request, in order. A slot the signature filled because fewer than k items were allowed (item "" with
    score -inf, `contract.EMPTY_SLOT`) is left out of the line, so every line is strict JSON and lists real items only."""
    rows: list[str | None] = [None] * len(batch)
    for excluding in (False, True):
        index = [i for i, request in enumerate(batch) if (request.get("exclude") is not None) == excluding]
        if not index:
            continue
        inputs = {
            INPUT_USER_ID: tf.constant(np.array([batch[i]["user_id"] for i in index], dtype=object)),
            INPUT_HISTORY: tf.constant(pad_histories([batch[i]["history"] for i in index])),
        }
        if excluding:
            inputs[INPUT_EXCLUDE] = tf.constant(pad_histories([batch[i]["exclude"] for i in index]))
        outputs = signatures[EXCLUDING_SIGNATURE if excluding else RECOMMEND_SIGNATURE](**inputs)
        items, scores, steps = (outputs[key].numpy() for key in (OUTPUT_ITEM_IDS, OUTPUT_SCORES, OUTPUT_RECALL_STEP))
        for row, i in enumerate(index):
            answer = {
                "user_id": batch[i]["user_id"],
                OUTPUT_ITEM_IDS: [item.decode("utf-8") for item in items[row]],
                OUTPUT_SCORES: [round(float(score), 6) for score in scores[row]],
                OUTPUT_RECALL_STEP: steps[row].tolist(),
            }
            try:
                rows[i] = json.dumps(without_empty_slots(answer), ensure_ascii=False, allow_nan=False)
            except ValueError:  # a NaN score: the model's weights hold one; no answer is written for it
                raise RecGPTError(f"the model answered user {batch[i]['user_id']!r} with a non-finite score; check its weights") from None
    return rows
