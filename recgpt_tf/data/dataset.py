"""Encoded sequences and the leave-one-out split (paper section 5).

For a user with items v_1..v_n: training sees v_1..v_{n-2}; validation asks for
v_{n-1} given v_1..v_{n-2}; test asks for v_n given v_1..v_{n-1}. In both
evaluations the ranking excludes every item of the given history.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import tensorflow as tf

from recgpt_tf.data.pipeline import training_dataset
from recgpt_tf.data.readers import load_interactions
from recgpt_tf.data.vocab import Vocabulary
from recgpt_tf.errors import check_choice

if TYPE_CHECKING:
    from recgpt_tf.config import TrainConfig

SPLITS = ("valid", "test")
HELD_OUT = 2  # the validation and test items at the end of each evaluated sequence


def train_length(length: int | tf.Tensor) -> int | tf.Tensor:
    """Training items of a sequence of `length`: all but the held-out two, or all of a sequence too short
    to evaluate (fewer than three items). `length` is an int, or a scalar int tensor (the streamed split
    applies the same rule inside its tf.data graph)."""
    if not tf.is_tensor(length):
        return length - HELD_OUT if length > HELD_OUT else length
    return tf.where(length > HELD_OUT, length - HELD_OUT, length)


@dataclasses.dataclass
class EvalSplit:
    """What one evaluation asks: for each user, a history and the held-out item.

    Attributes:
        users: [num_users] int32 user ids.
        histories: One int32 array of item ids per user, oldest first (all of it,
            for history exclusion; the model sees the most recent tokens).
        targets: [num_users] int32 held-out item ids.
    """

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclasses.dataclass
class Dataset:
    """A catalogue of users and items with their encoded sequences.

    Attributes:
        name: A label for reports (usually the file stem).
        item_vocab: Item vocabulary (ids 1..N, N+1 = OOV).
        user_vocab: User vocabulary (ids 1..U, 0 = OOV).
        users: [U] int32 user ids, aligned with `sequences`.
        sequences: Each user's full item-id sequence, oldest first.
    """

    name: str
    item_vocab: Vocabulary
    user_vocab: Vocabulary
    users: np.ndarray
    sequences: list[np.ndarray]

    @classmethod
    def from_interactions(
        cls,
        interactions: dict[str, list[str]],
        name: str = "data",
        item_vocab: Vocabulary | None = None,
        user_vocab: Vocabulary | None = None,
    ) -> "Dataset":
        """Encodes `{user: [item, ...]}`; vocabularies are built from it unless given
        (a trained run's vocabularies, so ids match its embeddings)."""
        item_vocab = item_vocab or Vocabulary.build((i for items in interactions.values() for i in items), oov_slot="end")
        user_vocab = user_vocab or Vocabulary.build(interactions.keys(), oov_slot="zero")
        users = user_vocab.encode(interactions.keys())
        sequences = [item_vocab.encode(items) for items in interactions.values()]
        return cls(name, item_vocab, user_vocab, users, sequences)

    @classmethod
    def from_file(
        cls,
        path: Path | str,
        data_format: str | None = None,
        item_vocab: Vocabulary | None = None,
        user_vocab: Vocabulary | None = None,
        columns: Mapping[str, str] | None = None,
    ) -> "Dataset":
        """`load_interactions(path, data_format, columns)` encoded (with the vocabularies given, else new ones)."""
        return cls.from_interactions(load_interactions(path, data_format, columns), Path(path).stem, item_vocab, user_vocab)

    @property
    def num_items(self) -> int:
        return self.item_vocab.size

    @property
    def num_users(self) -> int:
        return self.user_vocab.size

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def train_sequences(self) -> list[np.ndarray]:
        """Each user's training items: all but the last two (users with fewer than
        three items keep everything for training and are not evaluated)."""
        return [s[: train_length(len(s))] for s in self.sequences]

    def split(self, name: str) -> EvalSplit:
        """The validation or test question for every user with at least three items."""
        check_choice("split", name, SPLITS)
        cut = 2 if name == "valid" else 1
        keep = [i for i, s in enumerate(self.sequences) if len(s) >= 3]
        return EvalSplit(
            users=self.users[keep],
            histories=[self.sequences[i][:-cut] for i in keep],
            targets=np.array([self.sequences[i][-cut] for i in keep], dtype=np.int32),
        )

    def training_batches(
        self,
        max_length: int,
        train_config: "TrainConfig",
        shard: int = 0,
        num_shards: int = 1,
        batch_size: int | None = None,
        vocabulary_files: tuple[Path, Path] | None = None,
    ) -> "tf.data.Dataset":
        """One epoch of next-item batches of the training sequences (pre-training, fine-tuning): the examples
        `train_config.training_examples` makes of them, at `batch_size` (default the configured one); shard
        `shard` of `num_shards` (every num_shards-th user) for one worker of a distributed run.
        `vocabulary_files` is not needed: the sequences are encoded already (see `StreamedDataset`)."""
        users, sequences = self.users[shard::num_shards], self.train_sequences()[shard::num_shards]
        users, sequences, targets, batching = train_config.training_examples(users, sequences, max_length)
        return training_dataset(
            users,
            sequences,
            max_length,
            batch_size or train_config.batch_size,
            seed=train_config.seed,
            targets=targets,
            batching=batching,
        )

    def item_counts(self, sequences: list[np.ndarray] | None = None) -> np.ndarray:
        """[N + 2] interaction counts per item id over `sequences` (default: training)."""
        sequences = self.train_sequences() if sequences is None else sequences
        flat = np.concatenate(sequences) if sequences else np.zeros(0, np.int32)
        return np.bincount(flat, minlength=self.num_items + 2).astype(np.int64)

    def statistics(self) -> dict[str, float]:
        lengths = np.array([len(s) for s in self.sequences])
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "avg_length": float(lengths.mean()),
            "max_length": int(lengths.max()),
            "density": self.num_interactions / float(self.num_users * self.num_items),
        }
