"""Warm-started retraining with a growing catalogue: tomorrow's model starts from today's.

Known items and users keep their trained embedding rows, items and users that are gone are dropped (Keras'
`warmstart_embedding_matrix` maps the rows by token), and every other weight (positions, segments, the
decoder blocks, the norms) starts from the old model. New rows start where the old model already places
them rather than at the initialiser's near-zero values, which no trained row resembles: a new user at the
cold-start user's row (what the old model serves an unknown user; trained through `user_dropout`), a new
item at the mean of the trained rows of the known items next to it in the new training sequences (the
mean known row when none is). The optimizer starts afresh, and early stopping on validation decides how
long the new run trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import tf_keras as keras

from recgpt_tf.data.vocab import Vocabulary
from recgpt_tf.errors import ConfigError
from recgpt_tf.models.recgpt import RecGPT

# Rows of the embedding tables that hold no token: spelled with a line break, which no stored id holds
# (`vocab.storable_problem`), so they can never meet a real id.
_PADDING, _OOV = "\n[padding]", "\n[oov]"


@dataclasses.dataclass
class WarmStartSource:
    """Yesterday's trained model and the vocabularies its rows follow (`runs.Run.warm_start_source`)."""

    model: RecGPT
    item_vocab: Vocabulary
    user_vocab: Vocabulary
    path: str


def _item_rows(vocab: Vocabulary) -> list[str]:
    """The item table's rows as tokens: 0 padding, 1..N the items, N+1 unknown items."""
    return [_PADDING, *vocab.tokens, _OOV]


def _user_rows(vocab: Vocabulary) -> list[str]:
    """The user table's rows as tokens: 0 unknown (cold-start) users, 1..U the users."""
    return [_OOV, *vocab.tokens]


def _new_ids(old: Vocabulary, new: Vocabulary) -> np.ndarray:
    """Ids, in `new`, of the tokens `old` lacks."""
    known = set(old.tokens)
    return np.array([i + 1 for i, token in enumerate(new.tokens) if token not in known], dtype=np.int64)


def neighbour_rows(table: np.ndarray, new_ids: np.ndarray, sequences: Iterable[np.ndarray] | None) -> tuple[np.ndarray, int]:
    """Starting rows for the new items `new_ids` of an item `table` (rows 1..N the items, known rows
    trained): each the mean of the rows of the known items just before and after it in `sequences`
    (encoded item ids), or the mean known row where it has no known neighbour (or no sequences are given).

    Returns:
        ([len(new_ids), width] rows, how many new items had a known neighbour).
    """
    num_items = table.shape[0] - 2
    known = np.zeros(table.shape[0], dtype=bool)
    known[1 : num_items + 1] = True
    known[new_ids] = False
    sums, counts = np.zeros((table.shape[0], table.shape[1])), np.zeros(table.shape[0])
    for sequence in sequences or ():
        sequence = np.asarray(sequence, dtype=np.int64)
        for a, b in ((sequence[:-1], sequence[1:]), (sequence[1:], sequence[:-1])):  # each side of a pair
            pairs = known[b] & ~known[a] & (a >= 1) & (a <= num_items)
            np.add.at(sums, a[pairs], table[b[pairs]])
            np.add.at(counts, a[pairs], 1.0)
    rows = np.tile(table[known].mean(axis=0), (len(new_ids), 1))
    seen = counts[new_ids] > 0
    rows[seen] = sums[new_ids[seen]] / counts[new_ids[seen], None]
    return rows.astype(table.dtype), int(seen.sum())


def warm_start(
    model: RecGPT,
    old: RecGPT,
    old_items: Vocabulary,
    new_items: Vocabulary,
    old_users: Vocabulary,
    new_users: Vocabulary,
    train_sequences: Iterable[np.ndarray] | None = None,
) -> dict:
    """Copies `old`'s weights into `model` (built, same architecture, catalogue and users of its own).

    Args:
        train_sequences: The new data's training sequences (item ids of `new_items`), which place each new
            item's row beside its neighbours' (`neighbour_rows`); without them new items start at the
            mean known row.

    Returns:
        {"items_kept", "items_new", "items_new_with_neighbours", "items_dropped", "users_kept", "users_new",
        "users_dropped"}.

    Raises:
        ConfigError: the architectures differ (beyond the catalogue and user counts).
    """
    sizes = {"num_items", "num_users", "name", "objective", "label_smoothing", "prompt_tuned"}
    mine = {k: v for k, v in model.get_config().items() if k not in sizes}
    theirs = {k: v for k, v in old.get_config().items() if k not in sizes}
    changed = sorted(k for k in mine if mine.get(k) != theirs.get(k))
    if changed:
        raise ConfigError(
            "warm_start",
            "needs the old run's architecture; these differ: " + ", ".join(f"{k} {theirs.get(k)!r} -> {mine[k]!r}" for k in changed),
        )
    embedding, old_embedding = model.backbone.embedding, old.backbone.embedding
    new_item_ids, new_user_ids = _new_ids(old_items, new_items), _new_ids(old_users, new_users)
    with_neighbours = 0

    def grow_items(table: np.ndarray) -> None:
        nonlocal with_neighbours
        table[new_item_ids], with_neighbours = neighbour_rows(table, new_item_ids, train_sequences)

    def grow_users(table: np.ndarray) -> None:
        table[new_user_ids] = table[0]  # the cold-start user's row

    tables = {
        id(embedding.item_embedding.embeddings): (
            old_embedding.item_embedding.embeddings,
            _item_rows(old_items),
            _item_rows(new_items),
            grow_items,
        )
    }
    if embedding.user_embedding is not None:
        tables[id(embedding.user_embedding.embeddings)] = (
            old_embedding.user_embedding.embeddings,
            _user_rows(old_users),
            _user_rows(new_users),
            grow_users,
        )
    for new_weight, old_weight in zip(model.backbone.weights, old.backbone.weights):
        if new_weight.name != old_weight.name:
            raise ConfigError("warm_start", f"weights do not line up ({old_weight.name} against {new_weight.name})")
        if id(new_weight) in tables:
            base, base_rows, new_rows, grow = tables[id(new_weight)]
            fresh = keras.initializers.Constant(new_weight.numpy())
            table = np.array(keras.utils.warmstart_embedding_matrix(base_rows, new_rows, base, fresh))
            grow(table)
            new_weight.assign(table)
        else:
            new_weight.assign(old_weight)
    kept_items, kept_users = set(old_items.tokens) & set(new_items.tokens), set(old_users.tokens) & set(new_users.tokens)
    return {
        "items_kept": len(kept_items),
        "items_new": new_items.size - len(kept_items),
        "items_new_with_neighbours": with_neighbours,
        "items_dropped": old_items.size - len(kept_items),
        "users_kept": len(kept_users),
        "users_new": new_users.size - len(kept_users),
        "users_dropped": old_users.size - len(kept_users),
    }
