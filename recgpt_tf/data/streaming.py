"""Pre-training data streamed from sharded TFRecord files, for data that does not fit in memory.

`StreamedDataset.scan` reads the files once and keeps only what is the size of the catalogue and
user base, never of the interactions: the vocabularies, the training item counts (log-Q
correction of the sampled softmax), a histogram of training lengths (token_budget batch sizes)
and a uniform sample of users (reservoir sampling) whose sequences validate the epochs.
`training_batches` then streams the files every epoch: each input pipeline reads its own files,
and the records are parsed, encoded (lookup tables over the run's vocabulary files) and cut to
the training split in the graph, so memory is the vocabularies plus a shuffle buffer.

Files are the ones `recgpt convert --shards N` and TFX ExampleGen write (`data.examples`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import numpy as np
import tensorflow as tf

from recgpt_tf.config import TrainConfig
from recgpt_tf.data.dataset import Dataset, EvalSplit, train_length
from recgpt_tf.data.examples import EXAMPLE_SPEC, ITEMS_FEATURE, USER_FEATURE, compression_type, match_files
from recgpt_tf.data.features import ITEM_IDS, SEGMENT_IDS, TARGETS, USER_ID, training_window
from recgpt_tf.data.pipeline import batch_examples
from recgpt_tf.data.vocab import Vocabulary, VocabularyTable
from recgpt_tf.errors import ConfigError, DataFormatError

# Users whose sequences are kept in memory to validate epochs (all of them below this count).
DEFAULT_VALIDATION_USERS = 50_000
# Records shuffled together when streaming (on top of shuffling the order of the files).
SHUFFLE_BUFFER = 20_000
_SCAN_BATCH = 4096


@dataclasses.dataclass
class StreamedDataset:
    """TFRecord training files and what one pass over them measured (see the module docstring).

    Attributes:
        name: A label for reports.
        files: The TFRecord files, sorted.
        item_vocab, user_vocab: Built in the pass (same ids as `Dataset` gives the same records).
        sample: A uniform sample of at most `validation_users` users, in memory, encoded: it answers
            `split` (validation of the epochs) and the run's sample requests.
        train_item_counts: [N + 2] training interactions per item id.
        train_length_counts: [L + 1] users whose training part has length l, for each l.
        num_interactions: Interactions in the files.
        longest: The longest sequence.
    """

    name: str
    files: list[str]
    item_vocab: Vocabulary
    user_vocab: Vocabulary
    sample: Dataset
    train_item_counts: np.ndarray
    train_length_counts: np.ndarray
    num_interactions: int
    longest: int

    @classmethod
    def scan(
        cls, patterns: Iterable[str], name: str = "data", validation_users: int = DEFAULT_VALIDATION_USERS, seed: int = 0
    ) -> "StreamedDataset":
        """One streaming pass over the TFRecord files that `patterns` name.

        Raises:
            DataFormatError: no file matches; a record is not a RecGPT example, has no items, or
                repeats a user (naming the file).
        """
        if validation_users < 1:
            raise ConfigError("validation_users", f"must be >= 1; got {validation_users}")
        files = match_files(patterns)
        if len({compression_type(f) for f in files}) > 1:
            raise DataFormatError(", ".join(files[:3]), None, "mixes GZIP (.gz) and uncompressed TFRecord files; give files of one kind")
        rng = np.random.default_rng(seed)
        items: dict[str, int] = {}  # item -> training interactions, in first-seen order
        users: dict[str, None] = {}
        length_counts: dict[int, int] = {}
        interactions = longest = 0
        reservoir: list[tuple[int, str, list[str]]] = []  # (position in the files, user, items)
        for file in files:
            for user, sequence in _records(file):
                if user in users:
                    raise DataFormatError(file, None, f"user {user!r} appears in two records")
                seen = len(users)
                users[user] = None
                train = train_length(len(sequence))
                for position, item in enumerate(sequence):
                    items[item] = items.get(item, 0) + (position < train)
                length_counts[train] = length_counts.get(train, 0) + 1
                interactions, longest = interactions + len(sequence), max(longest, len(sequence))
                # Reservoir sampling (algorithm R): every user ends in the sample with equal probability.
                if seen < validation_users:
                    reservoir.append((seen, user, sequence))
                else:
                    slot = int(rng.integers(seen + 1))
                    if slot < validation_users:
                        reservoir[slot] = (seen, user, sequence)
        if not users:
            raise DataFormatError(", ".join(files[:3]), None, "the TFRecord files hold no records")
        item_vocab = Vocabulary.build(items, oov_slot="end")
        user_vocab = Vocabulary.build(users, oov_slot="zero")
        counts = np.zeros(item_vocab.size + 2, np.int64)
        counts[item_vocab.encode(items)] = list(items.values())
        reservoir.sort()
        sample = Dataset(
            name,
            item_vocab,
            user_vocab,
            user_vocab.encode(user for _, user, _ in reservoir),
            [item_vocab.encode(sequence) for _, _, sequence in reservoir],
        )
        histogram = np.zeros(max(length_counts) + 1, np.int64)
        histogram[list(length_counts)] = list(length_counts.values())
        return cls(name, files, item_vocab, user_vocab, sample, counts, histogram, interactions, longest)

    @property
    def num_items(self) -> int:
        return self.item_vocab.size

    @property
    def num_users(self) -> int:
        return self.user_vocab.size

    def split(self, name: str) -> EvalSplit:
        """The validation or test question for the sampled users."""
        return self.sample.split(name)

    def item_counts(self) -> np.ndarray:
        """[N + 2] training interactions per item id."""
        return self.train_item_counts

    def statistics(self) -> dict[str, float]:
        return {
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "avg_length": self.num_interactions / self.num_users,
            "max_length": self.longest,
            "density": self.num_interactions / float(self.num_users * self.num_items),
        }

    def training_batches(
        self,
        max_length: int,
        train_config: TrainConfig,
        shard: int = 0,
        num_shards: int = 1,
        batch_size: int | None = None,
        vocabulary_files: tuple[Path, Path] | None = None,
    ) -> tf.data.Dataset:
        """One epoch of next-item batches streamed from this pipeline's files (every num_shards-th file
        from `shard`), encoded in the graph with `vocabulary_files` (items, users: the run's, written from
        this dataset's vocabularies), batched as `train_config.batching` says at `batch_size`
        (default the configured one). Same examples as `Dataset` builds from the same records."""
        train_config.check_streamed()
        if vocabulary_files is None:
            raise ConfigError("vocabulary_files", "streamed input encodes items and users with the run's vocabulary files; give them")
        files = self.files[shard::num_shards]
        if not files:
            raise ConfigError(
                "files",
                f"{len(self.files)} TFRecord files cannot give each of {num_shards} input pipelines its own: write at least {num_shards} shards",
            )
        item_table, user_table = (
            VocabularyTable(path, oov) for path, oov in zip(vocabulary_files, (self.item_vocab.oov, self.user_vocab.oov))
        )

        def encode(record: tf.Tensor) -> dict[str, tf.Tensor]:
            parsed = tf.io.parse_single_example(record, EXAMPLE_SPEC)
            sequence = parsed[ITEMS_FEATURE].values
            length = tf.size(sequence)
            train = sequence[: train_length(length)]
            ids = tf.cast(item_table.lookup(training_window(train, max_length)), tf.int32)
            return {
                USER_ID: tf.cast(user_table.lookup(parsed[USER_FEATURE]), tf.int32),
                ITEM_IDS: ids[:-1],
                SEGMENT_IDS: tf.zeros_like(ids[:-1]),
                TARGETS: ids[1:],
            }

        ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=train_config.seed, reshuffle_each_iteration=True)
        ds = ds.interleave(
            lambda file: tf.data.TFRecordDataset(file, compression_type=compression_type(self.files[0])),
            cycle_length=min(4, len(files)),
        )
        ds = ds.shuffle(SHUFFLE_BUFFER, seed=train_config.seed, reshuffle_each_iteration=True)
        ds = ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.filter(lambda example: tf.size(example[ITEM_IDS]) > 0)
        return batch_examples(
            ds,
            train_config.batching,
            batch_size or train_config.batch_size,
            max_length,
            self.example_length_counts(max_length),
            exact_counts=False,  # the histogram counts every shard; this pipeline reads some
        )

    def example_length_counts(self, max_length: int) -> np.ndarray:
        """[max_length + 1] training examples of each input length (a training part of l >= 2 items
        gives one example of min(l, max_length + 1) - 1 inputs)."""
        lengths = np.arange(len(self.train_length_counts))
        trained = lengths >= 2
        return np.bincount(
            np.minimum(lengths[trained], max_length + 1) - 1, weights=self.train_length_counts[trained], minlength=max_length + 1
        )


def _records(file: str) -> Iterable[tuple[str, list[str]]]:
    """(user, items) of every record in `file`, parsed in batches."""
    records = tf.data.TFRecordDataset(file, compression_type=compression_type(file)).batch(_SCAN_BATCH)
    try:
        for batch in records.map(lambda serialized: tf.io.parse_example(serialized, EXAMPLE_SPEC)):
            users = batch[USER_FEATURE].numpy()
            items = tf.RaggedTensor.from_sparse(batch[ITEMS_FEATURE]).to_list()
            for user, sequence in zip(users, items):
                if not sequence:
                    raise DataFormatError(file, None, f"the record of user {user.decode()!r} has no items")
                yield user.decode(), [item.decode() for item in sequence]
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
        raise DataFormatError(file, None, f"holds a record that is not a RecGPT example ({error.message.splitlines()[0]})") from None
