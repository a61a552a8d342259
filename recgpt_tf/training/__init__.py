"""Training stages and their callbacks; `runs.Run.train` runs them in the paper's order."""

from recgpt_tf.config import FINETUNE_STAGE, PRETRAIN_STAGE, PROMPT_STAGE, PromptConfig
from recgpt_tf.training.callbacks import MONITOR, RankingValidation
from recgpt_tf.training.fit import build_model, fit_stage
from recgpt_tf.training.pretrain import pretrain
from recgpt_tf.training.prompt_tuning import fine_tune, prompt_tune

__all__ = [
    "FINETUNE_STAGE",
    "MONITOR",
    "PRETRAIN_STAGE",
    "PROMPT_STAGE",
    "PromptConfig",
    "RankingValidation",
    "build_model",
    "fine_tune",
    "fit_stage",
    "pretrain",
    "prompt_tune",
]
