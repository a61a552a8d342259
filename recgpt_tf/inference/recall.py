"""Auto-regressive multi-step recall (paper section 4) — the one implementation
that evaluation, the CLI and the exporter all call.

Two-step recall for a top-k list, k = m + n (`step_sizes=(m, n)`):
  1. h1 = decoder(u, s_u) at the last position; the top-m items by h1 · e_i,
     history excluded; i1* = the best of them.
  2. Append i1* as a prompt token (segment 1) and run the decoder again: h2;
     the top-n items by h2 · e_i, skipping history items and the first m.
The list is the m items then the n items. G > 2 steps generalise this (the
online system generated six user vectors): step g appends step g-1's best item.
One step (`step_sizes=(k,)`) is the usual top-k from h1.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from recgpt_tf.errors import ConfigError
from recgpt_tf.inference.encode import HistoryEncoder
from recgpt_tf.inference.prompts import PROMPT, REAL
from recgpt_tf.retrieval import BruteForceIndex, ItemIndex
from recgpt_tf.retrieval.exclusions import pad_exclusions


def split_k(k: int, first_step_size: int, num_steps: int = 2) -> tuple[int, ...]:
    """Step sizes for a k-list: `first_step_size` items from h1, the remaining
    k - m spread as evenly as possible over the later steps (earlier steps first)."""
    if not 1 <= first_step_size <= k:
        raise ConfigError("first_step_size", f"must be in 1..{k}; got {first_step_size}")
    if num_steps < 1:
        raise ConfigError("num_steps", f"must be >= 1; got {num_steps}")
    rest = k - first_step_size
    later = num_steps - 1
    if later == 0 or rest == 0:
        return (k,) if rest == 0 else (first_step_size, rest)
    base, extra = divmod(rest, later)
    sizes = [first_step_size] + [base + (1 if i < extra else 0) for i in range(later)]
    return tuple(s for s in sizes if s > 0)


class AutoRegressiveRecall:
    """Multi-step recall with a (prompt-tuned) RecGPT.

    Args:
        model: A `RecGPT`; its `output_item_table()` scores items.
        index: Retrieval over `model.candidate_embeddings()` (default: exact,
            `BruteForceIndex`); the serving graph passes the export's index.
    """

    def __init__(self, model, index: ItemIndex | None = None) -> None:
        self.model = model
        self.encoder = HistoryEncoder.of(model)
        self.index = index if index is not None else BruteForceIndex(model.candidate_embeddings())

    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray], num_steps: int, first_items: np.ndarray | None = None):
        """h_1..h_G for each user, appending each step's best item as a prompt.

        Args:
            users: [B] user ids.
            histories: B item-id arrays (oldest first).
            num_steps: G.
            first_items: Optional [B, G-1] prompt items to append (the best item of
                each earlier step); computed greedily (history excluded) when None.

        Returns:
            (vectors [B, G, d] float32, prompts [B, G-1] int32).
        """
        exclusions = tf.constant(pad_exclusions(histories))
        tokens = [np.asarray(h, np.int32) for h in histories]
        segments = [np.full(len(h), REAL, np.int32) for h in histories]
        vectors, prompts = [], []
        for step in range(num_steps):
            h = self.encoder.encode_batch(users, tokens, segments)  # (B, d)
            vectors.append(h)
            if step == num_steps - 1:
                break
            if first_items is not None:
                best = np.asarray(first_items[:, step], np.int32)
            else:
                best = self.index.query_with_exclusions(h, exclusions, 1)[1][:, 0].numpy()
            prompts.append(best)
            tokens = [np.append(t, b) for t, b in zip(tokens, best)]
            segments = [np.append(s, PROMPT) for s in segments]
        stacked = tf.stack(vectors, axis=1).numpy()
        return stacked, (np.stack(prompts, axis=1) if prompts else np.zeros((len(histories), 0), np.int32))

    def recommend(self, users: np.ndarray, histories: Sequence[np.ndarray], step_sizes: Sequence[int]):
        """Top-k lists, k = sum(step_sizes), built step by step.

        Returns:
            (item ids [B, k] int32, scores [B, k] float32, step [B, k] int32 — 1-based
            step that produced each item).
        """
        step_sizes = tuple(int(s) for s in step_sizes)
        k = sum(step_sizes)
        if not step_sizes or min(step_sizes) < 1 or k > self.model.num_items:
            raise ConfigError("step_sizes", f"must be >= 1 and sum to at most {self.model.num_items}; got {step_sizes}")
        vectors, _ = self.user_vectors(users, histories, len(step_sizes))
        exclusions = pad_exclusions(histories)
        items, scores = [], []
        for g, size in enumerate(step_sizes):
            # Items already listed by earlier steps are excluded like history items.
            listed = tf.constant(np.concatenate([exclusions] + items, axis=1))
            step_scores, step_items = self.index.query_with_exclusions(tf.constant(vectors[:, g]), listed, size)
            items.append(step_items.numpy())
            scores.append(step_scores.numpy())
        steps = np.repeat(np.arange(1, len(step_sizes) + 1, dtype=np.int32), step_sizes)[np.newaxis].repeat(len(histories), axis=0)
        items, scores = np.concatenate(items, axis=1).astype(np.int32), np.concatenate(scores, axis=1).astype(np.float32)
        return items, scores, steps
