"""A served catalogue larger than the trained one: items known by their features alone.

A model with item features scores an item by its id row plus its features' mean row. An item no training
sequence held has no id row, but it has features: grown into the model with its id row zero, it is scored, and
understood in a request's history, by its features alone. So tomorrow's new products are a re-export of today's
run with tomorrow's catalogue file, not a retrain.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recgpt_tf.data.item_features import CatalogueFeatures, ItemFeatures
from recgpt_tf.data.vocab import Vocabulary
from recgpt_tf.errors import ConfigError
from recgpt_tf.models.recgpt import RecGPT
from recgpt_tf.training.fit import build_model


def extend_catalogue(
    model: RecGPT, item_vocab: Vocabulary, features: CatalogueFeatures, catalogue: ItemFeatures
) -> tuple[RecGPT, Vocabulary, dict[str, int]]:
    """`model` grown to serve every item of `catalogue` besides its own.

    The trained items keep their rows, and the features they were trained with (what their id rows were
    learned beside); each of `catalogue`'s other items gets a zero id row (and a zero prompt-tuned output row)
    and its features, read with the run's value vocabulary (values the run never knew go to the OOV bucket).
    An item of `catalogue` without any feature value could only be scored zero for everyone: it is left out,
    and counted.

    Args:
        model: A model with item features (the run's, loaded).
        item_vocab: Its item vocabulary (ids 1..N).
        features: The run's `CatalogueFeatures` (its value vocabulary).
        catalogue: Today's item features file, read (`read_item_features`).

    Returns:
        (the grown model, its item vocabulary: the trained items, then the new ones in the file's order, and
        {"items", "trained_items", "feature_only_items", "feature_only_with_unknown_values_only",
        "left_out_without_values"}).
    """
    if model.backbone.embedding.item_features is None:
        raise ConfigError(
            "item_features", "the run was trained without item features; train it with --item-features to serve items by them"
        )
    if tuple(catalogue.columns) != tuple(features.columns):
        raise ConfigError(
            "item_features",
            f"has the columns {list(catalogue.columns)}; the run was trained with {list(features.columns)} (a renamed column's "
            "values would all be unknown to it)",
        )
    new = [item for item in catalogue.items if item_vocab.lookup(item) == item_vocab.oov]
    rows = {item: features.ids(catalogue.tokens(item)) for item in new}
    added = [item for item in new if rows[item]]
    n, k = model.num_items, len(added)
    config = model.backbone.config
    width = max([config.max_item_features, *(len(rows[item]) for item in added)])
    grown = build_model(dataclasses.replace(config, num_items=n + k, max_item_features=width), model.objective, model.prompt_tuned, 0.0)
    kept = np.concatenate([np.arange(n + 1), [n + k + 1]])  # padding and items 1..N in place; the OOV row moves to the end
    if len(grown.weights) != len(model.weights):
        raise ConfigError("model", f"has {len(model.weights)} weights; its grown copy {len(grown.weights)}")
    for new_weight, old_weight in zip(grown.weights, model.weights):
        if new_weight.name != old_weight.name:
            raise ConfigError("model", f"weights do not line up ({old_weight.name} against {new_weight.name})")
        value = old_weight.numpy()
        if new_weight.shape != old_weight.shape:  # a table over the items: [N + 2, ...] rows, the matrix wider too
            table = np.zeros(new_weight.shape, value.dtype)
            table[(kept, *(slice(0, size) for size in value.shape[1:]))] = value
            value = table
        new_weight.assign(value)
    log_probability = grown.item_log_probability.numpy()
    log_probability[n + 1 : n + k + 1] = log_probability[1 : n + 1].min()  # unseen: the rarest item's (sampled softmax only)
    grown.item_log_probability.assign(log_probability)
    matrix = grown.backbone.embedding.item_features.numpy()
    for row, item in enumerate(added, start=n + 1):
        matrix[row, : len(rows[item])] = rows[item]
    grown.set_item_features(matrix)
    counts = {
        "items": n + k,
        "trained_items": n,
        "feature_only_items": k,
        # Served by the OOV bucket alone (every value rare or new): scored alike, by "a rare value".
        "feature_only_with_unknown_values_only": sum(rows[item] == (features.oov,) for item in added),
        "left_out_without_values": len(new) - k,
    }
    return grown, Vocabulary([*item_vocab.tokens, *added]), counts
