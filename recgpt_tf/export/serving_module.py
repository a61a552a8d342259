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
    INPUT_EXCLUDE,
    INPUT_HISTORY,
    INPUT_USER_ID,
    MAX_EXCLUDE,
    OUTPUT_EMBEDDINGS,
    OUTPUT_FIRST_ITEM,
    OUTPUT_ITEM_IDS,
    OUTPUT_RECALL_STEP,
    OUTPUT_SCORES,
)
from recgpt_tf.data.vocab import VocabularyTable
from recgpt_tf.inference.recall import GenerativeRecall


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
        self.generation = GenerativeRecall(model, index, max_exclusions=max_exclusions, jit_compile=jit_compile)
        self.index = self.generation.index
        self.jit_compile = jit_compile
        self.step_sizes = tuple(int(s) for s in step_sizes)
        self.k = sum(self.step_sizes)
        self.num_items = model.num_items
        self.max_length = model.max_length
        self.max_exclusions = max_exclusions
        self.item_table = VocabularyTable(item_vocab, oov=model.num_items + 1)
        self.user_table = VocabularyTable(user_vocab, oov=0)
        self.item_tokens = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                str(item_vocab), tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE
            ),
            default_value="",
        )

    # -- input handling ---------------------------------------------------------------
    def encode_inputs(self, user_id: tf.Tensor, history: tf.Tensor):
        """(user ids [B] int32, item ids [B, None] int32 ragged, padding removed) from the string inputs."""
        present = tf.strings.length(history) > 0  # (B, T); "" is padding wherever it stands
        items = tf.ragged.boolean_mask(self.item_table.lookup(history), present)  # (B, None), padding removed, order kept
        return tf.cast(self.user_table.lookup(user_id), tf.int32), tf.cast(items, tf.int32)

    # -- the recall -------------------------------------------------------------------
    def recall(self, user_id: tf.Tensor, history: tf.Tensor, num_vectors: int | None = None, exclude: tf.Tensor | None = None):
        """`GenerativeRecall` on the encoded request (see there for `num_vectors`, `exclude` and the outputs)."""
        users, items = self.encode_inputs(user_id, history)
        if exclude is not None:  # strings [B, E] → ids, "" → 0 (padding); unknown ids match no candidate
            too_many = tf.debugging.assert_less_equal(
                tf.shape(exclude)[1], MAX_EXCLUDE, message=f"input {INPUT_EXCLUDE} lists more than {MAX_EXCLUDE} items in a row (the limit)"
            )
            with tf.control_dependencies([too_many]):  # refused before anything is built from it
                exclude = tf.identity(exclude)
            exclude = tf.where(tf.strings.length(exclude) > 0, tf.cast(self.item_table.lookup(exclude), tf.int32), 0)
        return self.generation(users, items, self.step_sizes, num_vectors, exclude=exclude)

    def _tokens(self, ids: tf.Tensor) -> tf.Tensor:
        return self.item_tokens.lookup(tf.cast(ids, tf.int64) - 1)

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_USER_ID), tf.TensorSpec([None, None], tf.string, name=INPUT_HISTORY)]
    )
    def recommend(self, user_id, history):
        ids, scores, steps, _, _ = self.recall(user_id, history)
        return {OUTPUT_ITEM_IDS: self._tokens(ids), OUTPUT_SCORES: scores, OUTPUT_RECALL_STEP: steps}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=INPUT_USER_ID),
            tf.TensorSpec([None, None], tf.string, name=INPUT_HISTORY),
            tf.TensorSpec([None, None], tf.string, name=INPUT_EXCLUDE),
        ]
    )
    def recommend_excluding(self, user_id, history, exclude):
        ids, scores, steps, _, _ = self.recall(user_id, history, exclude=exclude)
        return {OUTPUT_ITEM_IDS: self._tokens(ids), OUTPUT_SCORES: scores, OUTPUT_RECALL_STEP: steps}

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_USER_ID), tf.TensorSpec([None, None], tf.string, name=INPUT_HISTORY)]
    )
    def user_embeddings(self, user_id, history):
        ids, _, _, vectors, _ = self.recall(user_id, history, num_vectors=2)
        return {OUTPUT_EMBEDDINGS: vectors, OUTPUT_FIRST_ITEM: self._tokens(ids[:, 0])}
