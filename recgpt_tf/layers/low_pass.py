"""A causal low-pass filter branch beside attention: BSARec's frequency layer, read at every position."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from recgpt_tf.errors import ConfigError


def low_pass_weights(max_length: int, frequencies: int) -> np.ndarray:
    """[max_length, max_length] lower-triangular weights W with (W x)_t = the ideal low-pass of the items up
    to t, left-padded with zeros to `max_length`, at its last position.

    BSARec (Shin et al., AAAI 2024) filters a left-padded sequence of `max_length` items in the frequency
    domain: keep the lowest `frequencies` bins of its real FFT, transform back. That is a circular convolution
    with the impulse response h = irfft(1 for the kept bins), and its last position, the one BSARec reads,
    weighs the item d steps back by h[d]. Read the same way at every position t of one causal pass, it weighs
    item s <= t by h[t - s]: the filter each prefix would get, without one FFT per prefix.
    """
    response = np.fft.irfft((np.arange(max_length // 2 + 1) < frequencies).astype(np.float64), n=max_length)
    lags = np.subtract.outer(np.arange(max_length), np.arange(max_length))  # t - s
    return np.where(lags >= 0, response[lags % max_length], 0.0).astype(np.float32)


@keras.utils.register_keras_serializable(package="recgpt_tf")
class CausalLowPassFilter(keras.layers.Layer):
    """LN(x + Dropout(low + β ⊙ (x - low))), low = the causal low-pass of x (`low_pass_weights`).

    BSARec's frequency branch: the low frequencies carry a user's lasting taste, and β (learned per
    dimension, as BSARec's β = sqrt_beta², drawn around 1) rescales the high frequencies, the recent
    changes. Causal, so it trains next-item prediction at every position as attention does; stock ops only
    (a matrix product), so TF Serving loads it. One difference from BSARec: the padded slots are zeros here,
    where BSARec's carry their position embeddings.

    Args:
        max_length: Positions the filter is defined over (the model's `max_length`).
        frequencies: Frequency bins kept, 1..max_length // 2 + 1 (1 keeps the sum of the items so far over
            max_length: the mean of the left-padded sequence, zeros included).
            BSARec's `c` keeps c // 2 + 1 bins: its c = 5 is 3 here.
        dropout: Dropout on the filtered branch.
    """

    def __init__(self, max_length: int, frequencies: int, dropout: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 1 <= frequencies <= max_length // 2 + 1:
            raise ConfigError("frequencies", f"must be in 1..{max_length // 2 + 1} (max_length // 2 + 1); got {frequencies}")
        self.max_length = max_length
        self.frequencies = frequencies
        self.dropout = dropout
        self._prefix_weights = low_pass_weights(max_length, frequencies)  # (max_length, max_length), row t: prefix t
        self.output_dropout = keras.layers.Dropout(dropout, name="output_dropout")
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")

    def build(self, input_shape) -> None:
        self.sqrt_beta = self.add_weight(
            name="sqrt_beta", shape=(input_shape[-1],), initializer=keras.initializers.RandomNormal(stddev=1.0), trainable=True
        )
        super().build(input_shape)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Args: x: [B, T, d], T <= max_length. Returns: [B, T, d]."""
        length = tf.shape(x)[1]
        weights = tf.cast(tf.constant(self._prefix_weights)[:length, :length], x.dtype)  # (T, T)
        low = tf.einsum("ts,bsd->btd", weights, x)
        beta = self.sqrt_beta * self.sqrt_beta  # a Mul: Square is not among the ops verified on stock TF Serving 2.16
        filtered = low + beta * (x - low)
        return self.norm(x + self.output_dropout(filtered, training=training))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(max_length=self.max_length, frequencies=self.frequencies, dropout=self.dropout)
        return config
