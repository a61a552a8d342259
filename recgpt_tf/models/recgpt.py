"""RecGPT: the backbone plus a TFRS retrieval objective over the item table."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from recgpt_tf.config import ModelConfig, TrainConfig, resolve_objective
from recgpt_tf.data.features import ITEM_IDS, SEGMENT_IDS, TARGETS, USER_ID
from recgpt_tf.errors import ConfigError
from recgpt_tf.layers import ItemRows
from recgpt_tf.models.backbone import backbone_for, gather_last
from recgpt_tf.models.objectives import make_task, retrieval_loss


@keras.utils.register_keras_serializable(package="recgpt_tf")
class RecGPT(tfrs.Model):
    """The RecGPT task model: next-item prediction at every real position.

    `compute_loss` runs the backbone, keeps positions whose target is a real
    item, and hands (hidden state, next item) pairs to a `tfrs.tasks.Retrieval`
    task. Train it with plain `model.fit` on `recgpt_tf.data.training_dataset`.

    After pre-training, `start_prompt_tuning()` freezes everything but the
    segment embedding and an added output table W_l (paper section 3: θ_LP),
    and from then on items are scored as h · W_l^T.

    Args:
        num_items: Known items N.
        num_users: Known users U.
        objective: "softmax", "sampled_softmax", "bce" (see `models.objectives`) or
            "auto" (the default, `TrainConfig`'s: resolved for the catalogue by `resolve_objective`).
        prompt_tuned: Score with the prompt-tuning output table W_l instead of
            the (tied) item embeddings.
        label_smoothing: Softmax objective only (see `CatalogueRetrieval`); None (the default) is the
            objective's own (`resolve_objective`).
        **backbone_kwargs: The other `ModelConfig` fields (max_length, hidden_size, ...; its defaults; an
            `architecture` names a subclass of it, a lab's: `ModelConfig.from_dict`), made
            into the one config the backbone passes whole to its layers.
        With no arguments beyond the catalogue, this is the model `recgpt train` trains.
    """

    def __init__(
        self,
        num_items: int,
        num_users: int,
        objective: str = TrainConfig.objective,
        prompt_tuned: bool = False,
        label_smoothing: float | None = TrainConfig.label_smoothing,
        name: str = "recgpt",
        **backbone_kwargs,
    ) -> None:
        super().__init__(name=name)
        if num_items < 1 or num_users < 0:
            raise ConfigError("num_items", f"must be >= 1 and num_users >= 0; got {num_items}, {num_users}")
        objective, label_smoothing = resolve_objective(objective, label_smoothing, num_items)
        self.num_items = num_items
        self.num_users = num_users
        self.objective = objective
        self.prompt_tuned = prompt_tuned
        self.label_smoothing = label_smoothing
        config = ModelConfig.from_dict({"num_items": num_items, "num_users": num_users, **backbone_kwargs})
        self.backbone = backbone_for(config, name="backbone")
        self.task = make_task(objective, label_smoothing)
        # Log unigram probability per item id for the log-Q correction of
        # sampled softmax; uniform until `set_item_frequencies` is called.
        self.item_log_probability = self.add_weight(
            name="item_log_probability",
            shape=(num_items + 2,),
            initializer=keras.initializers.Constant(-np.log(num_items)),
            trainable=False,
        )
        # W_l of prompt-tuning: [N + 2, d], initialised from the item table when
        # prompt-tuning starts, so tuning begins from the pre-trained scorer.
        self.prompt_output = keras.layers.Embedding(
            num_items + 2, self.backbone.hidden_size, embeddings_initializer="zeros", trainable=False, name="prompt_output"
        )
        self.prompt_output.build(None)
        if prompt_tuned:
            self._set_prompt_trainability()

    @property
    def max_length(self) -> int:
        return self.backbone.max_length

    def set_item_frequencies(self, counts: np.ndarray) -> None:
        """Sets the log-Q table from [N + 2] interaction counts (smoothed by +1)."""
        counts = np.asarray(counts, dtype=np.float64) + 1.0
        if counts.shape != (self.num_items + 2,):
            raise ConfigError("counts", f"must have shape ({self.num_items + 2},); got {counts.shape}")
        self.item_log_probability.assign(np.log(counts / counts.sum()).astype(np.float32))

    def set_item_features(self, matrix: np.ndarray) -> None:
        """Sets the item → feature-value matrix, [N + 2, M] ids in 0..F + 1 (0 pads), of a model built with item
        features (`data.item_features.CatalogueFeatures.matrix` makes it)."""
        embedding = self.backbone.embedding
        if embedding.item_features is None:
            raise ConfigError("item_features", "this model was built without item features (num_feature_values 0)")
        matrix = np.asarray(matrix)
        config = self.backbone.config
        if matrix.shape != tuple(embedding.item_features.shape):
            raise ConfigError("item_features", f"must have shape {tuple(embedding.item_features.shape)}; got {matrix.shape}")
        if matrix.size and not 0 <= matrix.min() <= matrix.max() <= config.num_feature_values + 1:
            raise ConfigError("item_features", f"values must be feature ids in 0..{config.num_feature_values + 1}")
        embedding.item_features.assign(matrix.astype(np.int32))

    def output_item_table(self) -> tf.Variable | tf.Tensor:
        """[N + 2, d] table the hidden state is scored against: the item
        embeddings (score = h · e_i), or W_l once prompt-tuned (h · W_l^T). With item features W_l is the id
        part only, and each item's mean feature row (frozen with the backbone) is added to it, so an item no
        sequence trained, its W_l row zero, is still scored by its features."""
        return self.output_item_rows(whole=True).table()

    def output_item_rows(self, whole: bool = False) -> ItemRows:
        """The rows of `output_item_table` (`ItemRows`), as served: before prompt-tuning the input's (a training
        step reads its own, which carry its draw of the id dropout)."""
        embedding = self.backbone.embedding
        if not self.prompt_tuned:
            return embedding.item_rows(whole=whole)
        return ItemRows(self.prompt_output, embedding if embedding.item_features is not None else None, whole=whole)

    def start_prompt_tuning(self) -> None:
        """Freezes the backbone except the segment embedding; scores with W_l from now on.

        W_l starts as a copy of the item (id) embeddings, so tuning begins from the pre-trained scorer. Call
        `compile` afterwards: Keras fixes the trainable set when it builds the train function.
        """
        self.prompt_output.embeddings.assign(self.backbone.embedding.item_embedding.embeddings)
        self.prompt_tuned = True
        self._set_prompt_trainability()

    def _set_prompt_trainability(self) -> None:
        embedding = self.backbone.embedding
        for layer in self.backbone.submodules:  # every layer of the backbone but the segment table and its holder
            if isinstance(layer, keras.layers.Layer) and layer is not embedding:
                layer.trainable = False
        embedding.segment_embedding.trainable = True
        self.prompt_output.trainable = True

    def candidate_embeddings(self) -> tf.Tensor:
        """[N, d] output embeddings of items 1..N (column j ↔ item id j + 1)."""
        return self.output_item_table()[1 : self.num_items + 1]

    def call(self, inputs: dict[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Hidden states [B, T, d] for a batch of `user_id`, `item_ids`, `segment_ids`."""
        return self.backbone(inputs, training=training)

    def user_representation(self, inputs: dict[str, tf.Tensor], lengths: tf.Tensor) -> tf.Tensor:
        """[B, d] hidden state at each sequence's last real position (the paper's h1)."""
        return gather_last(self.backbone(inputs, training=False), lengths)

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        # The full softmax reads every item's row, built once for the input and the output; the other objectives
        # read the batch's and their candidates' rows alone. One draw of the id dropout (pre-training and the
        # fine-tuning baseline train with it) serves the input and, before prompt-tuning, the output table.
        whole = self.objective == "softmax"
        item_rows = self.backbone.embedding.item_rows(training and not self.prompt_tuned, whole)
        hidden = self.backbone(
            {USER_ID: features[USER_ID], ITEM_IDS: features[ITEM_IDS], SEGMENT_IDS: features.get(SEGMENT_IDS)},
            training=training,
            step_rows=item_rows,
        )  # (B, T, d)
        targets = tf.cast(features[TARGETS], tf.int32)
        real = targets > 0
        queries = tf.boolean_mask(hidden, real)  # (P, d)
        positives = tf.boolean_mask(targets, real)  # (P,)
        return retrieval_loss(
            self.task,
            self.objective,
            queries,
            positives,
            self.output_item_rows(whole) if self.prompt_tuned else item_rows,  # before prompt-tuning: the same draw
            self.num_items,
            self.item_log_probability,
        )

    def get_config(self) -> dict:
        config = {
            "num_items": self.num_items,
            "num_users": self.num_users,
            "objective": self.objective,
            "prompt_tuned": self.prompt_tuned,
            "label_smoothing": self.label_smoothing,
            "name": self.name,
        }
        backbone = self.backbone.get_config()
        for key in ("name", "trainable", "dtype", "num_items", "num_users"):
            backbone.pop(key, None)
        config.update(backbone)
        return config

    @classmethod
    def from_config(cls, config: dict) -> "RecGPT":
        return cls(**config)
