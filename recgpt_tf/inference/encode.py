"""Batched user representations for many histories (evaluation and the CLI)."""

from __future__ import annotations

import weakref
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from recgpt_tf.data.features import ITEM_IDS, SEGMENT_IDS, USER_ID
from recgpt_tf.data.pipeline import pad_batch


def length_sorted_batches(histories: Sequence[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Yields index arrays of `batch_size` histories of similar length, so each
    batch pads only to its own longest history."""
    order = np.argsort([len(h) for h in histories], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


class HistoryEncoder:
    """Runs the decoder on histories and returns the last hidden state per user.

    Use `HistoryEncoder.of(model)`: one encoder (one traced function) per model,
    so evaluating every epoch does not retrace.

    Args:
        model: A `RecGPT` (anything with `.backbone` and `.max_length`).
    """

    _cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model) -> "HistoryEncoder":
        encoder = cls._cache.get(model)
        if encoder is None:
            encoder = cls._cache[model] = cls(model)
        return encoder

    def __init__(self, model) -> None:
        self.model = model

        batch, tokens = tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, None], tf.int32)

        @tf.function(input_signature=[batch, tokens, tokens, batch])  # one trace for every batch shape
        def _encode(user_id, item_ids, segment_ids, lengths):
            return model.user_representation({USER_ID: user_id, ITEM_IDS: item_ids, SEGMENT_IDS: segment_ids}, lengths)  # (B, d)

        self._encode = _encode

    def encode_batch(self, users: np.ndarray, histories: Sequence[np.ndarray], segments: Sequence[np.ndarray] | None = None) -> tf.Tensor:
        """[B, d] h at each history's last position (most recent `max_length` tokens)."""
        ids, lengths = pad_batch(histories, self.model.max_length)
        if segments is None:
            segment_ids = np.zeros_like(ids)
        else:
            segment_ids, _ = pad_batch(segments, self.model.max_length)
        return self._encode(
            tf.constant(np.asarray(users, dtype=np.int32)), tf.constant(ids), tf.constant(segment_ids), tf.constant(lengths)
        )
