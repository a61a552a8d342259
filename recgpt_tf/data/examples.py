"""Interactions as TFRecord `tf.Example`s, the format TFX's ExampleGen hands the Trainer.

One example per user: `user_id` (bytes) and `item_ids` (bytes list, oldest first).
Files ending in .gz are GZIP-compressed, as ExampleGen writes them.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterable

import tensorflow as tf

from recgpt_tf.errors import ConfigError, DataFormatError
from recgpt_tf.files import atomic_siblings

USER_FEATURE = "user_id"
ITEMS_FEATURE = "item_ids"
EXAMPLE_SPEC = {USER_FEATURE: tf.io.FixedLenFeature([], tf.string), ITEMS_FEATURE: tf.io.VarLenFeature(tf.string)}


def compression_type(path: str) -> str:
    """TFRecord compression of `path`: GZIP for .gz files (as ExampleGen writes them), else none."""
    return "GZIP" if path.endswith(".gz") else ""


def match_files(patterns: Iterable[str]) -> list[str]:
    """The sorted files that `patterns` (paths or globs) name; a `DataFormatError` when there are none."""
    patterns = [str(p) for p in patterns]
    files = sorted({f for p in patterns for f in (glob.glob(p) or ([p] if Path(p).is_file() else []))})
    if not files:
        raise DataFormatError(", ".join(patterns), None, "no TFRecord files match")
    return files


def to_example(user: str, items: Iterable[str]) -> tf.train.Example:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                USER_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[user.encode()])),
                ITEMS_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[i.encode() for i in items])),
            }
        )
    )


def shard_paths(path: Path | str, shards: int) -> list[Path]:
    """The files `write_examples` writes: `path` itself for one shard, else NAME-0000i-of-0000N.SUFFIXES
    beside it (ExampleGen's numbering), e.g. train-00000-of-00004.tfrecord.gz."""
    path = Path(path)
    if shards < 1:
        raise ConfigError("shards", f"must be >= 1; got {shards}")
    if shards == 1:
        return [path]
    stem, dot, suffixes = path.name.partition(".")
    return [path.with_name(f"{stem}-{i:05d}-of-{shards:05d}{dot}{suffixes}") for i in range(shards)]


def write_examples(interactions: dict[str, list[str]], path: Path | str, shards: int = 1) -> int:
    """Writes one tf.Example per user, round-robin over `shards` files (`shard_paths`), each whole or, if the
    write fails, none (`files.atomic_siblings`); returns the count."""
    paths = shard_paths(path, shards)
    options = tf.io.TFRecordOptions(compression_type=compression_type(str(paths[0])))
    with atomic_siblings(*paths) as temporary:
        writers = [tf.io.TFRecordWriter(str(t), options) for t in temporary]
        try:
            for number, (user, items) in enumerate(interactions.items()):
                writers[number % shards].write(to_example(user, items).SerializeToString())
        finally:
            for writer in writers:
                writer.close()
    return len(interactions)


def vocabulary_paths(path: Path | str) -> dict[str, Path]:
    """The vocabulary files written beside TFRecords at `path` (NAME.SUFFIXES or its shards): NAME.items.txt and
    NAME.users.txt, a run's vocabulary format (line i is id i + 1), and NAME.items.counts / NAME.users.counts,
    the interactions of each, line for line."""
    path = Path(path)
    stem = path.name.partition(".")[0]
    return {f"{kind}{suffix}": path.with_name(f"{stem}.{kind}{suffix}") for kind in ("items", "users") for suffix in (".txt", ".counts")}


def vocabulary_texts(users: list[tuple[str, int]], items: list[tuple[str, int]]) -> dict[str, str]:
    """The vocabulary files' texts (`vocabulary_paths` keys) from (id, interactions) pairs in first-seen order:
    the ids ordered as `Vocabulary.build` orders them (numeric order when all are integers)."""
    from recgpt_tf.data.vocab import Vocabulary

    texts = {}
    for kind, pairs in (("items", items), ("users", users)):
        counts = dict(pairs)
        tokens = Vocabulary.build(token for token, _ in pairs).tokens
        texts[f"{kind}.txt"] = "".join(f"{token}\n" for token in tokens)
        texts[f"{kind}.counts"] = "".join(f"{counts[token]}\n" for token in tokens)
    return texts


def interaction_counts(interactions: dict[str, list[str]]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(users, items) as (id, interactions) pairs in first-seen order (`vocabulary_texts`)."""
    items: dict[str, int] = {}
    for sequence in interactions.values():
        for item in sequence:
            items[item] = items.get(item, 0) + 1
    return [(user, len(sequence)) for user, sequence in interactions.items()], list(items.items())


def write_vocabularies(interactions: dict[str, list[str]], path: Path | str) -> None:
    """Writes the vocabulary files of `interactions` beside TFRecords at `path` (`vocabulary_paths`), each whole."""
    paths, texts = vocabulary_paths(path), vocabulary_texts(*interaction_counts(interactions))
    with atomic_siblings(*paths.values()) as temporary:
        for tmp, key in zip(temporary, paths):
            tmp.write_text(texts[key], encoding="utf-8", newline="")


def read_examples(patterns: Iterable[str]) -> dict[str, list[str]]:
    """Reads `{user: items}` from TFRecord files or globs.

    Raises:
        DataFormatError: no file matches, or a record is not a RecGPT example (naming file and record).
    """
    files = match_files(patterns)
    out: dict[str, list[str]] = {}
    for file in files:
        records = enumerate(tf.data.TFRecordDataset(file, compression_type=compression_type(file)), start=1)
        try:
            for number, record in records:
                try:
                    parsed = tf.io.parse_single_example(record, EXAMPLE_SPEC)
                except tf.errors.InvalidArgumentError as error:
                    raise DataFormatError(
                        file, None, f"record {number} is not a RecGPT example ({error.message.splitlines()[0]})"
                    ) from None
                items = [t.decode() for t in tf.sparse.to_dense(parsed[ITEMS_FEATURE]).numpy()]
                if not items:
                    raise DataFormatError(file, None, f"record {number} (user {parsed[USER_FEATURE].numpy().decode()!r}) has no items")
                out[parsed[USER_FEATURE].numpy().decode()] = items
        except tf.errors.DataLossError as error:
            raise DataFormatError(file, None, f"is not a TFRecord file ({error.message.splitlines()[0]})") from None
    return out
