"""String id ↔ integer id vocabularies.

Items: 0 is padding, known items are 1..N, N+1 is the out-of-vocabulary slot.
Users: 0 is the out-of-vocabulary (cold-start) user, known users are 1..U.
Vocabulary files hold one token per line, UTF-8, each line ended by "\n"; line i (from 0) is id i+1.
The same file is read by TensorFlow's `TextFileInitializer` inside a SavedModel, which ends a line at
"\n" and drops one "\r" before it (and nothing else: U+2028, U+0085, form feeds and NULs are kept), so
the file stores exactly the tokens that hold no "\n" and do not end in "\r" (`storable_problem`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from recgpt_tf.errors import ConfigError, check_choice
from recgpt_tf.files import atomic_siblings

_INTEGER = re.compile(r"-?[0-9]+")


def storable_problem(token: str) -> str | None:
    """Why a vocabulary file (and so a run directory and an export) cannot hold `token` exactly, or None.

    Readers refuse such an id with FILE:LINE before anything is trained."""
    if not token:
        return "is empty"
    if "\n" in token:
        return "holds a line break (\\n); a vocabulary file holds one id per line"
    if token.endswith("\r"):
        return "ends in a carriage return (\\r), which TensorFlow's vocabulary reader drops"
    return None


class Vocabulary:
    """An ordered token list with a fixed id for unknown tokens.

    Args:
        tokens: Known tokens; token i gets id i + 1.
        oov_slot: Where unknown tokens go: "end" is id len(tokens) + 1 (items,
            where 0 is padding); "zero" is id 0 (users).
    """

    OOV_SLOTS = ("end", "zero")

    def __init__(self, tokens: Sequence[str], oov_slot: str = "end") -> None:
        check_choice("oov_slot", oov_slot, self.OOV_SLOTS)
        self.tokens = list(tokens)
        self.oov_slot = oov_slot
        self._index = {token: i + 1 for i, token in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ConfigError("tokens", "must be unique")

    @classmethod
    def build(cls, tokens: Iterable[str], oov_slot: str = "end") -> "Vocabulary":
        """Builds a vocabulary over distinct tokens: numeric order when all are ASCII
        integers such as "12" or "-3" (so the paper's 1-based ids keep their numbers; "01" and "1"
        stay two tokens, in first-seen order), else first-seen order."""
        distinct = list(dict.fromkeys(tokens))
        if distinct and all(_INTEGER.fullmatch(t) for t in distinct):
            distinct.sort(key=int)
        return cls(distinct, oov_slot=oov_slot)

    @property
    def size(self) -> int:
        """Number of known tokens (N or U)."""
        return len(self.tokens)

    @property
    def oov(self) -> int:
        return self.size + 1 if self.oov_slot == "end" else 0

    def lookup(self, token: str) -> int:
        return self._index.get(token, self.oov)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        return np.fromiter((self._index.get(t, self.oov) for t in tokens), dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Maps ids back to tokens; padding is "" and OOV is "[OOV]"."""
        out = []
        for i in ids:
            i = int(i)
            out.append(self.tokens[i - 1] if 1 <= i <= self.size else ("" if i == 0 and self.oov_slot == "end" else "[OOV]"))
        return out

    def save(self, path: Path | str) -> None:
        """Writes the vocabulary file (see the module docstring); raises `ConfigError` for a token it
        cannot hold exactly."""
        bad = [(t, storable_problem(t)) for t in self.tokens if storable_problem(t)]
        if bad:
            raise ConfigError("tokens", f"cannot be stored: {bad[0][0]!r} {bad[0][1]}")
        with atomic_siblings(path) as (tmp,):  # a reader (another worker opening the run) never sees half of it
            tmp.write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8", newline="")

    @classmethod
    def load(cls, path: Path | str, oov_slot: str = "end") -> "Vocabulary":
        """Reads a file written by `save`: lines end at "\n" only (not at the other characters
        `str.splitlines` breaks on, which ids may hold)."""
        return cls.from_bytes(Path(path).read_bytes(), oov_slot)

    @classmethod
    def from_bytes(cls, data: bytes, oov_slot: str = "end") -> "Vocabulary":
        """A vocabulary file's contents, read as `load` reads the file."""
        text = data.decode("utf-8")
        return cls(text.split("\n")[:-1] if text else [], oov_slot=oov_slot)

    def __len__(self) -> int:
        return self.size


class VocabularyTable(tf.Module):
    """A vocabulary file as a TensorFlow lookup, token → id numbered as `Vocabulary` numbers it (line i is
    id i + 1) and unknown tokens → `oov`: the one id encoder of the graphs (streamed training input, the
    serving signatures, where the file becomes a SavedModel asset).

    Args:
        path: The vocabulary file (`Vocabulary.save`).
        oov: The id of an unknown token (items: N + 1; users: 0).
    """

    def __init__(self, path: Path | str, oov: int) -> None:
        super().__init__(name="vocabulary_table")
        initializer = tf.lookup.TextFileInitializer(
            str(path), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER
        )
        self.table = tf.lookup.StaticHashTable(initializer, default_value=-1)
        self.oov = oov

    def lookup(self, tokens: tf.Tensor) -> tf.Tensor:
        """int64 ids of `tokens` (any shape)."""
        lines = self.table.lookup(tokens)
        return tf.where(lines >= 0, lines + 1, tf.constant(self.oov, tf.int64))
