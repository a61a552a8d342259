"""RecGPTBackbone: (user, item ids, segment ids) → hidden states, the GPT decoder of the paper."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig
from recgpt_tf.data.features import ITEM_IDS, SEGMENT_IDS, USER_ID
from recgpt_tf.errors import ConfigError
from recgpt_tf.layers import CausalDecoderBlock, ItemRows, RecGPTEmbedding
from recgpt_tf.layers.configured import ConfiguredLayer


@keras.utils.register_keras_serializable(package="recgpt_tf")
class RecGPTBackbone(ConfiguredLayer):
    """Embeddings and `num_layers` causal decoder blocks.

    Hidden state h_t (position t) summarises items 1..t and is trained to predict item t+1. One
    `ModelConfig` (checked and resolved there) is passed whole to the embedding and every block; its dict
    is this layer's config.

    Args:
        config: The architecture: a `ModelConfig` of exactly `config_class` (`backbone_for` picks the
            backbone of a subclass's).
    """

    config_class = ModelConfig

    def __init__(self, config: ModelConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.embedding = RecGPTEmbedding(config, name="embedding")
        self.blocks = [CausalDecoderBlock(config, name=f"decoder_block_{i}") for i in range(config.num_layers)]

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def max_length(self) -> int:
        return self.config.max_length

    @property
    def item_table(self) -> tf.Variable | tf.Tensor:
        """[N + 2, d] item embeddings (row 0 padding, row N+1 OOV): the id table, or with item features each
        id row plus its item's mean feature row (`RecGPTEmbedding.item_rows`)."""
        return self.embedding.item_rows(whole=True).table()

    def call(self, inputs: dict[str, tf.Tensor], training: bool | None = None, step_rows: ItemRows | None = None) -> tf.Tensor:
        """Args:
            inputs: `user_id` [B], `item_ids` [B, T] right-padded with 0, and
                optionally `segment_ids` [B, T] (zeros when absent).
            step_rows: The step's item rows, where the caller reads them too (`RecGPTEmbedding.call`).

        Returns:
            [B, T, d] hidden states; rows past each sequence's length are padding.
        """
        item_ids = tf.cast(inputs[ITEM_IDS], tf.int32)
        segment_ids = inputs.get(SEGMENT_IDS)
        segment_ids = tf.zeros_like(item_ids) if segment_ids is None else tf.cast(segment_ids, tf.int32)
        x = self.embedding(tf.cast(inputs[USER_ID], tf.int32), item_ids, segment_ids, training=training, step_rows=step_rows)
        return self.decode(x, item_ids, training=training)

    def decode(self, x: tf.Tensor, item_ids: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """The blocks over the embedded batch `x` [B, T, d]; `item_ids` [B, T] are there for a subclass whose
        blocks need more of the batch than its embedding (a lab's). Returns: [B, T, d]."""
        for block in self.blocks:
            x = block(x, training=training)
        return x


def backbone_for(config: ModelConfig, **kwargs) -> RecGPTBackbone:
    """The backbone of `config`'s class: `RecGPTBackbone`, or the subclass whose `config_class` it is (a lab's,
    defined where its config is)."""
    pending = [RecGPTBackbone]
    while pending:
        backbone = pending.pop()
        if backbone.config_class is type(config):
            return backbone(config, **kwargs)
        pending.extend(backbone.__subclasses__())
    raise ConfigError("config", f"no backbone is defined for {type(config).__name__}")


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
