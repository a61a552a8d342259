"""The serving `tf.Module`: raw string ids in, recommendations out.

Everything a request needs runs inside the graph: vocabulary lookups (assets),
truncation to the most recent `max_length` items, the decoder, the first
retrieval, the appended prompt token, the second decoder pass, the second
retrieval, and removal of history items and duplicates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import tensorflow as tf

from recgpt_tf.contract import (
    INPUT_HISTORY,
    INPUT_USER_ID,
    OUTPUT_EMBEDDINGS,
    OUTPUT_FIRST_ITEM,
    OUTPUT_ITEM_IDS,
    OUTPUT_RECALL_STEP,
    OUTPUT_SCORES,
)
from recgpt_tf.data.pipeline import ITEM_IDS, SEGMENT_IDS, USER_ID
from recgpt_tf.retrieval import BruteForceIndex


def _line_number_table(path: Path) -> tf.lookup.StaticHashTable:
    """token → its line number (from 0) in the vocabulary file; unknown tokens → -1
    (`encode_inputs` maps line n to the package's id n + 1 and -1 to the OOV id)."""
    init = tf.lookup.TextFileInitializer(
        str(path), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER
    )
    return tf.lookup.StaticHashTable(init, default_value=-1)


class RecGPTServingModule(tf.Module):
    """Two-step (or G-step) RecGPT recall as SavedModel signatures.

    Args:
        model: A trained `RecGPT` (prompt-tuned or not).
        item_vocab: Path of the item vocabulary file (line i is item id i + 1).
        user_vocab: Path of the user vocabulary file.
        step_sizes: Items produced by each generation step, e.g. (9, 1).
        index: A `recgpt_tf.retrieval.ItemIndex` over the model's candidate
            embeddings (items 1..N); None for exact search (`BruteForceIndex`).
        max_exclusions: Most recent history items excluded from the results.
        jit_compile: Run each decoder pass as one XLA-compiled function over a fixed
            `max_length` window (about 2x faster per pass on CPU). TF Serving runs
            such functions only with `--xla_cpu_compilation_enabled=true`.
    """

    def __init__(
        self,
        model,
        item_vocab: Path,
        user_vocab: Path,
        step_sizes: Sequence[int],
        index=None,
        max_exclusions: int = 1000,
        jit_compile: bool = False,
    ) -> None:
        super().__init__(name="recgpt_serving")
        self.model = model
        self.jit_compile = jit_compile
        # A fixed width under XLA: one compiled program per batch size, not per history length.
        self._decode = tf.function(self._decode_dense, jit_compile=True) if jit_compile else self._decode_dense
        self.step_sizes = tuple(int(s) for s in step_sizes)
        self.k = sum(self.step_sizes)
        self.num_items = model.num_items
        self.max_length = model.max_length
        self.max_exclusions = max_exclusions
        self.index = index if index is not None else BruteForceIndex(model.candidate_embeddings())
        self.item_table = _line_number_table(item_vocab)
        self.user_table = _line_number_table(user_vocab)
        self.item_tokens = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                str(item_vocab), tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE
            ),
            default_value="",
        )

    # -- input handling ---------------------------------------------------------------
    def encode_inputs(self, user_id: tf.Tensor, history: tf.Tensor):
        """(user ids [B] int32, item ids [B, None] int32 ragged, padding removed) from the string inputs."""
        users = self.user_table.lookup(user_id)
        users = tf.where(users < 0, tf.zeros_like(users), users + 1)
        present = tf.strings.length(history) > 0  # (B, T); "" is padding wherever it stands
        ids = self.item_table.lookup(history)
        ids = tf.where(ids < 0, tf.cast(self.num_items + 1, tf.int64), ids + 1)
        items = tf.ragged.boolean_mask(ids, present)  # (B, None), padding removed, order kept
        return tf.cast(users, tf.int32), tf.cast(items, tf.int32)

    def history_exclusions(self, items: tf.RaggedTensor) -> tf.Tensor:
        """[B, E] int32: the most recent `max_exclusions` history items, 0-padded (never recommended)."""
        return items[:, -self.max_exclusions :].to_tensor(default_value=0)

    def _decode_last(self, users: tf.Tensor, tokens: tf.RaggedTensor, segments: tf.RaggedTensor) -> tf.Tensor:
        """h at the last token of each row's most recent `max_length` tokens. [B, d]."""
        tokens, segments = tokens[:, -self.max_length :], segments[:, -self.max_length :]
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

    # -- the recall -------------------------------------------------------------------
    def recall(self, user_id: tf.Tensor, history: tf.Tensor, num_vectors: int | None = None):
        """The G-step recall.

        Args:
            num_vectors: User vectors to generate (default G); more than G runs the
                decoder again after the last retrieval without retrieving (the
                `user_embeddings` signature always returns h1 and h2).

        Returns:
            (item ids [B, k] int32, scores [B, k], steps [B, k] int32, vectors [B, V, d], prompts [B, V-1]).
        """
        users, items = self.encode_inputs(user_id, history)
        excluded = self.history_exclusions(items)  # (B, E)
        tokens, segments = items, tf.zeros_like(items)
        out_ids, out_scores, out_steps, vectors, prompts = [], [], [], [], []
        total = max(num_vectors or 0, len(self.step_sizes))
        for step in range(total):
            h = self._decode_last(users, tokens, segments)
            vectors.append(h)
            if step < len(self.step_sizes):
                values, ids = self.index.query_with_exclusions(h, tf.concat([excluded] + out_ids, axis=1), self.step_sizes[step])
                out_ids.append(ids)
                out_scores.append(values)
                out_steps.append(tf.fill(tf.shape(ids), step + 1))
            if step < total - 1:
                best = out_ids[-1][:, :1]  # i_g*: appended as a prompt token (segment 1)
                prompts.append(best[:, 0])
                tokens = tf.concat([tokens, tf.RaggedTensor.from_tensor(best)], axis=1)
                segments = tf.concat([segments, tf.RaggedTensor.from_tensor(tf.ones_like(best))], axis=1)
        prompts_t = tf.stack(prompts, axis=1) if prompts else tf.zeros([tf.shape(history)[0], 0], tf.int32)
        return (tf.concat(out_ids, 1), tf.concat(out_scores, 1), tf.concat(out_steps, 1), tf.stack(vectors, 1), prompts_t)

    def _tokens(self, ids: tf.Tensor) -> tf.Tensor:
        return self.item_tokens.lookup(tf.cast(ids, tf.int64) - 1)

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_USER_ID), tf.TensorSpec([None, None], tf.string, name=INPUT_HISTORY)]
    )
    def recommend(self, user_id, history):
        ids, scores, steps, _, _ = self.recall(user_id, history)
        return {OUTPUT_ITEM_IDS: self._tokens(ids), OUTPUT_SCORES: scores, OUTPUT_RECALL_STEP: steps}

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_USER_ID), tf.TensorSpec([None, None], tf.string, name=INPUT_HISTORY)]
    )
    def user_embeddings(self, user_id, history):
        ids, _, _, vectors, _ = self.recall(user_id, history, num_vectors=2)
        return {OUTPUT_EMBEDDINGS: vectors, OUTPUT_FIRST_ITEM: self._tokens(ids[:, 0])}
