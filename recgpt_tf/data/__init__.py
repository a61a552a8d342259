"""Data: readers, tf.Example files, vocabularies, the leave-one-out split, tf.data pipelines, synthetic data."""

from recgpt_tf.data.dataset import SPLITS, Dataset, EvalSplit
from recgpt_tf.data.examples import read_examples, write_examples
from recgpt_tf.data.features import ITEM_IDS, SEGMENT_IDS, TARGETS, USER_ID
from recgpt_tf.data.pipeline import pad_batch, training_dataset
from recgpt_tf.data.readers import FORMATS, detect_format, load_interactions, write_sequences
from recgpt_tf.data.synthetic import synthetic_sequences
from recgpt_tf.data.vocab import Vocabulary

__all__ = [
    "FORMATS",
    "ITEM_IDS",
    "SEGMENT_IDS",
    "SPLITS",
    "TARGETS",
    "USER_ID",
    "Dataset",
    "EvalSplit",
    "Vocabulary",
    "detect_format",
    "load_interactions",
    "pad_batch",
    "read_examples",
    "synthetic_sequences",
    "training_dataset",
    "write_examples",
    "write_sequences",
]
