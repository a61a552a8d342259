"""Evaluation on the paper's protocol: ranks, HR/NDCG, the popularity baseline."""

from recgpt_tf.evaluation.evaluate import PROTOCOL, evaluate_model, evaluate_popularity, model_ranks
from recgpt_tf.evaluation.metrics import CUTOFFS, ranking_metrics
from recgpt_tf.evaluation.ranking import target_ranks

__all__ = [
    "CUTOFFS",
    "PROTOCOL",
    "evaluate_model",
    "evaluate_popularity",
    "model_ranks",
    "ranking_metrics",
    "target_ranks",
]
from recgpt_tf.evaluation.variants import choose_first_step_sizes, list_gain, metrics_for_sizes, two_step_sweep  # noqa: E402

__all__ += ["choose_first_step_sizes", "list_gain", "metrics_for_sizes", "two_step_sweep"]
