"""Input embeddings: item + position + user ("user module") + segment (paper section 1)."""

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
        self.embedding_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="embedding_norm")
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
        tf.debugging.assert_less_equal(
            tf.shape(item_ids)[1], self.config.max_length, message=f"item_ids longer than max_length={self.config.max_length}"
        )
        x = self.item_embedding(item_ids)  # (B, T, d)
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

    def positions(self, item_ids: tf.Tensor) -> tf.Tensor:
        """[1, T, d] embeddings of the positions 0..T-1 of a [B, T] batch."""
        return self.position_embedding(tf.range(tf.shape(item_ids)[1]))[tf.newaxis]

    def normalize(self, x: tf.Tensor) -> tf.Tensor:
        """The summed embeddings [B, T, d], layer-normalised."""
        return self.embedding_norm(x)
