"""tf.data pipelines: shifted next-item targets, most recent tokens kept, three batchings.

Sequences average ~9 items against a window of 50, so a uniformly shuffled batch,
padded to its longest sequence, is mostly padding. Length buckets pad only to a
bucket's longest; `token_budget` buckets also size each batch so that it holds
about as many targets as a shuffled batch, keeping every target's weight equal.
The loss is computed only at real (masked-in) positions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from recgpt_tf.config import BATCHINGS, ModelConfig, TrainConfig
from recgpt_tf.contract import right_pad
from recgpt_tf.data.features import ITEM_IDS, SEGMENT_IDS, TARGETS, USER_ID, recent, training_window
from recgpt_tf.errors import DataFormatError, check_choice

_BUCKET_BOUNDARIES = (4, 8, 12, 16, 24, 32, 40)


def next_item_examples(
    users: np.ndarray, sequences: Sequence[np.ndarray], max_length: int
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Builds (user, inputs, targets) with inputs = s[:-1], targets = s[1:] over the
    most recent `max_length + 1` items; sequences with fewer than two items are dropped."""
    keep_users, inputs, targets = [], [], []
    for user, seq in zip(users, sequences):
        if len(seq) < 2:
            continue
        window = training_window(seq, max_length)
        keep_users.append(user)
        inputs.append(window[:-1])
        targets.append(window[1:])
    return np.asarray(keep_users, dtype=np.int32), inputs, targets


def training_dataset(
    users: np.ndarray,
    sequences: Sequence[np.ndarray],
    max_length: int = ModelConfig.max_length,
    batch_size: int = TrainConfig.batch_size,
    shuffle: bool = True,
    seed: int = 0,
    segments: Sequence[np.ndarray] | None = None,
    targets: Sequence[np.ndarray] | None = None,
    batching: str = TrainConfig.batching,
) -> tf.data.Dataset:
    """A dataset of next-item batches for `model.fit`.

    Args:
        users: [num_sequences] int32 user ids.
        sequences: Item-id sequences, oldest first.
        max_length: Tokens kept per sequence (the most recent).
        batch_size: Sequences per batch.
        shuffle: Reshuffle every epoch (deterministic given `seed`).
        seed: Shuffle seed.
        segments: Optional per-token segment ids aligned with `sequences`
            (prompt-enhanced sequences: 0 real item, 1 prompt).
        targets: Optional per-token targets aligned with `sequences` (the item token
            i must predict, 0 = untrained), replacing the next token as target.
        batching: One of `config.BATCHINGS`:
            "shuffled": batches drawn uniformly, so a batch mixes lengths as the
                data does (padded to its longest: mostly padding).
            "bucketed": `batch_size` sequences of similar length per batch
                (cheapest, but a batch of short sequences holds few targets and
                still moves the model one full optimiser step).
            "token_budget": length buckets whose batch sizes scale inversely with
                the bucket's mean length, so every batch holds about
                `batch_size` x (mean length) targets, as a shuffled batch does.

    Returns:
        Batches of `{user_id: [B], item_ids: [B, T], segment_ids: [B, T],
        targets: [B, T]}`, T = longest sequence in the batch, targets 0 where
        padded or untrained.
    """
    if segments is None:
        segments = [np.zeros_like(s) for s in sequences]
    keep_users, inputs, shifted = next_item_examples(users, sequences, max_length)
    _, seg_inputs, _ = next_item_examples(users, segments, max_length)
    if targets is not None:  # explicit targets belong to the input positions, not to the next token
        _, targets, _ = next_item_examples(users, targets, max_length)
    else:
        targets = shifted
    if len(keep_users) == 0:
        raise DataFormatError("training data", None, "no sequence has two or more items to train on")

    lengths = np.fromiter((len(r) for r in inputs), dtype=np.int32, count=len(inputs))
    width = int(lengths.max())
    ds = tf.data.Dataset.from_tensor_slices(
        {
            USER_ID: keep_users,
            "length": lengths,
            ITEM_IDS: right_pad(inputs, width=width),
            SEGMENT_IDS: right_pad(seg_inputs, width=width),
            TARGETS: right_pad(targets, width=width),
        }
    )
    if shuffle:
        ds = ds.shuffle(len(keep_users), seed=seed, reshuffle_each_iteration=True)
    # Cut each example to its own length; buckets then pad only to their longest.
    ds = ds.map(
        lambda x: {
            USER_ID: x[USER_ID],
            ITEM_IDS: x[ITEM_IDS][: x["length"]],
            SEGMENT_IDS: x[SEGMENT_IDS][: x["length"]],
            TARGETS: x[TARGETS][: x["length"]],
        },
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return batch_examples(ds, batching, batch_size, max_length, np.bincount(lengths))


def batch_examples(
    ds: tf.data.Dataset, batching: str, batch_size: int, max_length: int, length_counts: np.ndarray, exact_counts: bool = True
) -> tf.data.Dataset:
    """Batches unbatched next-item examples (`{user_id: [], item_ids, segment_ids, targets: [L]}`) as
    `batching` says (see `training_dataset`); `length_counts[L]` = examples of length L in the data
    (token_budget sizes its buckets from it). When they count `ds` exactly (`exact_counts`; not for one
    shard of a streamed run, counted over all shards) the batches of an epoch are declared to Keras."""
    check_choice("batching", batching, BATCHINGS)
    padded_shapes = {USER_ID: [], ITEM_IDS: [None], SEGMENT_IDS: [None], TARGETS: [None]}
    length_counts = np.asarray(length_counts, dtype=np.int64)
    if batching == "shuffled":
        ds = ds.padded_batch(batch_size, padded_shapes=padded_shapes)
        batches = -(-int(length_counts.sum()) // batch_size)
    else:
        boundaries = [b for b in _BUCKET_BOUNDARIES if b < max_length]
        if batching == "bucketed":
            batch_sizes = [batch_size] * (len(boundaries) + 1)
        else:
            batch_sizes = _token_budget_sizes(length_counts, boundaries, batch_size)
        ds = ds.bucket_by_sequence_length(
            element_length_func=lambda x: tf.shape(x[ITEM_IDS])[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=batch_sizes,
            padded_shapes=padded_shapes,
        )
        # Every bucket ends with its remainder batch, so an epoch's batches are known before it runs.
        bucket_of = np.searchsorted(np.asarray(boundaries), np.arange(len(length_counts)), side="right")
        members = np.bincount(bucket_of, weights=length_counts, minlength=len(batch_sizes)).astype(np.int64)
        batches = int(sum(-(-int(n) // size) for n, size in zip(members, batch_sizes)))
    if exact_counts:  # the count Keras' progress bar shows (steps and an ETA from the first epoch on), checked as it runs
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds.prefetch(tf.data.AUTOTUNE)


def token_budget_batch_sizes(lengths: np.ndarray, boundaries: Sequence[int], batch_size: int) -> list[int]:
    """Sequences per batch for each length bucket, so that a batch holds about
    `batch_size` x mean(lengths) tokens whatever its bucket.

    Args:
        lengths: [num_sequences] training lengths.
        boundaries: Bucket boundaries; bucket i holds lengths in [boundaries[i-1], boundaries[i]).
        batch_size: Sequences in an average (shuffled) batch.

    Returns:
        len(boundaries) + 1 batch sizes, each >= 1 (an empty bucket gets `batch_size`).
    """
    return _token_budget_sizes(np.bincount(np.asarray(lengths, dtype=np.int64)), boundaries, batch_size)


def _token_budget_sizes(length_counts: np.ndarray, boundaries: Sequence[int], batch_size: int) -> list[int]:
    """`token_budget_batch_sizes` from a histogram of lengths (`length_counts[L]` sequences of length L)."""
    lengths = np.arange(len(length_counts), dtype=np.float64)
    budget = batch_size * float(np.average(lengths, weights=length_counts))
    bucket_of = np.searchsorted(np.asarray(boundaries), lengths, side="right")
    sizes = []
    for bucket in range(len(boundaries) + 1):
        members = length_counts * (bucket_of == bucket)
        sizes.append(max(1, round(budget / float(np.average(lengths, weights=members)))) if members.sum() else batch_size)
    return sizes


def pad_batch(rows: Sequence[np.ndarray], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads the most recent `max_length` items of each row.

    Returns:
        ids: [B, T] int32, T = min(max_length, longest row) (at least 1).
        lengths: [B] int32 kept lengths (0 for an empty history).
    """
    kept = [recent(r, max_length) for r in rows]
    lengths = np.fromiter((len(r) for r in kept), dtype=np.int32, count=len(kept))
    return right_pad(kept), lengths
