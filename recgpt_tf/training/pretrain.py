"""Stage 1: auto-regressive pre-training (paper section 2), resumable, under any `tf.distribute` strategy."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig, TrainConfig
from recgpt_tf.data.dataset import Dataset
from recgpt_tf.data.item_features import CatalogueFeatures
from recgpt_tf.data.streaming import StreamedDataset
from recgpt_tf.errors import ConfigError
from recgpt_tf.evaluation import evaluate_model
from recgpt_tf.models.recgpt import RecGPT
from recgpt_tf.training.distribute import distributed_batches, make_strategy, num_input_pipelines, table_placement
from recgpt_tf.training.fit import StageFiles, build_model, fit_stage
from recgpt_tf.training.warm_start import WarmStartSource, warm_start
from recgpt_tf.training.warm_start import describe as describe_warm_start


def pretraining_data(
    dataset: Dataset | StreamedDataset, max_length: int, train_config: TrainConfig, vocabulary_files: tuple[Path, Path] | None = None
) -> tuple[tf.distribute.Strategy, object, int | None]:
    """(strategy, input for `model.fit`, steps per epoch) for pre-training under `train_config.strategy`.

    One process: the default strategy and one epoch of plain batches (steps None: the data's own
    length). A distribution strategy: a `DatasetCreator` over per-worker shares, and the equal number
    of steps every worker runs an epoch (`distribute.distributed_batches`). Streamed data is encoded
    with `vocabulary_files` (the run's).
    """
    strategy = make_strategy(train_config.strategy)

    def batches(shard: int = 0, num_shards: int = 1, batch_size: int | None = None) -> tf.data.Dataset:
        return dataset.training_batches(max_length, train_config, shard, num_shards, batch_size, vocabulary_files=vocabulary_files)

    if train_config.strategy == "single":
        return strategy, batches(), None
    train_data, steps = distributed_batches(strategy, num_input_pipelines(train_config.strategy), train_config.batch_size, batches)
    return strategy, train_data, steps


def pretrain(
    model_config: ModelConfig,
    dataset: Dataset | StreamedDataset,
    train_config: TrainConfig,
    files: StageFiles,
    vocabulary_files: tuple[Path, Path] | None = None,
    verbose: int = 1,
    extra_callbacks: list | None = None,
    warm_start_from: WarmStartSource | None = None,
    item_features: CatalogueFeatures | None = None,
) -> tuple[RecGPT, dict]:
    """Pre-trains a new model of `model_config`'s architecture on `dataset`'s training split.

    Args:
        model_config: The architecture.
        dataset: Encoded with the vocabularies of `vocabulary_files` (in memory, or streamed from TFRecord
            files); its validation items select the epoch.
        train_config: Objective and schedule; `runs.Run` gives it resolved for the catalogue
            (`TrainConfig.for_catalogue`), and the model resolves an "auto" left in it.
        files: Where the stage keeps its files; an interrupted pre-training there resumes.
        vocabulary_files: (items, users) files, which encode streamed data in the graph.
        verbose: 1 one line an epoch (and a progress bar on a terminal), 2 one line an epoch, 0 silent.
        extra_callbacks: More Keras callbacks, run after the built-in ones.
        warm_start_from: Start from an earlier run's model instead of random weights (`warm_start`).
        item_features: The catalogue's item features, for a model with them: the model takes their item →
            value matrix, and a warm start maps the value table by their values.

    Returns:
        (model with the selected weights, stage summary).
    """
    if warm_start_from is not None and train_config.strategy == "parameter-server":
        raise ConfigError("warm_start", "is not supported under the parameter-server strategy, whose tables are sharded")
    keras.utils.set_random_seed(train_config.seed)
    strategy, train_data, steps = pretraining_data(dataset, model_config.max_length, train_config, vocabulary_files)
    with strategy.scope():
        model = build_model(model_config, train_config.objective, label_smoothing=train_config.label_smoothing)
        model.set_item_frequencies(dataset.item_counts())
        if model_config.has_item_features != (item_features is not None):
            raise ConfigError("item_features", "must be given exactly when the model has item features (num_feature_values > 0)")
        if item_features is not None:
            model.set_item_features(item_features.matrix(model_config.max_item_features))
        if warm_start_from is not None:
            rows = warm_start(
                model,
                warm_start_from.model,
                warm_start_from.item_vocab,
                dataset.item_vocab,
                warm_start_from.user_vocab,
                dataset.user_vocab,
                # Streamed data is not held in memory: its new items start at the mean known row.
                train_sequences=dataset.train_sequences() if isinstance(dataset, Dataset) else None,
                old_values=warm_start_from.feature_values,
                new_values=item_features.values if item_features else (),
            )
    if warm_start_from is not None:  # yesterday's model on today's validation users: where the new run starts
        rows["valid_before_training"] = evaluate_model(model, dataset.split("valid"))
        if verbose:
            print("\n".join(describe_warm_start({"from": warm_start_from.path, **rows})), flush=True)
    summary = fit_stage(model, dataset, files, train_config, train_data, verbose, extra_callbacks, steps_per_epoch=steps, strategy=strategy)
    if warm_start_from is not None:
        summary["warm_start"] = {"from": warm_start_from.path, **rows}
    summary["objective"] = model.objective
    if train_config.strategy != "single":
        summary["strategy"] = {"name": train_config.strategy, "table_placement": table_placement(model)}
    summary["sequences_per_second"] = dataset.num_users / summary["seconds_per_epoch"] if summary["seconds_per_epoch"] else None
    return model, summary
