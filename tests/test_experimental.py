"""The lab (`recgpt_tf.experimental`): the layouts and training options the product compared and did not adopt
still build, train, save and resume, through the seams of the product's configs."""

import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from harness import run_layer_test, run_model_saving_test
from helpers import TINY_MODEL, assert_causal, random_batch, tiny_run, tiny_train_config
from recgpt_tf.config import ModelConfig, PromptConfig, TrainConfig
from recgpt_tf.data import training_dataset
from recgpt_tf.errors import ConfigError
from recgpt_tf.evaluation import evaluate_model
from recgpt_tf.experimental import LabModelConfig, LabPromptConfig, LabTrainConfig, prefix_examples, split_targets
from recgpt_tf.experimental.layouts import slot_dropout_scale
from recgpt_tf.models import RecGPT
from recgpt_tf.runs import Run

N, U = 30, 10


def make_model(**overrides) -> RecGPT:
    """A tiny model of the lab's architecture."""
    model = RecGPT(num_items=N, num_users=U, architecture="lab", **{**TINY_MODEL, "dropout": 0.0, **overrides})
    model(random_batch(N, U))
    return model


def lab_train_config(**overrides) -> LabTrainConfig:
    return LabTrainConfig(**{**tiny_train_config().to_dict(), **overrides})


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption")


class _Trained(keras.callbacks.Callback):
    """At each epoch's end (listed after the stage's own callbacks), the weights training left and their moving
    average at `momentum`, computed here step by step from the initial weights, warming up as
    tf.train.ExponentialMovingAverage(num_updates=steps) does."""

    def __init__(self, momentum=0.0):
        super().__init__()
        self.momentum, self.weights, self.averages = momentum, [], []

    def on_train_begin(self, logs=None):
        self._average, self._steps = [w.astype(np.float64) for w in self.model.get_weights()], 0

    def on_train_batch_end(self, batch, logs=None):
        m = min(self.momentum, (1 + self._steps) / (10 + self._steps))
        self._average = [m * a + (1 - m) * w for a, w in zip(self._average, self.model.get_weights())]
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())
        self.averages.append(list(self._average))


class _Averages(keras.callbacks.Callback):
    """The optimizer's moving average of the weights when the first epoch this run trains begins, and at each
    epoch's end."""

    def __init__(self):
        super().__init__()
        self.at_start, self.at_end = None, []

    def _averages(self):
        return [v.numpy() for v in self.model.optimizer.variables if v.name.startswith("average/")]

    def on_epoch_begin(self, epoch, logs=None):
        if self.at_start is None:
            self.at_start = self._averages()

    def on_epoch_end(self, epoch, logs=None):
        self.at_end.append(self._averages())


@pytest.mark.parametrize(
    "position_mode, layer_norm, filter_mix",
    [
        ("from_start", "pre", 0.0),
        ("from_end", "pre", 0.0),
        ("from_start", "post", 0.0),
        ("from_end", "post", 0.0),
        ("from_end", "sasrec", 0.0),
        ("from_start", "post", 0.7),  # the low-pass filter branch
    ],
)
def test_no_future_leakage(position_mode, layer_norm, filter_mix):
    model = make_model(num_layers=2, position_mode=position_mode, layer_norm=layer_norm, filter_mix=filter_mix)
    assert_causal(model)


def test_from_end_positions_align_the_last_item():
    model = make_model(position_mode="from_end")
    short = {"user_id": np.array([1], np.int32), "item_ids": np.array([[5, 6, 0, 0]], np.int32)}
    padded_less = {"user_id": np.array([1], np.int32), "item_ids": np.array([[5, 6]], np.int32)}
    # Padding after the sequence changes nothing: positions count back from the last real token.
    np.testing.assert_allclose(model(short).numpy()[:, :2], model(padded_less).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="position_mode"):
        make_model(position_mode="sideways")


def test_post_ln_normalises_every_block_output_and_pre_ln_ends_in_a_norm():
    batch = random_batch(N, U, batch=3, length=6, seed=2)
    post = make_model(layer_norm="post", activation="gelu")
    assert post.backbone.final_norm is None and post.backbone.embedding.embedding_norm is not None
    hidden = post(batch).numpy()  # the last block's output norm, gamma 1 and beta 0 at initialisation
    np.testing.assert_allclose(hidden.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(hidden.std(-1), 1.0, atol=1e-2)
    pre = make_model(layer_norm="pre")
    assert pre.backbone.final_norm is not None and pre.backbone.embedding.embedding_norm is None
    assert post.backbone.blocks[0].ffn_inner.activation.__name__ == "gelu"
    assert pre.backbone.blocks[0].ffn_inner.activation.__name__ == "relu"


def test_sasrec_layout_normalises_only_the_query_and_the_stream_before_the_ffn():
    """SASRec's own block: y = LN(x + Attn(q=LN(x), k=x, v=x)), then y + FFN(y); a final norm closes the stack."""
    model = make_model(num_layers=1, layer_norm="sasrec")
    block = model.backbone.blocks[0]
    x = tf.random.normal([2, 5, 32], seed=1)
    slots = tf.constant([15, 17])
    attention = block.attention(block.attention_norm(x), x, x, empty_slots=slots, use_causal_mask=True)
    expected = block.ffn_norm(x + attention)
    expected = expected + block.ffn_outer(block.ffn_inner(expected))
    np.testing.assert_allclose(block(x, empty_slots=slots, training=False).numpy(), expected.numpy(), atol=1e-5)
    assert model.backbone.final_norm is not None and model.backbone.embedding.embedding_norm is None


def test_sasrec_attention_on_right_padded_rows_equals_sasrecs_attention_on_left_padded_ones():
    """SASRec's code left-pads to max_length, zeroes the padding and masks only the future, so real positions
    also attend to the padding; PaddingSinkAttention gives the same output at every real position."""
    length, width = 8, 32
    block = make_model(num_layers=1, layer_norm="sasrec", max_length=length).backbone.blocks[0]
    rng = np.random.default_rng(3)
    block.attention.set_weights([rng.normal(0, 0.3, w.shape) for w in block.attention.get_weights()])  # biases too
    plain = keras.layers.MultiHeadAttention(num_heads=2, key_dim=width // 2)
    lengths = np.array([3, 8, 1, 5])
    x = rng.normal(size=(len(lengths), length, width)).astype(np.float32)
    x[np.arange(length)[None, :] >= lengths[:, None]] = 0.0  # right-padded rows
    query = block.attention_norm(x)
    ours = block.attention(query, x, x, empty_slots=length - lengths, use_causal_mask=True).numpy()
    plain(query, x, x)  # build, then share the weights
    plain.set_weights(block.attention.get_weights())
    for row, real in enumerate(lengths):
        left = np.concatenate([np.zeros((length - real, width), np.float32), x[row, :real]])[None]  # SASRec's input
        theirs = plain(block.attention_norm(left), left, left, use_causal_mask=True).numpy()[0, length - real :]
        np.testing.assert_allclose(ours[row, :real], theirs, atol=1e-4)
    unpadded = plain(query, x, x, use_causal_mask=True).numpy()
    assert np.abs(unpadded[0, :3] - ours[0, :3]).max() > 1e-2  # the empty slots change what a short row sees


def test_slot_dropout_drops_each_empty_slot_on_its_own():
    """SASRec's padded slots are dropped one by one: the sink's kept share is Binomial(slots, 1 - p) / (slots (1 - p)),
    mean 1 with a relative spread of sqrt(p / ((1 - p) slots)), not all-or-nothing (spread sqrt(p / (1 - p)))."""
    tf.random.set_seed(0)
    scale = slot_dropout_scale(tf.constant([40, 0, 1]), tf.constant([3, 20000]), 0.6).numpy()
    assert abs(scale[0].mean() - 1.0) < 0.01 and abs(scale[0].std() - np.sqrt(0.6 / (0.4 * 40))) < 0.01
    assert (scale[1] == 0).all()  # no slots, nothing kept
    assert set(np.unique(scale[2]).round(6)) == {0.0, 2.5}  # one slot: plain dropout, kept ones scaled by 1 / (1 - p)


@pytest.mark.parametrize("layout", [dict(layer_norm="sasrec"), dict(layer_norm="post", filter_mix=0.7)])
def test_sasrec_layout_and_the_filter_branch_train_and_survive_a_saved_model_round_trip(tmp_path, layout):
    model = make_model(attention_dropout=0.6, dropout=0.6, **layout)
    batch = random_batch(N, U, batch=4, length=6, seed=4)
    assert np.isfinite(model(batch, training=True).numpy()).all()
    run_model_saving_test(model, {key: tf.constant(value) for key, value in batch.items()}, tmp_path / "saved", atol=1e-5)


def test_split_targets_trains_every_target_exactly_once_across_copies():
    users = np.array([7, 8], np.int32)
    seqs = [np.array([1, 2, 3, 4, 5], np.int32), np.array([9, 10], np.int32)]
    out_users, out_seqs, targets = split_targets(users, seqs, copies=2)
    assert out_users.tolist() == [7, 7, 8, 8]
    assert targets[0].tolist() == [2, 0, 4, 0, 0] and targets[1].tolist() == [0, 3, 0, 5, 0]
    assert targets[2].tolist() == [10, 0] and targets[3].tolist() == [0, 0]
    batch = next(
        training_dataset(out_users, out_seqs, targets=targets, shuffle=False, batching="shuffled", batch_size=4).as_numpy_iterator()
    )
    trained = sorted(int(t) for t in batch["targets"][batch["targets"] > 0])
    assert trained == [2, 3, 4, 5, 10]  # the same targets as one plain copy, each once


def test_prefix_examples_train_each_target_once_from_the_end_of_its_own_prefix():
    users = np.array([7, 8, 9], np.int32)
    seqs = [np.array([1, 2, 3, 4], np.int32), np.array([9, 10], np.int32), np.array([5], np.int32)]
    out_users, out_seqs, targets = prefix_examples(users, seqs, max_length=5)
    assert out_users.tolist() == [7, 7, 7, 8]  # n - 1 prefixes each; a one-item sequence trains nothing
    assert [s.tolist() for s in out_seqs] == [[1, 2], [1, 2, 3], [1, 2, 3, 4], [9, 10]]
    assert [t.tolist() for t in targets] == [[2, 0], [0, 3, 0], [0, 0, 4, 0], [10, 0]]
    rows = list(
        training_dataset(out_users, out_seqs, targets=targets, shuffle=False, batching="shuffled", batch_size=8).as_numpy_iterator()
    )[0]
    # Each example's one target sits at its last input position, and the inputs are the prefix before it.
    assert rows["item_ids"].tolist() == [[1, 0, 0], [1, 2, 0], [1, 2, 3], [9, 0, 0]]
    assert rows["targets"].tolist() == [[2, 0, 0], [0, 3, 0], [0, 0, 4], [10, 0, 0]]
    # A prefix longer than the window keeps its most recent items; the target stays at the last input.
    _, cut, cut_targets = prefix_examples(users[:1], seqs[:1], max_length=2)
    assert [s.tolist() for s in cut] == [[1, 2], [1, 2, 3], [2, 3, 4]] and cut_targets[-1].tolist() == [0, 4, 0]


def test_prefix_training_batches_hold_batch_size_targets_even_under_token_budget(tiny_dataset):
    config = LabTrainConfig(examples="prefixes", batching="token_budget", batch_size=16)
    expected = sum(max(len(s) - 1, 0) for s in tiny_dataset.train_sequences())
    counts = [int((batch["targets"] > 0).sum()) for batch in tiny_dataset.training_batches(20, config).as_numpy_iterator()]
    assert sum(counts) == expected  # every target once an epoch, one per example
    assert max(counts) == 16  # batches of 16 prefixes, not sized up for short ones as token_budget sizes sequences
    with pytest.raises(ConfigError, match="target_copies"):
        LabTrainConfig(examples="prefixes", target_copies=2)
    with pytest.raises(ConfigError, match="examples"):
        LabTrainConfig(examples="windows")


def test_the_stage_validates_and_keeps_the_weights_moving_average_and_trains_as_without_it(tiny_dataset, tmp_path):
    plain = _Trained()
    tiny_run(tiny_dataset, tmp_path / "plain").pretrain(tiny_dataset, tiny_train_config(epochs=3), verbose=0, extra_callbacks=[plain])
    averaged = _Trained(momentum=0.9)
    config = lab_train_config(epochs=3, ema_momentum=0.9)
    model, summary = tiny_run(tiny_dataset, tmp_path / "averaged").pretrain(tiny_dataset, config, verbose=0, extra_callbacks=[averaged])
    for epoch in range(3):  # the trained weights are back before each next epoch
        for with_average, without in zip(averaged.weights[epoch], plain.weights[epoch]):
            np.testing.assert_allclose(with_average, without, rtol=1e-5, atol=1e-6)
    best = summary["best_epoch"] - 1
    kept = model.get_weights()
    for average, kept_weights in zip(averaged.averages[best], kept):
        np.testing.assert_allclose(kept_weights, average, rtol=1e-4, atol=1e-6)
    assert max(np.abs(k - t).max() for k, t in zip(kept, averaged.weights[best])) > 1e-3  # not the trained weights
    assert summary["valid"]["NDCG@10"] == pytest.approx(evaluate_model(model, tiny_dataset.split("valid"))["NDCG@10"], abs=1e-6)


@pytest.mark.slow
def test_an_interrupted_stage_resumes_with_its_moving_average(tiny_dataset, tmp_path):
    config = lab_train_config(epochs=3, ema_momentum=0.9)
    before = _Averages()
    with pytest.raises(KeyboardInterrupt):
        tiny_run(tiny_dataset, tmp_path).pretrain(tiny_dataset, config, verbose=0, extra_callbacks=[before, _Interrupt()])
    after = _Averages()
    tiny_run(tiny_dataset, tmp_path).pretrain(tiny_dataset, config, verbose=0, extra_callbacks=[after])
    assert len(after.at_start) == len(before.at_end[-1]) > 0
    for resumed, backed_up in zip(after.at_start, before.at_end[-1]):
        np.testing.assert_array_equal(resumed, backed_up)  # the average the backup kept, not a fresh copy


def test_a_moving_average_momentum_outside_0_to_1_is_refused_by_name():
    with pytest.raises(ConfigError, match="ema_momentum"):
        LabTrainConfig(ema_momentum=1.0)


def test_loss_positions_is_checked():
    with pytest.raises(ValueError, match="loss_positions must be one of"):
        LabPromptConfig(1, loss_positions="everywhere")


@pytest.mark.parametrize("layout", [dict(layer_norm="sasrec"), dict(layer_norm="pre", position_mode="from_end", activation="gelu")])
def test_a_lab_model_round_trips_its_config_as_the_labs(layout):
    batch = {key: tf.constant(value) for key, value in random_batch(N, U, seed=5).items()}
    model = run_layer_test(lambda: RecGPT(num_items=N, num_users=U, **{**TINY_MODEL, "architecture": "lab", **layout}), batch)
    config = model.get_config()
    assert config["architecture"] == "lab" and type(RecGPT.from_config(config).backbone.config) is LabModelConfig
    with pytest.raises(ConfigError, match='built for layer_norm="post"'):
        LabModelConfig(num_items=N, num_users=U, layer_norm="pre", filter_mix=0.5)
    assert LabModelConfig(num_items=N, num_users=U, layer_norm="pre").filter_mix == 0.0


def test_a_run_an_earlier_version_recorded_in_a_lab_layout_opens_as_the_labs():
    recorded = {
        **ModelConfig(num_items=N, num_users=U, filter_mix=0.0).to_dict(),
        "layer_norm": "pre",
        "activation": "relu",
        "position_mode": "from_end",
    }
    config = ModelConfig.from_dict(recorded)
    assert type(config) is LabModelConfig and (config.layer_norm, config.position_mode, config.filter_mix) == ("pre", "from_end", 0.0)


def test_a_lab_run_trains_records_and_reopens_as_the_labs(tiny_dataset, tmp_path):
    config = LabModelConfig(num_items=tiny_dataset.num_items, num_users=tiny_dataset.num_users, **{**TINY_MODEL, "layer_norm": "sasrec"})
    run = Run.create(tmp_path / "run", tiny_dataset, config, seed=7)
    summaries = run.train(tiny_dataset, "pretrain", lab_train_config(epochs=1, weight_decay=0.01), verbose=0)
    recorded = json.loads((run.path / "config.json").read_text())
    assert recorded["model"]["architecture"] == "lab" and recorded["pretrain"]["weight_decay"] == 0.01
    reopened = Run.open(run.path)
    assert reopened.model_config == config
    np.testing.assert_allclose(
        evaluate_model(reopened.load_model(), tiny_dataset.split("valid"))["NDCG@10"], summaries["pretrain"]["valid"]["NDCG@10"], atol=1e-6
    )
    again = run.train(tiny_dataset, "pretrain", lab_train_config(epochs=1, weight_decay=0.01), verbose=0)
    assert again["pretrain"]["already_trained"]  # the same lab schedule: the stage is kept


def test_the_labs_optimizer_and_later_stages():
    from recgpt_tf.training.fit import make_optimizer

    optimizer = make_optimizer(LabTrainConfig(epochs=4, learning_rate=2e-3, warmup_steps=5, weight_decay=0.01), lambda: 5)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == pytest.approx(0.01)
    later = LabTrainConfig(seed=1, batch_size=32, ema_momentum=0.5).for_stage(PromptConfig().train)
    assert type(later) is LabTrainConfig and (later.seed, later.batch_size, later.ema_momentum, later.learning_rate) == (1, 32, 0.5, 5e-4)
    assert type(TrainConfig(seed=1).for_stage(PromptConfig().train)) is TrainConfig


def test_the_prompt_loss_before_real_items_only():
    tokens, segments = [np.array([5, 11, 9, 12, 7])], [np.array([0, 1, 0, 1, 0])]
    assert LabPromptConfig(1, loss_positions="prompt").loss_targets(tokens, segments)["targets"][0].tolist() == [0, 9, 0, 7, 0]
    assert LabPromptConfig(1).loss_targets(tokens, segments)["targets"][0].tolist() == [9, 9, 7, 7, 0]
    assert PromptConfig(1).loss_targets(tokens, segments)["targets"][0].tolist() == [9, 9, 7, 7, 0]
    assert LabPromptConfig(1, loss_positions="prompt").to_dict()["loss_positions"] == "prompt"


def test_the_labs_schedules_that_cannot_stream_are_refused_on_streamed_input(tiny_dataset, tmp_path):
    from recgpt_tf.data import synthetic_sequences, write_examples
    from recgpt_tf.data.streaming import StreamedDataset

    records = tmp_path / "train.tfrecord.gz"
    write_examples(synthetic_sequences(num_users=60, num_items=30, seed=2), records)
    streamed = StreamedDataset.scan([str(records)])
    run = Run.create(tmp_path / "run", streamed)
    with pytest.raises(ConfigError, match="target_copies"):
        streamed.training_batches(12, LabTrainConfig(target_copies=2), vocabulary_files=run.vocabulary_files)
    with pytest.raises(ConfigError, match="examples"):
        streamed.training_batches(12, LabTrainConfig(examples="prefixes"), vocabulary_files=run.vocabulary_files)
    streamed.training_batches(12, LabTrainConfig(weight_decay=0.01), vocabulary_files=run.vocabulary_files)  # the others stream


def test_a_lab_schedule_is_recorded_and_resumed_as_the_labs(tiny_dataset, tmp_path):
    run = tiny_run(tiny_dataset, tmp_path / "run")
    run.train(tiny_dataset, "pretrain", lab_train_config(epochs=1, ema_momentum=0.5), verbose=0)
    recorded = Run.open(run.path).stage_config("pretrain")
    assert recorded["schedule"] == "lab" and recorded["ema_momentum"] == 0.5
    assert TrainConfig.from_recorded(recorded) == lab_train_config(epochs=1, ema_momentum=0.5).for_catalogue(tiny_dataset.num_items)
    # Prompt-tuning without a schedule given takes pre-training's recorded one: the moving average carries on.
    Run.open(run.path).train(tiny_dataset, "prompt", prompt_config=PromptConfig(1, TrainConfig(epochs=1)), verbose=0)
    assert Run.open(run.path).stage_config("prompt")["ema_momentum"] == 0.5


def test_an_architecture_or_schedule_name_is_registered_once():
    with pytest.raises(TypeError, match="architecture 'lab' is LabModelConfig's already"):

        class Another(ModelConfig):
            ARCHITECTURE = "lab"

    with pytest.raises(TypeError, match="schedule 'recgpt' is TrainConfig's already"):

        class Mine(TrainConfig):
            SCHEDULE = "recgpt"

    class Tweaked(LabModelConfig):  # names no architecture of its own: not registered, nothing replaced
        pass

    assert type(ModelConfig.from_dict(LabModelConfig(num_items=N, num_users=U).to_dict())) is LabModelConfig
