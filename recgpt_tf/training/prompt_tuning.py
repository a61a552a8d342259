"""Stage 2: personalised prompt-tuning (paper section 3), and the fine-tuning baseline.

Prompt-tuning: the frozen pre-trained model generates prompt-enhanced training
sequences (Algorithm 1, cached in RUN_DIR/prompt/prompted_K{K}.npz so epochs and
reruns do not regenerate them); then only θ_LP — the segment embedding and the
added output table W_l — are trained, with the loss on the real next items.

Fine-tuning (the paper's baseline): all parameters, plain sequences, from the
pre-trained weights.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import tf_keras as keras

from recgpt_tf.config import FINETUNE_STAGE, PROMPT_STAGE, PromptConfig, TrainConfig
from recgpt_tf.data.dataset import Dataset
from recgpt_tf.data.pipeline import training_dataset
from recgpt_tf.inference.prompts import REAL, PromptGenerator, load_prompted, next_real_targets, save_prompted
from recgpt_tf.models.recgpt import RecGPT
from recgpt_tf.training.fit import StageRun, fit_stage


def generate_prompted_sequences(
    model: RecGPT, dataset: Dataset, prompt_window: int, cache_dir: Path, verbose: int = 1
) -> tuple[list, list, dict]:
    """Prompt-enhanced training sequences, from the cache when present."""
    cache = cache_dir / f"prompted_K{prompt_window}.npz"
    if cache.exists():
        try:
            tokens, segments, cached_window = load_prompted(cache)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:  # cut short: regenerate it
            print(f"{cache} is unreadable ({type(error).__name__}: {error}); generating the prompts again")
            cached_window = None
        if cached_window == prompt_window and len(tokens) == len(dataset.users):
            return tokens, segments, {"cached": True, "seconds": 0.0}
    cache_dir.mkdir(parents=True, exist_ok=True)
    sequences = dataset.train_sequences()
    start = time.perf_counter()
    if verbose:
        print(f"generating prompts (K={prompt_window}) for {len(sequences)} sequences")
    tokens, segments = PromptGenerator(model, prompt_window).generate(dataset.users, sequences, progress=verbose > 0)
    seconds = time.perf_counter() - start
    save_prompted(cache, tokens, segments, prompt_window)
    return tokens, segments, {"cached": False, "seconds": seconds, "sequences_per_second": len(sequences) / max(seconds, 1e-9)}


def prompt_tune(
    model: RecGPT, dataset: Dataset, run: StageRun, config: PromptConfig | None = None, verbose: int = 1
) -> tuple[RecGPT, dict]:
    """Prompt-tunes a pre-trained `model` in place, into `run`'s prompt stage.

    Args:
        model: Pre-trained (e.g. `run.load_model("pretrain")`); it generates the prompts.
        dataset: Encoded with the run's vocabularies.
        run: The run to write the stage into (a `runs.Run`); an interrupted stage resumes.
        config: K, the schedule and the loss positions (default `PromptConfig()`).
        verbose: Keras verbosity.

    Returns:
        (the prompt-tuned model, stage summary).
    """
    config = config or PromptConfig()
    run.begin_stage(PROMPT_STAGE, config.to_dict())
    keras.utils.set_random_seed(config.train.seed)
    stage_dir = run.stage_dir(PROMPT_STAGE)
    tokens, segments, generation = generate_prompted_sequences(model, dataset, config.prompt_window, stage_dir, verbose)
    model.start_prompt_tuning()
    # Prompts are context, never targets: the loss is on the real next items only.
    if config.loss_positions == "all":
        targets = {"targets": [next_real_targets(t, s) for t, s in zip(tokens, segments)]}
    else:
        targets = {"target_mask": [(s == REAL).astype(np.int32) for s in segments]}
    data = training_dataset(
        dataset.users,
        tokens,
        model.max_length,
        config.train.batch_size,
        seed=config.train.seed,
        segments=segments,
        batching=config.train.batching,
        **targets,
    )
    summary = fit_stage(model, dataset, stage_dir, run.log_dir(PROMPT_STAGE), config.train, data, verbose)
    summary.update(prompt_window=config.prompt_window, loss_positions=config.loss_positions, generation=generation)
    run.finish_stage(PROMPT_STAGE, summary)
    return model, summary


def fine_tune(
    model: RecGPT, dataset: Dataset, run: StageRun, train_config: TrainConfig | None = None, verbose: int = 1
) -> tuple[RecGPT, dict]:
    """The paper's Fine-tuning baseline: every parameter of a pre-trained `model`, plain sequences,
    into `run`'s finetune stage (default schedule `TrainConfig.finetuning()`)."""
    train_config = train_config or TrainConfig.finetuning()
    keras.utils.set_random_seed(train_config.seed)
    data = dataset.training_batches(model.max_length, train_config)
    run.begin_stage(FINETUNE_STAGE, train_config.to_dict())
    summary = fit_stage(model, dataset, run.stage_dir(FINETUNE_STAGE), run.log_dir(FINETUNE_STAGE), train_config, data, verbose)
    run.finish_stage(FINETUNE_STAGE, summary)
    return model, summary
