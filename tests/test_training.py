import csv
import json
import shutil

import numpy as np
import pytest
import tf_keras as keras

from helpers import tiny_run, tiny_train_config
from recgpt_tf.config import SAMPLED_SOFTMAX_MIN_ITEMS, SOFTMAX_LABEL_SMOOTHING, TrainConfig
from recgpt_tf.errors import ConfigError, RunDirectoryError
from recgpt_tf.evaluation import evaluate_model, evaluate_popularity
from recgpt_tf.runs import Run


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    run = tiny_run(tiny_dataset, run_dir)
    summary = run.train(tiny_dataset, "pretrain", tiny_train_config(), verbose=0)["pretrain"]
    return run_dir, run.load_model("pretrain"), summary


def test_short_fit_lowers_loss_and_beats_popularity(trained, tiny_dataset):
    run_dir, model, summary = trained
    with (run_dir / "pretrain" / "history.csv").open() as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses[-1] < losses[0] - 0.3
    valid = tiny_dataset.split("valid")
    ours = evaluate_model(model, valid)
    popular = evaluate_popularity(tiny_dataset, valid)
    assert ours["NDCG@10"] > 2 * popular["NDCG@10"], (ours, popular)
    assert summary["valid"]["NDCG@10"] == pytest.approx(ours["NDCG@10"], abs=1e-6)


def test_run_directory_reloads_to_identical_scores(trained, tiny_dataset):
    run_dir, model, _ = trained
    run = Run.open(run_dir)
    reloaded = run.load_model("pretrain")
    test = tiny_dataset.split("test")
    assert evaluate_model(reloaded, test) == evaluate_model(model, test)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["hidden_size"] == 32 and config["pretrain"]["objective"] == "softmax"


def test_a_later_stage_trains_with_its_own_optimizer(trained, tiny_dataset):
    """Stage weights are saved with their optimizer; a reloaded model must not hand the
    pre-training learning rate and step count to the next stage's optimizer."""
    from recgpt_tf.data import training_dataset

    run_dir, _, _ = trained
    model = Run.open(run_dir).load_model("pretrain")
    model.start_prompt_tuning()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-5))
    model.fit(training_dataset(tiny_dataset.users, tiny_dataset.train_sequences(), 20, 64).take(1), epochs=1, verbose=0)
    assert model.optimizer.learning_rate.numpy() == pytest.approx(1e-5)  # pre-training used 3e-3
    assert model.optimizer.iterations.numpy() <= 2  # a fresh step count, not pre-training's


def test_seeded_runs_are_deterministic(tiny_dataset, tmp_path):
    a, _ = tiny_run(tiny_dataset, tmp_path / "a").pretrain(tiny_dataset, tiny_train_config(epochs=2), verbose=0)
    b, _ = tiny_run(tiny_dataset, tmp_path / "b").pretrain(tiny_dataset, tiny_train_config(epochs=2), verbose=0)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption")


@pytest.mark.slow
def test_interrupted_training_resumes_where_it_stopped(tiny_dataset, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        tiny_run(tiny_dataset, tmp_path).pretrain(tiny_dataset, tiny_train_config(epochs=4), verbose=0, extra_callbacks=[_Interrupt()])
    assert (tmp_path / "pretrain" / "backup").exists()
    _, summary = tiny_run(tiny_dataset, tmp_path).pretrain(tiny_dataset, tiny_train_config(epochs=4), verbose=0)
    with (tmp_path / "pretrain" / "history.csv").open() as handle:
        epochs = [int(row["epoch"]) for row in csv.DictReader(handle)]
    # Epochs 0 and 1 ran before the interruption and are not run again.
    assert epochs == [0, 1, 2, 3], epochs
    assert summary["epochs"] == 4
    assert not any((tmp_path / "pretrain" / "backup").rglob("*.index"))  # backup deleted once training completes


@pytest.mark.slow
def test_a_stage_an_earlier_version_began_resumes_when_its_retired_settings_are_the_products(tiny_dataset, tmp_path, capsys):
    run = tiny_run(tiny_dataset, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run.pretrain(tiny_dataset, tiny_train_config(epochs=4), verbose=0, extra_callbacks=[_Interrupt()])
    config = json.loads((tmp_path / "config.json").read_text())
    config["pretrain"].update(weight_decay=0.0, ema_momentum=0.0, examples="sequences", target_copies=1)  # as it recorded them
    (tmp_path / "config.json").write_text(json.dumps(config))
    _, summary = Run.open(tmp_path).pretrain(tiny_dataset, tiny_train_config(epochs=4), verbose=0)
    assert "training it anew" not in capsys.readouterr().err
    with (tmp_path / "pretrain" / "history.csv").open() as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [0, 1, 2, 3]  # epochs 0 and 1 not run again
    assert summary["epochs"] == 4


def test_learning_rate_warms_up_then_decays_to_zero_at_the_cap():
    from recgpt_tf.config import TrainConfig
    from recgpt_tf.training.fit import make_optimizer

    def data():  # 5 batches an epoch
        return 5

    config = TrainConfig(epochs=4, learning_rate=2e-3, warmup_steps=5, learning_rate_decay="cosine")
    optimizer = make_optimizer(config, data)
    assert type(optimizer) is keras.optimizers.Adam
    schedule = optimizer._learning_rate
    lr = [float(schedule(step)) for step in (0, 5, 20)]
    assert lr == pytest.approx([0.0, 2e-3, 0.0], abs=1e-9)  # 0 -> peak after 5 warm-up steps -> 0 at 4 epochs x 5
    flat = make_optimizer(TrainConfig(epochs=4, learning_rate=1e-3, warmup_steps=5), data)._learning_rate
    assert [float(flat(step)) for step in (0, 5, 19)] == pytest.approx([0.0, 1e-3, 1e-3], abs=1e-9)
    assert isinstance(make_optimizer(TrainConfig(), lambda: 1 / 0), keras.optimizers.Adam)  # a flat rate never counts steps
    with pytest.raises(ValueError, match="learning_rate_decay must be one of"):
        TrainConfig(learning_rate_decay="step")
    with pytest.raises(ValueError, match="softmax objective only"):
        TrainConfig(objective="bce", label_smoothing=0.1)


def test_later_stages_take_pretrainings_seed_and_batch_size(trained, tiny_dataset, tmp_path):
    from recgpt_tf.training import PromptConfig

    run_dir, _, _ = trained
    fork = Run.open(run_dir).fork(tmp_path / "fork")
    (fork.path / "evaluation.json").write_text("{}")  # an evaluation of the weights before this call
    prompt = PromptConfig(1, TrainConfig(epochs=1, learning_rate=5e-4, seed=3, batch_size=32))
    summaries = fork.train(tiny_dataset, "prompt", prompt_config=prompt, verbose=0)
    recorded = Run.open(fork.path).config
    assert list(summaries) == ["prompt"] and summaries["prompt"]["epochs"] == 1
    assert [recorded["prompt"][key] for key in ("seed", "batch_size")] == [7, 64]  # pre-training's, not 3 / 32
    assert recorded["prompt"]["learning_rate"] == 5e-4 and recorded["pretrain"]["seed"] == 7
    assert not (fork.path / "evaluation.json").exists(), "a retrained run drops its stale evaluation"


def test_a_fork_follows_its_parents_pre_training(trained, tiny_dataset, tmp_path):
    from recgpt_tf.data import Dataset, synthetic_sequences
    from recgpt_tf.errors import RunDirectoryError
    from recgpt_tf.training import PromptConfig

    run_dir, _, _ = trained
    parent = Run.open(run_dir).fork(tmp_path / "parent")  # a copy of the shared fixture to pre-train anew
    fork = parent.fork(tmp_path / "fork")
    fork.train(tiny_dataset, "prompt", prompt_config=PromptConfig(1, TrainConfig(epochs=1)), verbose=0)
    assert parent.fork(fork.path).has_stage("prompt"), "a fork of the same pre-training keeps its stages"

    (fork.path / "evaluation.json").write_text("{}")  # an evaluation of the prompt-tuned fork
    parent.train(tiny_dataset, "pretrain", tiny_train_config(epochs=1, seed=3), verbose=0)
    refreshed = parent.fork(fork.path)
    assert not refreshed.has_stage("prompt"), "prompt-tuned from weights the parent no longer has"
    assert refreshed.evaluation() is None, "it scored the old weights"
    assert refreshed.summary("pretrain") == parent.summary("pretrain") and refreshed.config["pretrain"]["seed"] == 3
    for x, y in zip(refreshed.load_model().get_weights(), parent.load_model().get_weights()):
        np.testing.assert_array_equal(x, y)

    other = Dataset.from_interactions(synthetic_sequences(num_users=50, num_items=30, seed=9), name="other")
    tiny_run(other, tmp_path / "other")
    with pytest.raises(RunDirectoryError, match="other data"):
        parent.fork(tmp_path / "other")


def test_a_run_with_trained_stages_refuses_another_architecture(trained, tiny_dataset, tmp_path):
    from recgpt_tf.errors import RunDirectoryError

    run_dir, _, _ = trained
    copy = Run.open(run_dir).fork(tmp_path / "copy")
    width = copy.model_config.hidden_size
    with pytest.raises(RunDirectoryError, match=f"hidden_size {width} -> {2 * width}"):
        tiny_run(tiny_dataset, copy.path, hidden_size=2 * width)  # its weights have the recorded shapes
    assert tiny_run(tiny_dataset, copy.path).load_model("pretrain"), "the recorded architecture resumes"


def test_architecture_for_resumes_the_recorded_run_then_the_warm_start_then_the_defaults(trained, tiny_dataset, tmp_path):
    from recgpt_tf.config import ModelConfig
    from recgpt_tf.runs import architecture_for

    run_dir, _, _ = trained
    recorded = Run.open(run_dir).model_config
    defaults = ModelConfig(num_items=tiny_dataset.num_items, num_users=tiny_dataset.num_users)
    assert recorded != defaults
    assert architecture_for(run_dir, tiny_dataset) == recorded  # resuming
    assert architecture_for(tmp_path / "new", tiny_dataset, warm_start=run_dir) == recorded  # yesterday's
    untrained = Run.create(tmp_path / "untrained", tiny_dataset)  # no stage yet: nothing recorded to keep
    assert untrained.model_config == defaults and architecture_for(untrained.path, tiny_dataset, warm_start=run_dir) == recorded
    assert architecture_for(run_dir, tiny_dataset, warm_start=untrained.path) == recorded  # the run itself comes first
    assert architecture_for(run_dir, tiny_dataset, hidden_size=64).hidden_size == 64


def test_a_worker_trains_what_its_chief_has_not_finished_even_before_the_chief_wrote_its_run(trained, tiny_dataset, tmp_path):
    # Workers of one job start together: a worker may look at the chief's run before the chief created it.
    early = tiny_run(tiny_dataset, tmp_path / "early")
    early.chief_path = tmp_path / "chief-not-created-yet"
    assert "already_trained" not in early.train(tiny_dataset, "pretrain", tiny_train_config(epochs=1), verbose=0)["pretrain"]
    late = tiny_run(tiny_dataset, tmp_path / "late")
    late.chief_path, _, _ = trained  # the chief finished pre-training with these settings
    assert late.train(tiny_dataset, "pretrain", tiny_train_config(), verbose=0)["pretrain"]["already_trained"]


@pytest.mark.parametrize("objective", ["sampled_softmax", "bce"])
def test_every_objective_trains_under_a_distribution_strategy(tiny_dataset, tmp_path, objective):
    # Keras refuses a loss that averages over the batch itself inside a strategy; the tasks reduce per query.
    _, summary = tiny_run(tiny_dataset, tmp_path).pretrain(
        tiny_dataset, tiny_train_config(epochs=1, objective=objective, strategy="mirrored"), verbose=0
    )
    assert summary["epochs"] == 1 and summary["strategy"]["name"] == "mirrored" and summary["valid"]["NDCG@10"] > 0


def test_objective_auto_trains_the_full_softmax_below_the_threshold_and_the_sampled_one_from_it():
    assert TrainConfig().objective == "auto"
    assert TrainConfig().for_catalogue(SAMPLED_SOFTMAX_MIN_ITEMS - 1).objective == "softmax"
    assert TrainConfig().for_catalogue(SAMPLED_SOFTMAX_MIN_ITEMS).objective == "sampled_softmax"
    assert TrainConfig(objective="bce").for_catalogue(10**7).objective == "bce"  # an explicit choice stands
    # Label smoothing follows the objective it resolves to, unless set.
    assert TrainConfig().for_catalogue(SAMPLED_SOFTMAX_MIN_ITEMS - 1).label_smoothing == SOFTMAX_LABEL_SMOOTHING > 0
    assert TrainConfig().for_catalogue(SAMPLED_SOFTMAX_MIN_ITEMS).label_smoothing == 0.0
    assert TrainConfig(objective="bce").for_catalogue(10).label_smoothing == 0.0
    assert TrainConfig(label_smoothing=0.0).for_catalogue(10).label_smoothing == 0.0
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig(label_smoothing=0.1).for_catalogue(SAMPLED_SOFTMAX_MIN_ITEMS)


def test_a_log_that_is_not_a_terminal_gets_one_line_per_epoch(tiny_dataset, tmp_path, capfd):
    tiny_run(tiny_dataset, tmp_path / "run").pretrain(tiny_dataset, tiny_train_config(epochs=2), verbose=1)
    out = capfd.readouterr().out
    assert "\r" not in out and "\x08" not in out  # no progress-bar redraws in a log file
    assert out.splitlines() == [line for line in out.splitlines() if line.startswith("epoch ")]  # one line an epoch, nothing else
    assert [line.split(":")[0] for line in out.splitlines()] == ["epoch 1/2", "epoch 2/2"]


def test_a_recorded_stage_gives_back_its_training_settings_without_its_other_keys():
    recorded = {**TrainConfig(learning_rate=1e-4, seed=3).to_dict(), "prompt_window": 1, "warm_start": "/runs/old"}
    config = TrainConfig.from_recorded(recorded, epochs=4)
    assert config == TrainConfig(learning_rate=1e-4, seed=3, epochs=4)


def test_a_run_an_earlier_version_recorded_with_the_retired_settings_reads_as_the_products(trained, tiny_dataset, tmp_path):
    """Earlier versions recorded activation, layer_norm and position_mode with every model, and the lab's training
    settings with every stage: at the product's values the run opens, and resumes keeping its stages."""
    run_dir = shutil.copytree(trained[0], tmp_path / "old")
    config = json.loads((run_dir / "config.json").read_text())
    config["model"].update(activation="relu", layer_norm="post", position_mode="from_start")
    (run_dir / "config.json").write_text(json.dumps(config))
    summary_file = run_dir / "pretrain" / "summary.json"
    summary = json.loads(summary_file.read_text())
    summary["config"].update(weight_decay=0.0, ema_momentum=0.0, examples="sequences", target_copies=1)
    summary_file.write_text(json.dumps(summary))
    assert Run.open(run_dir).model_config == Run.open(trained[0]).model_config
    assert Run.open(run_dir).train(tiny_dataset, "pretrain", tiny_train_config(), verbose=0)["pretrain"]["already_trained"]
    summary["config"].update(examples="prefixes")  # a lab's stage: not the product's schedule, trained anew
    summary_file.write_text(json.dumps(summary))
    assert "already_trained" not in Run.open(run_dir).train(tiny_dataset, "pretrain", tiny_train_config(epochs=1), verbose=0)["pretrain"]


def test_a_run_older_than_a_model_field_is_refused_by_name_and_an_unknown_architecture_too(tiny_dataset, tmp_path):
    from recgpt_tf.config import ModelConfig

    run = tiny_run(tiny_dataset, tmp_path / "old")
    config = json.loads((run.path / "config.json").read_text())
    del config["model"]["filter_mix"]
    (run.path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunDirectoryError, match="records no filter_mix"):
        Run.open(run.path).model_config
    with pytest.raises(ConfigError, match="'tomorrow' is not one this process knows .*once recgpt_tf.experimental is imported"):
        ModelConfig.from_dict({"num_items": 3, "num_users": 2, "architecture": "tomorrow"})
