"""Auto-regressive multi-step recall (paper section 4): `GenerativeRecall`, one graph over item ids that
the serving signatures run inside the SavedModel and that evaluation, the CLI and notebooks run through
`AutoRegressiveRecall` (numpy in and out). There is no other implementation.

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

from recgpt_tf.contract import right_pad
from recgpt_tf.data.features import ITEM_IDS, PROMPT, SEGMENT_IDS, USER_ID, recent_rows
from recgpt_tf.errors import ConfigError
from recgpt_tf.retrieval import BruteForceIndex, ItemIndex


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


class GenerativeRecall(tf.Module):
    """The G-step generation as a graph: user and item ids in, a top-k list, its scores, the step that
    produced each item, the user vectors and the generated prompts out.

    Step g runs the decoder on the history followed by the best items of steps 1..g-1 (each a prompt
    token, segment 1), takes h_g at the last token and retrieves `step_sizes[g]` items, excluding the
    history and everything listed by earlier steps.

    Args:
        model: A trained `RecGPT` (prompt-tuned or not).
        index: Retrieval over `model.candidate_embeddings()` (default: exact, `BruteForceIndex`).
        max_exclusions: The most recent history items excluded from the results (None: all of them).
        jit_compile: Run each decoder pass as one XLA-compiled function over a fixed `max_length` window
            (about 2x faster per pass on CPU; TF Serving runs such functions only with
            `--xla_cpu_compilation_enabled=true`).
    """

    def __init__(self, model, index: ItemIndex | None = None, max_exclusions: int | None = None, jit_compile: bool = False) -> None:
        super().__init__(name="generative_recall")
        self.model = model
        self.index = index if index is not None else BruteForceIndex(model.candidate_embeddings())
        self.max_length = model.max_length
        self.max_exclusions = max_exclusions
        self.jit_compile = jit_compile
        # A fixed width under XLA: one compiled program per batch size, not per history length.
        self._decode = tf.function(self._decode_dense, jit_compile=True) if jit_compile else self._decode_dense

    def history_exclusions(self, items: tf.RaggedTensor) -> tf.Tensor:
        """[B, E] int32: the history items never recommended (the most recent `max_exclusions`), 0-padded."""
        recent = items if self.max_exclusions is None else items[:, -self.max_exclusions :]
        return recent.to_tensor(default_value=0)

    def decode_last(self, users: tf.Tensor, tokens: tf.RaggedTensor, segments: tf.RaggedTensor) -> tf.Tensor:
        """h at the last token of each row's most recent `max_length` tokens. [B, d]."""
        tokens, segments = recent_rows(tokens, self.max_length), recent_rows(segments, self.max_length)
        lengths = tokens.row_lengths()
        if self.jit_compile:
            width = tf.constant(self.max_length, tf.int64)
        else:
            width = tf.maximum(tf.reduce_max(tf.concat([lengths, [1]], axis=0)), 1)  # >= 1 even for cold starts
        dense = tokens.to_tensor(default_value=0, shape=tf.stack([tokens.nrows(), width]))  # (B, T)
        dense_segments = segments.to_tensor(default_value=0, shape=tf.stack([tokens.nrows(), width]))
        return self._decode(users, dense, dense_segments, tf.cast(lengths, tf.int32))

    def _decode_dense(self, users: tf.Tensor, tokens: tf.Tensor, segments: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """h at the last real position of each right-padded row (position 0 for an empty one). [B, d]."""
        return self.model.user_representation({USER_ID: users, ITEM_IDS: tokens, SEGMENT_IDS: segments}, lengths)

    def __call__(
        self,
        users: tf.Tensor,
        items: tf.RaggedTensor,
        step_sizes: Sequence[int],
        num_vectors: int | None = None,
        exclude: tf.Tensor | None = None,
    ):
        """The recall.

        Args:
            users: [B] int32 user ids.
            items: [B, None] int32 ragged histories, oldest first.
            step_sizes: Items produced by each step (static), e.g. (9, 1).
            num_vectors: User vectors to generate (default G); more than G runs the decoder again after
                the last retrieval without retrieving (the `user_embeddings` signature always returns h1, h2).
            exclude: Optional [B, E] int32 items never to return, 0-padded (request-time business rules),
                applied before the top-k of every step, like the history.

        Returns:
            (item ids [B, k] int32, scores [B, k], steps [B, k] int32, vectors [B, V, d], prompts [B, V-1] int32).
        """
        excluded = self.history_exclusions(items)  # (B, E)
        if exclude is not None:
            excluded = tf.concat([excluded, tf.cast(exclude, tf.int32)], axis=1)
        tokens, segments = items, tf.zeros_like(items)
        out_ids, out_scores, out_steps, vectors, prompts = [], [], [], [], []
        total = max(num_vectors or 0, len(step_sizes))
        for step in range(total):
            h = self.decode_last(users, tokens, segments)  # (B, d)
            vectors.append(h)
            if step < len(step_sizes):
                values, ids = self.index.query_with_exclusions(h, tf.concat([excluded] + out_ids, axis=1), step_sizes[step])
                out_ids.append(ids)
                out_scores.append(values)
                out_steps.append(tf.fill(tf.shape(ids), step + 1))
            if step < total - 1:
                best = out_ids[-1][:, :1]  # i_g*: appended as a prompt token
                prompts.append(best[:, 0])
                tokens = tf.concat([tokens, tf.RaggedTensor.from_tensor(best)], axis=1)
                segments = tf.concat([segments, tf.RaggedTensor.from_tensor(tf.fill(tf.shape(best), PROMPT))], axis=1)
        prompts_t = tf.stack(prompts, axis=1) if prompts else tf.zeros([tf.shape(users)[0], 0], tf.int32)
        return tf.concat(out_ids, 1), tf.concat(out_scores, 1), tf.concat(out_steps, 1), tf.stack(vectors, 1), prompts_t


class AutoRegressiveRecall:
    """`GenerativeRecall` for numpy callers (evaluation, the CLI, notebooks): every history item excluded,
    one traced graph per step layout.

    Args:
        model: A `RecGPT`; its `output_item_table()` scores items.
        index: Retrieval over `model.candidate_embeddings()` (default: exact, `BruteForceIndex`).
    """

    def __init__(self, model, index: ItemIndex | None = None) -> None:
        self.model = model
        self.generation = GenerativeRecall(model, index)
        self.index = self.generation.index
        self._traced: dict = {}

    def _run(
        self,
        users: np.ndarray,
        histories: Sequence[np.ndarray],
        step_sizes: tuple[int, ...],
        num_vectors: int | None,
        exclude: Sequence[Sequence[int]] | None = None,
    ):
        key = (step_sizes, num_vectors)
        if key not in self._traced:
            spec = [
                tf.TensorSpec([None], tf.int32),
                tf.RaggedTensorSpec([None, None], tf.int32, 1, tf.int64),
                tf.TensorSpec([None, None], tf.int32),
            ]
            self._traced[key] = tf.function(lambda u, h, x: self.generation(u, h, step_sizes, num_vectors, exclude=x), input_signature=spec)
        lengths = np.array([len(h) for h in histories], np.int64)
        flat = np.concatenate([np.asarray(h, np.int32) for h in histories]) if len(histories) else np.zeros(0, np.int32)
        items = tf.RaggedTensor.from_row_lengths(tf.constant(flat, tf.int32), tf.constant(lengths))
        excluded = right_pad(exclude) if exclude is not None else np.zeros((len(histories), 1), np.int32)
        return [t.numpy() for t in self._traced[key](tf.constant(np.asarray(users, np.int32)), items, tf.constant(excluded))]

    def user_vectors(self, users: np.ndarray, histories: Sequence[np.ndarray], num_steps: int):
        """h_1..h_G for each user, each step appending the best item (history and earlier steps' items
        excluded) as a prompt.

        Returns:
            (vectors [B, G, d] float32, prompts [B, G-1] int32).
        """
        _, _, _, vectors, prompts = self._run(users, histories, (1,) * max(num_steps - 1, 1), num_steps)
        return vectors, prompts.astype(np.int32)

    def recommend(
        self, users: np.ndarray, histories: Sequence[np.ndarray], step_sizes: Sequence[int], exclude: Sequence[Sequence[int]] | None = None
    ):
        """Top-k lists, k = sum(step_sizes), built step by step; never an item of the history or of
        `exclude` (B lists of item ids, optional).

        Returns:
            (item ids [B, k] int32, scores [B, k] float32, step [B, k] int32 — 1-based
            step that produced each item).
        """
        step_sizes = tuple(int(s) for s in step_sizes)
        k = sum(step_sizes)
        if not step_sizes or min(step_sizes) < 1 or k > self.model.num_items:
            raise ConfigError("step_sizes", f"must be >= 1 and sum to at most {self.model.num_items}; got {step_sizes}")
        items, scores, steps, _, _ = self._run(users, histories, step_sizes, None, exclude)
        return items.astype(np.int32), scores.astype(np.float32), steps.astype(np.int32)
