"""Personalised prompt generation (paper Algorithm 1), vectorised over users.

For a sequence v_1..v_n and prompt window K, the prompt-enhanced sequence is

    s* = v_1, p_2^1..p_2^K, v_2, p_3^1..p_3^K, v_3, ..., v_n

where each prompt p is the frozen model's greedy guess (argmax over all items)
given everything before it, real items carry segment 0 and prompts segment 1.
Real item v_t sits at slot (t - 1)(K + 1), so every user's layout is known up
front: generation fills the prompt slots left to right, all users of a batch in
lockstep, one decoder call per prompt slot on the last `max_length` tokens.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from recgpt_tf.data.features import ITEM_IDS, PROMPT, REAL, SEGMENT_IDS, USER_ID
from recgpt_tf.errors import ConfigError
from recgpt_tf.files import atomic_siblings
from recgpt_tf.inference.encode import length_sorted_batches


def prompt_layout(length: int, prompt_window: int) -> tuple[np.ndarray, np.ndarray]:
    """(slot of each real item, segment id of each slot) for a sequence of `length` items."""
    real_slots = np.arange(length) * (prompt_window + 1)
    total = (length - 1) * (prompt_window + 1) + 1 if length else 0
    segments = np.full(total, PROMPT, dtype=np.int32)
    segments[real_slots] = REAL
    return real_slots, segments


class PromptGenerator:
    """Generates prompt-enhanced sequences with a frozen model.

    Args:
        model: A `RecGPT` (its current output table scores the guesses).
        prompt_window: K, prompts before each real item (0..6 in the paper).
        batch_size: Users generated together.
    """

    def __init__(self, model, prompt_window: int, batch_size: int = 512) -> None:
        if not 0 <= prompt_window <= 16:
            raise ConfigError("prompt_window", f"must be in 0..16; got {prompt_window}")
        self.model = model
        self.prompt_window = prompt_window
        self.batch_size = batch_size
        window = model.max_length

        @tf.function(reduce_retracing=True)
        def _next_prompt(user_id, tokens, segments):
            # tokens, segments: (B, W) — the last W <= max_length slots before the one to fill.
            hidden = model.backbone({USER_ID: user_id, ITEM_IDS: tokens, SEGMENT_IDS: segments}, training=False)
            scores = tf.matmul(hidden[:, -1], model.candidate_embeddings(), transpose_b=True)  # (B, N)
            return tf.argmax(scores, axis=1, output_type=tf.int32) + 1

        self._next_prompt = _next_prompt
        self._window = window

    def generate_batch(self, users: np.ndarray, sequences: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Prompt-enhanced (tokens, segments) for each sequence, untruncated."""
        k = self.prompt_window
        lengths = np.array([len(s) for s in sequences])
        width = int(((lengths.max(initial=1) - 1) * (k + 1)) + 1)
        tokens = np.zeros((len(sequences), width), dtype=np.int32)
        segments = np.full((len(sequences), width), PROMPT, dtype=np.int32)
        for i, seq in enumerate(sequences):
            real_slots, _ = prompt_layout(len(seq), k)
            tokens[i, real_slots] = seq
            segments[i, real_slots] = REAL
        user_ids = tf.constant(np.asarray(users, dtype=np.int32))
        for slot in range(1, width):
            if k == 0 or slot % (k + 1) == 0:
                continue  # a real item's slot: nothing to generate
            start = max(0, slot - self._window)
            guess = self._next_prompt(user_ids, tf.constant(tokens[:, start:slot]), tf.constant(segments[:, start:slot]))
            tokens[:, slot] = guess.numpy()
        out_tokens, out_segments = [], []
        for i, n in enumerate(lengths):
            total = (n - 1) * (k + 1) + 1 if n else 0
            out_tokens.append(tokens[i, :total].copy())
            out_segments.append(segments[i, :total].copy())
        return out_tokens, out_segments

    def generate(
        self, users: np.ndarray, sequences: Sequence[np.ndarray], progress: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Prompt-enhanced (tokens, segments) for every sequence, in input order."""
        import tf_keras as keras

        tokens: list[np.ndarray] = [None] * len(sequences)  # type: ignore[list-item]
        segments: list[np.ndarray] = [None] * len(sequences)  # type: ignore[list-item]
        batches = list(length_sorted_batches(sequences, self.batch_size))
        bar = keras.utils.Progbar(len(sequences), unit_name="sequence") if progress else None
        for index in batches:
            t, s = self.generate_batch(users[index], [sequences[i] for i in index])
            for j, i in enumerate(index):
                tokens[i], segments[i] = t[j], s[j]
            if bar is not None:
                bar.add(len(index))
        return tokens, segments


def save_prompted(path, tokens: Sequence[np.ndarray], segments: Sequence[np.ndarray], prompt_window: int) -> None:
    """Caches generated sequences (npz: flat tokens/segments and row lengths), through `files.atomic_siblings`,
    so an interrupted write never leaves a truncated cache."""
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    with atomic_siblings(path) as (temporary,), temporary.open("wb") as handle:
        np.savez_compressed(
            handle,
            tokens=np.concatenate(tokens) if len(tokens) else np.zeros(0, np.int32),
            segments=np.concatenate(segments) if len(segments) else np.zeros(0, np.int32),
            lengths=lengths,
            prompt_window=np.int64(prompt_window),
        )


def load_prompted(path) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    with np.load(path) as data:
        bounds = np.cumsum(data["lengths"])[:-1]
        return list(np.split(data["tokens"], bounds)), list(np.split(data["segments"], bounds)), int(data["prompt_window"])
