"""Warm-started retraining with a growing catalogue: tomorrow's model starts from today's.

Known items and users keep their trained embedding rows, new ones get fresh rows, items and users that
are gone are dropped (Keras' `warmstart_embedding_matrix` maps the rows by token), and every other weight
(positions, segments, the decoder blocks, the norms) starts from the old model. The optimizer starts
afresh, and early stopping on validation decides how long the new run trains.
"""

from __future__ import annotations

import dataclasses

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


def warm_start(
    model: RecGPT, old: RecGPT, old_items: Vocabulary, new_items: Vocabulary, old_users: Vocabulary, new_users: Vocabulary
) -> dict:
    """Copies `old`'s weights into `model` (built, same architecture, catalogue and users of its own).

    Returns:
        {"items_kept", "items_new", "items_dropped", "users_kept", "users_new", "users_dropped"}.

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
    tables = {
        id(embedding.item_embedding.embeddings): (old_embedding.item_embedding.embeddings, _item_rows(old_items), _item_rows(new_items))
    }
    if embedding.user_embedding is not None:
        tables[id(embedding.user_embedding.embeddings)] = (
            old_embedding.user_embedding.embeddings,
            _user_rows(old_users),
            _user_rows(new_users),
        )
    for new_weight, old_weight in zip(model.backbone.weights, old.backbone.weights):
        if new_weight.name != old_weight.name:
            raise ConfigError("warm_start", f"weights do not line up ({old_weight.name} against {new_weight.name})")
        if id(new_weight) in tables:
            base, base_rows, new_rows = tables[id(new_weight)]
            fresh = keras.initializers.Constant(new_weight.numpy())  # new rows keep the new model's initial values
            new_weight.assign(keras.utils.warmstart_embedding_matrix(base_rows, new_rows, base, fresh))
        else:
            new_weight.assign(old_weight)
    kept_items, kept_users = set(old_items.tokens) & set(new_items.tokens), set(old_users.tokens) & set(new_users.tokens)
    return {
        "items_kept": len(kept_items),
        "items_new": new_items.size - len(kept_items),
        "items_dropped": old_items.size - len(kept_items),
        "users_kept": len(kept_users),
        "users_new": new_users.size - len(kept_users),
        "users_dropped": old_users.size - len(kept_users),
    }
