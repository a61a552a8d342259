"""Keras layers of the RecGPT decoder."""

from recgpt_tf.layers.decoder import CausalDecoderBlock, PaddingSinkAttention
from recgpt_tf.layers.embeddings import RecGPTEmbedding, left_padding
from recgpt_tf.layers.low_pass import CausalLowPassFilter

__all__ = ["CausalDecoderBlock", "CausalLowPassFilter", "PaddingSinkAttention", "RecGPTEmbedding", "left_padding"]
