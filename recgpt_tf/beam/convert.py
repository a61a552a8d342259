"""Interaction logs to per-user sequences, vocabularies with counts and sharded TFRecords, on Apache Beam:
the `recgpt convert` of a log too large for one machine, with the same rules and the same output.

    logs (Parquet parts, CSV/TSV files) ──ReadInteractions──▶ (user, (time, file, row, item))
        ──GroupSequences──▶ (user, first interaction, [items oldest first])
        ──WriteSequences──▶ NAME-0000i-of-0000N.tfrecord.gz, NAME.items.txt/.counts, NAME.users.txt/.counts

Each Parquet row group and each CSV file is read by one worker under the readers' rules (exact ids and
times, `FILE:ROW` errors); a user's interactions are ordered by (time, file, row), the in-process order; the
vocabularies are ordered as `Vocabulary.build` orders the in-process dict. The TFRecord shards are Beam's
file sink's (each shard written whole, renamed into place when the pipeline finishes); the vocabulary files
are written whole by one worker. Runs on any Beam runner: `recgpt convert DATA OUT --runner DirectRunner`
(or FlinkRunner, SparkRunner, DataflowRunner with their options).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from recgpt_tf.data.examples import vocabulary_paths, vocabulary_texts
from recgpt_tf.data.readers import delimited_events, detect_format, parquet_parts, parquet_row_group_events, parquet_row_groups
from recgpt_tf.errors import ConfigError, DataFormatError, RecGPTError


def split_path(path: Path | str) -> tuple[str, str]:
    """(folder with its trailing separator, file name) of a local path or a URL (gs://bucket/dir/name), which
    `pathlib` would mangle."""
    text = str(path)
    folder, _, name = text.rpartition("/")
    return (folder + "/" if folder or text.startswith("/") else ""), name


def replace(temporary: str, path: str) -> None:
    """Renames `temporary` over `path` on any of Beam's file systems (HDFS refuses a rename onto a file)."""
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])


def input_files(data: Path | str, data_format: str | None = None) -> tuple[str, list[str]]:
    """(format, files) of a log: a Parquet file, folder or glob (`readers.parquet_parts`), or CSV/TSV files
    (a path or a glob); on remote storage, the files Beam's FileSystems match."""
    data = str(data)
    data_format = data_format or detect_format(data)
    if data_format not in ("parquet", "csv", "tsv"):
        raise ConfigError("data_format", f"must be parquet, csv or tsv for the Beam pipeline; got {data_format} ({data})")
    if "://" in data:
        listed = sorted(m.path for m in FileSystems.match([data])[0].metadata_list if not m.path.rpartition("/")[2].startswith((".", "_")))
    elif data_format == "parquet":
        listed = [str(p) for p in parquet_parts(data)]
    else:
        import glob

        listed = sorted(glob.glob(data)) if any(c in data for c in "*?[") else ([data] if Path(data).is_file() else [])
    if not listed:
        raise DataFormatError(data, None, "no such file, or no file matches")
    return data_format, listed


class ReadInteractions(beam.PTransform):
    """PBegin → (user, (time, file index, row, item)) for every interaction of the log's files."""

    def __init__(self, files: list[str], data_format: str, columns: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.files, self.data_format, self.columns = list(files), data_format, dict(columns or {})

    def expand(self, pbegin):
        columns = self.columns
        listed = pbegin | "Files" >> beam.Create(list(enumerate(self.files)))
        if self.data_format == "parquet":
            work = listed | "RowGroups" >> beam.FlatMap(_row_groups) | "Spread" >> beam.Reshuffle()
            events = work | "ReadRowGroup" >> beam.FlatMap(
                lambda w: _keyed(w[0], parquet_row_group_events(w[1], w[2], columns, FileSystems.open))
            )
        else:
            delimiter = "," if self.data_format == "csv" else "\t"
            events = listed | "ReadFile" >> beam.FlatMap(lambda f: _keyed(f[0], delimited_events(f[1], delimiter, columns)))
        return events


def _row_groups(indexed: tuple[int, str]) -> Iterable[tuple[int, str, int]]:
    """(file index, path, row group) for each row group of one Parquet part: the pipeline's unit of work."""
    index, path = indexed
    return [(index, path, group) for group in range(parquet_row_groups(path, FileSystems.open))]


def _keyed(file_index: int, events) -> Iterable[tuple[str, tuple]]:
    """(user, (time, file index, row, item)): the key and the order of the in-process reader."""
    for user, stamp, row, item in events:
        yield user, (stamp, file_index, row, item)


class GroupSequences(beam.PTransform):
    """(user, (time, file, row, item)) → (user, (time, file, row) of the first interaction, [items oldest first])."""

    def expand(self, events):
        return events | "ByUser" >> beam.GroupByKey() | "Order" >> beam.Map(_ordered)


def _ordered(grouped: tuple[str, Iterable[tuple]]) -> tuple[str, tuple, list[str]]:
    """One user's interactions in (time, file, row) order: (user, first key, items)."""
    user, events = grouped
    events = sorted(events, key=lambda e: e[:3])
    return user, events[0][:3], [event[3] for event in events]


class WriteSequences(beam.PTransform):
    """(user, first, items) → TFRecord shards of tf.Examples (user_id, item_ids) at `path` and the vocabulary
    files beside them (`data.examples.vocabulary_paths`); the output is the written file names."""

    def __init__(self, path: Path | str, shards: int = 1) -> None:
        super().__init__()
        self.path, self.shards = str(path), shards

    def expand(self, sequences):
        folder, name = split_path(self.path)
        stem, _, suffixes = name.partition(".")
        written = (
            sequences
            | "ToExample" >> beam.Map(_serialized_example)
            | "WriteShards"
            >> beam.io.WriteToTFRecord(
                folder + stem,
                file_name_suffix=f".{suffixes}" if suffixes else "",
                num_shards=self.shards,
                shard_name_template="" if self.shards == 1 else "-SSSSS-of-NNNNN",
                compression_type=beam.io.filesystem.CompressionTypes.GZIP
                if name.endswith(".gz")
                else beam.io.filesystem.CompressionTypes.UNCOMPRESSED,
            )
        )
        users = sequences | "UserCounts" >> beam.Map(lambda s: (s[1], s[0], len(s[2])))
        items = (
            sequences
            | "ItemKeys" >> beam.FlatMap(lambda s: ((item, ((s[1], position), 1)) for position, item in enumerate(s[2])))
            | "FirstSeenAndCount" >> beam.CombinePerKey(_FirstSeenAndCount())
            | "ItemCounts" >> beam.Map(lambda kv: (kv[1][0], kv[0], kv[1][1]))
        )
        paths = {key: folder + path.name for key, path in vocabulary_paths(name).items()}
        all_items = items | "AllItems" >> beam.combiners.ToList()
        vocabularies = (
            users
            | "AllUsers" >> beam.combiners.ToList()
            | "WriteVocabularies" >> beam.Map(_write_vocabularies, beam.pvalue.AsSingleton(all_items), paths)
        )
        return written, vocabularies


class _FirstSeenAndCount(beam.CombineFn):
    """(first-seen key, count) of an item's (key, 1) values."""

    def create_accumulator(self):
        return None, 0

    def add_input(self, accumulator, value):
        key, count = accumulator
        return (value[0] if key is None or value[0] < key else key), count + value[1]

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)  # Beam promises an iterable, which may be read once
        keys = [key for key, _ in accumulators if key is not None]
        return (min(keys) if keys else None), sum(count for _, count in accumulators)

    def extract_output(self, accumulator):
        return accumulator


def _serialized_example(sequence: tuple[str, tuple, list[str]]) -> bytes:
    """The user's tf.Example, as `recgpt convert` writes it in one process."""
    from recgpt_tf.data.examples import to_example

    user, _, items = sequence
    return to_example(user, items).SerializeToString()


def _write_vocabularies(users: list[tuple], items: list[tuple], paths: dict[str, str]) -> list[str]:
    """Writes the vocabulary files (each to a temporary name, then renamed); returns their paths."""
    texts = vocabulary_texts([(u, n) for _, u, n in sorted(users)], [(i, n) for _, i, n in sorted(items)])
    for key, path in paths.items():
        temporary = f"{path}.tmp-beam"
        with FileSystems.create(temporary) as handle:
            handle.write(texts[key].encode("utf-8"))
        replace(temporary, path)
    return list(paths.values())


class LogsToTFRecords(beam.PTransform):
    """PBegin → the written files: a log read (`ReadInteractions`), grouped (`GroupSequences`) and written
    (`WriteSequences`), as `recgpt convert` does in one process. A TFX-style pipeline embeds it as one step."""

    def __init__(self, data: Path | str, out: Path | str, shards: int = 1, data_format: str | None = None, columns=None) -> None:
        super().__init__()
        self.data_format, self.files = input_files(data, data_format)
        self.out, self.shards, self.columns = out, shards, columns

    def expand(self, pbegin):
        return (
            pbegin
            | "Read" >> ReadInteractions(self.files, self.data_format, self.columns)
            | "Group" >> GroupSequences()
            | "Write" >> WriteSequences(self.out, self.shards)
        )


_WORKER_ERROR = re.compile(r"recgpt_tf\.errors\.(\w+): (.*?)(?: \[while running '[^']*'\])*$", re.S)


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """A recgpt error raised on a worker (bad data, FILE:ROW) raised again here as what it was: runners wrap
    a worker's exception in their own (a RuntimeError naming the step), which would read as a bug."""
    try:
        yield
    except RecGPTError:
        raise
    except Exception as error:
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, RecGPTError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        found = _WORKER_ERROR.search(str(error).strip().splitlines()[-1] if str(error).strip() else "")
        if found:
            raise RecGPTError(found.group(2).strip()) from None
        raise


def convert(data: Path | str, out: Path | str, shards: int = 1, data_format: str | None = None, columns=None, beam_args=None) -> int:
    """Runs `LogsToTFRecords` on the runner `beam_args` name (`--runner DirectRunner` ...); returns the users written."""
    from apache_beam.options.pipeline_options import PipelineOptions

    if shards < 1:
        raise ConfigError("shards", f"must be >= 1; got {shards}")
    folder, name = split_path(out)
    if "://" not in folder:
        Path(folder or ".").mkdir(parents=True, exist_ok=True)
    with worker_errors():
        with beam.Pipeline(options=PipelineOptions(list(beam_args or []))) as pipeline:
            _ = pipeline | "Convert" >> LogsToTFRecords(data, out, shards, data_format, columns)
    with FileSystems.open(folder + vocabulary_paths(name)["users.counts"].name, compression_type="uncompressed") as handle:
        users = handle.read().count(b"\n")
    if not users:
        raise DataFormatError(data, None, "the log holds no interactions")
    return users
