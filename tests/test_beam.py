"""The data path on Apache Beam (DirectRunner): the same users, sequences and vocabularies as the in-process
`recgpt convert` on the same log, whatever the runner splits."""

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
