"""Item features files (`data.item_features`): the formats a catalogue has, and bad input named by FILE:LINE."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recgpt_tf.data.item_features import ItemFeatures, read_item_features
from recgpt_tf.errors import ConfigError, DataFormatError


def _csv(tmp_path, text, name="items.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_csv_with_multi_valued_and_empty_cells(tmp_path):
    path = _csv(tmp_path, "item_id,category,brand\ni1,face|skin,Nivea\ni2,,Dove\ni3,,\n\n")
    features = read_item_features(path)
    assert features.columns == ("category", "brand")
    assert features.items == {"i1": (("face", "skin"), ("Nivea",)), "i2": ((), ("Dove",)), "i3": ((), ())}
    assert features.tokens("i1") == ["category=face", "category=skin", "brand=Nivea"]
    assert features.tokens("i3") == [] and features.tokens("unknown") == []  # featureless, and not in the file
    assert features.statistics() == {"items": 3, "columns": 2, "featureless_items": 1, "values_per_item": 4 / 3, "distinct_values": 4}


def test_the_same_catalogue_from_tsv_json_lines_and_parquet(tmp_path):
    expected = {"1": (("a", "b"), ("3",)), "2": ((), ("4",))}
    tsv = _csv(tmp_path, "itemId\ttags\tprice_band\n1\ta|b\t3\n2\t\t4\n", "items.tsv")
    jsonl = _csv(
        tmp_path, '{"item_id": "1", "tags": ["a", "b"], "price_band": 3}\n{"item_id": "2", "tags": [], "price_band": "4"}\n', "items.jsonl"
    )
    parquet = tmp_path / "items.parquet"
    pq.write_table(pa.table({"product_id": ["1", "2"], "tags": [["a", "b"], []], "price_band": ["3", "4"]}), parquet)
    for path in (tsv, jsonl, parquet):
        features = read_item_features(path)
        assert features.columns == ("tags", "price_band") and features.items == expected, path


def test_the_s3rec_attribute_file_reads_directly(tmp_path):
    path = tmp_path / "Beauty_item2attributes.json"
    path.write_text(json.dumps({"4": [1, 2, 3], "83": [4, 5, 6], "7": []}))
    features = read_item_features(path)
    assert features == ItemFeatures(("attributes",), {"4": (("1", "2", "3"),), "83": (("4", "5", "6"),), "7": ((),)})
    path.write_text('{"4": [1], "4": [2]}')
    with pytest.raises(DataFormatError, match="item '4' appears twice"):
        read_item_features(path)


def test_columns_pick_and_order_the_features(tmp_path):
    path = _csv(tmp_path, "item_id,category,brand,colour\ni1,face,Nivea,red\n")
    assert read_item_features(path, columns=["colour", "category"]).items == {"i1": (("red",), ("face",))}
    with pytest.raises(DataFormatError, match=r"no feature column \['size'\]; its feature columns are \['category', 'brand', 'colour'\]"):
        read_item_features(path, columns=["size"])


@pytest.mark.reliability
@pytest.mark.parametrize(
    "text, message",
    [
        ("item_id,brand\ni1,a\ni2,b\ni1,c\n", r"items.csv:4: item 'i1' appears again \(first on line 2\)"),
        ("sku,brand\ni1,a\n", r"items.csv: names no item column; its columns are \['sku', 'brand'\]"),
        ("item_id\ni1\n", "has no feature column beside the item column 'item_id'"),
        ("item_id,brand\ni1,a,b\n", "items.csv:2: has 3 fields where the header has 2"),
        ("item_id,brand\n,a\n", r"items.csv:2: must hold exactly one item id in 'item_id'; got \[\]"),
        ("", "items.csv:1: is empty"),
    ],
)
def test_bad_features_files_are_named_by_file_and_line(tmp_path, text, message):
    with pytest.raises(DataFormatError, match=message):
        read_item_features(_csv(tmp_path, text))


@pytest.mark.reliability
def test_bad_json_lines_and_an_unknown_suffix(tmp_path):
    path = _csv(tmp_path, '{"item_id": "1", "tags": ["a"]}\n{"item_id": "2", "tags": [{"x": 1}]}\n', "items.jsonl")
    with pytest.raises(DataFormatError, match=r"items.jsonl:2: column 'tags' holds \{'x': 1\}"):
        read_item_features(path)
    path.write_text('{"item_id": "1", "tags": "a"}\n[1, 2]\n')
    with pytest.raises(DataFormatError, match="items.jsonl:2: must be a JSON object"):
        read_item_features(path)
    with pytest.raises(ConfigError, match="cannot tell the format"):
        read_item_features(_csv(tmp_path, "x", "items.xml"))
