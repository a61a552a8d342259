"""Exporting RecGPT as one TF Serving SavedModel (a run directory exports through `runs.Run.export`)."""

from recgpt_tf.export.keras_export import export_keras_model
from recgpt_tf.export.publish import (
    PublishedVersion,
    allocate_version,
    export_model,
    next_version,
    publish_with_index,
    recall_queries,
    tuned_index,
    update_export_base,
    write_version,
)
from recgpt_tf.export.serving_module import RecGPTServingModule

__all__ = [
    "PublishedVersion",
    "RecGPTServingModule",
    "allocate_version",
    "export_keras_model",
    "export_model",
    "next_version",
    "publish_with_index",
    "recall_queries",
    "tuned_index",
    "update_export_base",
    "write_version",
]
