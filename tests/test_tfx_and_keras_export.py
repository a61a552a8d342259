"""The TFX Trainer module and exporting an in-memory Keras model: both give the
same serving contract as `recgpt export`, and the local endpoint serves them."""

import json
import shutil
from types import SimpleNamespace

import pytest
import tensorflow as tf

from helpers import TINY_MODEL, write_lines
from recgpt_tf.cli import main
from recgpt_tf.contract import EMBEDDINGS_SIGNATURE, RECOMMEND_SIGNATURE
from recgpt_tf.data import read_examples, synthetic_sequences, training_dataset, write_examples
from recgpt_tf.data.synthetic import synthetic_item_topics
from recgpt_tf.errors import DataFormatError
from recgpt_tf.export import export_keras_model
from recgpt_tf.inference import AutoRegressiveRecall
from recgpt_tf.models import RecGPT
from recgpt_tf.serving import GrpcClient, LocalServer
from recgpt_tf.tfx_trainer import run_fn

TINY_CONFIG = {**{k: v for k, v in TINY_MODEL.items()}, "epochs": 2, "batch_size": 64, "prompt_window": 1}


def _signature_shapes(path):
    loaded = tf.saved_model.load(str(path))
    out = {}
    for name in (RECOMMEND_SIGNATURE, EMBEDDINGS_SIGNATURE):
        outputs = loaded.signatures[name].structured_outputs
        out[name] = {k: (v.dtype.name, v.shape.as_list()) for k, v in outputs.items()}
    return out


def test_examples_round_trip_and_bad_records(tmp_path):
    seqs = {"u1": ["a", "b", "c"], "u2": ["c", "d"]}
    write_examples(seqs, tmp_path / "d.tfrecord.gz")
    assert read_examples([str(tmp_path / "*.gz")]) == seqs
    with tf.io.TFRecordWriter(str(tmp_path / "bad.tfrecord")) as writer:
        writer.write(tf.train.Example().SerializeToString())
    with pytest.raises(DataFormatError, match=r"bad.tfrecord: record 1 is not a RecGPT example"):
        read_examples([str(tmp_path / "bad.tfrecord")])
    with pytest.raises(DataFormatError, match="none-\\*.gz: no TFRecord files match"):
        read_examples([str(tmp_path / "none-*.gz")])


def test_examples_written_in_shards_read_back_whole(tmp_path):
    seqs = {str(u): [str(u), str(u + 1)] for u in range(1, 11)}
    assert (
        main(
            [
                "convert",
                str(write_lines(tmp_path / "d.txt", [f"{u} {' '.join(v)}" for u, v in seqs.items()])),
                str(tmp_path / "train.tfrecord.gz"),
                "--shards",
                "3",
            ]
        )
        == 0
    )
    files = sorted(p.name for p in tmp_path.glob("train-*"))
    assert files == [f"train-0000{i}-of-00003.tfrecord.gz" for i in range(3)] and not list(tmp_path.glob(".*.tmp"))
    assert [len(read_examples([str(tmp_path / f)])) for f in files] == [4, 3, 3]  # users round-robin
    assert read_examples([str(tmp_path / "train-*-of-00003.tfrecord.gz")]) == seqs


@pytest.mark.slow
def test_run_fn_writes_a_servable_saved_model_with_the_cli_contract(tmp_path):
    seqs = synthetic_sequences(num_users=300, num_items=80, num_topics=6, seed=5)
    users = list(seqs)
    data = tmp_path / "all.txt"
    data.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in seqs.items()))
    assert main(["convert", str(data), str(tmp_path / "train.tfrecord.gz")]) == 0
    write_examples({u: seqs[u] for u in users[250:]}, tmp_path / "eval.tfrecord.gz")
    # The catalogue's features, five items of it in no training sequence (a topic each, as items 1..80 have).
    topics = synthetic_item_topics(80, 6, seed=5)
    rows = [*(f"{item},{topic}" for item, topic in topics.items()), *(f"new-{i},t{i}" for i in range(5))]
    features = write_lines(tmp_path / "items.csv", ["item_id,topic", *rows])
    fn_args = SimpleNamespace(
        train_files=[str(tmp_path / "train.tfrecord.gz")],
        eval_files=[str(tmp_path / "eval.tfrecord.gz")],
        serving_model_dir=str(tmp_path / "serving_model"),
        model_run_dir=str(tmp_path / "run"),
        custom_config={**TINY_CONFIG, "item_features": features},
        train_steps=None,
        eval_steps=None,
        data_accessor=None,
        schema_path=None,
        transform_output=None,
        hyperparameters=None,
    )
    run_fn(fn_args)
    serving_model = tmp_path / "serving_model"
    meta = json.loads((serving_model / "assets.extra" / "recgpt.json").read_text())
    assert set(meta["eval_metrics"]) >= {"pretrain", "recgpt"} and meta["prompt_tuned"] is True
    assert meta["catalogue"] == {
        "items": 85,
        "trained_items": 80,
        "feature_only_items": 5,
        "feature_only_with_unknown_values_only": 0,
        "left_out_without_values": 0,
    }

    # The CLI path on the same data gives the same signatures and shapes.
    assert (
        main(
            [
                "train",
                str(data),
                "--out",
                str(tmp_path / "cli_run"),
                "--quiet",
                "--epochs",
                "1",
                "--batch-size",
                "64",
                *[f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()],
            ]
        )
        == 0
    )
    assert main(["export", str(tmp_path / "cli_run"), str(tmp_path / "cli_base"), "--name", "recgpt"]) == 0
    assert _signature_shapes(serving_model) == _signature_shapes(tmp_path / "cli_base" / "recgpt" / "1")

    # A Pusher copies serving_model_dir into a model base as a numbered version; the endpoint serves it.
    shutil.copytree(serving_model, tmp_path / "base" / "recgpt" / "7")
    with LocalServer(tmp_path / "base", grpc_port=0, rest_port=0) as server:
        rows = GrpcClient(f"127.0.0.1:{server.grpc_port}", "recgpt").recommend([users[0]], [seqs[users[0]][:-1]])
    assert len(rows[0]["item_ids"]) == 10 and not set(rows[0]["item_ids"]) & set(seqs[users[0]][:-1])


@pytest.mark.slow
def test_export_an_in_memory_keras_model(tiny_dataset, tmp_path):
    data = tiny_dataset
    model = RecGPT(num_items=data.num_items, num_users=data.num_users, **TINY_MODEL)
    model.compile(optimizer="adam")
    model.fit(training_dataset(data.users, data.train_sequences(), TINY_MODEL["max_length"], 64), epochs=1, verbose=0)
    path = export_keras_model(model, data.item_vocab, data.user_vocab, tmp_path, "recgpt").path
    assert path == tmp_path / "recgpt" / "1" and (path / "assets" / "items.txt").exists()
    out = tf.saved_model.load(str(path)).signatures[RECOMMEND_SIGNATURE](user_id=tf.constant(["1"]), history=tf.constant([["3", "4"]]))
    # The same two-step lists (9 + 1) as the in-memory model computes in Python, history excluded.
    history = data.item_vocab.encode(["3", "4"])
    expected, _, steps = AutoRegressiveRecall(model).recommend(data.user_vocab.encode(["1"]), [history], (9, 1))
    assert out["item_ids"].numpy().astype(str).tolist() == [data.item_vocab.decode(expected[0])]
    assert out["recall_step"].numpy().tolist() == steps.tolist() and not {"3", "4"} & set(data.item_vocab.decode(expected[0]))
