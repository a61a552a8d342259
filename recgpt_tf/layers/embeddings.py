"""Input embeddings: item + position + user ("user module") + segment (paper section 1)."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.errors import check_choice


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
        num_items: Known items N; the table has N + 2 rows (0 padding, N+1 OOV).
        num_users: Known users U; the table has U + 1 rows (0 = OOV user).
        max_length: Number of positions.
        hidden_size: Width d.
        num_segments: Segment vocabulary (0 real item, 1 prompt).
        dropout: Dropout rate on the summed embedding.
        use_user_embedding: Whether to add the user embedding.
        user_dropout: Training-time probability of replacing a user by the OOV user.
        scale_items: Multiply item embeddings by √d on input (False: RecBole's SASRec).
        normalize: Layer-normalise the sum before dropout (what post-LN decoders
            need: their blocks never normalise the residual stream's input).
        position_mode: "from_start" numbers tokens 0..T-1 from the first kept
            token; "from_end" numbers them so the last real token is always
            `max_length - 1` (SASRec's left-aligned positions: a position says how
            recent a token is). Either way a token's position depends only on the
            sequence length, never on later items, so causality holds.
    """

    POSITION_MODES = ("from_start", "from_end")

    def __init__(
        self,
        num_items: int,
        num_users: int,
        max_length: int,
        hidden_size: int,
        *,
        num_segments: int,
        dropout: float,
        use_user_embedding: bool,
        user_dropout: float,
        position_mode: str,
        normalize: bool,
        scale_items: bool,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        check_choice("position_mode", position_mode, self.POSITION_MODES)
        self.position_mode = position_mode
        self.num_items = num_items
        self.num_users = num_users
        self.max_length = max_length
        self.hidden_size = hidden_size
        self.num_segments = num_segments
        self.dropout = dropout
        self.use_user_embedding = use_user_embedding
        self.user_dropout = user_dropout
        self.normalize = normalize
        self.scale_items = scale_items
        init = lambda: keras.initializers.TruncatedNormal(stddev=0.02)  # noqa: E731 (one instance per table)
        self.item_embedding = keras.layers.Embedding(num_items + 2, hidden_size, embeddings_initializer=init(), name="item_embedding")
        self.position_embedding = keras.layers.Embedding(max_length, hidden_size, embeddings_initializer=init(), name="position_embedding")
        self.segment_embedding = keras.layers.Embedding(num_segments, hidden_size, embeddings_initializer="zeros", name="segment_embedding")
        self.user_embedding = (
            keras.layers.Embedding(num_users + 1, hidden_size, embeddings_initializer=init(), name="user_embedding")
            if use_user_embedding
            else None
        )
        self.embedding_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="embedding_norm") if normalize else None
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
        x = self.item_embedding(item_ids)  # (B, T, d)
        if self.scale_items:
            x *= math.sqrt(self.hidden_size)
        if self.position_mode == "from_end":
            first = left_padding(item_ids, self.max_length)[:, tf.newaxis]  # (B, 1): where the row starts, left-padded
            positions = tf.clip_by_value(first + tf.range(length)[tf.newaxis], 0, self.max_length - 1)
            x += self.position_embedding(positions)  # (B, T, d)
        else:
            x += self.position_embedding(tf.range(length))[tf.newaxis]  # (1, T, d)
        x += self.segment_embedding(segment_ids)
        if self.user_embedding is not None:
            if training and self.user_dropout > 0:
                drop = tf.random.uniform(tf.shape(user_id)) < self.user_dropout
                user_id = tf.where(drop, tf.zeros_like(user_id), user_id)
            x += self.user_embedding(user_id)[:, tf.newaxis, :]  # (B, 1, d)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
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
            position_mode=self.position_mode,
            normalize=self.normalize,
            scale_items=self.scale_items,
        )
        return config
