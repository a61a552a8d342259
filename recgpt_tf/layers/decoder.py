"""The causal decoder block: masked multi-head self-attention and a ReLU FFN (pre-LN)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.utils.register_keras_serializable(package="recgpt_tf")
class CausalDecoderBlock(keras.layers.Layer):
    """x + Attn(LN(x)) then x + FFN(LN(x)); position t attends to positions 1..t only.

    Batches are right-padded, so the causal mask alone keeps padding out of every
    real position: padding only ever follows the tokens that matter.

    Args:
        hidden_size: Width d.
        num_heads: Attention heads; d must divide evenly.
        intermediate_size: FFN inner width.
        dropout: Dropout on attention weights and on both residual branches.
    """

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads, key_dim=hidden_size // num_heads, dropout=dropout, name="attention"
        )
        self.attention_dropout = keras.layers.Dropout(dropout, name="attention_output_dropout")
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.ffn_inner = keras.layers.Dense(intermediate_size, activation="relu", name="ffn_inner")
        self.ffn_outer = keras.layers.Dense(hidden_size, name="ffn_outer")
        self.ffn_dropout = keras.layers.Dropout(dropout, name="ffn_dropout")

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Args: x: [B, T, d]. Returns: [B, T, d]."""
        y = self.attention_norm(x)
        y = self.attention(y, y, use_causal_mask=True, training=training)  # (B, T, d)
        x = x + self.attention_dropout(y, training=training)
        y = self.ffn_outer(self.ffn_inner(self.ffn_norm(x)))  # (B, T, d)
        return x + self.ffn_dropout(y, training=training)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            dropout=self.dropout,
        )
        return config
