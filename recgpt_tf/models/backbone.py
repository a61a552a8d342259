"""RecGPTBackbone: (user, item ids, segment ids) → hidden states, the GPT decoder of the paper."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig, resolve_filter_mix
from recgpt_tf.data.features import ITEM_IDS, SEGMENT_IDS, USER_ID
from recgpt_tf.layers import CausalDecoderBlock, RecGPTEmbedding, left_padding


@keras.utils.register_keras_serializable(package="recgpt_tf")
class RecGPTBackbone(keras.layers.Layer):
    """Embeddings, `num_layers` causal decoder blocks and a layer norm.

    The defaults are `ModelConfig`'s (the one source of every architecture default).

    Hidden state h_t (position t) summarises items 1..t and is trained to predict
    item t+1. Arguments are those of `RecGPTEmbedding` and `CausalDecoderBlock`;
    with `layer_norm="pre"` the stack ends in a final layer norm, with "post" the
    embeddings are normalised instead (the blocks already normalise their output).
    """

    def __init__(
        self,
        num_items: int,
        num_users: int,
        max_length: int = ModelConfig.max_length,
        hidden_size: int = ModelConfig.hidden_size,
        num_layers: int = ModelConfig.num_layers,
        num_heads: int = ModelConfig.num_heads,
        intermediate_size: int = ModelConfig.intermediate_size,
        dropout: float = ModelConfig.dropout,
        attention_dropout: float = ModelConfig.attention_dropout,
        activation: str = ModelConfig.activation,
        layer_norm: str = ModelConfig.layer_norm,
        init_stddev: float = ModelConfig.init_stddev,
        scale_items: bool = ModelConfig.scale_items,
        use_user_embedding: bool = ModelConfig.use_user_embedding,
        user_dropout: float = ModelConfig.user_dropout,
        num_segments: int = ModelConfig.num_segments,
        position_mode: str = ModelConfig.position_mode,
        filter_mix: float | None = ModelConfig.filter_mix,
        filter_frequencies: int = ModelConfig.filter_frequencies,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.num_items = num_items
        self.num_users = num_users
        self.max_length = max_length
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.layer_norm = layer_norm
        self.init_stddev = init_stddev
        self.scale_items = scale_items
        self.use_user_embedding = use_user_embedding
        self.user_dropout = user_dropout
        self.num_segments = num_segments
        self.position_mode = position_mode
        self.filter_mix = resolve_filter_mix(filter_mix, layer_norm)  # recorded resolved, as ModelConfig records it
        self.filter_frequencies = filter_frequencies
        self.embedding = RecGPTEmbedding(
            num_items=num_items,
            num_users=num_users,
            max_length=max_length,
            hidden_size=hidden_size,
            num_segments=num_segments,
            dropout=dropout,
            use_user_embedding=use_user_embedding,
            user_dropout=user_dropout,
            position_mode=position_mode,
            normalize=layer_norm == "post",
            scale_items=scale_items,
            name="embedding",
        )
        self.blocks = [
            CausalDecoderBlock(
                hidden_size,
                num_heads,
                intermediate_size,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation=activation,
                layer_norm=layer_norm,
                init_stddev=init_stddev,
                max_length=max_length,
                filter_mix=filter_mix,
                filter_frequencies=filter_frequencies,
                name=f"decoder_block_{i}",
            )
            for i in range(num_layers)
        ]
        # Pre-LN and SASRec's layout leave the stream unnormalised after the last block: a final norm closes it.
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm") if layer_norm in ("pre", "sasrec") else None

    @property
    def item_table(self) -> tf.Variable:
        """[N + 2, d] item embeddings (row 0 padding, row N+1 OOV)."""
        return self.embedding.item_embedding.embeddings

    def call(self, inputs: dict[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Args:
            inputs: `user_id` [B], `item_ids` [B, T] right-padded with 0, and
                optionally `segment_ids` [B, T] (zeros when absent).

        Returns:
            [B, T, d] hidden states; rows past each sequence's length are padding.
        """
        item_ids = tf.cast(inputs[ITEM_IDS], tf.int32)
        segment_ids = inputs.get(SEGMENT_IDS)
        segment_ids = tf.zeros_like(item_ids) if segment_ids is None else tf.cast(segment_ids, tf.int32)
        x = self.embedding(tf.cast(inputs[USER_ID], tf.int32), item_ids, segment_ids, training=training)
        # SASRec's layout also attends to the left padding a row would have at max_length (PaddingSinkAttention).
        empty_slots = left_padding(item_ids, self.max_length) if self.layer_norm == "sasrec" else None
        for block in self.blocks:
            x = block(x, empty_slots=empty_slots, training=training)
        return x if self.final_norm is None else self.final_norm(x)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_items=self.num_items,
            num_users=self.num_users,
            max_length=self.max_length,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            activation=self.activation,
            layer_norm=self.layer_norm,
            init_stddev=self.init_stddev,
            scale_items=self.scale_items,
            use_user_embedding=self.use_user_embedding,
            user_dropout=self.user_dropout,
            num_segments=self.num_segments,
            position_mode=self.position_mode,
            filter_mix=self.filter_mix,
            filter_frequencies=self.filter_frequencies,
        )
        return config


def gather_last(hidden: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """Picks each row's hidden state at its last real position.

    Args:
        hidden: [B, T, d].
        lengths: [B] sequence lengths (>= 1).

    Returns:
        [B, d].
    """
    index = tf.maximum(tf.cast(lengths, tf.int32) - 1, 0)
    return tf.gather(hidden, index, batch_dims=1)
