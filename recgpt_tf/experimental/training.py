"""The lab's training options: weight decay, a moving average of the weights, per-prefix examples, target
copies, and a prompt-tuning loss taken only before real items.

Each lost its comparison on the paper's validation splits (docs/results.md); they are kept so the ablations
rerun. `LabTrainConfig` and `LabPromptConfig` are the product's `TrainConfig` and `PromptConfig` with these
settings, through the seams those classes mark: a stage trained with one records its settings beside the
product's, and `runs.Run.train` takes either.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import PromptConfig, TrainConfig
from recgpt_tf.data.features import REAL, training_window
from recgpt_tf.errors import ConfigError, check_choice

EXAMPLES = ("sequences", "prefixes")
LOSS_POSITIONS = ("prompt", "all")


@dataclasses.dataclass
class LabTrainConfig(TrainConfig):
    """A `TrainConfig` with the lab's options.

    Attributes:
        weight_decay: Decoupled weight decay (AdamW) when > 0.
        ema_momentum: m; when > 0, the optimizer keeps an exponential moving average of the weights
            (after t steps: average = m_t * average + (1 - m_t) * weights, m_t = min(m, (1 + t) / (10 + t)),
            starting from the initial weights: `_WarmingUpAverage`), and each epoch validates, selects and
            keeps that average rather than the weights it trains (`seeing_averaged_weights`). It spans about
            1 / (1 - m) steps once t passes about 9 / (1 - m), where m_t reaches m; before that, about the
            last tenth of the t steps. A run's later stages (prompt-tuning, fine-tuning) average with the
            same m, each from its own starting weights.
        examples: Plain-sequence stages (pre-training, fine-tuning): "sequences" (the product's: each training
            sequence is one example that predicts every next item) or "prefixes" (every prefix of it is an
            example that predicts only its own next item, as BSARec, FMLP-Rec and RecBole train: each target
            gets its own forward pass and dropout noise and is predicted from the last position, as at
            serving time, for about (length + 1) / 2 times the compute). A prefix holds one target, so
            "token_budget" batches them as "bucketed" does (`prefix_examples`).
        target_copies: Plain-sequence stages: each sequence appears this many times per epoch, copy r
            training every target_copies-th target from r, so a sequence's targets get independent dropout
            noise (`split_targets`).
    """

    SCHEDULE = "lab"

    weight_decay: float = 0.0
    ema_momentum: float = 0.0
    examples: str = "sequences"
    target_copies: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("examples", self.examples, EXAMPLES)
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ConfigError("ema_momentum", f"must be in [0, 1) (0 keeps no average); got {self.ema_momentum}")
        if self.target_copies < 1:
            raise ConfigError("target_copies", f"must be >= 1; got {self.target_copies}")
        if self.target_copies > 1 and self.examples == "prefixes":
            raise ConfigError("target_copies", "must be 1 with examples 'prefixes' (each prefix trains one target already)")

    def for_stage(self, schedule: TrainConfig) -> "LabTrainConfig":
        """As the product's, and the later stage averages its weights with the same momentum."""
        inherited = {"seed": self.seed, "batch_size": self.batch_size, "ema_momentum": self.ema_momentum}
        return LabTrainConfig(**{**dataclasses.asdict(schedule), **inherited})

    def optimizer(self, learning_rate):
        """Adam (AdamW with weight decay), keeping the weights' moving average with `ema_momentum`."""
        if self.ema_momentum:
            adam, adamw = _AveragingAdam, _AveragingAdamW
            moving_average = {"use_ema": True, "ema_momentum": self.ema_momentum}
        else:
            adam, adamw, moving_average = keras.optimizers.Adam, keras.optimizers.AdamW, {}
        if self.weight_decay:
            return adamw(learning_rate=learning_rate, weight_decay=self.weight_decay, **moving_average)
        return adam(learning_rate=learning_rate, **moving_average)

    def selecting(self, callbacks: list) -> list:
        """With `ema_momentum`, the callbacks see the weights' moving average, and the backup and the next
        epoch the trained weights."""
        return seeing_averaged_weights(callbacks) if self.ema_momentum else callbacks

    def training_examples(self, users, sequences: list, max_length: int) -> tuple:
        if self.examples == "prefixes":
            users, sequences, targets = prefix_examples(users, sequences, max_length)
            # One target per example: buckets of equal size already hold equal numbers of targets.
            return users, sequences, targets, "bucketed" if self.batching == "token_budget" else self.batching
        if self.target_copies > 1:
            users, sequences, targets = split_targets(users, sequences, self.target_copies)
            return users, sequences, targets, self.batching
        return super().training_examples(users, sequences, max_length)

    def check_streamed(self) -> None:
        if self.target_copies != 1:
            raise ConfigError("target_copies", "must be 1 for streamed TFRecord input (each sequence once an epoch)")
        if self.examples != "sequences":
            raise ConfigError("examples", "must be 'sequences' for streamed TFRecord input (each sequence once an epoch)")


@dataclasses.dataclass
class LabPromptConfig(PromptConfig):
    """A `PromptConfig` with the lab's loss positions.

    Attributes:
        loss_positions: Where the next-real-item loss is taken on s*. "all" (the product's): every position
            predicts the next real item, real items included (v_t and its prompts all target v_{t+1}), so h at
            a real item, which one-step recall and step 1 of two-step recall read, is tuned too. "prompt":
            only where the next token is a real item (with K >= 1, the last prompt before it), the literal
            reading of the paper.
    """

    loss_positions: str = "all"

    def __post_init__(self) -> None:
        check_choice("loss_positions", self.loss_positions, LOSS_POSITIONS)

    def loss_targets(self, tokens: list, segments: list) -> dict[str, list]:
        if self.loss_positions == "all":
            return super().loss_targets(tokens, segments)
        # The next token, where it is a real item; 0 (untrained) where it is a prompt, and after the last token.
        return {"targets": [np.append(np.where(s[1:] == REAL, t[1:], 0), 0).astype(np.int32) for t, s in zip(tokens, segments)]}

    def to_dict(self) -> dict:
        return {**super().to_dict(), "loss_positions": self.loss_positions}


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


class _PutAverage(keras.callbacks.Callback):
    """At each epoch's end, keeps the trained weights and puts the optimizer's moving average in their place."""

    def __init__(self) -> None:
        super().__init__()
        self.trained: list = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        variables = self.model.trainable_variables
        self.trained = [variable.numpy() for variable in variables]
        self.model.optimizer.finalize_variable_values(variables)


class _PutTrainedBack(keras.callbacks.Callback):
    """At each epoch's end, puts back the trained weights `average` kept."""

    def __init__(self, average: _PutAverage) -> None:
        super().__init__()
        self.average = average

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for variable, value in zip(self.model.trainable_variables, self.average.trained):
            variable.assign(value)
        self.average.trained = []


def seeing_averaged_weights(callbacks: list[keras.callbacks.Callback]) -> list[keras.callbacks.Callback]:
    """`callbacks` between two that, at each epoch's end, put the optimizer's moving average of the weights
    (Adam's `use_ema`) into the model before them and the trained weights back after them: they validate,
    select and checkpoint the averaged model, while the backup and the next epoch get the trained one.

    The average is optimizer state, so BackupAndRestore keeps it across an interruption. (At the end of `fit`,
    tf_keras puts the last average into the model itself.)
    """
    average = _PutAverage()
    return [average, *callbacks, _PutTrainedBack(average)]


def prefix_examples(
    users: np.ndarray, sequences: Sequence[np.ndarray], max_length: int
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Every prefix of each sequence that has a next item, as its own example training only that item.

    A sequence of n items gives n - 1 examples: s[:2] trains s[1] from s[0], …, s trains s[n-1] from
    s[:n-1] (the target always at the prefix's last input position). Each prefix is cut to its most
    recent `max_length + 1` items, the window `training_dataset` keeps, as BSARec and RecBole cut theirs.

    Returns:
        (users, sequences, targets) for `training_dataset(..., targets=...)`: targets[i] is the item
        token i must predict, 0 everywhere but the prefix's last input.
    """
    out_users, out_sequences, out_targets = [], [], []
    for user, seq in zip(users, sequences):
        for end in range(2, len(seq) + 1):
            window = training_window(seq[:end], max_length)
            targets = np.zeros(len(window), dtype=np.int32)
            targets[-2] = window[-1]
            out_users.append(user)
            out_sequences.append(window)
            out_targets.append(targets)
    return np.asarray(out_users, dtype=np.int32), out_sequences, out_targets


def split_targets(users: np.ndarray, sequences: Sequence[np.ndarray], copies: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Each sequence `copies` times, copy r training only the targets at positions r, r + copies, ….

    Every target is still trained once per epoch, but the targets of one sequence are spread over
    `copies` forward passes, so they no longer share one dropout mask (what per-prefix training, as
    in RecBole, gives every target), for `copies` times the compute. `training_dataset` then keeps
    the most recent window and drops sequences too short to train, as for plain sequences.

    Returns:
        (users, sequences, targets) for `training_dataset(..., targets=...)`: targets[i] is the item
        token i must predict, 0 where that copy does not train it.
    """
    out_users, out_sequences, out_targets = [], [], []
    for user, seq in zip(users, sequences):
        following = np.append(seq[1:], 0).astype(np.int32)
        positions = np.arange(len(seq))
        for r in range(copies):
            out_users.append(user)
            out_sequences.append(seq)
            out_targets.append(np.where(positions % copies == r, following, 0).astype(np.int32))
    return np.asarray(out_users, dtype=np.int32), out_sequences, out_targets
