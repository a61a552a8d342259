"""Shared fixtures: a small synthetic catalogue."""

from __future__ import annotations

import pytest

import recgpt_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from recgpt_tf.data import Dataset, synthetic_sequences


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    return Dataset.from_interactions(
        synthetic_sequences(num_users=600, num_items=120, num_topics=8, mean_length=10, max_length=30, seed=3), name="tiny"
    )
