"""What every stage feeds the model, in one place: the feature keys, and the window of a sequence each stage
keeps (training, evaluation, streaming and the serving graph alike).

A model sees at most `max_length` tokens, the most recent: `recent` cuts a history held in memory (a list or an array)
and `recent_rows` a batch of them (a [B, None] ragged tensor); `training_window` keeps the most recent
`max_length + 1` items of a training sequence, so that its inputs (all but the last) and its next-item targets
(all but the first) are each `max_length` long.
"""

from __future__ import annotations

import numpy as np

# The model's input and target features (a dict batch for `model.fit`, the backbone's inputs).
USER_ID = "user_id"  # [B] int32, 0 = an unknown (cold-start) user
ITEM_IDS = "item_ids"  # [B, T] int32, oldest first, right-padded with 0
SEGMENT_IDS = "segment_ids"  # [B, T] int32: 0 a real item, 1 a generated prompt token
TARGETS = "targets"  # [B, T] int32: the next item at each position, 0 where none is trained
REAL, PROMPT = 0, 1  # the segment ids of a real item and of a generated prompt token


def recent(sequence, max_length: int):
    """The most recent `max_length` items of one sequence held in memory (a list or a numpy array; in a graph,
    `recent_rows`)."""
    return sequence[-max_length:] if len(sequence) else sequence


def recent_rows(rows, max_length: int):
    """The most recent `max_length` items of each row of a [B, None] ragged tensor."""
    return rows[:, -max_length:]


def training_window(sequence, max_length: int):
    """The most recent `max_length + 1` items of a training sequence: its inputs and shifted targets."""
    return sequence[-(max_length + 1) :]


def next_real_targets(tokens: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """For each slot of a prompt-enhanced sequence, the next *real* item after it
    (0 after the last real item): v_t and its prompts p_{t+1}^1..K all target v_{t+1}."""
    real = np.flatnonzero(segments == REAL)
    following = np.searchsorted(real, np.arange(len(tokens)), side="right")  # index into `real` of the next real slot
    out = np.zeros(len(tokens), dtype=np.int32)
    has_next = following < len(real)
    out[has_next] = tokens[real[following[has_next]]]
    return out
