"""The causal decoder block: masked multi-head self-attention and a two-layer FFN, pre- or post-LN."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import resolve_filter_mix
from recgpt_tf.errors import ConfigError, check_choice
from recgpt_tf.layers.low_pass import CausalLowPassFilter


def slot_dropout_scale(slots: tf.Tensor, shape: tf.Tensor, rate: float) -> tf.Tensor:
    """Dropout of `slots` equal attention slots, each dropped on its own: the share of them kept, over the
    expected share (Binomial(slots, 1 - rate) / (slots · (1 - rate))), one draw per element of `shape`.

    Args:
        slots: [B] int, the slots of each row; `shape` starts with B.
        shape: The shape of the draws, e.g. (B, N, T) for every head and query position.
        rate: Dropout rate of each slot.
    """
    shape = tf.convert_to_tensor(shape, tf.int32)
    per_row = tf.reshape(slots, tf.concat([[-1], tf.ones_like(shape[1:])], axis=0))  # (B, 1, ...)
    most = tf.reduce_max(slots)
    draws = tf.random.uniform(tf.concat([shape, [most]], axis=0)) >= rate  # (*shape, most): slot kept
    exists = tf.range(most) < per_row[..., tf.newaxis]  # (B, 1, ..., most)
    kept = tf.reduce_sum(tf.cast(draws & exists, tf.float32), axis=-1)
    return kept / (tf.maximum(tf.cast(per_row, tf.float32), 1.0) * (1.0 - rate))


@keras.utils.register_keras_serializable(package="recgpt_tf")
class PaddingSinkAttention(keras.layers.MultiHeadAttention):
    """Causal attention that also sees the empty slots of a left padding, as SASRec's PyTorch code (the
    one Xu et al. run) computes it.

    That code left-pads every sequence to `max_length`, zeroes the padded positions before each block and
    masks only the future (the original TensorFlow SASRec masks padded keys; the PyTorch port does not), so
    a real position also attends to every padded one: a slot whose key and value are the projections'
    biases (the projections of a zero vector). A row with L real tokens has `max_length - L` such slots,
    which all score alike: one extra logit, q·b_k/√d_k + log(max_length - L), whose weight goes to b_v.
    In training each slot's weight is dropped on its own, as the padded slots' are (`slot_dropout_scale`).
    That is what this layer adds to the causal attention of right-padded rows; without dropout the result
    equals the left-padded attention at every real position (tests/test_model.py), without the padding's
    cost.
    """

    def call(
        self,
        query,
        value,
        key=None,
        attention_mask=None,
        return_attention_scores=False,
        training=None,
        use_causal_mask=False,
        *,
        empty_slots,
    ):
        """As `MultiHeadAttention.call`; `empty_slots` [B] int: each row's padded slots."""
        self._empty_slots = empty_slots  # read by _compute_attention, inside this call
        try:
            return super().call(
                query,
                value,
                key,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
                use_causal_mask=use_causal_mask,
            )
        finally:
            self._empty_slots = None

    def _compute_attention(self, query, key, value, attention_mask=None, training=None):
        """`MultiHeadAttention._compute_attention` with the empty slots as one more logit (see the class)."""
        query = tf.multiply(query, 1.0 / math.sqrt(float(self._key_dim)))  # (B, T, N, H)
        scores = tf.einsum(self._dot_product_equation, key, query)  # (B, N, T, S)
        if attention_mask is not None:
            scores += (1.0 - tf.cast(attention_mask[:, tf.newaxis], scores.dtype)) * -1e9
        slots = tf.cast(self._empty_slots, scores.dtype)[:, tf.newaxis, tf.newaxis]  # (B, 1, 1)
        sink = tf.einsum("btnh,nh->bnt", query, self._key_dense.bias)  # (B, N, T)
        sink += tf.where(slots > 0, tf.math.log(tf.maximum(slots, 1.0)), -1e9)
        weights = tf.nn.softmax(tf.concat([scores, sink[..., tf.newaxis]], axis=-1))  # (B, N, T, S + 1)
        attended = self._dropout_layer(weights[..., :-1], training=training)
        sunk = weights[..., -1]
        if training and self._dropout > 0:
            sunk *= slot_dropout_scale(self._empty_slots, tf.shape(sunk), self._dropout)
        output = tf.einsum(self._combine_equation, attended, value)  # (B, T, N, H)
        output += tf.einsum("bnt,nh->btnh", sunk, self._value_dense.bias)
        return output, weights[..., :-1]


@keras.utils.register_keras_serializable(package="recgpt_tf")
class CausalDecoderBlock(keras.layers.Layer):
    """A causal self-attention block; position t attends to positions 1..t only.

    Every argument is required: the block is built by `RecGPTBackbone`, whose defaults are `ModelConfig`'s.

    "pre" layer norm (GPT-2): x + Attn(LN(x)), then x + FFN(LN(x)).
    "post" layer norm (the original Transformer, SASRec as RecBole builds it):
    LN(x + Attn(x)), then LN(x + FFN(x)).
    "sasrec" (SASRec as Xu et al.'s PyTorch code builds it): only the attention's query is normalised,
    y = LN(x + Attn(q=LN(x), k=x, v=x)), then y + FFN(y), with SASRec's dropouts (attention weights, the
    FFN's inner and outer activations; none on the attention output) and its left padding's empty
    slots (`PaddingSinkAttention`).
    With `filter_mix` α > 0 ("post" only), BSARec's block: the attention branch's output is mixed with a
    causal low-pass filter branch of the same input, α·Filter(x) + (1 - α)·LN(x + Attn(x))
    (`CausalLowPassFilter`), before the FFN.

    Batches are right-padded, so the causal mask alone keeps padding out of every
    real position: padding only ever follows the tokens that matter.

    Args:
        hidden_size: Width d.
        num_heads: Attention heads; d must divide evenly.
        intermediate_size: FFN inner width.
        dropout: Dropout on both residual branches ("sasrec": on the FFN's inner and outer activations).
        attention_dropout: Dropout on the attention weights.
        activation: FFN activation, "relu" (the paper) or "gelu".
        layer_norm: "pre", "post" or "sasrec".
        max_length: Positions the filter branch is defined over (the model's `max_length`).
        filter_mix: Weight α of the low-pass filter branch; 0 builds none (plain attention), None is the
            layout's own (`config.resolve_filter_mix`).
        filter_frequencies: Frequency bins the filter keeps (`CausalLowPassFilter`).
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
        max_length: int,
        filter_mix: float | None,
        filter_frequencies: int,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ConfigError("hidden_size", f"({hidden_size}) must be divisible by num_heads ({num_heads})")
        check_choice("activation", activation, self.ACTIVATIONS)
        check_choice("layer_norm", layer_norm, self.LAYER_NORMS)
        filter_mix = resolve_filter_mix(filter_mix, layer_norm)
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.layer_norm = layer_norm
        self.init_stddev = init_stddev
        self.max_length = max_length
        self.filter_mix = filter_mix
        self.filter_frequencies = filter_frequencies
        init = lambda: keras.initializers.TruncatedNormal(stddev=init_stddev) if init_stddev else "glorot_uniform"  # noqa: E731
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = (PaddingSinkAttention if layer_norm == "sasrec" else keras.layers.MultiHeadAttention)(
            num_heads=num_heads,
            key_dim=hidden_size // num_heads,
            dropout=attention_dropout,
            kernel_initializer=init(),
            name="attention",
        )
        # SASRec's block drops no attention output (its FFN dropouts stand in).
        self.attention_output_dropout = None if layer_norm == "sasrec" else keras.layers.Dropout(dropout, name="attention_output_dropout")
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.ffn_inner = keras.layers.Dense(intermediate_size, activation=activation, kernel_initializer=init(), name="ffn_inner")
        self.ffn_outer = keras.layers.Dense(hidden_size, kernel_initializer=init(), name="ffn_outer")
        self.ffn_dropout = keras.layers.Dropout(dropout, name="ffn_dropout")
        self.low_pass = CausalLowPassFilter(max_length, filter_frequencies, dropout, name="low_pass") if filter_mix else None

    def call(self, x: tf.Tensor, empty_slots: tf.Tensor | None = None, training: bool | None = None) -> tf.Tensor:
        """Args: x: [B, T, d]; empty_slots: [B] int, "sasrec" only: the left padding each row would have
        at `max_length` (`PaddingSinkAttention`). Returns: [B, T, d]."""
        if self.layer_norm == "sasrec":
            if empty_slots is None:
                raise ConfigError("empty_slots", 'a layer_norm="sasrec" block needs each row\'s empty slots (RecGPTBackbone passes them)')
            y = self.attention(self.attention_norm(x), x, x, empty_slots=empty_slots, use_causal_mask=True, training=training)
            x = self.ffn_norm(x + y)  # (B, T, d)
            y = self.ffn_outer(self.ffn_dropout(self.ffn_inner(x), training=training))  # (B, T, d)
            return x + self.ffn_dropout(y, training=training)
        if self.layer_norm == "post":
            y = self.attention(x, x, use_causal_mask=True, training=training)  # (B, T, d)
            y = self.attention_norm(x + self.attention_output_dropout(y, training=training))
            x = y if self.low_pass is None else self.filter_mix * self.low_pass(x, training=training) + (1.0 - self.filter_mix) * y
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
            max_length=self.max_length,
            filter_mix=self.filter_mix,
            filter_frequencies=self.filter_frequencies,
        )
        return config
