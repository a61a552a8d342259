"""Serving RecGPT exports: TF Serving clients and a TF-Serving-compatible local
endpoint (installed as `recgpt_tf.serving`)."""

from recgpt_tf.serving.client import GrpcClient, RestClient, RestError
from recgpt_tf.serving.servable import Limits, ModelManager, Servable, ServingError
from recgpt_tf.serving.server import LocalServer

__all__ = ["Limits", "LocalServer", "ModelManager", "GrpcClient", "RestClient", "RestError", "Servable", "ServingError"]
