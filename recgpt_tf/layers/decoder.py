"""The causal decoder block: masked multi-head self-attention and a two-layer FFN, pre- or post-LN."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.errors import ConfigError, check_choice


@keras.utils.register_keras_serializable(package="recgpt_tf")
class CausalDecoderBlock(keras.layers.Layer):
    """A causal self-attention block; position t attends to positions 1..t only.

    Every argument is required: the block is built by `RecGPTBackbone`, whose defaults are `ModelConfig`'s.

    "pre" layer norm (GPT-2): x + Attn(LN(x)), then x + FFN(LN(x)).
    "post" layer norm (the original Transformer, SASRec as RecBole builds it):
    LN(x + Attn(x)), then LN(x + FFN(x)).
    "sasrec" (the original SASRec code, and Xu et al.'s): only the attention's query is normalised,
    y = LN(x + Attn(q=LN(x), k=x, v=x)), then y + FFN(y).

    Batches are right-padded, so the causal mask alone keeps padding out of every
    real position: padding only ever follows the tokens that matter.

    Args:
        hidden_size: Width d.
        num_heads: Attention heads; d must divide evenly.
        intermediate_size: FFN inner width.
        dropout: Dropout on both residual branches.
        attention_dropout: Dropout on the attention weights.
        activation: FFN activation, "relu" (the paper) or "gelu".
        layer_norm: "pre" or "post".
        init_stddev: 0 initialises the projections Glorot-uniform (Keras' default);
            > 0 draws them from a truncated normal with this deviation (BERT, SASRec).
    """

    ACTIVATIONS = ("relu", "gelu")
    LAYER_NORMS = ("pre", "post", "sasrec")

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        *,
        dropout: float,
        attention_dropout: float,
        activation: str,
        layer_norm: str,
        init_stddev: float,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ConfigError("hidden_size", f"({hidden_size}) must be divisible by num_heads ({num_heads})")
        check_choice("activation", activation, self.ACTIVATIONS)
        check_choice("layer_norm", layer_norm, self.LAYER_NORMS)
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.layer_norm = layer_norm
        self.init_stddev = init_stddev
        init = lambda: keras.initializers.TruncatedNormal(stddev=init_stddev) if init_stddev else "glorot_uniform"  # noqa: E731
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads,
            key_dim=hidden_size // num_heads,
            dropout=attention_dropout,
            kernel_initializer=init(),
            name="attention",
        )
        self.attention_output_dropout = keras.layers.Dropout(dropout, name="attention_output_dropout")
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.ffn_inner = keras.layers.Dense(intermediate_size, activation=activation, kernel_initializer=init(), name="ffn_inner")
        self.ffn_outer = keras.layers.Dense(hidden_size, kernel_initializer=init(), name="ffn_outer")
        self.ffn_dropout = keras.layers.Dropout(dropout, name="ffn_dropout")

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Args: x: [B, T, d]. Returns: [B, T, d]."""
        if self.layer_norm == "sasrec":
            y = self.attention(self.attention_norm(x), x, x, use_causal_mask=True, training=training)  # (B, T, d)
            x = self.ffn_norm(x + self.attention_output_dropout(y, training=training))
            y = self.ffn_outer(self.ffn_inner(x))  # (B, T, d)
            return x + self.ffn_dropout(y, training=training)
        if self.layer_norm == "post":
            y = self.attention(x, x, use_causal_mask=True, training=training)  # (B, T, d)
            x = self.attention_norm(x + self.attention_output_dropout(y, training=training))
            y = self.ffn_outer(self.ffn_inner(x))  # (B, T, d)
            return self.ffn_norm(x + self.ffn_dropout(y, training=training))
        y = self.attention_norm(x)
        y = self.attention(y, y, use_causal_mask=True, training=training)  # (B, T, d)
        x = x + self.attention_output_dropout(y, training=training)
        y = self.ffn_outer(self.ffn_inner(self.ffn_norm(x)))  # (B, T, d)
        return x + self.ffn_dropout(y, training=training)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            hidden_size=self.hidden_size,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            activation=self.activation,
            layer_norm=self.layer_norm,
            init_stddev=self.init_stddev,
        )
        return config
