"""Exporting RecGPT as one TF Serving SavedModel (installed as `recgpt_tf.export`)."""

from recgpt_tf.export.publish import ExportError, export_model, history_tensor, next_version, recall_queries, tuned_index
from recgpt_tf.export.run_export import chosen_first_step, export_keras_model, export_run
from recgpt_tf.export.serving_module import RecGPTServingModule

__all__ = [
    "ExportError", "RecGPTServingModule", "chosen_first_step", "export_keras_model", "export_model",
    "export_run", "history_tensor", "next_version", "recall_queries", "tuned_index",
]
