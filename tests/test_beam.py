"""The data path on Apache Beam (DirectRunner): the same users, sequences and vocabularies as the in-process
`recgpt convert` on the same log, whatever the runner splits."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recgpt_tf.cli import main
from recgpt_tf.data import read_examples
from recgpt_tf.data.examples import vocabulary_paths

pytest.importorskip("apache_beam")


def _log(folder, seed=0):
    """Parquet parts in row groups of 50, heavy time ties (file order decides), string and integer ids."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for part in range(3):
        rows = 300
        users = rng.integers(0, 40, rows)
        pq.write_table(
            pa.table(
                {
                    "userId": pa.array(users) if part == 1 else pa.array([str(u) for u in users]),
                    "movieId": [f"m{i}" for i in rng.integers(0, 70, rows)],
                    "rating": rng.uniform(0, 5, rows),
                    "timestamp": rng.integers(0, 6, rows),
                }
            ),
            folder / f"part-{part:05d}.parquet",
            row_group_size=50,
        )
    (folder / "_SUCCESS").write_text("")
    return folder


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_beam_conversion_equals_the_in_process_one(tmp_path, kind, capsys):
    data = _log(tmp_path / "log.parquet")
    if kind == "csv":  # the same log as one CSV file with a header
        table = pa.concat_tables(
            [pq.read_table(p).cast(pq.read_table(data / "part-00000.parquet").schema) for p in sorted(data.glob("part-*"))]
        )
        lines = ["userId,movieId,rating,timestamp"] + [",".join(map(str, row.values())) for row in table.to_pylist()]
        data = tmp_path / "log.csv"
        data.write_text("\n".join(lines) + "\n")
    local, beam = tmp_path / "local" / "train.tfrecord.gz", tmp_path / "beam" / "train.tfrecord.gz"
    assert main(["convert", str(data), str(local), "--shards", "3"]) == 0
    assert main(["convert", str(data), str(beam), "--shards", "3", "--runner", "DirectRunner", "--direct_num_workers=2"]) == 0
    assert "on Beam's DirectRunner" in capsys.readouterr().out
    assert read_examples([str(beam.parent / "train-*")]) == read_examples([str(local.parent / "train-*")])
    assert len(list(beam.parent.glob("train-*-of-00003.tfrecord.gz"))) == 3
    for key, path in vocabulary_paths(local).items():
        assert vocabulary_paths(beam)[key].read_bytes() == path.read_bytes(), key


def test_a_bad_row_stops_the_pipeline_with_its_file_and_row(tmp_path, capsys):
    data = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"user_id": ["u", "u"], "item_id": ["a", None], "timestamp": [1, 2]}), data)
    assert main(["convert", str(data), str(tmp_path / "out.tfrecord.gz"), "--runner", "DirectRunner"]) == 1
    assert "bad.parquet:2: item id None" in capsys.readouterr().err


# --- batch recommendations on Beam ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def published(tiny_dataset, tmp_path_factory):
    from helpers import export_from_run, tiny_run, tiny_train_config

    folder = tmp_path_factory.mktemp("beam_batch")
    model, _ = tiny_run(tiny_dataset, folder / "run").pretrain(tiny_dataset, tiny_train_config(epochs=1), verbose=0)
    return folder, export_from_run(folder / "run", model, folder / "export", (9, 1), index_kind="brute-force")


def _by_user(paths):
    lines = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines()]
    return {line["user_id"]: line for line in lines}


def _same_answers(left, right) -> bool:
    """The same users, lists and steps; scores within float32 noise (other batch sizes sum in another order)."""
    assert left.keys() == right.keys()
    for user, answer in left.items():
        assert answer["item_ids"] == right[user]["item_ids"] and answer["recall_step"] == right[user]["recall_step"]
        np.testing.assert_allclose(answer["scores"], right[user]["scores"], atol=1e-5)
    return True


def test_beam_batch_recommendations_equal_the_in_process_ones(published, tiny_dataset, tmp_path, capsys):
    folder, version = published
    users = tiny_dataset.user_vocab.decode(tiny_dataset.users[:150])
    histories = [tiny_dataset.item_vocab.decode(s) for s in tiny_dataset.sequences[:150]]
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "".join(
            json.dumps({"user_id": u, "history": h, **({"exclude": h[-3:] + ["nope"]} if i % 2 else {})}) + "\n"
            for i, (u, h) in enumerate(zip(users, histories))
        )
    )
    local, beam = tmp_path / "local.jsonl", tmp_path / "beam" / "recs.jsonl"
    assert main(["recommend-batch", str(version), str(requests), "--out", str(local), "--quiet"]) == 0
    argv = ["recommend-batch", str(version), str(requests), "--out", str(beam), "--shards", "2", "--batch-size", "32"]
    assert main([*argv, "--runner", "DirectRunner", "--direct_num_workers=2"]) == 0
    shards = sorted(beam.parent.glob("recs-*-of-00002.jsonl"))
    assert len(shards) == 2 and _same_answers(_by_user(shards), _by_user([local]))  # offline on Beam = in process = online
    manifest = json.loads((beam.parent / "recs.jsonl.manifest.json").read_text())
    assert manifest["lines"] == manifest["requests"]["count"] == 150 and manifest["model"]["version"] == version.name
    assert [s["sha256"] for s in manifest["shards"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in shards]
    capsys.readouterr()
    assert main([*argv, "--runner", "DirectRunner"]) == 0 and "already held this job's answers" in capsys.readouterr().out
    other = tmp_path / "other.jsonl"
    other.write_text(requests.read_text().splitlines()[0] + "\n")
    assert main(["recommend-batch", str(version), str(other), "--out", str(beam), "--runner", "DirectRunner"]) == 1
    assert "holds another job's finished answers" in capsys.readouterr().err


def test_beam_batch_from_an_interaction_log(published, tiny_dataset, tmp_path):
    folder, version = published
    log = tmp_path / "log.csv"
    rows = [
        f"{u},{i},{t}"
        for u, s in zip(tiny_dataset.user_vocab.decode(tiny_dataset.users[:40]), tiny_dataset.sequences[:40])
        for t, i in enumerate(tiny_dataset.item_vocab.decode(s))
    ]
    log.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    local, beam = tmp_path / "local.jsonl", tmp_path / "beam.jsonl"
    assert main(["recommend-batch", str(version), str(log), "--out", str(local), "--quiet"]) == 0
    assert main(["recommend-batch", str(version), str(log), "--out", str(beam), "--runner", "DirectRunner"]) == 0
    assert _same_answers(_by_user(sorted(tmp_path.glob("beam-*.jsonl"))), _by_user([local]))


def test_beam_mistakes_are_one_line_errors(published, tmp_path, capsys):
    _, version = published
    assert main(["convert", str(tmp_path / "none-*.csv"), str(tmp_path / "o.tfrecord.gz"), "--runner", "DirectRunner"]) == 1
    assert "none-*.csv: no such file, or no file matches" in capsys.readouterr().err
    (tmp_path / "d.txt").write_text("1 2 3\n")
    assert main(["convert", str(tmp_path / "d.txt"), str(tmp_path / "o.tfrecord.gz"), "--runner", "DirectRunner"]) == 2
    assert "--format must be parquet, csv or tsv for the Beam pipeline" in capsys.readouterr().err
    requests = tmp_path / "r.jsonl"
    requests.write_text('{"user_id": "1", "history": []}\n')
    assert main(["recommend-batch", str(version), str(requests), "--out", str(tmp_path / "r-out.jsonl"), "--shards", "2"]) == 2
    assert "--shards applies to a Beam job (--runner)" in capsys.readouterr().err
