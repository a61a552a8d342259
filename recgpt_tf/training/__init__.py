"""Training stages and their callbacks."""

from recgpt_tf.training.callbacks import MONITOR, RankingValidation
from recgpt_tf.training.pretrain import build_model, fit_stage, pretrain
from recgpt_tf.training.prompt_tuning import FINETUNE_STAGE, PROMPT_STAGE, PromptConfig, fine_tune, prompt_tune

__all__ = [
    "FINETUNE_STAGE", "MONITOR", "PROMPT_STAGE", "PromptConfig", "RankingValidation",
    "build_model", "fine_tune", "fit_stage", "pretrain", "prompt_tune",
]
