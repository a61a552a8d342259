"""Inference: batched history encoding and recall."""

from recgpt_tf.inference.encode import HistoryEncoder, length_sorted_batches
from recgpt_tf.inference.prompts import PromptGenerator, load_prompted, prompt_layout, save_prompted
from recgpt_tf.inference.recall import AutoRegressiveRecall, split_k

__all__ = [
    "AutoRegressiveRecall",
    "HistoryEncoder",
    "PromptGenerator",
    "length_sorted_batches",
    "load_prompted",
    "prompt_layout",
    "save_prompted",
    "split_k",
]
