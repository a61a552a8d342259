"""Offline batch recommendations through the exported signature itself, so tonight's e-mail list and
tomorrow's online answer are the same computation.

    recgpt recommend-batch EXPORT_BASE/NAME/VERSION users.csv --out recs.jsonl

Requests are every user of an interaction file (any format the readers take: the user's whole history)
or a JSON-lines file of {"user_id": ..., "history": [...]} (optionally "exclude": [...], which uses the
`recommend_excluding` signature). Answers are JSON lines {"user_id", "item_ids", "scores",
"recall_step"}, in request order. A long run is resumable: rerun the same command and it continues after
the last complete line (a line cut by a kill is dropped and answered again).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

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
)
from recgpt_tf.errors import ConfigError, DataFormatError, RunDirectoryError


def resolve_version(path: Path | str) -> Path:
    """The SavedModel version `path` names: a version directory, or a model directory (its newest version)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    versions = version_numbers(path)
    if versions and (path / str(versions[-1]) / "saved_model.pb").is_file():
        return path / str(versions[-1])
    raise RunDirectoryError(f"{path}: neither a SavedModel version (no saved_model.pb) nor a model directory with versions")


def read_requests(path: Path | str, data_format: str | None = None) -> Iterator[dict]:
    """Requests in file order: JSON lines (`.jsonl`), or each user of an interaction file with their history."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
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
        return
    from recgpt_tf.data.readers import load_interactions

    for user, items in load_interactions(path, data_format).items():
        yield {"user_id": user, "history": items, "exclude": None}


def _answered_lines(out: Path) -> int:
    """Complete lines already in `out` (a resumed run); a trailing partial line is cut off."""
    if not out.exists():
        return 0
    data = out.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with out.open("r+b") as handle:
            handle.truncate(len(complete))
    return complete.count(b"\n")


def recommend_batch(
    version: Path | str,
    requests: Iterator[dict],
    out: Path | str,
    batch_size: int = 256,
    total: int | None = None,
    progress: bool = True,
) -> dict:
    """Answers `requests` with the SavedModel's own signature into `out` (JSON lines), resuming after the
    lines already there.

    Args:
        version: A SavedModel version directory (or a model directory: its newest version).
        requests: Dicts with "user_id", "history" and optionally "exclude" (`read_requests`).
        out: The JSON-lines file written.
        batch_size: Requests per signature call.
        total: The number of requests, for the progress bar (optional).
        progress: Show a Keras progress bar (one line per update when the output is not a terminal).

    Returns:
        {"users": answered by this call, "skipped": already in `out`, "seconds", "users_per_second", "version"}.
    """
    import tf_keras as keras

    if batch_size < 1:
        raise ConfigError("batch_size", f"must be >= 1; got {batch_size}")
    version, out = resolve_version(version), Path(out)
    signatures = tf.saved_model.load(str(version)).signatures
    skip = _answered_lines(out)
    bar = keras.utils.Progbar(total, unit_name="user") if progress else None
    answered, seen, start = 0, 0, time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        batch: list[dict] = []
        for request in requests:
            seen += 1
            if seen <= skip:
                continue
            batch.append(request)
            if len(batch) == batch_size:
                answered += _answer(signatures, batch, handle)
                batch = []
                if bar is not None:
                    bar.update(seen)
        if batch:
            answered += _answer(signatures, batch, handle)
        if bar is not None:
            bar.update(seen, finalize=True)
    seconds = time.perf_counter() - start
    return {
        "users": answered,
        "skipped": min(skip, seen),
        "seconds": seconds,
        "users_per_second": answered / seconds if seconds else None,
        "version": str(version),
    }


def _answer(signatures, batch: list[dict], handle) -> int:
    """One signature call per kind of request in `batch` (with and without exclusions), written in order."""
    rows: list[dict | None] = [None] * len(batch)
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
            rows[i] = {
                "user_id": batch[i]["user_id"],
                "item_ids": [item.decode("utf-8") for item in items[row]],
                "scores": [round(float(score), 6) for score in scores[row]],
                "recall_step": steps[row].tolist(),
            }
    handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    handle.flush()
    return len(rows)
