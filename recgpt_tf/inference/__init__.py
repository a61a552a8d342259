"""Inference: batched history encoding and recall."""

from recgpt_tf.inference.encode import HistoryEncoder, length_sorted_batches
from recgpt_tf.inference.recall import one_step_recall

__all__ = ["HistoryEncoder", "length_sorted_batches", "one_step_recall"]
