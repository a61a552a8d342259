"""Warm-started retraining with a growing catalogue: tomorrow's model starts from today's.

Known items and users keep their trained embedding rows, items and users that are gone are dropped (Keras'
`warmstart_embedding_matrix` maps the rows by token), and every other weight (positions, segments, the
decoder blocks, the norms) starts from the old model. New rows start where the old model already places
them rather than at the initialiser's near-zero values, which no trained row resembles: a new user at the
cold-start user's row (what the old model serves an unknown user; trained when `user_dropout` > 0), a new
item at the mean of the trained rows of the known items next to it in the new training sequences (the
mean known row when none is). With item features, the feature-value table is mapped by value the same way (a
value new today starts at zero) and each item's values are today's. The optimizer starts afresh, and early stopping on validation decides how
long the new run trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

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
    fingerprint: str = ""  # of the run at `path` (`Run.fingerprint`): a run retrained in place is another source
    feature_values: Sequence[str] = ()  # its item features' value vocabulary (`CatalogueFeatures.values`), if any


def _item_rows(vocab: Vocabulary) -> list[str]:
    """The item table's rows as tokens: 0 padding, 1..N the items, N+1 unknown items."""
    return [_PADDING, *vocab.tokens, _OOV]


def _feature_rows(values: Sequence[str]) -> list[str]:
    """The feature-value table's rows as tokens: 0 padding, 1..F the values, F+1 rare and unknown values."""
    return [_PADDING, *values, _OOV]


def _user_rows(vocab: Vocabulary) -> list[str]:
    """The user table's rows as tokens: 0 unknown (cold-start) users, 1..U the users."""
    return [_OOV, *vocab.tokens]


def _new_ids(old: Vocabulary, new: Vocabulary) -> np.ndarray:
    """Ids, in `new`, of the tokens `old` lacks."""
    known = set(old.tokens)
    return np.array([i + 1 for i, token in enumerate(new.tokens) if token not in known], dtype=np.int64)


def neighbour_rows(table: np.ndarray, new_ids: np.ndarray, sequences: Iterable[np.ndarray] | None) -> tuple[np.ndarray, int]:
    """Starting rows for new items: each the mean of the rows of the known items just before and after it
    in `sequences`, or the mean known row where it has no known neighbour (or no sequences are given).

    Args:
        table: [N + 2, d] item rows (0 padding, 1..N the items, N + 1 unknown items); known rows trained.
        new_ids: [num_new] ids of the new items (1..N).
        sequences: Encoded item ids, one array per user.

    Returns:
        ([num_new, d] rows, how many new items had a known neighbour).

    Raises:
        ConfigError: every item is new (there is no known row to start from).
    """
    known = np.zeros(table.shape[0], dtype=bool)
    known[1:-1] = True  # the items; not padding or unknown items
    known[new_ids] = False
    if not known.any():
        raise ConfigError("warm_start", "the old run shares no item with the new data (are the ids written the same way?)")
    slot = np.full(table.shape[0], -1)
    slot[new_ids] = np.arange(len(new_ids))
    sums, counts = np.zeros((len(new_ids), table.shape[1])), np.zeros(len(new_ids))
    arrays = [np.asarray(sequence, dtype=np.int64) for sequence in sequences or ()]
    if len(new_ids) and arrays:
        items = np.concatenate(arrays)
        same_user = np.repeat(np.arange(len(arrays)), [len(a) for a in arrays])
        adjacent = same_user[:-1] == same_user[1:]
        for item, neighbour in ((items[:-1], items[1:]), (items[1:], items[:-1])):  # each side of every pair
            pairs = adjacent & (slot[item] >= 0) & known[neighbour]
            np.add.at(sums, slot[item[pairs]], table[neighbour[pairs]])
            np.add.at(counts, slot[item[pairs]], 1.0)
    rows = np.tile(table[known].mean(axis=0), (len(new_ids), 1))
    seen = counts > 0
    rows[seen] = sums[seen] / counts[seen, None]
    return rows.astype(table.dtype), int(seen.sum())


def warm_start(
    model: RecGPT,
    old: RecGPT,
    old_items: Vocabulary,
    new_items: Vocabulary,
    old_users: Vocabulary,
    new_users: Vocabulary,
    train_sequences: Iterable[np.ndarray] | None = None,
    old_values: Sequence[str] = (),
    new_values: Sequence[str] = (),
) -> dict:
    """Copies `old`'s weights into `model` (built, same architecture, catalogue and users of its own).

    Args:
        train_sequences: The new data's training sequences (item ids of `new_items`), which place each new
            item's row beside its neighbours' (`neighbour_rows`); without them new items start at the
            mean known row.
        old_values, new_values: With item features, the two models' feature-value vocabularies, by which the
            value table's rows are mapped; `model` keeps its own item → value matrix (today's catalogue).

    Returns:
        {"items_kept", "items_new", "items_new_with_neighbours", "items_dropped", "users_kept", "users_new",
        "users_dropped"}.

    Raises:
        ConfigError: the architectures differ (beyond the catalogue and user counts and the item features'
            sizes), one run has item features and the other none, or no item is kept.
    """
    sizes = {"num_items", "num_users", "num_feature_values", "max_item_features", "name", "objective", "label_smoothing", "prompt_tuned"}
    mine = {k: v for k, v in model.get_config().items() if k not in sizes}
    theirs = {k: v for k, v in old.get_config().items() if k not in sizes}
    changed = sorted(k for k in mine if mine.get(k) != theirs.get(k))
    if changed:
        raise ConfigError(
            "warm_start",
            "needs the old run's architecture; these differ: "
            + ", ".join(f"{k} {theirs.get(k)!r} -> {mine[k]!r}" for k in changed)
            + " (recgpt train takes the old run's when no model flag is given; in Python, `runs.architecture_for`)",
        )
    embedding, old_embedding = model.backbone.embedding, old.backbone.embedding
    if (embedding.item_features is None) != (old_embedding.item_features is None):
        old_has, new_has = ("with" if e.item_features is not None else "without" for e in (old_embedding, embedding))
        raise ConfigError(
            "warm_start",
            f"needs item features on both runs or on neither: the old run was trained {old_has} them, this one {new_has} "
            "(give --item-features to both, or to neither)",
        )
    new_item_ids, new_user_ids = _new_ids(old_items, new_items), _new_ids(old_users, new_users)
    # Each table in the new row order: kept rows copied by token, then the new rows grown in place.
    items = _by_token(old_embedding.item_embedding.embeddings, _item_rows(old_items), _item_rows(new_items))
    items[new_item_ids], with_neighbours = neighbour_rows(items, new_item_ids, train_sequences)
    tables = {id(embedding.item_embedding.embeddings): items}
    if embedding.user_embedding is not None:
        users = _by_token(old_embedding.user_embedding.embeddings, _user_rows(old_users), _user_rows(new_users))
        users[new_user_ids] = users[0]  # the cold-start user's row: what the old model serves an unknown user
        tables[id(embedding.user_embedding.embeddings)] = users
    if embedding.item_features is not None:
        if old_embedding.feature_embedding.input_dim != len(old_values) + 2:
            raise ConfigError(
                "warm_start", f"the old run's value table has {old_embedding.feature_embedding.input_dim} rows for {len(old_values)} values"
            )
        values = _by_token(old_embedding.feature_embedding.embeddings, _feature_rows(old_values), _feature_rows(new_values))
        tables[id(embedding.feature_embedding.embeddings)] = values
        tables[id(embedding.item_features)] = embedding.item_features.numpy()
    for new_weight, old_weight in zip(model.backbone.weights, old.backbone.weights):
        if new_weight.name != old_weight.name:
            raise ConfigError("warm_start", f"weights do not line up ({old_weight.name} against {new_weight.name})")
        new_weight.assign(tables.get(id(new_weight), old_weight))
    return {
        "items_kept": new_items.size - len(new_item_ids),
        "items_new": len(new_item_ids),
        "items_new_with_neighbours": with_neighbours,
        "items_dropped": old_items.size - (new_items.size - len(new_item_ids)),
        "users_kept": new_users.size - len(new_user_ids),
        "users_new": len(new_user_ids),
        "users_dropped": old_users.size - (new_users.size - len(new_user_ids)),
    }


def describe(report: dict, small_overlap: float = 0.5) -> list[str]:
    """Console lines for a warm start's `report` (pre-training's summary["warm_start"]): what was kept, new
    and dropped, and a warning when the old run knows fewer than `small_overlap` of today's items or users
    (ids written another way, or another catalogue: the model then starts mostly from scratch)."""
    lines = [
        f"warm start from {report['from']}: items {report['items_kept']:,} kept, {report['items_new']:,} new "
        f"({report['items_new_with_neighbours']:,} placed beside known neighbours), {report['items_dropped']:,} dropped; "
        f"users {report['users_kept']:,} kept, {report['users_new']:,} new, {report['users_dropped']:,} dropped"
    ]
    for kind in ("items", "users"):
        today = report[f"{kind}_kept"] + report[f"{kind}_new"]
        if today and report[f"{kind}_kept"] < small_overlap * today:
            lines.append(
                f"warning: the old run knows only {report[f'{kind}_kept']:,} of today's {today:,} {kind}: are the ids written "
                "the same way? Their rows start from scratch"
            )
    return lines


def _by_token(table, old_rows: list[str], new_rows: list[str]) -> np.ndarray:
    """`table` ([len(old_rows), d]) with its rows in `new_rows`' order, by token (new tokens' rows are zeros,
    to be grown)."""
    return np.array(keras.utils.warmstart_embedding_matrix(old_rows, new_rows, table, keras.initializers.Zeros()))
