"""A TFX Trainer `module_file` for RecGPT, and the converter to its TFRecords.

Use with a TFX Trainer component (`module_file` pointing at this module, or
`run_fn="recgpt_tf.tfx_trainer.run_fn"`):

    Trainer(module_file=..., examples=example_gen.outputs["examples"],
            custom_config={"epochs": 30, "prompt_window": 1, "index": "brute-force"})

`custom_config["item_features"]`, the path of an item features file (`recgpt train --item-features`), trains
with the items' features and serves every item of the file, the untrained ones by their features alone.

Examples are one `tf.Example` per user: `user_id` (bytes) and `item_ids` (bytes
list, oldest first; `data.examples`); `recgpt convert DATA OUT.tfrecord.gz` writes them
from any supported data file. `run_fn` trains both stages on the train split, evaluates
on the eval split (leave-one-out, full ranking, history excluded), and writes
the same serving SavedModel as `recgpt export` to `fn_args.serving_model_dir`,
where TFX's Pusher picks it up.

TFX itself pins another TensorFlow than ScaNN 1.4.2 does, so it is not a
dependency: `run_fn` reads only the documented FnArgs fields (train_files,
eval_files, serving_model_dir, model_run_dir, custom_config).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from recgpt_tf.config import DATA_SIZED_FIELDS, ModelConfig, PromptConfig, TrainConfig
from recgpt_tf.data.dataset import Dataset
from recgpt_tf.data.examples import read_examples
from recgpt_tf.data.item_features import CatalogueFeatures, read_item_features
from recgpt_tf.errors import ConfigError
from recgpt_tf.runs import Run, architecture_for
from recgpt_tf.training.distribute import make_strategy

_RUN_KEYS = {"prompt_window", "stages", "index", "top_k", "first_step_size", "recall_threshold", "warm_start", "item_features"}


def _split_config(custom_config: dict | None) -> tuple[dict, dict, dict]:
    custom = dict(custom_config or {})
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)} - set(DATA_SIZED_FIELDS)
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(custom) - model_keys - train_keys - _RUN_KEYS
    if unknown:
        raise ConfigError("custom_config", f"has unknown keys {sorted(unknown)}; known: {sorted(model_keys | train_keys | _RUN_KEYS)}")
    pick = lambda keys: {k: v for k, v in custom.items() if k in keys}  # noqa: E731
    return pick(model_keys), pick(train_keys), pick(_RUN_KEYS)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point: trains RecGPT and writes the serving SavedModel to fn_args.serving_model_dir."""
    model_kwargs, train_kwargs, run_kwargs = _split_config(getattr(fn_args, "custom_config", None))
    run_dir = Path(getattr(fn_args, "model_run_dir", None) or tempfile.mkdtemp(prefix="recgpt-tfx-run-"))
    dataset = Dataset.from_interactions(read_examples(fn_args.train_files), name="tfx_train")
    catalogue = read_item_features(run_kwargs["item_features"]) if run_kwargs.get("item_features") else None
    features = CatalogueFeatures.build(catalogue, dataset.item_vocab.tokens) if catalogue else None
    if features:
        model_kwargs.update(features.model_settings())
    model_config = architecture_for(run_dir, dataset, run_kwargs.get("warm_start"), **model_kwargs)
    train_config = TrainConfig(**train_kwargs)
    prompt_config = PromptConfig.from_options(run_kwargs.get("prompt_window"), train_kwargs.get("epochs"))
    make_strategy(train_config.strategy)  # before any model: a multi-worker strategy must come first
    run = Run.for_task(run_dir, train_config.strategy, dataset, model_config, seed=train_config.seed, item_features=features)
    run.train(dataset, run_kwargs.get("stages", "all"), train_config, prompt_config, verbose=2, warm_start=run_kwargs.get("warm_start"))

    # Evaluation on the eval split's users (leave-one-out, full ranking, history excluded), in the run's ids;
    # the export then carries its metrics in recgpt.json ("eval_metrics").
    eval_files = getattr(fn_args, "eval_files", None)
    if eval_files:
        eval_set = Dataset.from_interactions(read_examples(eval_files), "tfx_eval", item_vocab=run.item_vocab, user_vocab=run.user_vocab)
        if len(eval_set.split("test")):
            run.evaluate(eval_set)

    with tempfile.TemporaryDirectory(prefix="recgpt-tfx-export-") as base:
        # Only the options given; `Run.export` holds the defaults (`ExportConfig`).
        names = {"index": "index_kind", "top_k": "top_k", "first_step_size": "first_step_size", "recall_threshold": "recall_threshold"}
        options = {names[key]: value for key, value in run_kwargs.items() if key in names}
        published = run.export(base, "recgpt", item_features=catalogue, **options)
        target = Path(fn_args.serving_model_dir)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(published.path, target)
