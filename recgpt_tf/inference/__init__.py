"""Inference: batched history encoding and recall."""

from recgpt_tf.inference.encode import HistoryEncoder, length_sorted_batches

__all__ = ["HistoryEncoder", "length_sorted_batches"]
