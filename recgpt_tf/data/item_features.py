"""Item features: each catalogue item's categorical attributes (categories, brand, price band, tags), read
from the file a catalogue already has.

Formats (from the suffix, or `data_format`):
    csv / tsv: a header naming the item column (`item_id` or an alias: `COLUMN_ALIASES["item"]`) and one or
        more feature columns. A cell holds one value, or several separated by "|" (`VALUE_SEPARATOR`); an
        empty cell holds none.
    jsonl: one JSON object a line: the item id under the item key, each feature a string, a number or a
        list of them (null or [] for none).
    parquet: a table, a folder or a glob of part files, with the item column and feature columns of
        scalars or lists.
    s3rec: the S3Rec release's `{"item": [attribute, ...], ...}`, the JSON file the paper's Amazon data ships
        with (`.json`): one feature column, "attributes".

Rules, the readers' own:
    - Every item appears once: an item seen again is an error naming both places.
    - An item with no value in any column is kept, featureless (the model then knows it by its id alone).
    - Item ids are exact strings, as the interaction readers read them; feature values are strings ("3" and
      3 are one value), stripped of nothing.
    - `columns` picks the feature columns (default: every column but the item's); a column it names that the
      file lacks is an error listing the file's columns.
    - Malformed input stops with `DataFormatError` naming FILE:LINE (FILE:ROW for Parquet).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from recgpt_tf.data.readers import COLUMN_ALIASES, check_id, folded_name, parquet_parts, text_lines
from recgpt_tf.errors import ConfigError, DataFormatError

VALUE_SEPARATOR = "|"  # between the values of one CSV/TSV cell
# A value held by fewer of the training catalogue's items than this goes to the OOV bucket, which so learns
# what a rare value means; a value first seen at export time (a new brand) is read as rare too. A value on
# one item alone tells the model nothing its id row does not.
MIN_VALUE_ITEMS = 2
FEATURE_FORMATS = ("csv", "tsv", "jsonl", "parquet", "s3rec")
S3REC_COLUMN = "attributes"  # the one feature column of an S3Rec attribute file
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".json": "s3rec"}


@dataclasses.dataclass(frozen=True)
class ItemFeatures:
    """Each item's values of each feature column.

    Attributes:
        columns: The feature columns, in the file's order.
        items: {item id: (the values of column 0, of column 1, ...)}, in the file's order; a value tuple may
            be empty.
    """

    columns: tuple[str, ...]
    items: dict[str, tuple[tuple[str, ...], ...]]

    def tokens(self, item: str) -> list[str]:
        """The item's values as "column=value" tokens, the unit a feature vocabulary counts (one column's value
        is never another's): [] for an item without features or not in the file."""
        values = self.items.get(item, ())
        return [f"{column}={value}" for column, column_values in zip(self.columns, values) for value in column_values]

    def statistics(self) -> dict[str, float]:
        """Items, columns, featureless items, values an item and distinct tokens, for the CLI and recgpt.json."""
        counts = [len(self.tokens(item)) for item in self.items]
        distinct = {token for item in self.items for token in self.tokens(item)}
        return {
            "items": len(self.items),
            "columns": len(self.columns),
            "featureless_items": sum(count == 0 for count in counts),
            "values_per_item": sum(counts) / max(len(counts), 1),
            "distinct_values": len(distinct),
        }


def detect_feature_format(path: Path | str) -> str:
    """The features format a file's suffix says (a `.gz` is refused by the reader with a hint)."""
    path = Path(path)
    data_format = _SUFFIX_FORMATS.get(path.suffix.lower()) or ("parquet" if path.is_dir() else None)
    if data_format is None:
        raise ConfigError(
            "item_features",
            f"{path}: cannot tell the format from its suffix; name it ({', '.join(FEATURE_FORMATS)}) or use one of {sorted(_SUFFIX_FORMATS)}",
        )
    return data_format


def read_item_features(path: Path | str, data_format: str | None = None, columns: Sequence[str] | None = None) -> ItemFeatures:
    """Reads an item features file (see the module) into `ItemFeatures`.

    Args:
        path: The file (a Parquet folder or glob too).
        data_format: One of `FEATURE_FORMATS`; default from the suffix.
        columns: The feature columns to keep, in this order (default: every one the file has but the item's).
    """
    path = Path(path)
    data_format = data_format or detect_feature_format(path)
    if data_format not in FEATURE_FORMATS:
        raise ConfigError("item_features", f"format must be one of {', '.join(FEATURE_FORMATS)}; got {data_format!r}")
    if data_format == "s3rec":
        return _pick(path, _read_s3rec(path), columns)
    if data_format == "jsonl":
        names, rows = _jsonl_rows(path)
    elif data_format == "parquet":
        names, rows = _parquet_rows(path)
    else:
        names, rows = _delimited_rows(path, "," if data_format == "csv" else "\t")
    return _pick(path, _collect(path, names, rows), columns)


def _item_column(path: Path, names: Sequence[str]) -> str:
    """The one column of `names` that holds the item id, else an error listing them."""
    matches = [name for name in names if folded_name(name) in COLUMN_ALIASES["item"]]
    if len(matches) != 1:
        problem = "names no item column" if not matches else f"has {len(matches)} columns that could hold the item: {matches}"
        raise DataFormatError(path, None, f"{problem}; its columns are {list(names)}; name the item column item_id")
    return matches[0]


def _collect(path: Path, names: Sequence[str], rows: Iterable[tuple[int, dict]]) -> ItemFeatures:
    """ItemFeatures from (line, {column: values}) rows, each item once; `names` are the file's columns."""
    item_column = _item_column(path, names)
    feature_columns = tuple(name for name in names if name != item_column)
    if not feature_columns:
        raise DataFormatError(path, None, f"has no feature column beside the item column {item_column!r}")
    items: dict[str, tuple[tuple[str, ...], ...]] = {}
    first_line: dict[str, int] = {}
    for line, row in rows:
        ids = row.get(item_column, ())
        if len(ids) != 1:
            raise DataFormatError(path, line, f"must hold exactly one item id in {item_column!r}; got {list(ids)}")
        item = check_id(path, line, "item", ids[0])
        if item in items:
            raise DataFormatError(path, line, f"item {item!r} appears again (first on line {first_line[item]}); give each item one row")
        items[item] = tuple(tuple(row.get(column, ())) for column in feature_columns)
        first_line[item] = line
    return ItemFeatures(feature_columns, items)


def _pick(path: Path, features: ItemFeatures, columns: Sequence[str] | None) -> ItemFeatures:
    """`features` with only `columns`, in that order (all when None)."""
    if columns is None:
        return features
    missing = [column for column in columns if column not in features.columns]
    if missing or not columns:
        raise DataFormatError(
            path, None, f"has no feature column {missing or '(none given)'}; its feature columns are {list(features.columns)}"
        )
    index = [features.columns.index(column) for column in columns]
    return ItemFeatures(tuple(columns), {item: tuple(values[i] for i in index) for item, values in features.items.items()})


def _values(path: Path, line: int, column: str, cell) -> tuple[str, ...]:
    """A JSON or Parquet cell's values as strings: a scalar is one, a list its members, null or [] none."""
    if cell is None:
        return ()
    members = cell if isinstance(cell, (list, tuple)) else [cell]
    out = []
    for member in members:
        if isinstance(member, bool) or not isinstance(member, (str, int, float)) or member is None:
            raise DataFormatError(path, line, f"column {column!r} holds {member!r}; a feature value is a string or a number")
        out.append(member if isinstance(member, str) else json.dumps(member))
    return tuple(out)


def _delimited_rows(path: Path, delimiter: str) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    lines = text_lines(path)
    reader = csv.reader(lines, delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise DataFormatError(path, 1, "is empty; an item features file starts with a header naming its columns")

    def rows() -> Iterator[tuple[int, dict]]:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            if len(row) != len(header):
                raise DataFormatError(path, line, f"has {len(row)} fields where the header has {len(header)}")
            yield line, {name: tuple(v for v in cell.split(VALUE_SEPARATOR) if v) if cell else () for name, cell in zip(header, row)}

    return header, rows()


def _jsonl_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    rows, names = [], {}
    for line, text in enumerate(text_lines(path), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataFormatError(path, line, f"is not JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict):
            raise DataFormatError(path, line, f"must be a JSON object (an item and its features); got {type(record).__name__}")
        names.update(dict.fromkeys(record))
        rows.append((line, {key: _values(path, line, key, value) for key, value in record.items()}))
    return list(names), rows


def _parquet_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    import pyarrow.parquet as pq

    names: list[str] | None = None
    rows = []
    for part in parquet_parts(path):
        table = pq.read_table(part)
        if names is None:
            names = list(table.column_names)
        elif list(table.column_names) != names:
            raise DataFormatError(part, None, f"has columns {table.column_names}, not those of the first part {names}")
        for row_number, record in enumerate(table.to_pylist(), start=1):
            rows.append((row_number, {key: _values(part, row_number, key, value) for key, value in record.items()}))
    return names or [], rows


def _read_s3rec(path: Path) -> ItemFeatures:
    text = "".join(text_lines(path))
    try:
        mapping = json.loads(text, object_pairs_hook=_refuse_repeated_keys(path))
    except json.JSONDecodeError as error:
        raise DataFormatError(path, error.lineno, f"is not JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(mapping, dict):
        raise DataFormatError(path, 1, 'must be one JSON object {"item": [attribute, ...], ...} (the S3Rec attribute file)')
    items = {check_id(path, None, "item", item): (_values(path, None, S3REC_COLUMN, values),) for item, values in mapping.items()}
    return ItemFeatures((S3REC_COLUMN,), items)


def _refuse_repeated_keys(path: Path):
    def pairs(items: list[tuple[str, object]]) -> dict:
        seen = {}
        for key, value in items:
            if key in seen:
                raise DataFormatError(path, None, f"item {key!r} appears twice; give each item one entry")
            seen[key] = value
        return seen

    return pairs


@dataclasses.dataclass(frozen=True)
class CatalogueFeatures:
    """A catalogue's item features encoded for the model: the value vocabulary and each item's value ids.

    Feature value ids are 1..F (`values[i]` is id i + 1), F + 1 the bucket of rare and unknown values, 0 padding.
    A run keeps this beside its item vocabulary (`runs.Run.item_features`); the model carries `matrix()` as a
    weight.

    Attributes:
        columns: The feature columns, as the file named them.
        values: The known "column=value" tokens (`ItemFeatures.tokens`), in first-seen order.
        rows: Item id i + 1's value ids (`rows[i]`), for the items 1..N of the item vocabulary.
        min_items: The fewest training items a known value is held by (`MIN_VALUE_ITEMS`).
        coverage: What the file held against the catalogue: "items_with_features", "items_without_row" (the
            catalogue's items the file has no row for: known by their id alone), "items_not_in_data" (the file's
            items no training sequence holds: recommendable once exported with the file), "values_known",
            "values_rare" (mapped to the OOV bucket).
    """

    columns: tuple[str, ...]
    values: tuple[str, ...]
    rows: tuple[tuple[int, ...], ...]
    min_items: int = MIN_VALUE_ITEMS
    coverage: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def build(cls, features: ItemFeatures, items: Sequence[str], min_items: int = MIN_VALUE_ITEMS) -> "CatalogueFeatures":
        """Encodes `features` for the catalogue `items` (the item vocabulary's tokens, ids 1..N); values held by
        fewer than `min_items` of them go to the OOV bucket.

        Raises:
            ConfigError: no item of the catalogue has a feature value in the file (ids written another way?).
        """
        held = collections.Counter(token for item in items for token in dict.fromkeys(features.tokens(item)))
        if not held:
            sample = ", ".join(repr(item) for item in list(features.items)[:3])
            raise ConfigError(
                "item_features",
                f"no item of the data has a feature value in the file (its items: {sample}, ...); are the ids written the same way?",
            )
        values = tuple(token for token, count in held.items() if count >= min_items)
        if not values:
            raise ConfigError(
                "item_features",
                f"every value of the file is held by fewer than {min_items} of the data's items ({len(held):,} values), so none "
                "tells the model about more than one item; give columns of shared values (category, brand, price band)",
            )
        known = set(items)
        coverage = {
            "items_with_features": sum(1 for item in items if features.tokens(item)),
            "items_without_row": sum(1 for item in items if item not in features.items),
            "items_not_in_data": sum(1 for item in features.items if item not in known),
            "values_known": len(values),
            "values_rare": len(held) - len(values),
        }
        encoded = cls(tuple(features.columns), values, (), min_items, coverage)
        return dataclasses.replace(encoded, rows=tuple(encoded.ids(features.tokens(item)) for item in items))

    @property
    def num_values(self) -> int:
        """F, the known values."""
        return len(self.values)

    @property
    def oov(self) -> int:
        return self.num_values + 1

    @property
    def width(self) -> int:
        """M, the most values an item holds (at least 1)."""
        return max(1, max((len(row) for row in self.rows), default=1))

    def model_settings(self) -> dict[str, int]:
        """The `ModelConfig` fields of a model with these features."""
        return {"num_feature_values": self.num_values, "max_item_features": self.width}

    def ids(self, tokens: Iterable[str]) -> tuple[int, ...]:
        """Value ids of "column=value" tokens (rare and unknown ones the OOV bucket's), each id once (two rare
        values are one OOV id, not two)."""
        index = self._index
        return tuple(dict.fromkeys(index.get(token, self.oov) for token in tokens))

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {token: i + 1 for i, token in enumerate(self.values)}

    def matrix(self, width: int | None = None) -> np.ndarray:
        """[N + 2, M] int32 value ids (0 pads; row 0 and the OOV row N + 1 hold none), `RecGPT.set_item_features`'s
        input; `width` (default `self.width`) must hold every row."""
        width = self.width if width is None else width
        out = np.zeros((len(self.rows) + 2, width), np.int32)
        for item, row in enumerate(self.rows, start=1):
            if len(row) > width:
                raise ConfigError("item_features", f"item id {item} holds {len(row)} values; the model holds {width} an item")
            out[item, : len(row)] = row
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "values": list(self.values),
            "min_items": self.min_items,
            "coverage": self.coverage,
            "rows": [list(row) for row in self.rows],
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CatalogueFeatures":
        return cls(
            tuple(values["columns"]),
            tuple(values["values"]),
            tuple(tuple(row) for row in values["rows"]),
            int(values["min_items"]),
            dict(values.get("coverage", {})),
        )

    def describe(self) -> str:
        """One console line: what the features cover."""
        c = self.coverage
        return (
            f"item features ({', '.join(self.columns)}): {c['items_with_features']:,} items with features, "
            f"{c['items_without_row']:,} without a row (known by id alone), {c['items_not_in_data']:,} not in the data "
            f"(recommendable once exported with the file); {c['values_known']:,} values known, {c['values_rare']:,} rare "
            f"(held by fewer than {self.min_items} items: the OOV bucket)"
        )
