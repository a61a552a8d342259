"""Warm-started retraining with a growing catalogue: known ids keep their trained rows, new ones start
beside their neighbours (items) or at the cold-start row (users), vanished ones are dropped, the decoder
starts from yesterday's weights."""

import json
import shutil

import numpy as np
import pytest
import tf_keras as keras

from helpers import TINY_MODEL, tiny_run, tiny_train_config, write_lines
from recgpt_tf.cli import main
from recgpt_tf.config import ModelConfig
from recgpt_tf.data import Dataset, synthetic_sequences
from recgpt_tf.errors import ConfigError, RunDirectoryError
from recgpt_tf.runs import Run, architecture_for
from recgpt_tf.training.fit import build_model
from recgpt_tf.training.warm_start import describe, neighbour_rows, warm_start


def _days():
    """Day 1 lacks the last item of every third user and every sequence holding items 100..119 (new
    tomorrow); day 2 is everything but item 5's users (gone: item 5 is dropped)."""
    full = synthetic_sequences(num_users=400, num_items=120, num_topics=8, mean_length=10, max_length=30, seed=3)
    day1 = {u: (s[:-1] if int(u) % 3 == 0 else s) for u, s in full.items() if not any(int(i) >= 100 for i in s)}
    day2 = {u: s for u, s in full.items() if "5" not in s}
    return Dataset.from_interactions(day1, name="day1"), Dataset.from_interactions(day2, name="day2")


def test_known_rows_are_kept_new_rows_start_beside_their_neighbours_and_the_decoder_is_copied(tmp_path):
    day1, day2 = _days()
    old_run = tiny_run(day1, tmp_path / "day1")
    old_run.train(day1, "pretrain", tiny_train_config(epochs=2), verbose=0)
    old = old_run.load_model("pretrain")
    new = build_model(ModelConfig(num_items=day2.num_items, num_users=day2.num_users, **TINY_MODEL))
    rows = warm_start(new, old, day1.item_vocab, day2.item_vocab, day1.user_vocab, day2.user_vocab, day2.train_sequences())
    old_items, new_items = old.backbone.item_table.numpy(), new.backbone.item_table.numpy()
    for token in ("1", "50", "99"):  # known both days
        np.testing.assert_array_equal(new_items[day2.item_vocab.lookup(token)], old_items[day1.item_vocab.lookup(token)])
    for token in ("100", "119"):  # first seen on day 2: the mean of yesterday's rows of the known items beside it
        assert token not in day1.item_vocab.tokens
        beside = [
            old_items[day1.item_vocab.lookup(neighbour)]
            for sequence in day2.train_sequences()
            for a, b in zip(day2.item_vocab.decode(sequence), day2.item_vocab.decode(sequence)[1:])
            for mine, neighbour in ((a, b), (b, a))
            if mine == token and neighbour in day1.item_vocab.tokens
        ]
        assert beside
        np.testing.assert_allclose(new_items[day2.item_vocab.lookup(token)], np.mean(beside, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(new_items[day2.num_items + 1], old_items[day1.num_items + 1])  # the OOV row
    assert rows["items_new"] >= 20 and rows["items_new_with_neighbours"] == rows["items_new"] and rows["items_dropped"] >= 1
    old_users, new_users = (
        old.backbone.embedding.user_embedding.embeddings.numpy(),
        new.backbone.embedding.user_embedding.embeddings.numpy(),
    )
    newcomers = [day2.user_vocab.lookup(u) for u in day2.user_vocab.tokens if u not in day1.user_vocab.tokens]
    assert rows["users_new"] == len(newcomers) > 0 and rows["users_kept"] > 0
    np.testing.assert_array_equal(new_users[newcomers], np.repeat(old_users[:1], len(newcomers), axis=0))  # the cold-start user
    for name in ("decoder_block_0", "position_embedding"):
        mine = [w for w in new.backbone.weights if name in w.name]
        theirs = [w for w in old.backbone.weights if name in w.name]
        assert mine and all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(mine, theirs))
    wider = build_model(ModelConfig(num_items=day2.num_items, num_users=day2.num_users, **{**TINY_MODEL, "hidden_size": 16}))
    with pytest.raises(ConfigError, match="hidden_size 32 -> 16"):
        warm_start(wider, old, day1.item_vocab, day2.item_vocab, day1.user_vocab, day2.user_vocab)


def test_neighbour_rows_average_both_sides_skip_other_users_and_fall_back_to_the_mean_known_row():
    table = np.arange(14, dtype=np.float32).reshape(7, 2)  # 0 padding, 1..5 items, 6 unknown items
    new = np.array([2, 4])  # items 1, 3, 5 are known
    sequences = [np.array([1, 2, 3]), np.array([2, 0, 6]), np.array([5, 4]), np.array([3])]
    rows, with_neighbours = neighbour_rows(table, new, sequences)
    # Item 2: beside 1 and 3 in the first user (not padding or unknown in the second); item 4: beside 5.
    np.testing.assert_allclose(rows, [(table[1] + table[3]) / 2, table[5]])
    assert with_neighbours == 2
    alone, with_neighbours = neighbour_rows(table, new, [np.array([2]), np.array([4, 4])])  # no known neighbour
    np.testing.assert_allclose(alone, np.repeat(table[[1, 3, 5]].mean(axis=0, keepdims=True), 2, axis=0))
    assert with_neighbours == 0
    # Sequences joined end to end would put item 3 beside item 2 across users: they must not.
    rows, _ = neighbour_rows(table, new, [np.array([3]), np.array([2, 1])])
    np.testing.assert_allclose(rows[0], table[1])
    with pytest.raises(ConfigError, match="shares no item"):
        neighbour_rows(table, np.arange(1, 6), sequences)


def test_recgpt_train_warm_start_then_export_as_the_next_version(tmp_path, capsys):
    day1, day2 = _days()
    flags = ["--hidden-size", "32", "--num-layers", "1", "--intermediate-size", "64", "--max-length", "20", "--epochs", "2"]
    files = []
    for day in (day1, day2):
        files.append(
            write_lines(
                tmp_path / f"{day.name}.txt",
                [f"{u} {' '.join(day.item_vocab.decode(s))}" for u, s in zip(day.user_vocab.decode(day.users), day.sequences)],
            )
        )
    assert main(["train", files[0], "--out", str(tmp_path / "day1"), "--stages", "pretrain", *flags]) == 0
    assert main(["export", str(tmp_path / "day1"), str(tmp_path / "base"), "--name", "m", "--index", "brute-force"]) == 0
    assert (
        main(["train", files[1], "--out", str(tmp_path / "day2"), "--stages", "pretrain", "--warm-start", str(tmp_path / "day1"), *flags])
        == 0
    )
    assert f"warm start from {(tmp_path / 'day1').resolve()}: items" in capsys.readouterr().out  # before the epochs
    summary = Run.open(tmp_path / "day2").summary("pretrain")
    assert summary["warm_start"]["from"] == str((tmp_path / "day1").resolve()) and summary["warm_start"]["items_new"] >= 20
    assert 0 < summary["warm_start"]["valid_before_training"]["NDCG@10"] <= summary["valid"]["NDCG@10"]  # the start, then the best
    assert main(["export", str(tmp_path / "day2"), str(tmp_path / "base"), "--name", "m", "--index", "brute-force"]) == 0
    meta = json.loads((tmp_path / "base" / "m" / "2" / "assets.extra" / "recgpt.json").read_text())
    assert meta["num_items"] == day2.num_items and meta["config"]["pretrain"]["warm_start"].endswith("day1")
    # Without the model flags, the warm start keeps yesterday's architecture rather than today's defaults.
    assert (
        main(
            [
                "train",
                files[1],
                "--out",
                str(tmp_path / "day2c"),
                "--stages",
                "pretrain",
                "--warm-start",
                str(tmp_path / "day1"),
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    assert Run.open(tmp_path / "day2c").model_config.to_dict() == Run.open(tmp_path / "day2").model_config.to_dict()
    assert main(["train", files[1], "--out", str(tmp_path / "day2b"), "--stages", "pretrain", "--warm-start", str(tmp_path / "day2b")]) == 2


# --- a warm start remembers where it came from (issue 33, class 4) ------------------------------------------


class _KilledAfterFirstEpoch(Exception):
    pass


@pytest.fixture(scope="module")
def yesterday(tmp_path_factory):
    """Two finished runs of day 1 (sources A and B) and day 2's data."""
    folder = tmp_path_factory.mktemp("yesterday")
    day1, day2 = _days()
    tiny_run(day1, folder / "a").train(day1, "pretrain", tiny_train_config(epochs=1), verbose=0)
    shutil.copytree(folder / "a", folder / "b")
    return folder, day2


@pytest.mark.reliability
def test_an_interrupted_warm_start_resumes_only_from_its_own_source(yesterday, tmp_path, capsys):
    folder, day2 = yesterday
    config = architecture_for(tmp_path / "day2", day2, folder / "a")
    run = Run.create(tmp_path / "day2", day2, config)

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise _KilledAfterFirstEpoch  # after BackupAndRestore saved epoch 0

    with pytest.raises(_KilledAfterFirstEpoch):
        run.pretrain(
            day2, tiny_train_config(epochs=3), verbose=0, extra_callbacks=[Kill()], warm_start_from=run.warm_start_source(folder / "a")
        )
    assert any((tmp_path / "day2" / "pretrain" / "backup").rglob("*.index"))
    summary = run.train(day2, "pretrain", tiny_train_config(epochs=3), verbose=0, warm_start=folder / "b")["pretrain"]
    assert "the interrupted pretrain was started with other settings (warm_start); training it anew" in capsys.readouterr().err
    assert summary["warm_start"]["from"] == str((folder / "b").resolve()) and summary["epochs"] == 3


@pytest.mark.reliability
def test_a_vocabulary_that_no_longer_matches_its_tables_is_refused(yesterday, tmp_path, capsys):
    folder, _ = yesterday
    damaged = tmp_path / "damaged"
    shutil.copytree(folder / "a", damaged)
    items = (damaged / "items.txt").read_text().splitlines(keepends=True)
    (damaged / "items.txt").write_text("".join(items[:10] + items[11:]))  # a line lost: every later row shifts
    with pytest.raises(RunDirectoryError, match=rf"items\.txt holds {len(items) - 1} ids but the run's tables have {len(items)} rows"):
        Run.open(damaged)
    (damaged / "items.txt").write_text("".join([items[1], items[0], *items[2:]]))  # as many lines, two swapped
    with pytest.raises(RunDirectoryError, match=r"items\.txt is not the file the run was trained with"):
        Run.open(damaged)


@pytest.mark.reliability
def test_warm_start_mistakes_are_one_line_errors(yesterday, tmp_path, capsys):
    folder, day2 = yesterday
    data = write_lines(
        tmp_path / "day2.txt",
        [f"{u} {' '.join(day2.item_vocab.decode(s))}" for u, s in zip(day2.user_vocab.decode(day2.users), day2.sequences)],
    )
    no_weights = tmp_path / "no_weights"
    shutil.copytree(folder / "a", no_weights)
    for file in (no_weights / "pretrain").glob("weights.data*"):
        file.unlink()
    argv = ["train", data, "--stages", "pretrain", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "x"), "--warm-start", str(no_weights)]) == 1
    assert "no_weights/pretrain: its weights cannot be read" in capsys.readouterr().err
    assert main(["train", data, "--out", str(folder / "a"), "--stages", "prompt", "--warm-start", str(folder / "b")]) == 2
    assert "--warm-start starts pre-training from an earlier run; stages 'prompt'" in capsys.readouterr().err


def test_a_warm_start_says_what_it_kept_and_warns_when_little_is_known():
    report = {"from": "/runs/old", "items_kept": 5, "items_new": 3012, "items_new_with_neighbours": 0, "items_dropped": 2995}
    report.update(users_kept=900, users_new=100, users_dropped=3)
    first, warning = describe(report)
    assert first.startswith("warm start from /runs/old: items 5 kept, 3,012 new") and "users 900 kept, 100 new, 3 dropped" in first
    assert warning.startswith("warning: the old run knows only 5 of today's 3,017 items")
    assert len(describe({**report, "items_kept": 3000, "items_new": 17})) == 1


def test_with_item_features_the_value_table_is_mapped_by_value_and_each_item_keeps_todays_values():
    from recgpt_tf.data.item_features import CatalogueFeatures, ItemFeatures

    day1, day2 = _days()
    colour = lambda item, day: f"c{int(item) % (5 if day == 1 else 7)}"  # noqa: E731 (two new values, c5 and c6, on day 2)
    encoded = {
        day: CatalogueFeatures.build(
            ItemFeatures(("colour",), {i: ((colour(i, day),),) for i in data.item_vocab.tokens}), data.item_vocab.tokens
        )
        for day, data in ((1, day1), (2, day2))
    }
    models = {}
    for day, data in ((1, day1), (2, day2)):
        config = ModelConfig(num_items=data.num_items, num_users=data.num_users, **TINY_MODEL, **encoded[day].model_settings())
        models[day] = build_model(config)
        models[day].set_item_features(encoded[day].matrix())
    matrix = models[2].backbone.embedding.item_features.numpy()
    day2_args = (day1.item_vocab, day2.item_vocab, day1.user_vocab, day2.user_vocab, day2.train_sequences())
    warm_start(models[2], models[1], *day2_args, old_values=encoded[1].values, new_values=encoded[2].values)
    old, new = (models[day].backbone.embedding.feature_embedding.embeddings.numpy() for day in (1, 2))
    for value in ("colour=c0", "colour=c4"):
        np.testing.assert_array_equal(new[encoded[2].values.index(value) + 1], old[encoded[1].values.index(value) + 1])
    np.testing.assert_array_equal(new[encoded[2].values.index("colour=c6") + 1], 0.0)  # new today: starts at zero
    np.testing.assert_array_equal(models[2].backbone.embedding.item_features.numpy(), matrix)  # today's values, not yesterday's
    plain = build_model(ModelConfig(num_items=day2.num_items, num_users=day2.num_users, **TINY_MODEL))
    with pytest.raises(ConfigError, match="item features on both runs or on neither: the old run was trained with them, this one without"):
        warm_start(plain, models[1], *day2_args)
