"""Parquet interaction logs: the same rules as CSV (exact ids, exact timestamps, errors naming FILE:ROW),
in memory and through `recgpt convert`."""

import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recgpt_tf.cli import main
from recgpt_tf.data import Dataset, load_interactions, read_examples
from recgpt_tf.errors import DataFormatError


def _write(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


def test_a_parquet_log_reads_as_its_csv_would(tmp_path):
    path = _write(
        tmp_path / "log.parquet",
        user=[" u", "u", " u", "v", "v", "v"],
        item=["b", "a", "c", "x", "y", "z"],
        timestamp=[1700000000000000100, 5, 1700000000000000001, 3, 1, 2],  # nanoseconds: float64 would tie the first and third
    )
    assert load_interactions(path) == {"u": ["a"], " u": ["c", "b"], "v": ["y", "z", "x"]}


def test_named_integer_and_timestamp_columns(tmp_path):
    stamps = [datetime.datetime(2024, 1, d) for d in (3, 1, 2)]
    path = _write(
        tmp_path / "t.parquet", extra=[0, 0, 0], timestamp=pa.array(stamps, pa.timestamp("ns")), item_id=[7, 8, 9], user_id=[1, 1, 1]
    )
    assert load_interactions(path) == {"1": ["8", "9", "7"]}
    assert Dataset.from_file(path).num_items == 3


@pytest.mark.parametrize(
    "columns, fragment",
    [
        ({"user": ["u", None], "item": ["a", "b"], "timestamp": [1, 2]}, r"bad\.parquet:2: user id None"),
        ({"user": ["u", "u"], "item": ["a", "b\nc"], "timestamp": [1, 2]}, r"bad\.parquet:2: item id .* line break"),
        ({"user": ["u", "u"], "item": ["a", "b"], "timestamp": [1.0, float("nan")]}, r"bad\.parquet:2: timestamp nan"),
        ({"user": ["u"], "item": ["a"]}, r"bad\.parquet: expected user, item and timestamp columns"),
    ],
)
def test_bad_parquet_rows_are_named(tmp_path, columns, fragment):
    with pytest.raises(DataFormatError, match=fragment):
        load_interactions(_write(tmp_path / "bad.parquet", **columns))


def test_not_parquet_is_refused_by_name(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_text("user,item,timestamp\n")
    with pytest.raises(DataFormatError, match=r"fake\.parquet: is not a readable Parquet file"):
        load_interactions(path)


def test_recgpt_convert_reads_parquet(tmp_path):
    path = _write(tmp_path / "log.parquet", user=["u", "u", "v"], item=["a", "b", "c"], timestamp=[2, 1, 1])
    assert main(["convert", str(path), str(tmp_path / "out.tfrecord.gz")]) == 0
    assert dict(read_examples([str(tmp_path / "out.tfrecord.gz")])) == {"u": ["b", "a"], "v": ["c"]}
