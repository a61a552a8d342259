"""Shared checks for the library's layers and models (keras-hub's TestCase helpers, as plain functions):
every layer is called, serialised and saved the same way, so a refactor of how settings reach a layer keeps
one safety net.

    run_layer_test(make, inputs)            called, its output's shape; serialised; a clone with its weights
    run_serialization_test(layer)           from_config(get_config()) is the same layer, JSON-storable
    run_model_saving_test(layer, inputs)    a SavedModel of it answers as it does
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tensorflow as tf


def _call(layer, inputs: Any, **kwargs):
    """`layer` on `inputs`: a tuple is spread as positional arguments, anything else (a tensor, a dict) passed whole."""
    return layer(*inputs, **kwargs) if isinstance(inputs, tuple) else layer(inputs, **kwargs)


def run_serialization_test(layer) -> None:
    """The config is JSON-storable and `from_config` rebuilds a layer with the very same config."""
    config = layer.get_config()
    assert json.loads(json.dumps(config)) == config, "get_config() must hold plain JSON values"
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


def run_layer_test(make: Callable[[], Any], inputs: Any, expected_shape: tuple | None = None) -> Any:
    """Builds `make()`, calls it on `inputs` (in inference and training), checks the output's shape and that it
    is finite, serialises it, and checks that a clone holding its weights gives identical outputs.

    Returns:
        The layer, built.
    """
    layer = make()
    output = _call(layer, inputs, training=False)
    assert np.isfinite(output.numpy()).all()
    if expected_shape is not None:
        assert tuple(output.shape) == tuple(expected_shape), (tuple(output.shape), expected_shape)
    assert tuple(_call(layer, inputs, training=True).shape) == tuple(output.shape)
    run_serialization_test(layer)
    clone = type(layer).from_config(layer.get_config())
    _call(clone, inputs, training=False)  # builds its weights
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(_call(clone, inputs, training=False).numpy(), output.numpy())
    return layer


def run_model_saving_test(layer, inputs: Any, path: Path, atol: float = 1e-6) -> None:
    """Saves a module whose traced function calls `layer` (as the exports do) and checks the loaded one
    answers as the layer does."""
    specs = tf.nest.map_structure(lambda t: tf.TensorSpec([None] * len(t.shape), tf.as_dtype(t.dtype)), inputs)
    module = tf.Module()
    module.layer = layer
    module.call = tf.function(lambda *args: _call(layer, args if isinstance(inputs, tuple) else args[0], training=False))
    module.call.get_concrete_function(*(specs if isinstance(inputs, tuple) else (specs,)))
    tf.saved_model.save(module, str(path))
    loaded = tf.saved_model.load(str(path))
    arguments = inputs if isinstance(inputs, tuple) else (inputs,)
    expected = _call(layer, inputs, training=False).numpy()
    np.testing.assert_allclose(loaded.call(*tf.nest.map_structure(tf.constant, arguments)).numpy(), expected, atol=atol)
