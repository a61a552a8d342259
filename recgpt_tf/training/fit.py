"""The Keras fit every stage runs (`fit_stage`: early stopping on validation NDCG@10, the selected epoch's
weights, resumption after an interruption), the model and optimizer it starts from, and `StageFiles`,
where a stage keeps its files.

A stage writes only inside the directories its run names: STAGE/weights* (the selected epoch),
STAGE/best/, STAGE/history.csv, STAGE/backup/ and logs/STAGE/.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig, TrainConfig
from recgpt_tf.data.dataset import Dataset
from recgpt_tf.data.features import ITEM_IDS, USER_ID
from recgpt_tf.models.recgpt import RecGPT
from recgpt_tf.training.callbacks import MONITOR, EpochLog, RankingValidation


@dataclasses.dataclass(frozen=True)
class StageFiles:
    """Where a stage keeps its files (a run names them: `runs.Run.stage_files`).

    Attributes:
        stage_dir: The selected epoch's weights (weights*, best/) and the epoch log (history.csv).
        log_dir: TensorBoard's logs.
        resume_dir: The backup and epoch log an interrupted training resumes from: `stage_dir`, or on the
            other workers of a multi-worker run, the chief's.
    """

    stage_dir: Path
    log_dir: Path
    resume_dir: Path


def build_model(
    model_config: ModelConfig,
    objective: str = TrainConfig.objective,
    prompt_tuned: bool = False,
    label_smoothing: float | None = TrainConfig.label_smoothing,
) -> RecGPT:
    """A `RecGPT` from a `ModelConfig`, with its variables created (objective and smoothing as `RecGPT`
    resolves them by default)."""
    config = model_config.to_dict()
    model = RecGPT(objective=objective, prompt_tuned=prompt_tuned, label_smoothing=label_smoothing, **config)
    # One call creates every variable, so weights can be loaded or counted at once.
    model({USER_ID: tf.zeros([1], tf.int32), ITEM_IDS: tf.zeros([1, 1], tf.int32)})
    return model


def make_optimizer(train_config: TrainConfig, steps_per_epoch: Callable[[], int]) -> keras.optimizers.Optimizer:
    """`train_config.optimizer` on its learning-rate schedule (`steps_per_epoch` is asked only when the
    schedule needs the number of steps)."""
    learning_rate = train_config.learning_rate
    warmup = train_config.warmup_steps
    if warmup or train_config.learning_rate_decay != "none":
        steps = train_config.epochs * steps_per_epoch()
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else train_config.learning_rate,
            decay_steps=max(1, steps - warmup),
            alpha=1.0 if train_config.learning_rate_decay == "none" else 0.0,  # alpha 1: flat after warm-up
            warmup_target=train_config.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    return train_config.optimizer(learning_rate)


def _previous_best(history_csv: Path, epochs: int) -> tuple[float, int]:
    """(best monitored value, epochs since it) over the first `epochs` epochs of an interrupted run's CSV log."""
    if not history_csv.exists():
        return -math.inf, 0
    with history_csv.open() as handle:
        values = [float(row[MONITOR]) for row in csv.DictReader(handle) if row.get(MONITOR)][:epochs]
    if not values:
        return -math.inf, 0
    best_epoch = int(np.argmax(values))
    return values[best_epoch], len(values) - 1 - best_epoch


def fit_stage(
    model: RecGPT,
    dataset: Dataset,
    files: StageFiles,
    train_config: TrainConfig,
    train_data,
    verbose: int = 1,
    extra_callbacks: list | None = None,
    steps_per_epoch: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> dict:
    """Fits `model` with early stopping on validation NDCG@10; resumes if interrupted.

    `train_data` is a `tf.data.Dataset` of one epoch, or, under a distribution `strategy`
    (whose scope built `model`), a `DatasetCreator` with its `steps_per_epoch`.
    The weights with the best validation NDCG@10 are left in the model and in
    `files.stage_dir/weights`. Returns a summary (epochs, seconds, best metrics). An interrupted fit
    resumes from `files.resume_dir`.
    """
    stage_dir, log_dir, resume_dir = files.stage_dir, files.log_dir, files.resume_dir
    stage_dir.mkdir(parents=True, exist_ok=True)
    history_csv = stage_dir / "history.csv"
    resuming = any((resume_dir / "backup").rglob("*.index"))
    if not resuming and history_csv.exists():
        history_csv.unlink()  # a fresh run of this stage: the old log is not ours to extend
    best_path = str(stage_dir / "best" / "weights")
    count = (lambda: steps_per_epoch) if steps_per_epoch else (lambda: int(train_data.reduce(0, lambda n, _: n + 1)))
    with (strategy or tf.distribute.get_strategy()).scope():
        model.compile(optimizer=make_optimizer(train_config, count))

    validation = RankingValidation(dataset.split("valid"), every=train_config.eval_every, verbose=verbose > 0)
    checkpoint = keras.callbacks.ModelCheckpoint(best_path, monitor=MONITOR, mode="max", save_best_only=True, save_weights_only=True)
    stopping = keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=train_config.patience)
    # What scores and keeps an epoch (a lab's schedule may have them see other weights than the trained ones).
    selecting = [
        validation,  # first: the callbacks below read the metrics it logs
        checkpoint,
        stopping,
        EpochLog(history_csv),
    ]
    callbacks = [
        *train_config.selecting(selecting),
        keras.callbacks.TensorBoard(str(log_dir), write_graph=False, profile_batch=0),
        keras.callbacks.BackupAndRestore(str(resume_dir / "backup")),
        *(extra_callbacks or []),
    ]

    class _ResumeFromLog(keras.callbacks.Callback):
        """After an interruption BackupAndRestore brings back weights, optimizer and epoch; at the first
        epoch this run trains, the monitors' best-so-far comes back from the epoch log before it."""

        def __init__(self):
            super().__init__()
            self.started = False

        def on_epoch_begin(self, epoch, logs=None):
            if self.started:
                return
            self.started = True
            best, wait = _previous_best(resume_dir / "history.csv", epoch)
            if best > -math.inf:
                checkpoint.best = best
                stopping.best, stopping.wait = best, wait

    callbacks.insert(callbacks.index(stopping) + 1, _ResumeFromLog())
    # One line an epoch, RankingValidation's; a terminal also gets Keras's progress bar within the epoch.
    progress_bar = 1 if verbose == 1 and sys.stdout.isatty() else 0
    start = time.perf_counter()
    history = model.fit(train_data, epochs=train_config.epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=progress_bar)
    seconds = time.perf_counter() - start

    if Path(best_path + ".index").exists():
        model.load_weights(best_path).expect_partial()
    model.save_weights(str(stage_dir / "weights"))
    epoch_seconds = [s for s in history.history.get("epoch_seconds", [])]
    with history_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    best_row = max(rows, key=lambda r: float(r[MONITOR])) if rows else {}
    return {
        "epochs": len(rows),
        "best_epoch": rows.index(best_row) + 1 if rows else 0,
        "seconds": seconds,
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else None,
        "valid": {k[len("val_") :]: float(v) for k, v in best_row.items() if k.startswith("val_")},
    }
