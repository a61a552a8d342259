"""Input embeddings: item + position + user ("user module") + segment (paper section 1)."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig


def left_padding(item_ids: tf.Tensor, max_length: int) -> tf.Tensor:
    """[B] empty slots each right-padded row of `item_ids` ([B, T], 0 padding) would have if left-padded to
    `max_length`, as SASRec pads: its "from_end" positions start there, and its block attends to them."""
    return max_length - tf.reduce_sum(tf.cast(item_ids != 0, tf.int32), axis=1)


@keras.utils.register_keras_serializable(package="recgpt_tf")
class RecGPTEmbedding(keras.layers.Layer):
    """h0 = item_emb[v_t]·√d + pos_emb[t] + user_emb[u] + seg_emb[segment_t], then (layer norm and) dropout.

    The item table doubles as the output table of pre-training (score = h · e_i),
    as in SASRec; scaling the input by √d (`scale_items`) keeps the two roles balanced.

    Args:
        config: The architecture (`ModelConfig`): num_items (the table has N + 2 rows: 0 padding, N+1 OOV),
            num_users (U + 1 rows: 0 the OOV user), max_length positions, hidden_size d, num_segments (0 real
            item, 1 prompt), dropout on the sum, use_user_embedding, user_dropout (the training-time
            probability of replacing a user by the OOV user), scale_items (multiply item embeddings by √d on
            input; False: RecBole's SASRec) and position_mode: "from_start" numbers tokens 0..T-1 from the
            first kept token; "from_end" numbers them so the last real token is always `max_length - 1`
            (SASRec's left-aligned positions: a position says how recent a token is). Either way a token's
            position depends only on the sequence length, never on later items, so causality holds. The post-LN
            layout also layer-normalises the sum before dropout (its blocks never normalise the residual
            stream's input).
    """

    def __init__(self, config: ModelConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
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
        normalize = config.layer_norm == "post"
        self.embedding_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="embedding_norm") if normalize else None
        self.embedding_dropout = keras.layers.Dropout(config.dropout, name="embedding_dropout")

    def call(self, user_id: tf.Tensor, item_ids: tf.Tensor, segment_ids: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Embeds a right-padded batch.

        Args:
            user_id: [B] int user ids.
            item_ids: [B, T] int item ids, T <= max_length.
            segment_ids: [B, T] int segment ids.

        Returns:
            [B, T, d] float embeddings.
        """
        length = tf.shape(item_ids)[1]
        tf.debugging.assert_less_equal(length, self.config.max_length, message=f"item_ids longer than max_length={self.config.max_length}")
        x = self.item_embedding(item_ids)  # (B, T, d)
        if self.config.scale_items:
            x *= math.sqrt(self.config.hidden_size)
        if self.config.position_mode == "from_end":
            first = left_padding(item_ids, self.config.max_length)[:, tf.newaxis]  # (B, 1): where the row starts, left-padded
            positions = tf.clip_by_value(first + tf.range(length)[tf.newaxis], 0, self.config.max_length - 1)
            x += self.position_embedding(positions)  # (B, T, d)
        else:
            x += self.position_embedding(tf.range(length))[tf.newaxis]  # (1, T, d)
        x += self.segment_embedding(segment_ids)
        if self.user_embedding is not None:
            if training and self.config.user_dropout > 0:
                drop = tf.random.uniform(tf.shape(user_id)) < self.config.user_dropout
                user_id = tf.where(drop, tf.zeros_like(user_id), user_id)
            x += self.user_embedding(user_id)[:, tf.newaxis, :]  # (B, 1, d)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        return self.embedding_dropout(x, training=training)

    def get_config(self) -> dict:
        return {**super().get_config(), **self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict) -> "RecGPTEmbedding":
        model_config, keras_config = ModelConfig.from_layer_config(config)
        return cls(model_config, **keras_config)
