"""Stage 2: personalised prompt-tuning (paper section 3), and the fine-tuning baseline.

Prompt-tuning: the frozen pre-trained model generates prompt-enhanced training
sequences (Algorithm 1, cached in RUN_DIR/prompt/prompted_K{K}.npz so epochs and
reruns do not regenerate them); then only θ_LP — the segment embedding and the
added output table W_l — are trained, with the loss on the real next items.

Fine-tuning (the paper's baseline): all parameters, plain sequences, from the
pre-trained weights.
"""

from __future__ import annotations

import sys
import time
import zipfile
from pathlib import Path

import tf_keras as keras

from recgpt_tf.config import PromptConfig, TrainConfig
from recgpt_tf.data.dataset import Dataset
from recgpt_tf.data.pipeline import training_dataset
from recgpt_tf.inference.prompts import PromptGenerator, load_prompted, save_prompted
from recgpt_tf.models.recgpt import RecGPT
from recgpt_tf.training.fit import StageFiles, fit_stage


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
    # A terminal sees the generation's progress bar; a log, its one line once done.
    progress = verbose == 1 and sys.stdout.isatty()
    tokens, segments = PromptGenerator(model, prompt_window).generate(dataset.users, sequences, progress=progress)
    seconds = time.perf_counter() - start
    if verbose:
        print(f"prompts generated (K={prompt_window}) for {len(sequences)} sequences in {seconds:.1f}s", flush=True)
    save_prompted(cache, tokens, segments, prompt_window)
    return tokens, segments, {"cached": False, "seconds": seconds, "sequences_per_second": len(sequences) / max(seconds, 1e-9)}


def prompt_tune(model: RecGPT, dataset: Dataset, files: StageFiles, config: PromptConfig, verbose: int = 1) -> tuple[RecGPT, dict]:
    """Prompt-tunes a pre-trained `model` in place.

    Args:
        model: Pre-trained (e.g. `run.load_model("pretrain")`); it generates the prompts.
        dataset: Encoded with the model's vocabularies.
        files: Where the stage keeps its files (the generated sequences' cache among them); an interrupted
            stage there resumes.
        config: K and the schedule.
        verbose: 1 one line an epoch (and a progress bar on a terminal), 2 one line an epoch, 0 silent.

    Returns:
        (the prompt-tuned model, stage summary).
    """
    keras.utils.set_random_seed(config.train.seed)
    tokens, segments, generation = generate_prompted_sequences(model, dataset, config.prompt_window, files.stage_dir, verbose)
    model.start_prompt_tuning()
    data = training_dataset(
        dataset.users,
        tokens,
        model.max_length,
        config.train.batch_size,
        seed=config.train.seed,
        segments=segments,
        batching=config.train.batching,
        **config.loss_targets(tokens, segments),
    )
    summary = fit_stage(model, dataset, files, config.train, data, verbose)
    summary.update(prompt_window=config.prompt_window, generation=generation)
    return model, summary


def fine_tune(model: RecGPT, dataset: Dataset, files: StageFiles, train_config: TrainConfig, verbose: int = 1) -> tuple[RecGPT, dict]:
    """The paper's Fine-tuning baseline: every parameter of a pre-trained `model`, plain sequences (its
    schedule: `TrainConfig.finetuning()`)."""
    keras.utils.set_random_seed(train_config.seed)
    data = dataset.training_batches(model.max_length, train_config)
    return model, fit_stage(model, dataset, files, train_config, data, verbose)
