"""Readers for the interaction formats users bring.

Every reader returns `{user: [item, ...]}` with each user's items in time order,
as strings (vocabularies map them to ids later). Bad input stops with a
`DataFormatError` that names the file and line.

Formats:
    sequence: `user item item ...` per line, items oldest first (the paper's files).
        Ids are declared integers in this format.
    csv / tsv: `user,item,timestamp` rows, or any columns under a header (a first row with no number
        in it) that names them (`resolve_columns`); sorted by timestamp per user (stable, so ties keep
        file order).
    inter: RecBole atomic file, a typed header such as
        `user_id:token\titem_id:token\ttimestamp:float`.
    parquet: a table, a folder of part files (as Spark, pandas and BigQuery export it) or a glob of them,
        its user, item and timestamp columns found by name (`resolve_columns`), read with pyarrow under
        the same rules; dates order as dates; errors name FILE:ROW (1-based, per part file).

Columns are taken by name whenever a file names them: `user_id`, `item_id`, `timestamp` and their
common aliases (`userId`, `movieId`, `ts`, `event_time`, ...), or a `columns` mapping given by the caller
(`--columns user=...,item=...,time=...`). Position decides only for a file without names, or with exactly
three columns none of which is named like an id or a time.

Ids are exact strings: what the file holds (CSV quoting removed), never stripped, split or
normalised, and a run directory stores each one unchanged; an id it cannot store
(`vocab.storable_problem`) is refused with FILE:LINE. Timestamps are parsed exactly: integers as
integers, other numbers as finite decimals; `nan`, `inf` or a date is an error naming the line.
"""

from __future__ import annotations

import csv
import glob
import math
import re
from collections import OrderedDict
from decimal import Decimal
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from recgpt_tf.data.vocab import storable_problem
from recgpt_tf.errors import ConfigError, DataFormatError
from recgpt_tf.files import open_binary, write_text_atomic

FORMATS = ("sequence", "csv", "tsv", "inter", "parquet")
_SUFFIX_FORMATS = {".txt": "sequence", ".seq": "sequence", ".csv": "csv", ".tsv": "tsv", ".inter": "inter", ".parquet": "parquet"}


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


def load_interactions(path: Path | str, data_format: str | None = None, columns: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Reads a user → items-in-time-order mapping from `path`.

    Args:
        path: The data file (for Parquet also a folder or a glob of part files).
        data_format: One of `FORMATS`; detected from the suffix when None.
        columns: Which named column holds each of "user", "item" and "time" (`parse_columns`), for a
            table whose names `resolve_columns` cannot map by itself; CSV/TSV with a header and Parquet.

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
    if columns and data_format not in ("csv", "tsv", "parquet"):
        raise ConfigError("columns", f"applies to tables with named columns (csv, tsv, parquet), not to {data_format} files")
    if data_format == "parquet":
        sequences = _read_parquet(parquet_parts(path), columns or {})
    elif not path.is_file():
        raise DataFormatError(path, None, "no such file")
    elif data_format == "sequence":
        sequences = _read_sequence_file(path)
    elif data_format == "inter":
        sequences = _read_recbole_inter(path)
    else:
        sequences = _read_delimited(path, "," if data_format == "csv" else "\t", columns or {})
    if not sequences:
        raise DataFormatError(path, None, "the file holds no interactions")
    return sequences


_ASCII_INTEGER = re.compile(r"[+-]?[0-9]+")
# A timestamp: an ASCII decimal integer or a finite decimal number (exponent allowed), nothing else.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BLANKS = re.compile(r"[ \t]+")
Timestamp = int | Decimal


def write_sequences(interactions: dict[str, list[str]], path: Path | str) -> None:
    """Writes a user → items-in-time-order mapping as a sequence file ("user item item ...", one user a line),
    the format `load_interactions` reads from a .txt file; the file appears whole or not at all."""
    write_text_atomic(path, "".join(f"{user} {' '.join(items)}\n" for user, items in interactions.items()))


def _check_integer(path: Path, line: int, kind: str, token: str) -> str:
    if not _ASCII_INTEGER.fullmatch(token):
        raise DataFormatError(path, line, f"{kind} id {token!r} is not an integer (this format declares integer ids)")
    return token


def check_id(path: Path, line: int, kind: str, token: str) -> str:
    """`token` unchanged when a run directory can store it exactly, else an error naming the line."""
    problem = storable_problem(token)
    if problem:
        raise DataFormatError(path, line, f"{kind} id {token!r} {problem}")
    return token


_GZIP_MAGIC = b"\x1f\x8b"
_BOM = "\ufeff"


def text_lines(path: Path) -> Iterator[str]:
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
    for number, raw in enumerate(text_lines(path), start=1):
        # Blanks and tabs separate tokens; any other character (a Unicode line separator) stays in its token.
        line = raw.removesuffix("\n").removesuffix("\r").strip(" \t")
        if not line:
            continue
        tokens = _BLANKS.split(line)
        user = _check_integer(path, number, "user", tokens[0])
        if len(tokens) == 1:
            raise DataFormatError(path, number, f"user {user} has no items")
        if user in sequences:
            raise DataFormatError(path, number, f"user {user} already appeared on line {first_line[user]}")
        sequences[user] = [_check_integer(path, number, "item", t) for t in tokens[1:]]
        first_line[user] = number
    return sequences


def _parse_timestamp(path: Path, line: int, token: str) -> Timestamp:
    """A timestamp, exactly: an integer as a Python int (a nanosecond epoch keeps every digit), another
    number as a finite `Decimal` (ints and Decimals compare exactly); anything else names the line."""
    token = token.strip()
    if not _NUMBER.fullmatch(token):
        raise DataFormatError(path, line, f"timestamp {token!r} is not a finite number (integer or decimal, e.g. epoch seconds)")
    return int(token) if _ASCII_INTEGER.fullmatch(token) else Decimal(token)


def _group_by_time(events: list[tuple[str, Timestamp, int, str]]) -> dict[str, list[str]]:
    """Groups (user, timestamp, order, item) events into per-user time-ordered lists."""
    events.sort(key=lambda e: (e[1], e[2]))
    sequences: dict[str, list[str]] = OrderedDict()
    for user, _, _, item in events:
        sequences.setdefault(user, []).append(item)
    return sequences


def _read_delimited(path: Path, delimiter: str, columns: Mapping[str, str]) -> dict[str, list[str]]:
    """Interaction rows: `user, item, timestamp` by position (further columns ignored), or the columns a
    header names (`resolve_columns`); line numbers are the file's, also after a quoted field that spans lines."""
    return _group_by_time(list(delimited_events(path, delimiter, columns)))


def delimited_events(
    path: Path | str, delimiter: str, columns: Mapping[str, str] | None = None
) -> Iterator[tuple[str, Timestamp, int, str]]:
    """(user, timestamp, line, item) of each interaction row of a CSV/TSV file, in file order, checked as
    `load_interactions` checks them (the per-file step a Beam pipeline runs)."""
    path, columns = Path(path), columns or {}
    reader = csv.reader(text_lines(path), delimiter=delimiter)
    positions, first = (0, 1, 2), True
    while True:
        number = reader.line_num + 1  # where the row starts (a quoted field may span lines)
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise DataFormatError(path, reader.line_num, f"is not valid {'CSV' if delimiter == ',' else 'TSV'}: {error}") from None
        if not row or all(not cell.strip() for cell in row):
            continue
        if first and _is_header(row, columns):
            positions, first = resolve_columns(path, [cell.strip() for cell in row], columns), False
            continue
        if first and columns:
            raise ConfigError("columns", f"names columns, but the first row of {path} is data, not a header naming them")
        first = False
        if len(row) <= max(positions):
            raise DataFormatError(path, number, f"expected user{delimiter}item{delimiter}timestamp, got {len(row)} field(s)")
        user, item, stamp = (row[i] for i in positions)
        if not user or not item:
            raise DataFormatError(path, number, "empty user or item id")
        yield check_id(path, number, "user", user), _parse_timestamp(path, number, stamp), number, check_id(path, number, "item", item)


def _is_header(row: Sequence[str], columns: Mapping[str, str]) -> bool:
    """Whether a first row is a header: it holds every column name `columns` gives, or its third cell (a
    headerless file's timestamp) or every cell holds no digit and no word for a number (nan, inf). Every
    data row's timestamp holds a digit, so no data row is taken for a header: a malformed one is reported."""
    cells = [cell.strip() for cell in row]
    if columns and set(columns.values()) <= set(cells):
        return True
    return not _numeric(cells[2] if len(cells) > 2 else "") or not any(_numeric(cell) for cell in cells)


def _numeric(cell: str) -> bool:
    """Whether a cell holds a digit or is a word for a number (what no column name is)."""
    return any(c.isdigit() for c in cell) or cell.lstrip("+-").lower() in _NUMBER_WORDS


_NUMBER_WORDS = ("nan", "inf", "infinity")
ROLES = ("user", "item", "time")
# The names each role's column goes by in the logs users bring, compared case-folded and without "_", "-"
# or blanks (so `userId`, `user_id` and `User ID` are one name).
COLUMN_ALIASES = {
    "user": ("userid", "user", "uid", "visitorid", "customerid"),
    "item": ("itemid", "item", "iid", "movieid", "productid"),
    "time": ("timestamp", "ts", "time", "eventtime", "datetime", "date"),
}


def folded_name(name: str) -> str:
    """A column name compared case-folded, without blanks, "_" or "-"."""
    return re.sub(r"[\s_-]", "", name).casefold()


def _looks_like_a_role(name: str) -> bool:
    """Whether a column name says it holds an id, a time or a date in a way no alias matched (`uid_hash`,
    `OrderDate`, `ts_ms`): reading such columns by position would be a guess."""
    words = [word.lower() for word in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+", name)]
    return folded_name(name).endswith("id") or any(
        word in ("id", "ids", "uid", "iid", "ts") or re.search("time|date|stamp", word) for word in words
    )


def parse_columns(text: str) -> dict[str, str]:
    """`--columns user=COL,item=COL,time=COL` (any of the three) as {"user": COL, ...}."""
    mapping: dict[str, str] = {}
    for part in filter(None, (part.strip() for part in text.split(","))):
        role, equals, name = part.partition("=")
        role = "time" if role.strip() == "timestamp" else role.strip()
        if not equals or role not in ROLES or not name:
            raise ConfigError(
                "columns", f"must be ROLE=COLUMN pairs with ROLE one of {', '.join(ROLES)}, e.g. user=userId,item=movieId; got {text!r}"
            )
        if role in mapping:
            raise ConfigError("columns", f"names the {role} column twice in {text!r}")
        mapping[role] = name
    if not mapping:
        raise ConfigError("columns", f"must name at least one column (user=...,item=...,time=...); got {text!r}")
    return mapping


def resolve_columns(path: Path | str, names: Sequence[str], given: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """The positions of the user, item and time columns among a table's `names`.

    Each role takes the column `given` names for it, else the one column whose name is one of its
    `COLUMN_ALIASES`. Position (the first three columns) decides only when no name is given or matched,
    the table has exactly three columns and none is named like an id or a time. Anything else, a missing
    or an ambiguous role, is an error that lists the columns and names the flag that maps them.
    """
    given = dict(given or {})
    chosen: dict[str, int] = {}
    advice = "name them with --columns user=COL,item=COL,time=COL (columns={'user': ...} in the Python API)"
    for role in ROLES:
        if role in given:
            if given[role] not in names:
                raise DataFormatError(path, None, f"has no column {given[role]!r} (given for the {role}); its columns are {list(names)}")
            chosen[role] = list(names).index(given[role])
            continue
        matches = [i for i, name in enumerate(names) if folded_name(name) in COLUMN_ALIASES[role]]
        if len(matches) > 1:
            raise DataFormatError(
                path, None, f"has {len(matches)} columns that could hold the {role}: {[names[i] for i in matches]}; {advice}"
            )
        if matches:
            chosen[role] = matches[0]
    if len(set(chosen.values())) < len(chosen):
        raise DataFormatError(path, None, f"maps two roles to one column ({chosen}); its columns are {list(names)}; {advice}")
    if len(chosen) == len(ROLES):
        return chosen["user"], chosen["item"], chosen["time"]
    if not chosen and len(names) == 3 and not any(_looks_like_a_role(name) for name in names):
        return 0, 1, 2
    missing = [role for role in ROLES if role not in chosen]
    raise DataFormatError(
        path, None, f"cannot tell which column holds the {' and the '.join(missing)}: its columns are {list(names)}; {advice}"
    )


_RECBOLE_TYPES = ("token", "float", "token_seq", "float_seq")


def _read_recbole_inter(path: Path) -> dict[str, list[str]]:
    events: list[tuple[str, Timestamp, int, str]] = []
    lines = text_lines(path)
    header = next(lines, "").removesuffix("\n").removesuffix("\r")
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
    time_col = fields.get("timestamp", (None, None))[0]
    for number, raw in enumerate(lines, start=2):
        if not raw.strip():
            continue
        row = raw.removesuffix("\n").removesuffix("\r").split("\t")
        if len(row) != len(fields):
            raise DataFormatError(path, number, f"expected {len(fields)} tab-separated fields, got {len(row)}")
        stamp: Timestamp = 0 if time_col is None else _parse_timestamp(path, number, row[time_col])
        for name, (column, kind) in fields.items():
            if kind == "float" and name != "timestamp" and row[column].strip() and not _NUMBER.fullmatch(row[column].strip()):
                raise DataFormatError(path, number, f"field {name} is declared float but holds {row[column]!r}")
        user = check_id(path, number, "user", row[user_col])
        events.append((user, stamp, number, check_id(path, number, "item", row[item_col])))
    return _group_by_time(events)


_GLOB = re.compile(r"[*?\[]")


def parquet_parts(path: Path | str) -> list[Path]:
    """The files of a Parquet dataset: the file itself, the part files under a folder (recursively, in name
    order; hidden and `_`-prefixed entries such as Spark's `_SUCCESS` skipped) or the files a glob matches."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        parts = sorted(
            p for p in path.rglob("*") if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
        )
        if not parts:
            raise DataFormatError(path, None, "is a folder with no part files")
        return parts
    if _GLOB.search(str(path)):
        parts = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not parts:
            raise DataFormatError(path, None, "matches no files")
        return parts
    raise DataFormatError(path, None, "no such file, folder or glob of Parquet parts")


def _read_parquet(parts: list[Path], given: Mapping[str, str]) -> dict[str, list[str]]:
    """user, item, timestamp rows of Parquet part files, grouped on columns (`columnar`), or row by row where
    only exact decimals order the times (integer and float times mixed, decimal columns)."""
    from recgpt_tf.data.columnar import read_parquet_grouped

    grouped = read_parquet_grouped(parts, lambda part, names: resolve_columns(part, names, given))
    return grouped.to_dict() if grouped is not None else _read_parquet_rows(parts, given)


def _read_parquet_rows(parts: list[Path], given: Mapping[str, str]) -> dict[str, list[str]]:
    """user, item, timestamp rows of Parquet part files, in part then row order, row group by row group
    (`parquet_row_group_events`): what only exact decimals order."""
    events = [
        (user, stamp, (part_index << 40) + row, item)  # file order across parts
        for part_index, part in enumerate(parts)
        for group in range(parquet_row_groups(part))
        for user, stamp, row, item in parquet_row_group_events(part, group, given)
    ]
    return _group_by_time(events)


def parquet_row_groups(part: Path | str, opener=open_binary) -> int:
    """The row groups of a Parquet part (`opener(path)` opens it: Beam's FileSystems.open for remote storage)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with opener(str(part)) as handle:
            return pq.ParquetFile(handle).metadata.num_row_groups
    except (pa.ArrowInvalid, OSError) as error:
        raise DataFormatError(part, None, f"is not a readable Parquet file ({error})") from None


def parquet_row_group_events(
    part: Path | str, row_group: int, columns: Mapping[str, str] | None = None, opener=open_binary
) -> Iterator[tuple[str, Timestamp, int, str]]:
    """(user, timestamp, row, item) of each interaction of one row group of a Parquet part, in file order,
    checked as `load_interactions` checks them: ids as exact strings (integer ids in decimal), integer,
    timestamp and date columns as exact integers, float timestamps only when finite (row: 1-based within the
    part; the step a Beam pipeline runs on each row group). `opener` as `parquet_row_groups`'."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recgpt_tf.data.columnar import is_time_type, nanoseconds

    try:
        with opener(str(part)) as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            chosen = [names[i] for i in resolve_columns(part, names, columns)]
            first = sum(parquet.metadata.row_group(g).num_rows for g in range(row_group))
            table = parquet.read_row_group(row_group, columns=chosen)
    except (pa.ArrowInvalid, OSError) as error:
        raise DataFormatError(part, None, f"is not a readable Parquet file ({error})") from None
    values = []
    for position in range(3):
        column = table.column(position)
        values.append((nanoseconds(part, column) if is_time_type(column.type) else column).to_pylist())
    for offset, (user, item, stamp) in enumerate(zip(*values)):
        row = first + offset + 1
        yield (
            check_id(part, row, "user", _parquet_id(part, row, "user", user)),
            _parquet_timestamp(part, row, stamp),
            row,
            check_id(part, row, "item", _parquet_id(part, row, "item", item)),
        )


def _parquet_id(path: Path, row: int, kind: str, value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataFormatError(path, row, f"{kind} id {value!r} is not a string or an integer")


def _parquet_timestamp(path: Path, row: int, value) -> Timestamp:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return Decimal(value)  # the float's exact value
    if isinstance(value, Decimal) and value.is_finite():
        return value
    raise DataFormatError(path, row, f"timestamp {value!r} is not a finite number")
