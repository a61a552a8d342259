"""The lab's layouts of the decoder: GPT-2's pre-LN block, SASRec's own block (as Xu et al.'s PyTorch code
builds it), positions counted from the most recent item, and a GELU feed-forward.

Each lost its comparison with the product's block on the paper's validation splits (docs/results.md) and is
kept so the baselines that need it (benchmarks/seeds.py's SASRec-CE reproduction) and the ablations rerun.
`LabModelConfig` is a `ModelConfig` with these settings; `ModelConfig.from_dict` builds it for a run that
records `architecture: "lab"` once this module is imported, and `RecGPT` builds `LabBackbone` for it.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig
from recgpt_tf.errors import ConfigError, check_choice
from recgpt_tf.layers import CausalDecoderBlock, RecGPTEmbedding
from recgpt_tf.models.backbone import RecGPTBackbone

ACTIVATIONS = ("relu", "gelu")  # the feed-forward layer's
LAYER_NORMS = ("pre", "post", "sasrec")  # the block's layout
POSITION_MODES = ("from_start", "from_end")  # how positions are numbered


@dataclasses.dataclass
class LabModelConfig(ModelConfig):
    """A `ModelConfig` with the lab's layouts.

    Attributes:
        activation: Feed-forward activation, "relu" (the paper, the product) or "gelu".
        layer_norm: "pre" (GPT-2: normalise each block's input, then a final norm), "post" (the product's)
            or "sasrec" (SASRec as Xu et al.'s PyTorch code builds it: normalise the attention's query only,
            and the stream before the FFN; a final norm; its dropouts, and attention to its left padding's
            empty slots: `PaddingSinkAttention`). The filter branch is built for "post" only: `filter_mix`
            None is 0 in the others.
        position_mode: "from_start" (the product's) or "from_end": positions numbered so the last real
            token is always `max_length - 1` (SASRec's left-aligned positions: a position says how recent a
            token is). Either way a token's position depends only on the sequence length, never on later
            items, so causality holds.
    """

    ARCHITECTURE = "lab"

    activation: str = "relu"
    layer_norm: str = "post"
    position_mode: str = "from_start"

    def __post_init__(self) -> None:
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("layer_norm", self.layer_norm, LAYER_NORMS)
        check_choice("position_mode", self.position_mode, POSITION_MODES)
        if self.layer_norm != "post":
            if self.filter_mix:
                raise ConfigError(
                    "filter_mix",
                    f'the filter branch is built for layer_norm="post" (BSARec\'s block); got "{self.layer_norm}": set it to 0',
                )
            self.filter_mix = 0.0
        super().__post_init__()


def left_padding(item_ids: tf.Tensor, max_length: int) -> tf.Tensor:
    """[B] empty slots each right-padded row of `item_ids` ([B, T], 0 padding) would have if left-padded to
    `max_length`, as SASRec pads: its "from_end" positions start there, and its block attends to them."""
    return max_length - tf.reduce_sum(tf.cast(item_ids != 0, tf.int32), axis=1)


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


@keras.utils.register_keras_serializable(package="recgpt_tf.experimental")
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
    equals the left-padded attention at every real position (tests/test_experimental.py), without the padding's
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


@keras.utils.register_keras_serializable(package="recgpt_tf.experimental")
class LabDecoderBlock(CausalDecoderBlock):
    """The product's block in the lab's layouts (`LabModelConfig`).

    "pre" (GPT-2): x + Attn(LN(x)), then x + FFN(LN(x)).
    "sasrec" (SASRec as Xu et al.'s PyTorch code builds it): only the attention's query is normalised,
    y = LN(x + Attn(q=LN(x), k=x, v=x)), then y + FFN(y), with SASRec's dropouts (attention weights, the
    FFN's inner and outer activations; none on the attention output) and its left padding's empty
    slots (`PaddingSinkAttention`).
    "post": the product's block, with the lab's activation.
    """

    def __init__(self, config: LabModelConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        d = config.hidden_size
        if config.layer_norm == "sasrec":
            self.attention = PaddingSinkAttention(
                num_heads=config.num_heads,
                key_dim=d // config.num_heads,
                dropout=config.attention_dropout,
                kernel_initializer=self.initializer(),
                name="attention",
            )
            self.attention_output_dropout = None  # SASRec's block drops no attention output (its FFN dropouts stand in)
        if config.activation != "relu":
            self.ffn_inner = keras.layers.Dense(
                config.intermediate_size, activation=config.activation, kernel_initializer=self.initializer(), name="ffn_inner"
            )

    def call(self, x: tf.Tensor, empty_slots: tf.Tensor | None = None, training: bool | None = None) -> tf.Tensor:
        """Args: x: [B, T, d]; empty_slots: [B] int, "sasrec" only: the left padding each row would have
        at `max_length` (`PaddingSinkAttention`). Returns: [B, T, d]."""
        layout = self.config.layer_norm
        if layout == "post":
            return super().call(x, training=training)
        if layout == "sasrec":
            if empty_slots is None:
                raise ConfigError("empty_slots", 'a layer_norm="sasrec" block needs each row\'s empty slots (LabBackbone passes them)')
            y = self.attention(self.attention_norm(x), x, x, empty_slots=empty_slots, use_causal_mask=True, training=training)
            x = self.ffn_norm(x + y)  # (B, T, d)
            y = self.ffn_outer(self.ffn_dropout(self.ffn_inner(x), training=training))  # (B, T, d)
            return x + self.ffn_dropout(y, training=training)
        y = self.attention_norm(x)
        y = self.attention(y, y, use_causal_mask=True, training=training)  # (B, T, d)
        x = x + self.attention_output_dropout(y, training=training)
        y = self.ffn_outer(self.ffn_inner(self.ffn_norm(x)))  # (B, T, d)
        return x + self.ffn_dropout(y, training=training)


@keras.utils.register_keras_serializable(package="recgpt_tf.experimental")
class LabEmbedding(RecGPTEmbedding):
    """The product's embedding with the lab's positions ("from_end"), and no layer norm of the sum outside the
    post-LN layout (the pre-LN and SASRec blocks normalise their own input)."""

    def __init__(self, config: LabModelConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        if config.layer_norm != "post":
            self.embedding_norm = None

    def positions(self, item_ids: tf.Tensor) -> tf.Tensor:
        if self.config.position_mode == "from_start":
            return super().positions(item_ids)
        length = tf.shape(item_ids)[1]
        first = left_padding(item_ids, self.config.max_length)[:, tf.newaxis]  # (B, 1): where the row starts, left-padded
        positions = tf.clip_by_value(first + tf.range(length)[tf.newaxis], 0, self.config.max_length - 1)
        return self.position_embedding(positions)  # (B, T, d)

    def normalize(self, x: tf.Tensor) -> tf.Tensor:
        return x if self.embedding_norm is None else self.embedding_norm(x)


@keras.utils.register_keras_serializable(package="recgpt_tf.experimental")
class LabBackbone(RecGPTBackbone):
    """The backbone of a `LabModelConfig`: its embedding and blocks, and in the pre-LN and SASRec layouts, which
    leave the stream unnormalised after the last block, a final layer norm."""

    config_class = LabModelConfig

    def __init__(self, config: LabModelConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        self.embedding = LabEmbedding(config, name="embedding")
        self.blocks = [LabDecoderBlock(config, name=f"decoder_block_{i}") for i in range(config.num_layers)]
        closed = config.layer_norm in ("pre", "sasrec")
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm") if closed else None

    def decode(self, x: tf.Tensor, item_ids: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        # SASRec's layout also attends to the left padding a row would have at max_length (PaddingSinkAttention).
        empty_slots = left_padding(item_ids, self.config.max_length) if self.config.layer_norm == "sasrec" else None
        for block in self.blocks:
            x = block(x, empty_slots=empty_slots, training=training)
        return x if self.final_norm is None else self.final_norm(x)
