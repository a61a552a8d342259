"""A TFX Trainer `module_file` for RecGPT, and the converter to its TFRecords.

Use with a TFX Trainer component (`module_file` pointing at this module, or
`run_fn="recgpt_tf.tfx_trainer.run_fn"`):

    Trainer(module_file=..., examples=example_gen.outputs["examples"],
            custom_config={"epochs": 30, "prompt_window": 1, "index": "brute-force"})

Examples are one `tf.Example` per user: `user_id` (bytes) and `item_ids` (bytes
list, oldest first); `recgpt convert DATA OUT.tfrecord.gz` writes them from any
supported data file. `run_fn` trains both stages on the train split, evaluates
on the eval split (leave-one-out, full ranking, history excluded), and writes
the same serving SavedModel as `recgpt export` to `fn_args.serving_model_dir`,
where TFX's Pusher picks it up.

TFX itself pins another TensorFlow than ScaNN 1.4.2 does, so it is not a
dependency: `run_fn` reads only the documented FnArgs fields (train_files,
eval_files, serving_model_dir, model_run_dir, custom_config).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import tensorflow as tf

from recgpt_tf.config import ModelConfig, TrainConfig, write_json
from recgpt_tf.contract import AUTO_INDEX

USER_FEATURE = "user_id"
ITEMS_FEATURE = "item_ids"
_RUN_KEYS = {"prompt_window", "prompt_loss_positions", "stages", "index", "top_k", "first_step_size", "recall_threshold"}


def to_example(user: str, items: Iterable[str]) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={
        USER_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[user.encode()])),
        ITEMS_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[i.encode() for i in items])),
    }))


def write_examples(interactions: dict[str, list[str]], path: Path | str) -> int:
    """Writes one tf.Example per user; GZIP-compressed when the name ends in .gz (as ExampleGen writes)."""
    path = str(path)
    options = tf.io.TFRecordOptions(compression_type="GZIP" if path.endswith(".gz") else "")
    with tf.io.TFRecordWriter(path, options) as writer:
        for user, items in interactions.items():
            writer.write(to_example(user, items).SerializeToString())
    return len(interactions)


def read_examples(patterns: Iterable[str]) -> dict[str, list[str]]:
    """Reads `{user: items}` from TFRecord files or globs (GZIP detected by the .gz suffix)."""
    files = sorted({f for p in patterns for f in (glob.glob(p) or ([p] if Path(p).is_file() else []))})
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {list(patterns)}")
    spec = {USER_FEATURE: tf.io.FixedLenFeature([], tf.string), ITEMS_FEATURE: tf.io.VarLenFeature(tf.string)}
    out: dict[str, list[str]] = {}
    for file in files:
        for number, record in enumerate(tf.data.TFRecordDataset(file, compression_type="GZIP" if file.endswith(".gz") else "")):
            try:
                parsed = tf.io.parse_single_example(record, spec)
            except tf.errors.InvalidArgumentError as error:
                raise ValueError(f"{file}: record {number + 1} is not a RecGPT example ({error.message.splitlines()[0]})") from None
            items = [t.decode() for t in tf.sparse.to_dense(parsed[ITEMS_FEATURE]).numpy()]
            if not items:
                raise ValueError(f"{file}: record {number + 1} (user {parsed[USER_FEATURE].numpy().decode()!r}) has no items")
            out[parsed[USER_FEATURE].numpy().decode()] = items
    return out


def _split_config(custom_config: dict | None) -> tuple[dict, dict, dict]:
    custom = dict(custom_config or {})
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)} - {"num_items", "num_users"}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(custom) - model_keys - train_keys - _RUN_KEYS
    if unknown:
        raise ValueError(f"custom_config has unknown keys {sorted(unknown)}; known: {sorted(model_keys | train_keys | _RUN_KEYS)}")
    pick = lambda keys: {k: v for k, v in custom.items() if k in keys}  # noqa: E731
    return pick(model_keys), pick(train_keys), pick(_RUN_KEYS)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point: trains RecGPT and writes the serving SavedModel to fn_args.serving_model_dir."""
    from recgpt_tf.cli import train_stages
    from recgpt_tf.data.dataset import Dataset
    from recgpt_tf.evaluation.report import evaluate_dataset
    from recgpt_tf.export import export_run
    from recgpt_tf.runs import Run

    model_kwargs, train_kwargs, run_kwargs = _split_config(getattr(fn_args, "custom_config", None))
    run_dir = Path(getattr(fn_args, "model_run_dir", None) or tempfile.mkdtemp(prefix="recgpt-tfx-run-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = Dataset.from_interactions(read_examples(fn_args.train_files), name="tfx_train")
    model_config = ModelConfig(num_items=dataset.num_items, num_users=dataset.num_users, **model_kwargs)
    train_stages(dataset, run_dir, run_kwargs.get("stages", "all"), model_config, TrainConfig(**train_kwargs),
                 run_kwargs.get("prompt_window", 1), verbose=2, prompt_loss_positions=run_kwargs.get("prompt_loss_positions"))

    # Evaluation on the eval split's users (leave-one-out, full ranking, history excluded), in the run's ids.
    eval_interactions = read_examples(fn_args.eval_files) if getattr(fn_args, "eval_files", None) else None
    run = Run.open(run_dir)
    report = None
    if eval_interactions:
        eval_set = Dataset.from_interactions(eval_interactions, "tfx_eval", item_vocab=run.item_vocab, user_vocab=run.user_vocab)
        if len(eval_set.split("test")):
            report = evaluate_dataset(run, eval_set)
            write_json(run_dir / "evaluation.json", report)

    with tempfile.TemporaryDirectory(prefix="recgpt-tfx-export-") as base:
        version = export_run(run_dir, base, "recgpt", run_kwargs.get("index", AUTO_INDEX), run_kwargs.get("top_k", 10),
                             run_kwargs.get("first_step_size"), recall_threshold=run_kwargs.get("recall_threshold", 0.95))
        if report:
            meta_path = version / "assets.extra" / "recgpt.json"
            meta = json.loads(meta_path.read_text())
            meta["eval_metrics"] = report["results"]
            meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        target = Path(fn_args.serving_model_dir)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(version, target)
