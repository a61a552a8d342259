"""`recgpt evaluate`: every trained variant of a run on the paper's protocol.

Variants (README, `evaluate --json`): pretrain (Variant_3), pretrain_two_step (Variant_1),
fine_tuning (when trained), recgpt_1 (Variant_2: prompt-tuned, one step) and
recgpt (prompt-tuned, two-step). Two-step m is chosen per k on validation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from recgpt_tf.evaluation.evaluate import PROTOCOL, evaluate_model
from recgpt_tf.evaluation.variants import choose_first_step_sizes, metrics_for_sizes, two_step_sweep

if TYPE_CHECKING:
    from recgpt_tf.models.recgpt import RecGPT


def _two_step(model, valid, test) -> tuple[dict, dict[int, int], dict]:
    valid_sweep = two_step_sweep(model, valid)
    sizes = choose_first_step_sizes(valid_sweep)
    return metrics_for_sizes(two_step_sweep(model, test), sizes), sizes, valid_sweep


def evaluate_dataset(models: Mapping[str, RecGPT], dataset, train_seconds: float) -> dict:
    """The `evaluate --json` document: every variant of a run's trained stages on `dataset` (encoded with the
    run's vocabularies). `Run.evaluate` loads the stages, calls it and keeps the result.

    Args:
        models: The trained stages' models by stage: "pretrain", and "finetune" and "prompt" where trained.
        dataset: Its validation split chooses the two-step split, its test split is scored.
        train_seconds: The run's training time, recorded beside the figures.
    """
    valid, test = dataset.split("valid"), dataset.split("test")
    results, per_k, valid_sweeps = {}, {}, {}

    pretrained = models["pretrain"]
    results["pretrain"] = evaluate_model(pretrained, test)
    results["pretrain_two_step"], per_k["pretrain_two_step"], valid_sweeps["pretrain_two_step"] = _two_step(pretrained, valid, test)
    if "finetune" in models:
        results["fine_tuning"] = evaluate_model(models["finetune"], test)
    chosen = per_k["pretrain_two_step"]
    if "prompt" in models:
        tuned = models["prompt"]
        results["recgpt_1"] = evaluate_model(tuned, test)
        results["recgpt"], per_k["recgpt"], valid_sweeps["recgpt"] = _two_step(tuned, valid, test)
        chosen = per_k["recgpt"]

    return {
        "dataset": dataset.name,
        "users": len(test),
        "items": dataset.num_items,
        "protocol": PROTOCOL,
        "results": results,
        "two_step": {"m": chosen[10], "n": 10 - chosen[10]} if 10 in chosen else {},
        "two_step_per_k": {name: {str(k): {"m": m, "n": k - m} for k, m in sizes.items()} for name, sizes in per_k.items()},
        "valid_m_sweep_k10": {
            name: {f"{m}_{10 - m}": {"HR@10": v[0], "NDCG@10": v[1]} for m, v in sweep[10].items()} for name, sweep in valid_sweeps.items()
        },
        "train_seconds": train_seconds,
    }
