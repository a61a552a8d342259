"""Interaction tables grouped by user on columns (pyarrow, numpy), not on one Python object per row.

A Parquet dataset (one file, or the part files of a folder or glob) is read part by part and row group by
row group, its user, item and time columns only. Ids become dictionary codes (each distinct id is checked
once, exactly as `readers` checks ids), times an int64 or float64 column, and the per-user sequences come out
of two stable sorts: by (time, file order), then by user. The rules are the row reader's (`readers`): exact
ids (integers in decimal), exact times (integers, timestamps and dates as integers, floats only when finite),
ties in file order, errors naming PART:ROW. What the columns cannot order exactly, a mix of integer and
float times or decimal times, returns None so that the caller reads it row by row.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from recgpt_tf.data.vocab import storable_problem
from recgpt_tf.errors import DataFormatError


@dataclasses.dataclass
class GroupedInteractions:
    """Per-user item sequences as columns.

    Attributes:
        users: [U] the user ids (str), in the order of each user's first interaction in time.
        offsets: [U + 1] int64: user u's items are `items[offsets[u]:offsets[u + 1]]`.
        items: [interactions] int32 codes into `item_tokens`, each user's oldest first.
        item_tokens: The distinct item ids (str).
    """

    users: list[str]
    offsets: np.ndarray
    items: np.ndarray
    item_tokens: list[str]

    def to_dict(self) -> dict[str, list[str]]:
        """{user: [item, ...]} (the row reader's result): the lists share one str object per distinct item."""
        tokens = np.array(self.item_tokens, dtype=object)
        sequences = np.split(tokens[self.items], self.offsets[1:-1])
        return dict(zip(self.users, (sequence.tolist() for sequence in sequences)))


def read_parquet_grouped(parts: list[Path], positions_of, batch_rows: int = 1 << 20) -> GroupedInteractions | None:
    """The interactions of Parquet `parts`, grouped (the module docstring), or None when their times need the
    row reader.

    Args:
        parts: The dataset's files, in order (`readers.parquet_parts`).
        positions_of: Callable(part, column names) -> (user, item, time) column positions (`readers.resolve_columns`).
        batch_rows: Rows read at a time from a row group.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    users, items, times, kinds = [], [], [], set()
    for part in parts:
        try:
            handle = pq.ParquetFile(part)
        except (pa.ArrowInvalid, OSError) as error:
            raise DataFormatError(part, None, f"is not a readable Parquet file ({error})") from None
        names = handle.schema_arrow.names
        chosen = [names[i] for i in positions_of(part, names)]
        row = 0
        for batch in _batches(part, handle, chosen, batch_rows):
            user, item, stamp = (_plain(batch.column(i)) for i in range(3))
            problems = [_id_problem(user, "user"), _time_problem(stamp), _id_problem(item, "item")]  # the row reader's order in a row
            found = [(offset, order, message) for order, (offset, message) in enumerate(p for p in problems if p)]
            if found:
                offset, _, message = min(found)
                raise DataFormatError(part, row + offset + 1, message)
            time, kind = _time_column(part, stamp)
            if kind is None:
                return None
            kinds.add(kind)
            users.append(user)
            items.append(item)
            times.append(time)
            row += batch.num_rows
    if len(kinds) > 1:  # integers beside floats: only exact decimals order them (the row reader)
        return None
    if not times:
        return GroupedInteractions([], np.zeros(1, np.int64), np.zeros(0, np.int32), [])
    grouped = _group(users, items, np.concatenate(times))
    pa.default_memory_pool().release_unused()  # the batches' buffers, which the pool would keep for later
    return grouped


def _batches(part: Path, handle, columns: list[str], rows: int):
    """The part's record batches, one at a time; a corrupt page is an error naming the part."""
    import pyarrow as pa

    batches = handle.iter_batches(batch_size=rows, columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as error:
            raise DataFormatError(part, None, f"is not a readable Parquet file ({error})") from None
        yield batch


def _plain(column):
    """A column with any dictionary encoding undone (Parquet's categorical columns)."""
    import pyarrow as pa

    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def _id_problem(column, kind: str) -> tuple[int, str] | None:
    """(row offset, message) of an id column's first bad value: a null, a type other than string or integer,
    an id a run directory cannot store; None when every id is fine (each distinct one checked once)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        return pc.index(column.is_null(), True).as_py(), f"{kind} id None is not a string or an integer"
    if pa.types.is_integer(column.type):
        return None
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return 0, f"{kind} id {column[0].as_py() if len(column) else None!r} is not a string or an integer"
    bad = [
        (pc.index(column, token).as_py(), f"{kind} id {token!r} {storable_problem(token)}")
        for token in pc.unique(column).to_pylist()
        if storable_problem(token)
    ]
    return min(bad) if bad else None


def _time_problem(column) -> tuple[int, str] | None:
    """(row offset, message) of a time column's first bad value (a null, a non-finite float, a type that is
    no time), or None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count:
        return pc.index(column.is_null(), True).as_py(), "timestamp None is not a finite number"
    kind = column.type
    if pa.types.is_floating(kind):
        values = column.cast(pa.float64()).to_numpy()
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argmax(bad))
            return first, f"timestamp {float(values[first])!r} is not a finite number"
        return None
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return None
    return 0, f"timestamp {column[0].as_py() if len(column) else None!r} is not a finite number"


def _time_column(part: Path, column) -> tuple[np.ndarray | None, str | None]:
    """(times, "int" or "float") of one checked batch; (None, None) when only the row reader orders them exactly."""
    import pyarrow as pa

    kind = column.type
    if is_time_type(kind):
        return nanoseconds(part, column).to_numpy(), "int"
    if pa.types.is_integer(kind) and not pa.types.is_uint64(kind):
        return column.cast(pa.int64()).to_numpy(), "int"
    if pa.types.is_floating(kind):
        return column.cast(pa.float64()).to_numpy(), "float"
    return None, None  # decimals, uint64: exact only row by row


def is_time_type(kind) -> bool:
    """Whether an Arrow type is a timestamp or a date (ordered through `nanoseconds`)."""
    import pyarrow as pa

    return pa.types.is_timestamp(kind) or pa.types.is_date(kind)


def nanoseconds(part: Path | str, column):
    """A timestamp or date column as int64 nanoseconds since the epoch, whatever its unit: exact, and ordered as
    the times across parts of other units. A time outside 1677..2262 (a 9999-12-31 placeholder) is an error."""
    import pyarrow as pa

    try:
        return column.cast(pa.timestamp("ns", getattr(column.type, "tz", None))).cast(pa.int64())
    except pa.ArrowInvalid as error:
        raise DataFormatError(part, None, f"has a time outside 1677..2262, which nanoseconds cannot hold ({error})") from None


def _codes(chunks) -> tuple[np.ndarray, list[str]]:
    """([rows] int32 codes, the distinct ids as str) of id chunks, encoded in place (one memo across the
    chunks, no concatenated copy): integers kept as integers when every chunk holds them, else every chunk
    as strings (an integer in decimal, so 7 and "7" are one id)."""
    import pyarrow as pa

    # uint64 ids above 2**63 - 1 fit no int64: such columns are read as their decimal strings.
    numeric = all(pa.types.is_integer(chunk.type) and not pa.types.is_uint64(chunk.type) for chunk in chunks)
    encoded = pa.chunked_array([chunk.cast(pa.int64() if numeric else pa.string()) for chunk in chunks]).dictionary_encode()
    tokens = encoded.chunks[-1].dictionary.to_pylist()  # every chunk carries the whole dictionary
    codes = np.concatenate([chunk.indices.to_numpy() for chunk in encoded.chunks]).astype(np.int32, copy=False)
    return codes, [str(token) for token in tokens] if numeric else tokens


def _group(user_chunks, item_chunks, times: np.ndarray) -> GroupedInteractions:
    """The sequences: rows ordered by (user, time, file order) in one stable sort, users by their first row."""
    user_codes, user_tokens = _codes(user_chunks)
    user_chunks.clear()
    item_codes, item_tokens = _codes(item_chunks)
    item_chunks.clear()
    order = np.lexsort((times, user_codes))  # by user, then time; lexsort is stable, so ties keep file order
    counts = np.bincount(user_codes, minlength=len(user_tokens))
    del user_codes
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first_rows = order[starts]  # each user's first interaction
    users = np.lexsort((first_rows, times[first_rows]))  # by the (time, file order) of that interaction
    items = item_codes[order]  # grouped by user code
    del order, item_codes
    offsets = np.concatenate([[0], np.cumsum(counts[users])]).astype(np.int64)
    # Row r of user rank j comes from position starts[users[j]] + (r - offsets[j]) of the grouped items.
    source = np.repeat(starts[users] - offsets[:-1], counts[users]) + np.arange(offsets[-1])
    return GroupedInteractions(
        users=[user_tokens[u] for u in users], offsets=offsets, items=items[source].astype(np.int32), item_tokens=item_tokens
    )
