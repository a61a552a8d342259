"""The Keras fit every stage runs (`fit_stage`: early stopping on validation NDCG@10, the selected epoch's
weights, resumption after an interruption), the model and optimizer it starts from, and `StageRun`, what
a stage needs of the run directory it trains into.

A stage writes only inside the directories its run names: STAGE/weights* (the selected epoch),
STAGE/best/, STAGE/history.csv, STAGE/backup/ and logs/STAGE/.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig, TrainConfig
from recgpt_tf.data.dataset import Dataset
from recgpt_tf.models.recgpt import RecGPT
from recgpt_tf.training.callbacks import MONITOR, EpochLog, RankingValidation, seeing_averaged_weights


class StageRun(Protocol):
    """What a training stage needs of the run it trains into (`runs.Run` is one): its architecture and
    vocabularies, where each stage keeps its files, and the stage commit (`begin_stage` / `finish_stage`)."""

    @property
    def model_config(self) -> ModelConfig: ...

    @property
    def vocabulary_files(self) -> tuple[Path, Path]: ...

    def stage_dir(self, stage: str) -> Path: ...

    def resume_dir(self, stage: str) -> Path: ...

    def log_dir(self, stage: str) -> Path: ...

    def begin_stage(self, stage: str, payload: dict) -> None: ...

    def finish_stage(self, stage: str, summary: dict) -> None: ...


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
    model({"user_id": tf.zeros([1], tf.int32), "item_ids": tf.zeros([1, 1], tf.int32)})
    return model


class _WarmingUpAverage:
    """Optimizer mixin: the moving average of the weights (`use_ema`) at momentum min(m, (1 + t) / (10 + t)),
    m = `ema_momentum`, on the step after t steps (tf.train.ExponentialMovingAverage's rule with
    `num_updates`). tf-keras applies m from the first step, so a run of a few hundred steps (the
    quickstart's) would keep much of the initial weights in its average; warmed up, the average spans about
    the last tenth of the steps so far until it reaches 1 / (1 - m) steps."""

    # tf-keras's private hook: after each step's updates, before `iterations` counts the step.
    def _update_model_variables_moving_average(self, var_list):
        steps = tf.cast(self.iterations, tf.float32)
        momentum = tf.minimum(tf.cast(self.ema_momentum, tf.float32), (1.0 + steps) / (10.0 + steps))

        def update(average, value):
            m = tf.cast(momentum, average.dtype)
            average.assign(m * average + (1 - m) * value)

        for var in var_list:
            average = self._model_variables_moving_average[self._index_dict[self._var_key(var)]]
            self._distribution_strategy.extended.update(average, update, args=(var,), group=False)


class _AveragingAdam(_WarmingUpAverage, keras.optimizers.Adam):
    pass


class _AveragingAdamW(_WarmingUpAverage, keras.optimizers.AdamW):
    pass


def make_optimizer(train_config: TrainConfig, steps_per_epoch: Callable[[], int]) -> keras.optimizers.Optimizer:
    """Adam (AdamW with weight decay) on `train_config`'s learning-rate schedule (`steps_per_epoch` is
    asked only when the schedule needs the number of steps)."""
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
    if train_config.ema_momentum:
        adam, adamw = _AveragingAdam, _AveragingAdamW
        moving_average = {"use_ema": True, "ema_momentum": train_config.ema_momentum}
    else:
        adam, adamw, moving_average = keras.optimizers.Adam, keras.optimizers.AdamW, {}
    if train_config.weight_decay:
        return adamw(learning_rate=learning_rate, weight_decay=train_config.weight_decay, **moving_average)
    return adam(learning_rate=learning_rate, **moving_average)


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
    stage_dir: Path,
    log_dir: Path,
    train_config: TrainConfig,
    train_data,
    verbose: int = 1,
    extra_callbacks: list | None = None,
    steps_per_epoch: int | None = None,
    strategy: tf.distribute.Strategy | None = None,
    resume_dir: Path | None = None,
) -> dict:
    """Fits `model` with early stopping on validation NDCG@10; resumes if interrupted.

    `train_data` is a `tf.data.Dataset` of one epoch, or, under a distribution `strategy`
    (whose scope built `model`), a `DatasetCreator` with its `steps_per_epoch`.
    The weights with the best validation NDCG@10 are left in the model and in
    `stage_dir/weights`. Returns a summary (epochs, seconds, best metrics).
    `resume_dir` (default `stage_dir`) holds the backup and epoch log a resumed run starts
    from: the chief's stage directory on the other workers of a multi-worker run.
    """
    stage_dir.mkdir(parents=True, exist_ok=True)
    resume_dir = resume_dir or stage_dir
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
    # What scores and keeps an epoch; with ema_momentum these see the weights' moving average, and the backup and
    # the next epoch the trained weights.
    selecting = [
        validation,  # first: the callbacks below read the metrics it logs
        checkpoint,
        stopping,
        EpochLog(history_csv),
    ]
    callbacks = [
        *(seeing_averaged_weights(selecting) if train_config.ema_momentum else selecting),
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
    if verbose == 1 and not sys.stdout.isatty():
        verbose = 2  # a log file gets one line per epoch, not a carriage-return stream of progress bars
    start = time.perf_counter()
    history = model.fit(train_data, epochs=train_config.epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose)
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
