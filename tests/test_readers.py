import pytest

from helpers import write_lines
from recgpt_tf.data import load_interactions, write_sequences
from recgpt_tf.errors import DataFormatError


def test_sequence_file_keeps_order_and_users(tmp_path):
    path = write_lines(tmp_path / "d.txt", ["1 5 3 9", "2 4 4"])
    assert load_interactions(path) == {"1": ["5", "3", "9"], "2": ["4", "4"]}


def test_csv_sorted_by_timestamp_with_header_and_stable_ties(tmp_path):
    path = write_lines(tmp_path / "d.csv", ["user,item,timestamp", "a,x,30", "a,y,10", "b,z,5", "a,w,10"])
    assert load_interactions(path) == {"a": ["y", "w", "x"], "b": ["z"]}


def test_tsv_and_recbole_inter(tmp_path):
    tsv = write_lines(tmp_path / "d.tsv", ["u1\ti1\t2", "u1\ti2\t1"])
    assert load_interactions(tsv) == {"u1": ["i2", "i1"]}
    inter = write_lines(
        tmp_path / "d.inter",
        ["user_id:token\titem_id:token\trating:float\ttimestamp:float", "7\t3\t5\t200", "7\t1\t4\t100", "8\t3\t1\t50"],
    )
    assert load_interactions(inter) == {"8": ["3"], "7": ["1", "3"]}


@pytest.mark.parametrize(
    "name,lines,fragment",
    [
        ("d.txt", ["1 2 3", "2 4 x7 5"], "d.txt:2: item id 'x7' is not an integer"),
        ("d.txt", ["1 2 3", "", "5"], "d.txt:3: user 5 has no items"),
        ("d.txt", ["1 2 3", "1 4"], "d.txt:2: user 1 already appeared on line 1"),
        ("d.csv", ["a,b,1", "a,c,yesterday"], "d.csv:2: timestamp 'yesterday' is not a finite number"),
        ("d.csv", ["a,b,1", "a,c"], "d.csv:2: expected user,item,timestamp"),
        ("d.inter", ["user_id:token\titem_id:token", "1\t2", "3"], "d.inter:3: expected 2 tab-separated fields"),
        ("d.inter", ["user_id\titem_id:token"], "d.inter:1: column 'user_id' has no RecBole type"),
        ("d.inter", ["user_id:token\titem_id:token\tscore:float", "1\t2\thigh"], "d.inter:2: field score is declared float"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, name, lines, fragment):
    path = write_lines(tmp_path / name, lines)
    with pytest.raises(DataFormatError) as error:
        load_interactions(path)
    assert fragment in str(error.value)


def test_empty_missing_and_unknown_format(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DataFormatError, match="empty.txt: the file holds no interactions"):
        load_interactions(empty)
    with pytest.raises(DataFormatError, match="nope.txt: no such file"):
        load_interactions(tmp_path / "nope.txt")
    odd = write_lines(tmp_path / "data.json", ["1 2"])
    with pytest.raises(DataFormatError, match=r"data.json: cannot tell the format"):
        load_interactions(odd)
    with pytest.raises(DataFormatError, match="unknown format 'json'"):
        load_interactions(odd, "json")


def test_a_written_sequence_file_reads_back_as_it_was(tmp_path):
    interactions = {"2": ["9", "1", "9"], "10": ["3"], "1": ["4", "5"]}
    path = tmp_path / "sequences.txt"
    write_sequences(interactions, path)
    read = load_interactions(path)
    assert read == interactions and list(read) == list(interactions)
