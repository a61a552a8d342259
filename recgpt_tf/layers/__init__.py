"""Keras layers of the RecGPT decoder."""

from recgpt_tf.layers.decoder import CausalDecoderBlock
from recgpt_tf.layers.embeddings import ItemRows, RecGPTEmbedding
from recgpt_tf.layers.low_pass import CausalLowPassFilter

__all__ = ["CausalDecoderBlock", "CausalLowPassFilter", "ItemRows", "RecGPTEmbedding"]
