"""RecGPT on TensorFlow: a GPT decoder with a user module for sequential recommendation.

TensorFlow Recommenders needs Keras 2 (the `tf-keras` package). TensorFlow picks
its Keras the first time it is imported, so the switch is set here, before any
submodule imports TensorFlow; users never meet the Keras 3 error.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ log: errors only ("2"), or, without an NVIDIA driver, nothing ("3"): the CUDA
# build of TensorFlow reports its GPU probe ("failed call to cuInit") as an error on every start of a
# CPU machine. Failures still raise Python exceptions; set the variable yourself to see the log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if os.path.exists("/proc/driver/nvidia") else "3")


def _check_keras_version() -> None:
    import sys

    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    if not tf.keras.__name__.startswith("tf_keras"):
        raise ImportError(
            "TensorFlow was imported before recgpt_tf without TF_USE_LEGACY_KERAS=1, "
            "so tf.keras is Keras 3, which TensorFlow Recommenders cannot use. "
            "Import recgpt_tf before tensorflow, or set TF_USE_LEGACY_KERAS=1 in the "
            "environment."
        )


_check_keras_version()

__version__ = "0.1.0"

from recgpt_tf.config import ModelConfig, TrainConfig  # noqa: E402
from recgpt_tf.data import (  # noqa: E402
    Dataset,
    Vocabulary,
    load_interactions,
    synthetic_sequences,
)
from recgpt_tf.models import RecGPT, RecGPTBackbone  # noqa: E402

__all__ = [
    "Dataset",
    "ModelConfig",
    "RecGPT",
    "RecGPTBackbone",
    "TrainConfig",
    "Vocabulary",
    "load_interactions",
    "synthetic_sequences",
]
