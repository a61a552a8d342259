"""Parquet interaction logs: the same rules as CSV (exact ids, exact timestamps, errors naming FILE:ROW),
in memory and through `recgpt convert`."""

import datetime

import numpy as np
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
        (
            {"user": ["u"], "item": ["a"]},
            r"bad\.parquet: cannot tell which column holds the time: its columns are \[.user., .item.\]; name them with --columns",
        ),
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


# --- columns are taken by name (issue 33, class 2) --------------------------------------------------------


@pytest.mark.reliability
def test_movielens_layout_is_read_by_name_not_by_position(tmp_path):
    # userId, movieId, rating, timestamp: by position the rating would order each user's items.
    path = _write(tmp_path / "ratings.parquet", userId=[1, 1, 1], movieId=[10, 20, 30], rating=[5.0, 1.0, 3.0], timestamp=[300, 100, 200])
    assert load_interactions(path) == {"1": ["20", "30", "10"]}
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,10,5.0,300\n1,20,1.0,100\n1,30,3.0,200\n")
    assert load_interactions(csv) == {"1": ["20", "30", "10"]}
    digits = tmp_path / "features.csv"  # a header whose names hold digits is still a header
    digits.write_text("user_id,item_id,timestamp,feature_1\nu,a,2,0.5\nu,b,1,0.7\n")
    assert load_interactions(digits) == {"u": ["b", "a"]}


@pytest.mark.reliability
def test_columns_in_another_order_are_found_by_their_names(tmp_path):
    path = _write(tmp_path / "log.parquet", item_id=["a", "b", "c"], user_id=["u", "u", "v"], ts=[2, 1, 1])
    assert load_interactions(path) == {"u": ["b", "a"], "v": ["c"]}


@pytest.mark.reliability
@pytest.mark.parametrize(
    "columns, fragment",
    [
        (
            {"user_id": ["u"], "customer_id": ["c"], "item": ["a"], "ts": [1]},
            r"2 columns that could hold the user: \['user_id', 'customer_id'\]",
        ),
        (
            {"account": ["u"], "sku": ["a"], "when": [1], "price": [2.0]},
            r"cannot tell which column holds the user and the item and the time",
        ),
        ({"uid_hash": ["u"], "sku": ["a"], "when": [1]}, r"cannot tell which column holds the user and the item and the time"),
    ],
)
def test_a_missing_or_ambiguous_column_is_an_error_that_lists_the_columns_and_the_flag(tmp_path, columns, fragment):
    with pytest.raises(DataFormatError, match=fragment) as error:
        load_interactions(_write(tmp_path / "log.parquet", **columns))
    assert "--columns user=COL,item=COL,time=COL" in str(error.value)


@pytest.mark.reliability
def test_three_unnamed_columns_are_read_by_position_and_columns_maps_any_names(tmp_path):
    assert load_interactions(_write(tmp_path / "p.parquet", a=["u", "u"], b=["x", "y"], c=[2, 1])) == {"u": ["y", "x"]}
    path = _write(tmp_path / "log.parquet", account=["u", "u"], sku=["x", "y"], when=[2, 1], price=[1.0, 2.0])
    assert load_interactions(path, columns={"user": "account", "item": "sku", "time": "when"}) == {"u": ["y", "x"]}
    with pytest.raises(DataFormatError, match=r"has no column 'shop' \(given for the item\); its columns are"):
        load_interactions(path, columns={"user": "account", "item": "shop", "time": "when"})
    out = tmp_path / "out.tfrecord.gz"
    assert main(["convert", str(path), str(out), "--columns", "user=account,item=sku,time=when"]) == 0
    assert dict(read_examples([str(out)])) == {"u": ["y", "x"]}
    with pytest.raises(SystemExit) as usage:  # argparse's usage error, before anything is read
        main(["convert", str(path), str(out), "--columns", "shop=sku"])
    assert usage.value.code == 2


@pytest.mark.reliability
def test_dates_order_as_dates(tmp_path):
    days = [datetime.date(2024, 3, 1), datetime.date(2023, 12, 31), datetime.date(2024, 1, 15)]
    for kind in (pa.date32(), pa.date64()):
        path = _write(tmp_path / f"{kind}.parquet", user=["u"] * 3, item=["mar", "dec", "jan"], date=pa.array(days, kind))
        assert load_interactions(path) == {"u": ["dec", "jan", "mar"]}


@pytest.mark.reliability
def test_a_folder_or_glob_of_parts_is_one_dataset(tmp_path):
    folder = tmp_path / "events.parquet"  # as Spark writes it: part files, a _SUCCESS marker, hidden checksums
    folder.mkdir()
    _write(folder / "part-00000.parquet", user_id=["u", "v"], item_id=["a", "b"], timestamp=[5, 1])
    _write(folder / "part-00001.parquet", user_id=["u", "v"], item_id=["c", "d"], timestamp=[1, 1])
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-00000.parquet.crc").write_bytes(b"\0\1")
    assert load_interactions(folder) == {"u": ["c", "a"], "v": ["b", "d"]}  # a tie keeps the parts' order
    assert load_interactions(str(folder / "part-*.parquet")) == {"u": ["c", "a"], "v": ["b", "d"]}
    _write(folder / "part-00002.parquet", user_id=["u"], item_id=[None], timestamp=[9])
    with pytest.raises(DataFormatError, match=r"part-00002\.parquet:1: item id None"):
        load_interactions(folder)
    with pytest.raises(DataFormatError, match=r"nothing-\*\.parquet: matches no files"):
        load_interactions(str(tmp_path / "nothing-*.parquet"))


# --- grouped on columns (issue 34) ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_the_columnar_reader_groups_exactly_as_the_row_reader(tmp_path, seed):
    """Random parts with heavy ties, string and integer ids, integer, float, timestamp and date times: the
    same users in the same order, the same sequences."""
    from recgpt_tf.data.readers import _read_parquet, _read_parquet_rows, parquet_parts

    rng = np.random.default_rng(seed)
    folder = tmp_path / "log.parquet"
    folder.mkdir()
    kind = ["int", "float", "timestamp", "date"][seed]
    for part in range(3):
        rows = int(rng.integers(1, 400))
        users = rng.integers(0, 30, rows)
        stamps = rng.integers(0, 5, rows)  # many ties: file order decides
        time = {
            "int": pa.array(stamps, pa.int64()),
            "float": pa.array(stamps / 4.0),
            "timestamp": pa.array(stamps * 1000, pa.timestamp("ms" if part else "us")),
            "date": pa.array(stamps.astype(np.int32), pa.date32()),
        }[kind]
        user = pa.array(users) if part % 2 else pa.array([f"u{u}" if u % 3 else str(u) for u in users])  # 7 and "7" alike
        pq.write_table(
            pa.table({"user_id": user, "item_id": pa.array([f"i{i}" for i in rng.integers(0, 50, rows)]), "ts": time}),
            folder / f"part-{part}.parquet",
            row_group_size=64,
        )
    parts = parquet_parts(folder)
    columnar = _read_parquet(parts, {})
    rows = _read_parquet_rows(parts, {})
    assert list(columnar) == list(rows) and columnar == rows


@pytest.mark.reliability
def test_edge_columns_read_as_the_row_reader_reads_them(tmp_path):
    from recgpt_tf.data.readers import _read_parquet_rows, parquet_parts

    folder = tmp_path / "edge.parquet"
    folder.mkdir()
    big = 2**63 + 5  # a hashed id no int64 holds
    stamps = pa.array([3, 1, 2], pa.timestamp("s", tz="Europe/Berlin"))
    pq.write_table(
        pa.table({"user_id": pa.array([big, big, 7], pa.uint64()), "item_id": pa.array([1, 2, 3], pa.int16()), "ts": stamps}),
        folder / "a.parquet",
    )
    pq.write_table(
        pa.table({"user_id": pa.array([], pa.uint64()), "item_id": pa.array([], pa.int16()), "ts": pa.array([], stamps.type)}),
        folder / "b.parquet",
    )
    assert load_interactions(folder) == _read_parquet_rows(parquet_parts(folder), {}) == {str(big): ["2", "1"], "7": ["3"]}


@pytest.mark.reliability
def test_the_first_bad_row_is_the_one_named_and_far_dates_are_an_error(tmp_path):
    users = ["u"] * 9 + [None]
    items = ["a", None] + ["b"] * 8  # a bad item on row 2 comes before a missing user on row 10
    with pytest.raises(DataFormatError, match=r"first\.parquet:2: item id None"):
        load_interactions(_write(tmp_path / "first.parquet", user_id=users, item_id=items, ts=list(range(10))))
    far = pa.array([datetime.date(2024, 1, 1), datetime.date(9999, 12, 31)], pa.date32())
    with pytest.raises(DataFormatError, match=r"far\.parquet: has a time outside 1677\.\.2262"):
        load_interactions(_write(tmp_path / "far.parquet", user_id=["u", "u"], item_id=["a", "b"], date=far))
