"""The causal decoder block: masked multi-head self-attention and a two-layer FFN, pre- or post-LN."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig
from recgpt_tf.errors import ConfigError
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
        config: The architecture (`ModelConfig`, checked and resolved there): hidden_size, num_heads,
            intermediate_size, dropout ("sasrec": on the FFN's inner and outer activations),
            attention_dropout, activation, layer_norm, init_stddev (0: Glorot-uniform projections, > 0 a
            truncated normal of this deviation), max_length, filter_mix and filter_frequencies.
    """

    def __init__(self, config: ModelConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        d, stddev = config.hidden_size, config.init_stddev
        init = lambda: keras.initializers.TruncatedNormal(stddev=stddev) if stddev else "glorot_uniform"  # noqa: E731
        self.attention_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = (PaddingSinkAttention if config.layer_norm == "sasrec" else keras.layers.MultiHeadAttention)(
            num_heads=config.num_heads,
            key_dim=d // config.num_heads,
            dropout=config.attention_dropout,
            kernel_initializer=init(),
            name="attention",
        )
        # SASRec's block drops no attention output (its FFN dropouts stand in).
        sasrec = config.layer_norm == "sasrec"
        self.attention_output_dropout = None if sasrec else keras.layers.Dropout(config.dropout, name="attention_output_dropout")
        self.ffn_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.ffn_inner = keras.layers.Dense(
            config.intermediate_size, activation=config.activation, kernel_initializer=init(), name="ffn_inner"
        )
        self.ffn_outer = keras.layers.Dense(d, kernel_initializer=init(), name="ffn_outer")
        self.ffn_dropout = keras.layers.Dropout(config.dropout, name="ffn_dropout")
        self.low_pass = (
            CausalLowPassFilter(config.max_length, config.filter_frequencies, config.dropout, name="low_pass")
            if config.filter_mix
            else None
        )

    def call(self, x: tf.Tensor, empty_slots: tf.Tensor | None = None, training: bool | None = None) -> tf.Tensor:
        """Args: x: [B, T, d]; empty_slots: [B] int, "sasrec" only: the left padding each row would have
        at `max_length` (`PaddingSinkAttention`). Returns: [B, T, d]."""
        if self.config.layer_norm == "sasrec":
            if empty_slots is None:
                raise ConfigError("empty_slots", 'a layer_norm="sasrec" block needs each row\'s empty slots (RecGPTBackbone passes them)')
            y = self.attention(self.attention_norm(x), x, x, empty_slots=empty_slots, use_causal_mask=True, training=training)
            x = self.ffn_norm(x + y)  # (B, T, d)
            y = self.ffn_outer(self.ffn_dropout(self.ffn_inner(x), training=training))  # (B, T, d)
            return x + self.ffn_dropout(y, training=training)
        if self.config.layer_norm == "post":
            y = self.attention(x, x, use_causal_mask=True, training=training)  # (B, T, d)
            y = self.attention_norm(x + self.attention_output_dropout(y, training=training))
            x = (
                y
                if self.low_pass is None
                else self.config.filter_mix * self.low_pass(x, training=training) + (1.0 - self.config.filter_mix) * y
            )
            y = self.ffn_outer(self.ffn_inner(x))  # (B, T, d)
            return self.ffn_norm(x + self.ffn_dropout(y, training=training))
        y = self.attention_norm(x)
        y = self.attention(y, y, use_causal_mask=True, training=training)  # (B, T, d)
        x = x + self.attention_output_dropout(y, training=training)
        y = self.ffn_outer(self.ffn_inner(self.ffn_norm(x)))  # (B, T, d)
        return x + self.ffn_dropout(y, training=training)

    def get_config(self) -> dict:
        return {**super().get_config(), **self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict) -> "CausalDecoderBlock":
        model_config, keras_config = ModelConfig.from_layer_config(config)
        return cls(model_config, **keras_config)
