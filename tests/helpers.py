"""Plain helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

import numpy as np

import recgpt_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from recgpt_tf.config import ModelConfig, TrainConfig
from recgpt_tf.data import Dataset

TINY_MODEL = dict(max_length=20, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, dropout=0.1, user_dropout=0.0)


def tiny_model_config(dataset: Dataset, **overrides) -> ModelConfig:
    return ModelConfig(num_items=dataset.num_items, num_users=dataset.num_users, **{**TINY_MODEL, **overrides})


def tiny_train_config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 8, "batch_size": 64, "learning_rate": 3e-3, "patience": 8, "seed": 7, **overrides})


def tiny_run(dataset: Dataset, path, **model_overrides):
    """A fresh run directory for `dataset` with the tiny architecture."""
    from recgpt_tf.runs import Run

    return Run.create(path, dataset, tiny_model_config(dataset, **model_overrides), seed=7)


def export_from_run(run_dir, model, base, step_sizes, **kwargs):
    """Publishes `model` with the run's vocabularies and sample requests; returns the version's path."""
    from recgpt_tf.export import export_model
    from recgpt_tf.runs import Run

    run = Run.open(run_dir)
    requests = run.sample_requests()
    items, users = run.vocabulary_files
    return export_model(
        model, items, users, base, "recgpt", step_sizes, sample_users=requests["users"], sample_histories=requests["histories"], **kwargs
    ).path


def write_lines(path, lines) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def random_batch(num_items: int, num_users: int, batch: int = 3, length: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "user_id": rng.integers(1, num_users + 1, size=batch).astype(np.int32),
        "item_ids": rng.integers(1, num_items + 1, size=(batch, length)).astype(np.int32),
    }


def assert_causal(model, t: int = 4) -> None:
    """Changing item t+1 of a batch leaves the hidden states h_0..h_t of `model` (items 1..30, users 1..10) as
    they were, and changes a later one."""
    batch = random_batch(30, 10, batch=2, length=8, seed=1)
    base = model(batch).numpy()
    changed = {**batch, "item_ids": batch["item_ids"].copy()}
    changed["item_ids"][:, t + 1] = (changed["item_ids"][:, t + 1] % 30) + 1
    after = model(changed).numpy()
    np.testing.assert_allclose(after[:, : t + 1], base[:, : t + 1], atol=1e-6)
    assert np.abs(after[:, t + 1 :] - base[:, t + 1 :]).max() > 1e-4
