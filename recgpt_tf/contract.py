"""The SavedModel contract shared by export/ and serving/: signature and tensor names, the
export base layout, and the `history` input's layout."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np

RECOMMEND_SIGNATURE = "serving_default"
EMBEDDINGS_SIGNATURE = "user_embeddings"
EXCLUDING_SIGNATURE = "recommend_excluding"  # serving_default's outputs, never an item of `exclude`

INPUT_USER_ID = "user_id"  # string [batch]
INPUT_HISTORY = "history"  # string [batch, T], oldest first, right-padded with ""
INPUT_EXCLUDE = "exclude"  # string [batch, E], items never to return (out of stock, bought elsewhere), right-padded with ""
# Most items one row of `exclude` may list. The signature itself refuses a wider input (INVALID_ARGUMENT from
# any server, stock TF Serving included): the request is never cut, and its cost stays bounded.
MAX_EXCLUDE = 10_000

OUTPUT_ITEM_IDS = "item_ids"  # string [batch, k]; EMPTY_SLOT where fewer than k items are allowed
OUTPUT_SCORES = "scores"  # float32 [batch, k]
OUTPUT_RECALL_STEP = "recall_step"  # int32 [batch, k], 1 or 2
OUTPUT_EMBEDDINGS = "embeddings"  # float32 [batch, steps, d]
OUTPUT_FIRST_ITEM = "first_item"  # string [batch]

# The item id of a slot no allowed item can fill (a request that excludes all but a few items): its score is
# -inf. The signature keeps its [batch, k] shape; the project's clients and batch files leave such slots out.
EMPTY_SLOT = ""

METADATA_FILE = "recgpt.json"  # in assets.extra/
WARMUP_FILE = "tf_serving_warmup_requests"  # in assets.extra/
INDEX_KINDS = ("brute-force", "partitioned", "scann")  # recgpt.json "index.kind"
AUTO_INDEX = "auto"  # partitioned for large catalogues, brute force below (retrieval.resolve_index_kind)
INDEX_CHOICES = (*INDEX_KINDS, AUTO_INDEX)  # what `--index` / `index_kind` accept
# From this catalogue size up, "auto" exports the partitioned index (benchmarks/index_latency.py
# measures where its signature beats brute force on a trained model); below it exact search is as fast.
PARTITIONED_MIN_ITEMS = 50_000


def without_empty_slots(row: dict) -> dict:
    """One answer row ({"item_ids", "scores", "recall_step", ...} as lists) without its `EMPTY_SLOT`s; a row
    of another signature (no item_ids) unchanged."""
    if OUTPUT_ITEM_IDS not in row:
        return row
    keep = [item != EMPTY_SLOT for item in row[OUTPUT_ITEM_IDS]]
    per_slot = (OUTPUT_ITEM_IDS, OUTPUT_SCORES, OUTPUT_RECALL_STEP)
    return {key: [v for v, k in zip(value, keep) if k] if key in per_slot else value for key, value in row.items()}


def right_pad(rows: Sequence[Sequence], fill=0, dtype=np.int32, width: int | None = None) -> np.ndarray:
    """[B, width] array of `rows`, each left-aligned and followed by `fill` (width: the longest row, at least
    1). The one padding helper: training batches, decoder inputs, exclusion lists and the `history` input."""
    width = max([len(row) for row in rows] + [1]) if width is None else width
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = list(row) if dtype is object else row
    return out


def pad_histories(histories: Sequence[Sequence], fill: str | bytes = "") -> np.ndarray:
    """The `history` input's layout: an object array [batch, T], each row oldest first,
    right-padded with `fill` to the longest row (T >= 1, so an empty batch row is one pad)."""
    return right_pad(histories, fill, object)


_VERSION = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
# A model name TF Serving and its REST paths can carry, and a server polls: no hidden name, no separators.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_log = logging.getLogger("recgpt.serve")
_reported: set[Path] = set()


def version_numbers(model_dir: Path) -> list[int]:
    """The version directories of EXPORT_BASE/NAME, ascending. Only names of ASCII digits are versions; any
    other entry (hidden staging directories, "²", "v2") is ignored, with one log line for a visible one."""
    if not model_dir.is_dir():
        return []
    versions = []
    for path in model_dir.iterdir():
        if path.is_dir() and _VERSION.fullmatch(path.name):
            versions.append(int(path.name))
        elif path.is_dir() and not path.name.startswith(".") and path not in _reported:
            _reported.add(path)
            _log.warning("%s is not a version directory (a version is named by ASCII digits); ignored", path)
    return sorted(versions)
