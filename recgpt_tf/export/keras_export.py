"""Exporting an in-memory Keras model (no run directory), e.g. straight after `model.fit`.

A trained run directory exports through `runs.Run.export`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

from recgpt_tf.contract import AUTO_INDEX
from recgpt_tf.data.vocab import Vocabulary
from recgpt_tf.export.publish import PublishedVersion, export_model


def export_keras_model(
    model,
    item_vocab: Vocabulary,
    user_vocab: Vocabulary,
    export_base: Path | str,
    name: str,
    step_sizes: Sequence[int] = (9, 1),
    index_kind: str = AUTO_INDEX,
    sample_users: Sequence[str] = (),
    sample_histories: Sequence[Sequence[str]] = (),
    **kwargs,
) -> PublishedVersion:
    """Publishes an in-memory `RecGPT` with its vocabularies (keyword arguments as `export_model`)."""
    with tempfile.TemporaryDirectory(prefix="recgpt-vocab-") as tmp:
        item_vocab.save(Path(tmp) / "items.txt")
        user_vocab.save(Path(tmp) / "users.txt")
        # The vocabulary files are copied into the SavedModel's assets while saving.
        return export_model(
            model,
            Path(tmp) / "items.txt",
            Path(tmp) / "users.txt",
            export_base,
            name,
            step_sizes,
            index_kind=index_kind,
            sample_users=sample_users,
            sample_histories=sample_histories,
            **kwargs,
        )
