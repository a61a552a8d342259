"""Keras layers of the RecGPT decoder."""

from recgpt_tf.layers.decoder import CausalDecoderBlock, PaddingSinkAttention
from recgpt_tf.layers.embeddings import RecGPTEmbedding, left_padding

__all__ = ["CausalDecoderBlock", "PaddingSinkAttention", "RecGPTEmbedding", "left_padding"]
