"""RecGPTBackbone: (user, item ids, segment ids) → hidden states, the GPT decoder of the paper."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig
from recgpt_tf.data.features import ITEM_IDS, SEGMENT_IDS, USER_ID
from recgpt_tf.layers import CausalDecoderBlock, RecGPTEmbedding, left_padding


@keras.utils.register_keras_serializable(package="recgpt_tf")
class RecGPTBackbone(keras.layers.Layer):
    """Embeddings, `num_layers` causal decoder blocks and, in the pre-LN and SASRec layouts, a final layer norm.

    Hidden state h_t (position t) summarises items 1..t and is trained to predict item t+1. One
    `ModelConfig` (checked and resolved there) is passed whole to the embedding and every block; its dict
    is this layer's config.

    Args:
        config: The architecture.
    """

    def __init__(self, config: ModelConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.embedding = RecGPTEmbedding(config, name="embedding")
        self.blocks = [CausalDecoderBlock(config, name=f"decoder_block_{i}") for i in range(config.num_layers)]
        # Pre-LN and SASRec's layout leave the stream unnormalised after the last block: a final norm closes it.
        closed = config.layer_norm in ("pre", "sasrec")
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm") if closed else None

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def max_length(self) -> int:
        return self.config.max_length

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
        empty_slots = left_padding(item_ids, self.config.max_length) if self.config.layer_norm == "sasrec" else None
        for block in self.blocks:
            x = block(x, empty_slots=empty_slots, training=training)
        return x if self.final_norm is None else self.final_norm(x)

    def get_config(self) -> dict:
        return {**super().get_config(), **self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict) -> "RecGPTBackbone":
        model_config, keras_config = ModelConfig.from_layer_config(config)
        return cls(model_config, **keras_config)


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
