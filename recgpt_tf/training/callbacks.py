"""Callbacks that put paper-protocol validation metrics into Keras logs, and the epoch log a resumed
stage continues."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import tf_keras as keras

from recgpt_tf.data.dataset import EvalSplit
from recgpt_tf.evaluation.evaluate import evaluate_model
from recgpt_tf.files import write_text_atomic

MONITOR = "val_NDCG@10"


class RankingValidation(keras.callbacks.Callback):
    """Full-ranking validation at the end of every `every`-th epoch.

    Writes `val_HR@k` / `val_NDCG@k` into the epoch logs, so callbacks listed
    after it (EarlyStopping, ModelCheckpoint, CSVLogger, TensorBoard) can monitor
    `val_NDCG@10`, and prints a one-line summary per epoch.

    Args:
        split: The validation question (`Dataset.split("valid")`).
        every: Evaluate every this many epochs (others reuse the last figures).
        batch_size: Users per evaluation batch.
        verbose: Print the per-epoch summary line.
    """

    def __init__(self, split: EvalSplit, every: int = 1, batch_size: int = 1024, verbose: bool = True) -> None:
        super().__init__()
        self.split = split
        self.every = max(1, every)
        self.batch_size = batch_size
        self.verbose = verbose
        self.last: dict[str, float] = {}
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        train_seconds = time.perf_counter() - self._epoch_start
        if (epoch + 1) % self.every == 0 or not self.last:
            start = time.perf_counter()
            self.last = evaluate_model(self.model, self.split, self.batch_size)
            eval_seconds = time.perf_counter() - start
        else:
            eval_seconds = 0.0
        logs.update({f"val_{k}": v for k, v in self.last.items()})
        logs["epoch_seconds"] = train_seconds
        if self.verbose:  # the stage's one line an epoch (Keras prints its own only as a terminal's progress bar)
            of = f"/{self.params['epochs']}" if self.params.get("epochs") else ""
            print(
                f"epoch {epoch + 1}{of}: loss {logs.get('loss', float('nan')):.4f}  "
                f"valid HR@10 {self.last['HR@10']:.4f}  NDCG@10 {self.last['NDCG@10']:.4f}  "
                f"({train_seconds:.1f}s train, {eval_seconds:.1f}s eval)",
                flush=True,
            )


class EpochLog(keras.callbacks.Callback):
    """STAGE/history.csv: a row per epoch (`epoch`, then the logs in sorted key order, as Keras' CSVLogger
    writes them), appended and flushed as each epoch ends.

    A resumed run starts at the epoch after the last one backed up; at its first epoch the log is cut
    back to the epochs before it, so an epoch that was logged but not yet backed up when the run was
    killed (it trains again) is not logged twice. (CSVLogger cannot be cut under it: it holds the file
    open through tf.io.gfile, which then dropped the next row.)

    Args:
        path: The CSV file; appended to when it exists.
    """

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._started or not self.path.exists():
            self._started = True
            return
        self._started = True
        with self.path.open(newline="") as handle:
            rows = handle.readlines()[: epoch + 1]  # the header and epochs 0..epoch-1
        write_text_atomic(self.path, "".join(rows))  # other workers may be reading it

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        keys = sorted(logs)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["epoch", *keys])
            writer.writerow([epoch, *(logs[k] for k in keys)])
