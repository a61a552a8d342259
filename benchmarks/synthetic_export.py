"""A RecGPT export over a synthetic catalogue of N items, for the speed benchmarks.

Weights are random: serving cost does not depend on what the model learned.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import recgpt_tf  # noqa: F401  (first: it selects Keras 2, which TFRS needs, before TensorFlow loads)

# isort: split

import numpy as np
import tensorflow as tf

from recgpt_tf.contract import pad_histories
from recgpt_tf.export import export_model
from recgpt_tf.models import RecGPT

STEPS = (9, 1)
USERS = 1000
MAX_HISTORY = 29  # request histories hold 3..MAX_HISTORY items


def synthetic_model(num_items: int, hidden_size: int = 64) -> RecGPT:
    model = RecGPT(num_items=num_items, num_users=USERS, hidden_size=hidden_size, num_layers=2, dropout=0.0)
    model({"user_id": tf.zeros([1], tf.int32), "item_ids": tf.zeros([1, 1], tf.int32)})
    return model


def random_requests(rng: np.random.Generator, num_items: int, batch: int) -> tuple[list[str], list[list[str]]]:
    lengths = rng.integers(3, MAX_HISTORY + 1, size=batch)
    histories = [[str(i) for i in rng.integers(1, num_items + 1, size=n)] for n in lengths]
    return [str(u) for u in rng.integers(1, USERS + 1, size=batch)], histories


def as_tensors(users: list[str], histories: list[list[str]]) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.constant(users), tf.constant(pad_histories(histories))


def export_synthetic(model: RecGPT, flavour: str, work: Path | None = None, name: str = "recgpt", jit_compile: bool = False) -> Path:
    """Exports `model` with the real exporter; vocabularies are "1".."N" and "1".."USERS"."""
    work = Path(work or tempfile.mkdtemp(prefix="recgpt-bench-"))
    items, users = work / "items.txt", work / "users.txt"
    if not items.exists():
        items.write_text("".join(f"{i}\n" for i in range(1, model.num_items + 1)))
        users.write_text("".join(f"{u}\n" for u in range(1, USERS + 1)))
    sample_users, sample_histories = random_requests(np.random.default_rng(1), model.num_items, 64)
    return export_model(
        model,
        items,
        users,
        work / "base",
        name,
        STEPS,
        index_kind=flavour,
        recall_threshold=0.0,
        sample_users=sample_users,
        sample_histories=sample_histories,
        jit_compile=jit_compile,
    ).path
