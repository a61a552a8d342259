"""Item features end to end: a run trained with them, exported with a catalogue larger than its training data,
served, and asked over gRPC and REST for items that only their features can explain."""

import json
import shutil

import numpy as np
import pytest

from recgpt_tf.cli import main
from recgpt_tf.config import ModelConfig
from recgpt_tf.data import Dataset, synthetic_sequences
from recgpt_tf.data.item_features import CatalogueFeatures, ItemFeatures
from recgpt_tf.data.synthetic import synthetic_item_topics
from recgpt_tf.errors import ConfigError, RunDirectoryError
from recgpt_tf.runs import FEATURES_FILE, Run
from recgpt_tf.serving import GrpcClient, LocalServer, RestClient

ITEMS, TOPICS, SEED = 200, 20, 3
FLAGS = ["--hidden-size", "32", "--num-layers", "1", "--intermediate-size", "64", "--max-length", "20", "--batch-size", "64", "--quiet"]


def _new(item: str) -> bool:
    """The items no training sequence holds: a fifth of the catalogue, two of each topic's ten."""
    return int(item) % 5 == 0


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Users who keep to one topic; the data without the new items; the features file of every item."""
    root = tmp_path_factory.mktemp("catalogue")
    sequences = synthetic_sequences(
        num_users=600, num_items=ITEMS, num_topics=TOPICS, follow_probability=0.0, drift_probability=0.0, topics_per_user=1, seed=SEED
    )
    trained = {user: [item for item in items if not _new(item)] for user, items in sequences.items()}
    data = root / "data.txt"
    data.write_text("".join(f"{user} {' '.join(items)}\n" for user, items in trained.items() if len(items) >= 3))
    topics = synthetic_item_topics(ITEMS, TOPICS, SEED)
    features = root / "items.csv"
    features.write_text("item_id,topic\n" + "".join(f"{item},{topic}\n" for item, topic in topics.items()))
    return root, data, features, topics


@pytest.fixture(scope="module")
def served(catalogue):
    root, data, features, topics = catalogue
    run, base = root / "run", root / "base"
    assert main(["train", str(data), "--out", str(run), "--item-features", str(features), "--epochs", "8", *FLAGS]) == 0
    assert main(["export", str(run), str(base), "--name", "recgpt", "--top-k", "10", "--item-features", str(features)]) == 0
    server = LocalServer(base, grpc_port=0, rest_port=0, poll_seconds=0.3).start()
    yield run, base, server
    server.stop(grace=1.0)


@pytest.mark.slow
def test_a_feature_only_item_is_recommended_over_grpc_and_rest_for_a_user_of_its_topic(served, catalogue):
    run, base, server = served
    topics = catalogue[3]
    meta = json.loads((base / "recgpt" / "1" / "assets.extra" / "recgpt.json").read_text())
    assert meta["catalogue"] == {
        "items": 200,
        "trained_items": 160,
        "feature_only_items": 40,
        "feature_only_with_unknown_values_only": 0,
        "left_out_without_values": 0,
    }
    assert meta["num_items"] == 200
    clients = (GrpcClient(f"127.0.0.1:{server.grpc_port}", "recgpt"), RestClient(f"127.0.0.1:{server.rest_port}", "recgpt"))
    for topic in ("t0", "t7"):
        members = [item for item, t in topics.items() if t == topic]
        history = [item for item in members if not _new(item)][:4]
        for client in clients:
            row = client.recommend(["a-new-user"], [history])[0]
            new = [item for item in row["item_ids"] if _new(item)]
            # The topic's new items are served, by their features alone, above every item of another topic.
            assert new and all(topics[item] == topic for item in new), (topic, row)
            first_other = next((i for i, item in enumerate(row["item_ids"]) if topics[item] != topic), len(row["item_ids"]))
            assert all(row["item_ids"].index(item) < first_other for item in new)
        # A new item in the history is understood as itself (its features), not as an unknown item.
        only_new = [item for item in members if _new(item)][:1]
        row = clients[0].recommend(["a-new-user"], [only_new])[0]
        assert sum(topics[item] == topic for item in row["item_ids"][:5]) >= 4, (topic, row)


@pytest.mark.slow
def test_the_run_keeps_its_features_and_refuses_others(served, catalogue, tmp_path):
    run_dir = served[0]
    root, data, features, topics = catalogue
    run = Run.open(run_dir)
    held = run.item_features()
    assert held.coverage["items_not_in_data"] == 40 and held.num_values == 20
    model = run.load_model("prompt")
    np.testing.assert_array_equal(model.backbone.embedding.item_features.numpy(), held.matrix())  # the checkpoint carries it
    dataset = Dataset.from_file(data)
    other = ItemFeatures(("topic",), {item: ((f"x{int(item) % 3}",),) for item in topics})
    with pytest.raises(RunDirectoryError, match="other item features"):
        Run.create(run_dir, dataset, run.model_config, item_features=CatalogueFeatures.build(other, dataset.item_vocab.tokens))
    # An architecture without them does not fit features given.
    with pytest.raises(ConfigError, match="does not fit the run's item features: the run has item features with num_feature_values 20"):
        Run.create(tmp_path / "new", dataset, ModelConfig(num_items=dataset.num_items, num_users=dataset.num_users), item_features=held)
    # A run recorded before the feature fields existed opens as id-only (a copy: the fixture's run stays as it is).
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    for key in ("num_feature_values", "max_item_features", "item_id_dropout"):
        del config["model"][key]
    (copy / "config.json").write_text(json.dumps(config))
    assert not Run.open(copy).model_config.has_item_features
    # An untrained directory that an attempt with features left behind trains without them when given none.
    attempt = tmp_path / "attempt"
    Run.create(
        attempt, dataset, ModelConfig(num_items=dataset.num_items, num_users=dataset.num_users, **held.model_settings()), item_features=held
    )
    assert (attempt / FEATURES_FILE).exists()
    assert Run.create(attempt, dataset).item_features() is None and not (attempt / FEATURES_FILE).exists()


@pytest.mark.slow
def test_a_warm_start_from_a_run_with_features_needs_them_today(served, catalogue, tmp_path, capsys):
    root, data, features, _ = catalogue
    args = ["train", str(data), "--out", str(tmp_path / "today"), "--warm-start", str(served[0]), "--stages", "pretrain", "--epochs", "1"]
    assert main([*args, "--quiet"]) == 2
    assert "needs item features on both runs or on neither: the old run was trained with them, this one without" in capsys.readouterr().err
    assert main([*args, "--quiet", "--item-features", str(features)]) == 0
    warm = Run.open(tmp_path / "today").summary("pretrain")["warm_start"]
    assert warm["items_kept"] == 160 and warm["items_new"] == 0


def test_an_id_only_run_cannot_serve_items_by_features(tmp_path, capsys, catalogue):
    root, data, features, _ = catalogue
    run = tmp_path / "run"
    assert main(["train", str(data), "--out", str(run), "--stages", "pretrain", "--epochs", "1", *FLAGS]) == 0
    assert not (run / FEATURES_FILE).exists()
    assert main(["export", str(run), str(tmp_path / "base"), "--name", "m", "--item-features", str(features)]) == 2
    assert "trained without item features" in capsys.readouterr().err
