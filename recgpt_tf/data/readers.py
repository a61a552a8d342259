"""Readers for the interaction formats users bring.

Every reader returns `{user: [item, ...]}` with each user's items in time order,
as strings (vocabularies map them to ids later). Bad input stops with a
`DataFormatError` that names the file and line.

Formats:
    sequence: `user item item ...` per line, items oldest first (the paper's files).
        Ids are declared integers in this format.
    csv / tsv: `user,item,timestamp` rows, an optional header; sorted by timestamp
        per user (stable, so ties keep file order).
    inter: RecBole atomic file, a typed header such as
        `user_id:token\titem_id:token\ttimestamp:float`.
"""

from __future__ import annotations

import csv
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

from recgpt_tf.errors import DataFormatError

FORMATS = ("sequence", "csv", "tsv", "inter")
_SUFFIX_FORMATS = {".txt": "sequence", ".seq": "sequence", ".csv": "csv", ".tsv": "tsv", ".inter": "inter"}


def detect_format(path: Path | str) -> str:
    """Returns the format implied by the file name, or raises naming the file."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise DataFormatError(
            path,
            None,
            f"cannot tell the format from the suffix {suffix!r}; use one of "
            f"{', '.join(sorted(_SUFFIX_FORMATS))} or give data_format "
            f"({'|'.join(FORMATS)})",
        )
    return _SUFFIX_FORMATS[suffix]


def load_interactions(path: Path | str, data_format: str | None = None) -> dict[str, list[str]]:
    """Reads a user → items-in-time-order mapping from `path`.

    Args:
        path: The data file.
        data_format: One of `FORMATS`; detected from the suffix when None.

    Returns:
        An insertion-ordered dict from user id to that user's item ids (strings).

    Raises:
        DataFormatError: the file is missing, empty, of an unknown format, or has a
            malformed line (the message names the line).
    """
    path = Path(path)
    data_format = data_format or detect_format(path)
    if data_format not in FORMATS:
        raise DataFormatError(path, None, f"unknown format {data_format!r}; expected one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataFormatError(path, None, "no such file")
    if data_format == "sequence":
        sequences = _read_sequence_file(path)
    elif data_format == "inter":
        sequences = _read_recbole_inter(path)
    else:
        sequences = _read_delimited(path, "," if data_format == "csv" else "\t")
    if not sequences:
        raise DataFormatError(path, None, "the file holds no interactions")
    return sequences


def _check_integer(path: Path, line: int, kind: str, token: str) -> str:
    try:
        int(token)
    except ValueError:
        raise DataFormatError(path, line, f"{kind} id {token!r} is not an integer (this format declares integer ids)") from None
    return token


_GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"


def _text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file (a leading byte-order mark dropped), with errors that name FILE:LINE
    instead of a bare codec error: a compressed file, or a line that is not UTF-8."""
    with path.open("rb") as handle:
        if handle.read(2) == _GZIP_MAGIC:
            raise DataFormatError(path, None, "is gzip-compressed; decompress it first (gunzip)")
        handle.seek(0)
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFormatError(
                    path,
                    number,
                    f"is not UTF-8 text (byte {raw[error.start : error.start + 1]!r} at column {error.start + 1}); convert the file to UTF-8",
                ) from None
            yield line.removeprefix(_BOM) if number == 1 else line


def _read_sequence_file(path: Path) -> dict[str, list[str]]:
    sequences: dict[str, list[str]] = OrderedDict()
    first_line: dict[str, int] = {}
    for number, raw in enumerate(_text_lines(path), start=1):
        tokens = raw.split()
        if not tokens:
            continue
        user = _check_integer(path, number, "user", tokens[0])
        if len(tokens) == 1:
            raise DataFormatError(path, number, f"user {user} has no items")
        if user in sequences:
            raise DataFormatError(path, number, f"user {user} already appeared on line {first_line[user]}")
        sequences[user] = [_check_integer(path, number, "item", t) for t in tokens[1:]]
        first_line[user] = number
    return sequences


def _parse_timestamp(path: Path, line: int, token: str) -> float:
    try:
        return float(token)
    except ValueError:
        raise DataFormatError(path, line, f"timestamp {token!r} is not a number") from None


def _group_by_time(events: list[tuple[str, float, int, str]]) -> dict[str, list[str]]:
    """Groups (user, timestamp, order, item) events into per-user time-ordered lists."""
    events.sort(key=lambda e: (e[1], e[2]))
    sequences: dict[str, list[str]] = OrderedDict()
    for user, _, _, item in events:
        sequences.setdefault(user, []).append(item)
    return sequences


def _read_delimited(path: Path, delimiter: str) -> dict[str, list[str]]:
    events: list[tuple[str, float, int, str]] = []
    for number, row in enumerate(csv.reader(_text_lines(path), delimiter=delimiter), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 3:
            raise DataFormatError(path, number, f"expected user{delimiter}item{delimiter}timestamp, got {len(row)} field(s)")
        user, item, stamp = (cell.strip() for cell in row[:3])
        if number == 1 and not _is_number(stamp):
            continue  # a header row
        if not user or not item:
            raise DataFormatError(path, number, "empty user or item id")
        events.append((user, _parse_timestamp(path, number, stamp), number, item))
    return _group_by_time(events)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


_RECBOLE_TYPES = ("token", "float", "token_seq", "float_seq")


def _read_recbole_inter(path: Path) -> dict[str, list[str]]:
    events: list[tuple[str, float, int, str]] = []
    lines = _text_lines(path)
    header = next(lines, "").rstrip("\r\n")
    if not header.strip():
        raise DataFormatError(path, 1, "missing the RecBole header (e.g. user_id:token<TAB>item_id:token<TAB>timestamp:float)")
    fields = {}
    for position, column in enumerate(header.split("\t")):
        name, _, kind = column.partition(":")
        if kind not in _RECBOLE_TYPES:
            raise DataFormatError(path, 1, f"column {column!r} has no RecBole type (one of {', '.join(_RECBOLE_TYPES)})")
        fields[name] = (position, kind)
    for required in ("user_id", "item_id"):
        if required not in fields:
            raise DataFormatError(path, 1, f"the header has no {required} column")
    user_col, item_col = fields["user_id"][0], fields["item_id"][0]
    time_col, time_kind = fields.get("timestamp", (None, None))
    for number, raw in enumerate(lines, start=2):
        if not raw.strip():
            continue
        row = raw.rstrip("\r\n").split("\t")
        if len(row) != len(fields):
            raise DataFormatError(path, number, f"expected {len(fields)} tab-separated fields, got {len(row)}")
        stamp = 0.0
        if time_col is not None:
            stamp = _parse_timestamp(path, number, row[time_col])
        for name, (column, kind) in fields.items():
            if kind == "float" and name != "timestamp":
                _check_float(path, number, name, row[column])
        events.append((row[user_col], stamp, number, row[item_col]))
    return _group_by_time(events)


def _check_float(path: Path, line: int, name: str, token: str) -> None:
    if token and not _is_number(token):
        raise DataFormatError(path, line, f"field {name} is declared float but holds {token!r}")
