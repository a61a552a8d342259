"""The causal decoder block: masked multi-head self-attention beside a low-pass filter branch, then a two-layer
FFN, each normalised after its residual (post-LN)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig
from recgpt_tf.layers.configured import ConfiguredLayer
from recgpt_tf.layers.low_pass import CausalLowPassFilter


@keras.utils.register_keras_serializable(package="recgpt_tf")
class CausalDecoderBlock(ConfiguredLayer):
    """A causal self-attention block; position t attends to positions 1..t only.

    The post-LN layout (the original Transformer, SASRec as RecBole builds it): y = LN(x + Attn(x)), then
    LN(y + FFN(y)). With `filter_mix` α > 0, BSARec's block: the attention branch's output is mixed with a
    causal low-pass filter branch of the same input, y = α·Filter(x) + (1 - α)·LN(x + Attn(x))
    (`CausalLowPassFilter`), before the FFN.

    Batches are right-padded, so the causal mask alone keeps padding out of every
    real position: padding only ever follows the tokens that matter.

    Args:
        config: The architecture (`ModelConfig`, checked and resolved there): hidden_size, num_heads,
            intermediate_size, dropout, attention_dropout, init_stddev (0: Glorot-uniform projections, > 0 a
            truncated normal of this deviation), max_length, filter_mix and filter_frequencies.
    """

    def __init__(self, config: ModelConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        d = config.hidden_size
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=config.num_heads,
            key_dim=d // config.num_heads,
            dropout=config.attention_dropout,
            kernel_initializer=self.initializer(),
            name="attention",
        )
        self.attention_output_dropout = keras.layers.Dropout(config.dropout, name="attention_output_dropout")
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.ffn_inner = keras.layers.Dense(
            config.intermediate_size, activation="relu", kernel_initializer=self.initializer(), name="ffn_inner"
        )
        self.ffn_outer = keras.layers.Dense(d, kernel_initializer=self.initializer(), name="ffn_outer")
        self.ffn_dropout = keras.layers.Dropout(config.dropout, name="ffn_dropout")
        self.low_pass = (
            CausalLowPassFilter(config.max_length, config.filter_frequencies, config.dropout, name="low_pass")
            if config.filter_mix
            else None
        )

    def initializer(self) -> keras.initializers.Initializer | str:
        """A new initializer of the attention and FFN projections (`init_stddev`)."""
        stddev = self.config.init_stddev
        return keras.initializers.TruncatedNormal(stddev=stddev) if stddev else "glorot_uniform"

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Args: x: [B, T, d]. Returns: [B, T, d]."""
        y = self.attention(x, x, use_causal_mask=True, training=training)  # (B, T, d)
        y = self.attention_norm(x + self.attention_output_dropout(y, training=training))
        if self.low_pass is not None:
            alpha = self.config.filter_mix
            y = alpha * self.low_pass(x, training=training) + (1.0 - alpha) * y
        z = self.ffn_outer(self.ffn_inner(y))  # (B, T, d)
        return self.ffn_norm(y + self.ffn_dropout(z, training=training))
