"""Input embeddings: item + position + user ("user module") + segment (paper section 1); an item is its id row,
plus the mean of its feature values' rows when the model has item features."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig
from recgpt_tf.layers.configured import ConfiguredLayer


@keras.utils.register_keras_serializable(package="recgpt_tf")
class RecGPTEmbedding(ConfiguredLayer):
    """h0 = LN(item_emb[v_t]·√d + pos_emb[t] + user_emb[u] + seg_emb[segment_t]), then dropout.

    The item table doubles as the output table of pre-training (score = h · e_i),
    as in SASRec; scaling the input by √d (`scale_items`) keeps the two roles balanced.

    With item features (`config.num_feature_values` > 0) an item's row is e_i = id_emb[i] + mean of
    feature_emb[f] over its values f, in the input and the output table alike: an item no sequence holds (its
    id row left at zero) is known by its features. The item → feature-value matrix is a non-trainable weight,
    `item_features` [N + 2, M] (0 pads a row; row 0 and the OOV row hold none), so checkpoints and SavedModels
    carry it; `RecGPT.set_item_features` fills it.

    Args:
        config: The architecture (`ModelConfig`): num_items (the table has N + 2 rows: 0 padding, N+1 OOV),
            num_users (U + 1 rows: 0 the OOV user), max_length positions, hidden_size d, num_segments (0 real
            item, 1 prompt), dropout on the sum, use_user_embedding, user_dropout (the training-time
            probability of replacing a user by the OOV user) and scale_items (multiply item embeddings by √d on
            input; False: RecBole's SASRec). Positions number the tokens 0..T-1 from the first kept token. The
            sum is layer-normalised before dropout (the post-LN blocks never normalise their input).
    """

    def __init__(self, config: ModelConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        n, d = config.max_length, config.hidden_size
        init = lambda: keras.initializers.TruncatedNormal(stddev=0.02)  # noqa: E731 (one instance per table)
        self.item_embedding = keras.layers.Embedding(config.num_items + 2, d, embeddings_initializer=init(), name="item_embedding")
        self.position_embedding = keras.layers.Embedding(n, d, embeddings_initializer=init(), name="position_embedding")
        self.segment_embedding = keras.layers.Embedding(config.num_segments, d, embeddings_initializer="zeros", name="segment_embedding")
        self.user_embedding = (
            keras.layers.Embedding(config.num_users + 1, d, embeddings_initializer=init(), name="user_embedding")
            if config.use_user_embedding
            else None
        )
        self.feature_embedding = self.item_features = None  # the matrix is made in `build`
        if config.has_item_features:
            # Rows: 0 padding (never read), 1..F the known values, F + 1 the bucket of rare and unknown ones.
            self.feature_embedding = keras.layers.Embedding(
                config.num_feature_values + 2, d, embeddings_initializer=init(), name="feature_embedding"
            )
        self.embedding_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="embedding_norm")
        self.embedding_dropout = keras.layers.Dropout(config.dropout, name="embedding_dropout")

    def build(self, input_shape) -> None:
        if self.feature_embedding is not None:  # every item's row is read whole, before any lookup builds the tables
            self.item_features = self.add_weight(
                name="item_features",
                shape=(self.config.num_items + 2, self.config.max_item_features),
                dtype=tf.int32,
                initializer="zeros",
                trainable=False,
            )
            self.item_embedding.build(None)
            self.feature_embedding.build(None)
        super().build(input_shape)

    def call(
        self,
        user_id: tf.Tensor,
        item_ids: tf.Tensor,
        segment_ids: tf.Tensor,
        training: bool | None = None,
        item_rows: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Embeds a right-padded batch.

        Args:
            user_id: [B] int user ids.
            item_ids: [B, T] int item ids, T <= max_length.
            segment_ids: [B, T] int segment ids.
            item_rows: Every item's row, [N + 2, d] (`items`), when the caller has it already (a training step,
                whose output table it is too); otherwise the rows of `item_ids` alone are made.

        Returns:
            [B, T, d] float embeddings.
        """
        tf.debugging.assert_less_equal(
            tf.shape(item_ids)[1], self.config.max_length, message=f"item_ids longer than max_length={self.config.max_length}"
        )
        if item_rows is not None:
            x = tf.gather(item_rows, item_ids)
        else:
            x = self.item_embedding(item_ids)
            if self.item_features is not None:
                x += self.pooled_of(item_ids)
        if self.config.scale_items:
            x *= math.sqrt(self.config.hidden_size)
        x += self.positions(item_ids)
        x += self.segment_embedding(segment_ids)
        if self.user_embedding is not None:
            if training and self.config.user_dropout > 0:
                drop = tf.random.uniform(tf.shape(user_id)) < self.config.user_dropout
                user_id = tf.where(drop, tf.zeros_like(user_id), user_id)
            x += self.user_embedding(user_id)[:, tf.newaxis, :]  # (B, 1, d)
        return self.embedding_dropout(self.normalize(x), training=training)

    def items(self, training: bool | None = None) -> tf.Tensor:
        """[N + 2, d] every item's row: the id table, plus each item's mean feature row with features (in
        training, each id row left out with probability `item_id_dropout`: one draw, which a training step
        uses for its input and its output table alike)."""
        if self.item_features is None:
            return self.item_embedding.embeddings
        ids = self.item_embedding.embeddings
        if training and self.config.item_id_dropout > 0:
            kept = tf.random.uniform([self.config.num_items + 2, 1]) >= self.config.item_id_dropout
            ids = ids * tf.cast(kept, ids.dtype)  # not rescaled: a kept row is the row served
        return ids + self.pooled_features()

    def pooled_of(self, item_ids: tf.Tensor) -> tf.Tensor:
        """[..., d] the mean feature-value row of each of `item_ids` [...], with static shapes (a decoder pass
        compiled by XLA reads it); its cost grows with the ids asked, not the catalogue."""
        values = tf.gather(self.item_features, item_ids)  # (..., M)
        held = tf.cast(values > 0, tf.float32)[..., tf.newaxis]
        total = tf.reduce_sum(self.feature_embedding(values) * held, axis=-2)
        return total / tf.maximum(tf.reduce_sum(held, axis=-2), 1.0)

    def pooled_features(self) -> tf.Tensor:
        """[N + 2, d] each item's mean feature-value row (zeros for an item without features), summed over the
        values held only (its cost grows with the catalogue's values, not N × M)."""
        matrix = tf.convert_to_tensor(self.item_features)
        held = tf.where(matrix > 0)  # (P, 2) (item, slot) of every value held
        rows = self.feature_embedding(tf.gather_nd(matrix, held))  # (P, d)
        return tf.math.unsorted_segment_mean(rows, held[:, 0], num_segments=self.config.num_items + 2)

    def positions(self, item_ids: tf.Tensor) -> tf.Tensor:
        """[1, T, d] embeddings of the positions 0..T-1 of a [B, T] batch."""
        return self.position_embedding(tf.range(tf.shape(item_ids)[1]))[tf.newaxis]

    def normalize(self, x: tf.Tensor) -> tf.Tensor:
        """The summed embeddings [B, T, d], layer-normalised."""
        return self.embedding_norm(x)
