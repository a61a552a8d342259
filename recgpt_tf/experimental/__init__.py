"""The lab: options the product compared and did not adopt, kept so that the benchmarks that need them (the
SASRec-CE reproduction, the ablations) rerun. Nothing in `recgpt_tf` imports this package; importing it makes
its configs known to `ModelConfig.from_dict`, so the lab's runs open as theirs. docs/results.md has each
option's comparison; the README and the CLI show only the product.
"""

from recgpt_tf.experimental.layouts import LabBackbone, LabDecoderBlock, LabEmbedding, LabModelConfig, PaddingSinkAttention
from recgpt_tf.experimental.training import LabPromptConfig, LabTrainConfig, prefix_examples, split_targets

__all__ = [
    "LabBackbone",
    "LabDecoderBlock",
    "LabEmbedding",
    "LabModelConfig",
    "LabPromptConfig",
    "LabTrainConfig",
    "PaddingSinkAttention",
    "prefix_examples",
    "split_targets",
]
