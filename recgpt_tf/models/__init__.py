"""The backbone (ids → hidden states) and the RecGPT task model (tfrs.Model)."""

from recgpt_tf.models.backbone import RecGPTBackbone, gather_last
from recgpt_tf.models.objectives import CatalogueRetrieval, SigmoidPairLoss, make_task, retrieval_loss
from recgpt_tf.models.recgpt import RecGPT

__all__ = ["CatalogueRetrieval", "RecGPT", "RecGPTBackbone", "SigmoidPairLoss", "gather_last", "make_task", "retrieval_loss"]
