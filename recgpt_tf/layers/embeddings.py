"""Input embeddings: item + position + user ("user module") + segment (paper section 1)."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="recgpt_tf")
class RecGPTEmbedding(keras.layers.Layer):
    """h0 = item_emb[v_t]·√d + pos_emb[t] + user_emb[u] + seg_emb[segment_t], then dropout.

    The item table doubles as the output table of pre-training (score = h · e_i),
    as in SASRec; scaling the input by √d keeps the two roles balanced.

    Args:
        num_items: Known items N; the table has N + 2 rows (0 padding, N+1 OOV).
        num_users: Known users U; the table has U + 1 rows (0 = OOV user).
        max_length: Number of positions.
        hidden_size: Width d.
        num_segments: Segment vocabulary (0 real item, 1 prompt).
        dropout: Dropout rate on the summed embedding.
        use_user_embedding: Whether to add the user embedding.
        user_dropout: Training-time probability of replacing a user by the OOV user.
    """

    def __init__(
        self,
        num_items: int,
        num_users: int,
        max_length: int,
        hidden_size: int,
        num_segments: int = 2,
        dropout: float = 0.0,
        use_user_embedding: bool = True,
        user_dropout: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_items = num_items
        self.num_users = num_users
        self.max_length = max_length
        self.hidden_size = hidden_size
        self.num_segments = num_segments
        self.dropout = dropout
        self.use_user_embedding = use_user_embedding
        self.user_dropout = user_dropout
        init = lambda: keras.initializers.TruncatedNormal(stddev=0.02)  # noqa: E731 (one instance per table)
        self.item_embedding = keras.layers.Embedding(num_items + 2, hidden_size, embeddings_initializer=init(), name="item_embedding")
        self.position_embedding = keras.layers.Embedding(max_length, hidden_size, embeddings_initializer=init(), name="position_embedding")
        self.segment_embedding = keras.layers.Embedding(num_segments, hidden_size, embeddings_initializer="zeros", name="segment_embedding")
        self.user_embedding = (
            keras.layers.Embedding(num_users + 1, hidden_size, embeddings_initializer=init(), name="user_embedding")
            if use_user_embedding
            else None
        )
        self.embedding_dropout = keras.layers.Dropout(dropout, name="embedding_dropout")

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
        tf.debugging.assert_less_equal(length, self.max_length, message=f"item_ids longer than max_length={self.max_length}")
        x = self.item_embedding(item_ids) * math.sqrt(self.hidden_size)  # (B, T, d)
        x += self.position_embedding(tf.range(length))[tf.newaxis]  # (1, T, d)
        x += self.segment_embedding(segment_ids)
        if self.user_embedding is not None:
            if training and self.user_dropout > 0:
                drop = tf.random.uniform(tf.shape(user_id)) < self.user_dropout
                user_id = tf.where(drop, tf.zeros_like(user_id), user_id)
            x += self.user_embedding(user_id)[:, tf.newaxis, :]  # (B, 1, d)
        return self.embedding_dropout(x, training=training)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_items=self.num_items,
            num_users=self.num_users,
            max_length=self.max_length,
            hidden_size=self.hidden_size,
            num_segments=self.num_segments,
            dropout=self.dropout,
            use_user_embedding=self.use_user_embedding,
            user_dropout=self.user_dropout,
        )
        return config
