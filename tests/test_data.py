import numpy as np
import pytest

from recgpt_tf.data import Dataset, Vocabulary, pad_batch, synthetic_sequences, training_dataset
from recgpt_tf.data.pipeline import token_budget_batch_sizes


def test_vocabulary_ids_oov_and_round_trip(tmp_path):
    items = Vocabulary.build(["10", "2", "10", "7"])
    assert items.tokens == ["2", "7", "10"]  # integer ids keep numeric order
    assert items.encode(["2", "10", "unknown"]).tolist() == [1, 3, 4]  # OOV = N + 1
    assert items.decode([0, 1, 4]) == ["", "2", "[OOV]"]
    users = Vocabulary.build(["bob", "amy"], oov_slot="zero")
    assert users.encode(["amy", "zed"]).tolist() == [2, 0]  # first-seen order, OOV = 0
    items.save(tmp_path / "items.txt")
    assert Vocabulary.load(tmp_path / "items.txt").encode(["7"]).tolist() == [2]


def test_leave_one_out_split():
    ds = Dataset.from_interactions({"u": ["1", "2", "3", "4", "5"], "v": ["3", "1", "6"], "w": ["2", "9"]})
    train = ds.train_sequences()
    assert [t.tolist() for t in train] == [[1, 2, 3], [3], [2, 7]]  # w (< 3 items) trains on all; "9" is id 7
    valid, test = ds.split("valid"), ds.split("test")
    assert valid.targets.tolist() == [4, 1] and [h.tolist() for h in valid.histories] == [[1, 2, 3], [3]]
    assert test.targets.tolist() == [5, 6] and [h.tolist() for h in test.histories] == [[1, 2, 3, 4], [3, 1]]
    with pytest.raises(ValueError, match="split must be one of"):
        ds.split("train")


def test_synthetic_is_deterministic_and_sequential():
    a = synthetic_sequences(num_users=50, num_items=40, num_topics=4, seed=1)
    assert a == synthetic_sequences(num_users=50, num_items=40, num_topics=4, seed=1)
    assert a != synthetic_sequences(num_users=50, num_items=40, num_topics=4, seed=2)
    assert all(len(s) >= 5 for s in a.values())
    # Item-to-item transitions: some successor pairs repeat far above chance.
    pairs = {}
    for seq in synthetic_sequences(num_users=400, num_items=40, num_topics=4, seed=1).values():
        for x, y in zip(seq, seq[1:]):
            pairs[(x, y)] = pairs.get((x, y), 0) + 1
    top_share = max(pairs.values()) / sum(pairs.values())
    assert top_share > 5.0 / (40 * 40)


def test_training_batches_shift_truncate_and_bucket():
    users = np.array([1, 2, 3], np.int32)
    seqs = [np.arange(1, 61, dtype=np.int32), np.array([5, 6, 7], np.int32), np.array([9], np.int32)]
    ds = training_dataset(users, seqs, max_length=50, batch_size=8, shuffle=False)
    batches = list(ds.as_numpy_iterator())
    by_user = {}
    for b in batches:
        for i, u in enumerate(b["user_id"]):
            by_user[int(u)] = (b["item_ids"][i], b["targets"][i], b["item_ids"].shape[1])
    assert set(by_user) == {1, 2}  # a single-item sequence has nothing to predict
    inputs, targets, width = by_user[1]
    assert width == 50 and inputs.tolist() == list(range(10, 60)) and targets.tolist() == list(range(11, 61))
    inputs, targets, width = by_user[2]
    assert width == 2, "a short sequence's batch is padded only to its own bucket"
    assert inputs.tolist() == [5, 6] and targets.tolist() == [6, 7]


def test_shuffled_batches_mix_lengths_and_cover_every_sequence_once():
    rng = np.random.default_rng(0)
    users = np.arange(1, 41, dtype=np.int32)
    seqs = [np.arange(1, n + 1, dtype=np.int32) for n in rng.integers(2, 30, size=40)]
    batches = list(training_dataset(users, seqs, max_length=50, batch_size=16, seed=3, batching="shuffled").as_numpy_iterator())
    seen = np.concatenate([b["user_id"] for b in batches])
    assert sorted(seen.tolist()) == users.tolist()
    for b in batches:
        lengths = (b["targets"] > 0).sum(axis=1)
        assert b["item_ids"].shape[1] == lengths.max(), "each batch is padded to its own longest"
    first = (batches[0]["targets"] > 0).sum(axis=1)
    assert first.max() - first.min() > 8, "an unbucketed batch mixes short and long sequences"


def test_token_budget_batches_hold_equal_targets_and_cover_every_sequence_once():
    # 60 sequences of 3 training positions, 20 of 30: mean 9.75; with 8 per average batch the
    # budget is 78 targets, so the short bucket batches 26 sequences, the long one 3 (2.6 rounds up), empty ones 8.
    users = np.arange(1, 81, dtype=np.int32)
    seqs = [np.arange(1, 5, dtype=np.int32)] * 60 + [np.arange(1, 32, dtype=np.int32)] * 20
    assert token_budget_batch_sizes(np.array([3] * 60 + [30] * 20), [4, 8, 40], 8) == [26, 8, 3, 8]
    batches = list(training_dataset(users, seqs, batch_size=8, seed=1, batching="token_budget").as_numpy_iterator())
    seen = np.concatenate([b["user_id"] for b in batches])
    assert sorted(seen.tolist()) == users.tolist()
    full = [b for b in batches if len(b["user_id"]) in (26, 3)]
    targets = sorted(int((b["targets"] > 0).sum()) for b in full)
    assert targets == [78, 78] + [90] * 6, "full batches hold ~78 targets whatever their length"
    assert all(b["item_ids"].shape[1] in (3, 30) for b in batches), "a batch is padded only to its bucket"


def test_segments_and_the_prompt_stages_targets_flow_through():
    from recgpt_tf.config import PromptConfig

    users = np.array([1], np.int32)
    seqs = [np.array([3, 8, 4, 9, 5], np.int32)]
    segments = [np.array([0, 1, 0, 1, 0], np.int32)]
    targets = PromptConfig().loss_targets(seqs, segments)
    batch = next(training_dataset(users, seqs, segments=segments, shuffle=False, **targets).as_numpy_iterator())
    assert batch["segment_ids"].tolist() == [[0, 1, 0, 1]]
    assert batch["targets"].tolist() == [[4, 4, 5, 5]]  # prompts are never targets: each position predicts the next real item


def test_explicit_targets_belong_to_input_positions():
    users = np.array([1], np.int32)
    seqs = [np.array([3, 8, 4, 9, 5], np.int32)]
    # Every position targets the next real item (3 and its prompt 8 both target 4).
    explicit = [np.array([4, 4, 5, 5, 0], np.int32)]
    batch = next(training_dataset(users, seqs, targets=explicit, shuffle=False).as_numpy_iterator())
    assert batch["item_ids"].tolist() == [[3, 8, 4, 9]]
    assert batch["targets"].tolist() == [[4, 4, 5, 5]]
    # The window keeps the most recent tokens; targets stay aligned with their inputs.
    batch = next(training_dataset(users, seqs, max_length=2, targets=explicit, shuffle=False).as_numpy_iterator())
    assert batch["item_ids"].tolist() == [[4, 9]] and batch["targets"].tolist() == [[5, 5]]


def test_pad_batch_keeps_most_recent():
    ids, lengths = pad_batch([np.arange(1, 8), np.array([], np.int32)], max_length=5)
    assert ids.tolist() == [[3, 4, 5, 6, 7], [0, 0, 0, 0, 0]] and lengths.tolist() == [5, 0]


@pytest.mark.parametrize("batching", ["shuffled", "bucketed", "token_budget"])
def test_an_epoch_declares_its_batches_so_the_progress_bar_knows_them(tiny_dataset, batching):
    from recgpt_tf.data.pipeline import training_dataset

    for batch_size in (64, 7):
        data = training_dataset(tiny_dataset.users, tiny_dataset.train_sequences(), 20, batch_size, batching=batching)
        declared = int(data.cardinality())
        assert declared > 0 and [sum(1 for _ in data) for _ in range(2)] == [declared, declared]


def test_one_window_rule_for_every_stage():
    """The training window's inputs are the history a prediction of its last target sees: the most recent
    max_length items, for a list, an array, a tensor and each row of a ragged batch."""
    import tensorflow as tf

    from recgpt_tf.data.features import recent, recent_rows, training_window

    sequence = list(range(1, 13))
    window = training_window(sequence, 5)
    assert window[:-1] == recent(sequence[:-1], 5) == [7, 8, 9, 10, 11] and window[1:] == recent(sequence, 5)
    assert recent(np.array(sequence), 5).tolist() == tf.constant(sequence)[-5:].numpy().tolist() == recent(sequence, 5)
    rows = tf.ragged.constant([sequence, [3], []])
    assert recent_rows(rows, 5).to_list() == [recent(sequence, 5), [3], []]
