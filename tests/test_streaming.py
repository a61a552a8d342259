"""Streamed TFRecord input (`data.streaming`) against the in-memory `Dataset` of the same records."""

from collections import Counter

import numpy as np
import pytest

from recgpt_tf.config import TrainConfig
from recgpt_tf.data import Dataset, read_examples, synthetic_sequences, write_examples
from recgpt_tf.data.streaming import StreamedDataset
from recgpt_tf.errors import ConfigError, DataFormatError
from recgpt_tf.runs import Run


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    interactions = synthetic_sequences(num_users=300, num_items=60, num_topics=5, mean_length=8, max_length=25, seed=11)
    interactions["u-short"] = ["1", "2"]  # too short to evaluate: trains on both items
    path = tmp_path_factory.mktemp("tfrecords") / "new" / "train.tfrecord.gz"  # a folder not there yet: write_examples creates it
    write_examples(interactions, path, shards=3)
    return interactions, str(path.with_name("train-*.tfrecord.gz"))


def examples(batches) -> Counter:
    """The multiset of (user, inputs, targets) in a dataset of padded batches."""
    out = Counter()
    for batch in batches:
        for user, items, targets in zip(batch["user_id"].numpy(), batch["item_ids"].numpy(), batch["targets"].numpy()):
            length = int(np.count_nonzero(items))
            out[(int(user), tuple(items[:length]), tuple(targets[:length]))] += 1
    return out


def test_one_pass_measures_what_the_in_memory_dataset_holds(records):
    interactions, pattern = records
    streamed = StreamedDataset.scan([pattern], validation_users=10_000)
    # Same record order as read_examples (files sorted), so the same vocabularies and ids.
    in_memory = Dataset.from_interactions(read_examples([pattern]))
    assert streamed.item_vocab.tokens == in_memory.item_vocab.tokens
    assert streamed.user_vocab.tokens == in_memory.user_vocab.tokens
    np.testing.assert_array_equal(streamed.item_counts(), in_memory.item_counts())
    assert streamed.statistics() == pytest.approx(in_memory.statistics())
    valid, expected = streamed.split("valid"), in_memory.split("valid")
    np.testing.assert_array_equal(valid.users, expected.users)  # every user sampled: the full split
    np.testing.assert_array_equal(valid.targets, expected.targets)


def test_the_validation_sample_is_a_uniform_subset_of_the_users(records):
    interactions, pattern = records
    streamed = StreamedDataset.scan([pattern], validation_users=50, seed=1)
    assert len(streamed.sample.users) == 50 and len(set(streamed.sample.users)) == 50
    by_user = {streamed.user_vocab.lookup(u): streamed.item_vocab.encode(items) for u, items in interactions.items()}
    for user, sequence in zip(streamed.sample.users, streamed.sample.sequences):
        np.testing.assert_array_equal(sequence, by_user[int(user)])
    other = StreamedDataset.scan([pattern], validation_users=50, seed=2)
    assert set(other.sample.users) != set(streamed.sample.users)
    # Not the first 50 users read: reservoir sampling reaches the whole stream.
    assert max(streamed.sample.users) > 150


@pytest.mark.parametrize("batching", ["token_budget", "shuffled"])
def test_streamed_batches_hold_the_in_memory_examples(records, tmp_path, batching):
    _, pattern = records
    streamed = StreamedDataset.scan([pattern])
    run = Run.create(tmp_path / "run", streamed)
    config = TrainConfig(batching=batching, batch_size=32)
    in_memory = Dataset.from_interactions(read_examples([pattern]), item_vocab=run.item_vocab, user_vocab=run.user_vocab)
    expected = examples(in_memory.training_batches(12, config))
    assert examples(streamed.training_batches(12, config, vocabulary_files=run.vocabulary_files)) == expected
    # Three pipelines, one file each: together every example once.
    shards = [examples(streamed.training_batches(12, config, i, 3, vocabulary_files=run.vocabulary_files)) for i in range(3)]
    assert sum(shards, Counter()) == expected and all(shards)


def test_streamed_input_is_refused_where_it_cannot_work(records, tmp_path):
    _, pattern = records
    streamed = StreamedDataset.scan([pattern])
    run = Run.create(tmp_path / "run", streamed)
    with pytest.raises(ConfigError, match="at least 4 shards"):
        streamed.training_batches(12, TrainConfig(), 3, 4, vocabulary_files=run.vocabulary_files)
    with pytest.raises(ConfigError, match="stages"):
        run.train(streamed, stages="all")


def test_scan_names_the_file_of_a_bad_record(tmp_path):
    write_examples({"a": ["1", "2"], "b": ["3"]}, tmp_path / "one.tfrecord")
    write_examples({"a": ["4", "5"]}, tmp_path / "two.tfrecord")
    with pytest.raises(DataFormatError, match=r"two\.tfrecord.*user 'a' appears in two records"):
        StreamedDataset.scan([str(tmp_path / "*.tfrecord")])
    (tmp_path / "junk.tfrecord").write_bytes(b"not a record file at all")
    with pytest.raises(DataFormatError, match="junk.tfrecord"):
        StreamedDataset.scan([str(tmp_path / "junk.tfrecord")])
    with pytest.raises(DataFormatError, match="no TFRecord files match"):
        StreamedDataset.scan([str(tmp_path / "missing-*.tfrecord")])


def test_a_failed_write_leaves_no_files(tmp_path):
    with pytest.raises(AttributeError):  # an item that is not text: found mid-write, after the first user
        write_examples({"a": ["1", "2"], "b": ["3", 4]}, tmp_path / "train.tfrecord.gz", shards=2)
    assert list(tmp_path.iterdir()) == []
