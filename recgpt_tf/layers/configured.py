"""The base of the layers built from one `ModelConfig` passed whole (nanoGPT's `Block(config)`)."""

from __future__ import annotations

import tf_keras as keras

from recgpt_tf.config import ModelConfig

_KERAS_KEYS = ("name", "trainable", "dtype", "dynamic", "batch_input_shape")  # Keras' own, beside the config's


class ConfiguredLayer(keras.layers.Layer):
    """A layer of the model built from `config`, which it keeps as `self.config`; its Keras config is the
    config's dict beside Keras' own keys, and `from_config` rebuilds the same `ModelConfig` (a lab's included).

    Args:
        config: The architecture (`ModelConfig`, checked and resolved there).
    """

    def __init__(self, config: ModelConfig, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config

    def get_config(self) -> dict:
        return {**super().get_config(), **self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict) -> "ConfiguredLayer":
        keras_config = {key: config[key] for key in _KERAS_KEYS if key in config}
        return cls(ModelConfig.from_dict({k: v for k, v in config.items() if k not in _KERAS_KEYS}), **keras_config)
