"""Atomic file writes: readers (TF Serving polling an export base, a resumed run) never see half a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path | str, text: str) -> None:
    """Writes `text` to a hidden sibling, then renames it over `path` (atomic on one filesystem);
    missing parent directories are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: Path | str, payload: dict[str, Any]) -> None:
    """Writes `payload` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
