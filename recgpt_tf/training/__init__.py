"""Training stages and their callbacks."""

from recgpt_tf.training.callbacks import MONITOR, RankingValidation
from recgpt_tf.training.pretrain import build_model, fit_stage, pretrain

__all__ = ["MONITOR", "RankingValidation", "build_model", "fit_stage", "pretrain"]
