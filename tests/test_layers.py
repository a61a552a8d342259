"""Each layer of the model through the shared harness (tests/harness.py): called in both modes, its config
round trip, a clone with its weights, and a SavedModel of it."""

import numpy as np
import pytest
import tensorflow as tf

from harness import run_layer_test, run_model_saving_test
from helpers import TINY_MODEL, random_batch
from recgpt_tf.config import ModelConfig
from recgpt_tf.layers.decoder import CausalDecoderBlock
from recgpt_tf.layers.embeddings import RecGPTEmbedding
from recgpt_tf.layers.low_pass import CausalLowPassFilter
from recgpt_tf.models import RecGPT, RecGPTBackbone

N, U, B, T, D = 30, 10, 3, 6, TINY_MODEL["hidden_size"]
HIDDEN = np.random.default_rng(0).normal(size=(B, T, D)).astype(np.float32)


def test_the_low_pass_filter(tmp_path):
    layer = run_layer_test(lambda: CausalLowPassFilter(max_length=20, frequencies=3, dropout=0.1), tf.constant(HIDDEN), (B, T, D))
    run_model_saving_test(layer, tf.constant(HIDDEN), tmp_path / "saved")


def _config(**changes) -> ModelConfig:
    return ModelConfig(num_items=N, num_users=U, **{**TINY_MODEL, **changes})


@pytest.mark.parametrize("filter_mix", [0.7, 0.0])
def test_the_decoder_block(tmp_path, filter_mix):
    config = _config(filter_mix=filter_mix, filter_frequencies=3, dropout=0.1, attention_dropout=0.1)
    layer = run_layer_test(lambda: CausalDecoderBlock(config), tf.constant(HIDDEN), (B, T, D))
    run_model_saving_test(layer, tf.constant(HIDDEN), tmp_path / "saved", atol=1e-5)


def test_the_embedding(tmp_path):
    batch = random_batch(N, U, batch=B, length=T)
    inputs = (tf.constant(batch["user_id"]), tf.constant(batch["item_ids"]), tf.zeros([B, T], tf.int32))
    layer = run_layer_test(lambda: RecGPTEmbedding(_config(dropout=0.1, user_dropout=0.1)), inputs, (B, T, D))
    run_model_saving_test(layer, inputs, tmp_path / "saved")


@pytest.mark.parametrize("make", [lambda: RecGPTBackbone(_config()), lambda: RecGPT(num_items=N, num_users=U, **TINY_MODEL)])
def test_the_backbone_and_the_model(tmp_path, make):
    batch = {key: tf.constant(value) for key, value in random_batch(N, U, batch=B, length=T).items()}
    layer = run_layer_test(make, batch, (B, T, D))
    run_model_saving_test(layer, batch, tmp_path / "saved", atol=1e-5)


def test_a_setting_reaches_every_layer_from_the_one_config():
    """The backbone hands its config whole to the embedding and each block: no layer keeps a copy of its own."""
    backbone = RecGPTBackbone(_config(num_layers=2, dropout=0.3))
    assert backbone.embedding.config is backbone.config and all(block.config is backbone.config for block in backbone.blocks)
    assert backbone.get_config()["dropout"] == 0.3 and RecGPTBackbone.from_config(backbone.get_config()).config == backbone.config
