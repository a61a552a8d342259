"""A run directory and its one owner, `Run`: created from data and configurations, trained
stage by stage, evaluated, exported. The CLI, the TFX Trainer module, the notebook and the
Python API all go through it, so they share one stage policy and one layout:

    RUN_DIR/config.json              model, data statistics, each stage's training configuration
    RUN_DIR/items.txt, users.txt     vocabularies (line i is id i + 1)
    RUN_DIR/item_features.json       with item features: their value vocabulary and each item's value ids
    RUN_DIR/sample_requests.json     real (user, history) pairs: export warmup and index tuning
    RUN_DIR/STAGE/                   weights* (the epoch chosen on validation), best/, history.csv,
                                     backup/ (BackupAndRestore while the stage runs), and
                                     summary.json: the stage's commit marker (below)
    RUN_DIR/.lock                    held by the process training the run
    RUN_DIR/prompt/prompted_K{K}.npz cached prompt-enhanced training sequences
    RUN_DIR/logs/STAGE/              TensorBoard
    RUN_DIR/evaluation.json          the last evaluation (the export reads the chosen m from it)

A stage is finished only once it is committed: `begin_stage` removes the old marker before anything of the
new training is written, `finish_stage` writes summary.json (the summary and the configuration it trained
with) atomically and last, after the weights. Everything that reads a stage (`has_stage`, `load_model`,
`evaluate`, `export`, the next stage) goes by the marker, so a stage killed mid-way, or retrained with
other settings and interrupted, is unfinished and never mistaken for its predecessor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np
import tensorflow as tf

from recgpt_tf.config import (
    ADDED_MODEL_SETTINGS,
    FINETUNE_STAGE,
    PRETRAIN_STAGE,
    PROMPT_STAGE,
    STAGE_PLANS,
    ExportConfig,
    ModelConfig,
    PromptConfig,
    TrainConfig,
    without_retired,
)
from recgpt_tf.data.dataset import Dataset
from recgpt_tf.data.item_features import CatalogueFeatures, ItemFeatures
from recgpt_tf.data.streaming import StreamedDataset
from recgpt_tf.data.vocab import Vocabulary
from recgpt_tf.errors import ConfigError, RunDirectoryError, check_choice
from recgpt_tf.files import exclusive_lock, write_json
from recgpt_tf.inference.recall import split_k
from recgpt_tf.models.recgpt import RecGPT
from recgpt_tf.training.distribute import worker_run_dir
from recgpt_tf.training.fit import StageFiles, build_model
from recgpt_tf.training.pretrain import pretrain
from recgpt_tf.training.prompt_tuning import fine_tune, prompt_tune
from recgpt_tf.training.warm_start import WarmStartSource

if TYPE_CHECKING:
    from recgpt_tf.export.publish import PublishedVersion

CONFIG_FILE = "config.json"
ITEMS_FILE, USERS_FILE = "items.txt", "users.txt"
FEATURES_FILE = "item_features.json"
SAMPLES_FILE = "sample_requests.json"
EVALUATION_FILE = "evaluation.json"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
TRAINED_STAGES = (PRETRAIN_STAGE, PROMPT_STAGE, FINETUNE_STAGE)


def sample_requests(dataset: Dataset, count: int = 1024, seed: int = 0) -> dict:
    """Real (user, history) pairs kept with the run: warmup requests, and the queries an export tunes its
    index on and checks its promise with, half each. 1,024 by default: with 256 (128 to check), a check of
    the mean recall passed builds whose recall on fresh queries sat around the target, half of them under it
    (docs/results.md, issue 33); they cost nothing to draw."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(dataset.users), size=min(count, len(dataset.users)), replace=False)
    train = dataset.train_sequences()
    return {
        "users": dataset.user_vocab.decode(dataset.users[chosen]),
        "histories": [dataset.item_vocab.decode(train[i]) for i in chosen],
    }


def _vocabulary_digests(path: Path) -> dict[str, str]:
    """{items.txt, users.txt: sha256} of the run's vocabularies: the row order of its tables."""
    return {name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in (ITEMS_FILE, USERS_FILE)}


def _recorded_model_config(model: dict, path: Path) -> ModelConfig:
    """The architecture config.json records. A field added since the run was written reads as the value that
    builds what the run built (`ADDED_MODEL_SETTINGS`); a run missing any other of today's fields is refused
    by name (its layout is not today's default)."""
    model = {**ADDED_MODEL_SETTINGS, **model}
    missing = sorted({f.name for f in dataclasses.fields(ModelConfig)} - set(model))
    if missing:
        raise RunDirectoryError(f"{path} was written by an older recgpt-tf (its model records no {', '.join(missing)}); train it anew")
    return ModelConfig.from_dict(model)


def _recorded_architecture(path: Path | str) -> ModelConfig | None:
    """The architecture of the trained run at `path` (config.json's model, once a stage has trained), or None."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not any((path / stage).exists() for stage in TRAINED_STAGES):
        return None
    model = json.loads((path / CONFIG_FILE).read_text()).get("model")
    return _recorded_model_config(model, path) if model else None


def _checked_features(path: Path, model_config: ModelConfig, given: CatalogueFeatures | None, trained: bool) -> CatalogueFeatures | None:
    """The item features a run at `path` trains with: `given`; for a trained run given none, those it holds (it
    resumes with them). Refused: features that do not fit `model_config`, or differ from a trained run's."""
    held = CatalogueFeatures.from_dict(json.loads((path / FEATURES_FILE).read_text())) if (path / FEATURES_FILE).is_file() else None
    if trained and given is not None and held is not None and (given.values, given.rows) != (held.values, held.rows):
        raise RunDirectoryError(
            f"{path} was trained with other item features ({FEATURES_FILE}); give the same file to resume it, or train into another directory"
        )
    features = given or (held if trained else None)
    settings = (
        features.model_settings() if features else {key: ADDED_MODEL_SETTINGS[key] for key in ("num_feature_values", "max_item_features")}
    )
    if {key: getattr(model_config, key) for key in settings} != settings:
        have = "item features with " + ", ".join(f"{k} {v}" for k, v in settings.items()) if features else "no item features"
        raise ConfigError("model_config", f"does not fit the run's item features: the run has {have}")
    return features


def _pretraining_record(train_config: TrainConfig, dataset: Dataset | StreamedDataset, source: dict | None) -> tuple[TrainConfig, dict]:
    """(the schedule pre-training trains with, what its stage records): `train_config` with the objective "auto"
    made concrete for the catalogue (the one place a run resolves it: `TrainConfig.for_catalogue`), and a warm
    start's source, {"path", "fingerprint"}, beside it."""
    train_config = train_config.for_catalogue(dataset.num_items)
    warm = {"warm_start": source["path"], "warm_start_fingerprint": source["fingerprint"]} if source else {}
    return train_config, {**train_config.to_dict(), **warm}


def architecture_for(
    path: Path | str, dataset: Dataset | StreamedDataset, warm_start: Path | str | None = None, **changes: Any
) -> ModelConfig:
    """The architecture a training into `path` builds, so that the same command resumes a run, and a daily
    warm start keeps yesterday's architecture, after an upgrade changes the defaults.

    Args:
        path: The run directory; once a stage has trained there, its recorded architecture is the base.
        dataset: The training data, which sizes the catalogue and user tables.
        warm_start: Yesterday's run: its architecture is the base for a new `path`, but for the item features'
            sizes, which today's features file (in `changes`) sets, or its absence.
        **changes: ModelConfig fields to change (the model flags given). On a trained run, `Run.create`
            refuses a change; a warm start refuses one too.

    Returns:
        The base (or the defaults, where neither run exists) with `changes` applied.
    """
    recorded = _recorded_architecture(path)
    base = recorded.to_dict() if recorded else {}
    if not recorded and warm_start and (yesterday := _recorded_architecture(warm_start)):
        # Yesterday's architecture, but today's item features (or none): the file given today sizes them.
        base = {
            **yesterday.to_dict(),
            **ADDED_MODEL_SETTINGS,
            "item_id_dropout": yesterday.item_id_dropout if "num_feature_values" in changes else 0.0,
        }
    return ModelConfig.from_dict({**base, **changes, "num_items": dataset.num_items, "num_users": dataset.num_users})


@dataclasses.dataclass
class Run:
    """One run directory: the only code that names, writes and reads its files.

    Attributes:
        path: The directory.
        config: config.json as a dict (model, data statistics, each stage's configuration).
        item_vocab, user_vocab: The run's vocabularies.
        chief_path: For a non-chief worker of a multi-worker run, whose `path` is a scratch directory:
            the chief's run directory, where every worker reads the training state it resumes from
            (BackupAndRestore's backup, the epoch log) so that all restart at the same epoch.
    """

    path: Path
    config: dict
    item_vocab: Vocabulary
    user_vocab: Vocabulary
    chief_path: Path | None = None

    @classmethod
    def create(
        cls,
        path: Path | str,
        dataset: Dataset | StreamedDataset,
        model_config: ModelConfig | None = None,
        seed: int = 42,
        item_features: CatalogueFeatures | None = None,
    ) -> "Run":
        """A run directory for `dataset`: vocabularies, sample requests and the model configuration.

        An existing run at `path` on the same data is kept (its stages resume); one on other
        data, or one with trained stages of another architecture or other item features, is refused.

        Args:
            path: Created if missing.
            dataset: The encoded training data (in memory or streamed); its vocabularies become the run's.
            model_config: Architecture (default: the one `path` trained with, else the defaults; `architecture_for`).
            seed: Seed of the sample-request draw.
            item_features: The catalogue's item features (`CatalogueFeatures.build` over the dataset's item
                vocabulary); `model_config` must have their settings (`CatalogueFeatures.model_settings`). Default:
                the ones `path` holds, if any.
        """
        path = Path(path)
        model_config = model_config or architecture_for(path, dataset, **(item_features.model_settings() if item_features else {}))
        if (model_config.num_items, model_config.num_users) != (dataset.num_items, dataset.num_users):
            raise ConfigError(
                "model_config",
                f"is for {model_config.num_items} items / {model_config.num_users} users; "
                f"the data has {dataset.num_items} / {dataset.num_users}",
            )
        path.mkdir(parents=True, exist_ok=True)
        config = json.loads((path / CONFIG_FILE).read_text()) if (path / CONFIG_FILE).is_file() else {}
        statistics = dataset.statistics()
        if config.get("statistics", statistics) != statistics:
            raise RunDirectoryError(
                f"{path} holds a run on other data ({config.get('dataset')}: {config['statistics']}); "
                f"train {dataset.name} into another directory, or delete this one"
            )
        recorded = _recorded_architecture(path)
        if recorded:  # its weights (and an interrupted stage's backup) have the recorded shapes and layout
            before, now = recorded.to_dict(), model_config.to_dict()
            changed = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted({*before, *now}) if before.get(k) != now.get(k)]
            if changed:
                raise RunDirectoryError(
                    f"{path} holds a run of another architecture ({', '.join(changed)}); leave those model settings "
                    "out to resume it, or train into another directory"
                )
        item_features = _checked_features(path, model_config, item_features, trained=recorded is not None)
        dataset.item_vocab.save(path / ITEMS_FILE)
        dataset.user_vocab.save(path / USERS_FILE)
        if item_features is not None:
            write_json(path / FEATURES_FILE, item_features.to_dict())
        else:  # an untrained run's features of an earlier attempt: this one trains without
            (path / FEATURES_FILE).unlink(missing_ok=True)
        in_memory = dataset.sample if isinstance(dataset, StreamedDataset) else dataset
        write_json(path / SAMPLES_FILE, sample_requests(in_memory, seed=seed))
        # Keep the stages' configurations of a run being resumed; the model and data are this call's.
        config.update(
            dataset=dataset.name, statistics=statistics, model=model_config.to_dict(), vocabulary_sha256=_vocabulary_digests(path)
        )
        write_json(path / CONFIG_FILE, config)
        return cls.open(path)

    @classmethod
    def for_task(
        cls,
        path: Path | str,
        strategy: str,
        dataset: Dataset | StreamedDataset | None = None,
        model_config: ModelConfig | None = None,
        seed: int = 42,
        item_features: CatalogueFeatures | None = None,
    ) -> "Run":
        """The run this process of a `strategy` training writes: `create` (with `dataset` and `item_features`) or
        `open` the run at `path`, or, on a non-chief worker of a multi-worker run, a scratch run of its own that
        resumes from the chief's state at `path` (`chief_path`)."""
        own = worker_run_dir(path, strategy)
        run = cls.create(own, dataset, model_config, seed, item_features) if dataset is not None else cls.open(own)
        if own != Path(path):
            run.chief_path = Path(path)
        return run

    @classmethod
    def open(cls, path: Path | str) -> "Run":
        """The run at `path`; raises `RunDirectoryError` naming what is missing, or a vocabulary that no longer
        matches the tables it indexes (a line lost or added would shift every row after it)."""
        path = Path(path)
        for name in (CONFIG_FILE, ITEMS_FILE, USERS_FILE):
            if not (path / name).is_file():
                raise RunDirectoryError(f"{path}: not a trained run directory (no {name}); train a run into it first")
        files = {name: (path / name).read_bytes() for name in (ITEMS_FILE, USERS_FILE)}  # read once: parsed and checked
        run = cls(
            path=path,
            config=json.loads((path / CONFIG_FILE).read_text()),
            item_vocab=Vocabulary.from_bytes(files[ITEMS_FILE], oov_slot="end"),
            user_vocab=Vocabulary.from_bytes(files[USERS_FILE], oov_slot="zero"),
        )
        model, recorded = run.config.get("model") or {}, run.config.get("vocabulary_sha256") or {}
        for name, vocab, size in (
            (ITEMS_FILE, run.item_vocab, model.get("num_items")),
            (USERS_FILE, run.user_vocab, model.get("num_users")),
        ):
            if size is not None and vocab.size != size:
                problem = f"holds {vocab.size} ids but the run's tables have {size} rows for them (config.json)"
            elif name in recorded and recorded[name] != hashlib.sha256(files[name]).hexdigest():
                problem = "is not the file the run was trained with (another sha256 than config.json records)"
            else:
                continue
            raise RunDirectoryError(f"{path / name} {problem}: its rows would go to the wrong ids; restore the file, or train anew")
        return run

    # --- files -----------------------------------------------------------------------------

    @property
    def model_config(self) -> ModelConfig:
        return _recorded_model_config(self.config["model"], self.path)

    def item_features(self) -> CatalogueFeatures | None:
        """The item features the run trains with, None for an id-only run."""
        path = self.path / FEATURES_FILE
        return CatalogueFeatures.from_dict(json.loads(path.read_text())) if path.is_file() else None

    @property
    def vocabulary_files(self) -> tuple[Path, Path]:
        """(items.txt, users.txt): an export copies them into the SavedModel's assets."""
        return self.path / ITEMS_FILE, self.path / USERS_FILE

    def stage_dir(self, stage: str) -> Path:
        return self.path / stage

    def resume_dir(self, stage: str) -> Path:
        """Where `stage` keeps the state an interrupted run resumes from: the stage directory, or the chief's."""
        return (self.chief_path or self.path) / stage

    def log_dir(self, stage: str) -> Path:
        return self.path / "logs" / stage

    def stage_files(self, stage: str) -> StageFiles:
        """Where `stage` keeps its files."""
        return StageFiles(self.stage_dir(stage), self.log_dir(stage), self.resume_dir(stage))

    def pretrain(
        self,
        dataset: Dataset | StreamedDataset,
        train_config: TrainConfig | None = None,
        verbose: int = 1,
        extra_callbacks: list | None = None,
        warm_start_from: WarmStartSource | None = None,
    ) -> tuple[RecGPT, dict]:
        """Pre-trains this run's architecture into its pretrain stage (`training.pretrain`), begun and committed
        here, with `train_config` (default `TrainConfig()`) resolved for the catalogue and recorded so."""
        source = {"path": warm_start_from.path, "fingerprint": warm_start_from.fingerprint} if warm_start_from else None
        train_config, payload = _pretraining_record(train_config or TrainConfig(), dataset, source)
        return self._stage(
            PRETRAIN_STAGE,
            payload,
            lambda files: pretrain(
                self.model_config,
                dataset,
                train_config,
                files,
                self.vocabulary_files,
                verbose,
                extra_callbacks,
                warm_start_from,
                self.item_features(),
            ),
        )

    def prompt_tune(self, model: RecGPT, dataset: Dataset, config: PromptConfig | None = None, verbose: int = 1) -> tuple[RecGPT, dict]:
        """Prompt-tunes the pre-trained `model` in place into the prompt stage (`training.prompt_tune`; default
        `PromptConfig()`), begun and committed here."""
        config = config or PromptConfig()
        return self._stage(PROMPT_STAGE, config.to_dict(), lambda files: prompt_tune(model, dataset, files, config, verbose))

    def fine_tune(self, model: RecGPT, dataset: Dataset, train_config: TrainConfig | None = None, verbose: int = 1) -> tuple[RecGPT, dict]:
        """The paper's fine-tuning baseline from the pre-trained `model` into the finetune stage
        (`training.fine_tune`; default `TrainConfig.finetuning()`), begun and committed here."""
        train_config = train_config or TrainConfig.finetuning()
        return self._stage(FINETUNE_STAGE, train_config.to_dict(), lambda files: fine_tune(model, dataset, files, train_config, verbose))

    def _stage(self, stage: str, payload: dict, train: Callable[[StageFiles], tuple[RecGPT, dict]]) -> tuple[RecGPT, dict]:
        """Begins `stage` with the settings `payload` records, trains it in its files, commits its summary."""
        self.begin_stage(stage, payload)
        model, summary = train(self.stage_files(stage))
        self.finish_stage(stage, summary)
        return model, summary

    def begin_stage(self, stage: str, payload: dict) -> None:
        """Marks `stage` unfinished, then records the training configuration it is about to train with in
        config.json (before anything of the new training is written). An interrupted training of the stage
        resumes only with the configuration it was started with (its warm-start source included): with any
        other, its backup and epoch log are removed and the stage trains anew."""
        (self.stage_dir(stage) / SUMMARY_FILE).unlink(missing_ok=True)
        interrupted = without_retired(self.config[stage]) if stage in self.config else None
        planned = without_retired(json.loads(json.dumps(payload)))
        backup = self.stage_dir(stage) / "backup"
        if any(backup.rglob("*.index")) and interrupted is not None and interrupted != planned:
            changed = sorted(key for key in {*interrupted, *planned} if interrupted.get(key) != planned.get(key))
            print(
                f"{self.path}: the interrupted {stage} was started with other settings ({', '.join(changed)}); training it anew",
                file=sys.stderr,
            )
            shutil.rmtree(backup)
            (self.stage_dir(stage) / "history.csv").unlink(missing_ok=True)
        self.config[stage] = payload
        write_json(self.path / CONFIG_FILE, self.config)

    def finish_stage(self, stage: str, summary: dict) -> None:
        """Commits `stage`, whose weights are written: its summary and the configuration it trained with
        (recorded by `begin_stage`), in one file written atomically and last."""
        write_json(self.stage_dir(stage) / SUMMARY_FILE, {**summary, "config": self.config[stage]})

    def summary(self, stage: str) -> dict | None:
        """A finished stage's summary (epochs, seconds, validation metrics, the configuration it trained
        with), None if it has not finished."""
        path = self.stage_dir(stage) / SUMMARY_FILE
        if not (path.is_file() and (self.stage_dir(stage) / "weights.index").is_file()):
            return None
        return json.loads(path.read_text())

    def stage_config(self, stage: str) -> dict | None:
        """The training configuration of the finished `stage` (None if unfinished), without the retired settings
        at the product's values (`config.without_retired`). Runs written before the summary carried it recorded
        it in config.json only."""
        summary = self.summary(stage)
        return None if summary is None else without_retired(summary.get("config", self.config.get(stage)))

    def unfinished_stages(self) -> list[str]:
        """Stages that began (a configuration is recorded) but were not committed: interrupted, or failed."""
        return [stage for stage in TRAINED_STAGES if stage in self.config and not self.has_stage(stage)]

    def committed_config(self) -> dict:
        """config.json with each stage's configuration as it was committed; unfinished stages left out."""
        config = {k: v for k, v in self.config.items() if k not in TRAINED_STAGES}
        config.update({stage: self.stage_config(stage) for stage in TRAINED_STAGES if self.has_stage(stage)})
        return config

    def train_seconds(self) -> float:
        """Training time of every finished stage."""
        return sum(float((self.summary(stage) or {}).get("seconds", 0.0)) for stage in TRAINED_STAGES)

    def sample_requests(self) -> dict:
        """{"users": [...], "histories": [[...], ...]}; empty lists for runs that have none."""
        path = self.path / SAMPLES_FILE
        return json.loads(path.read_text()) if path.is_file() else {"users": [], "histories": []}

    def evaluation(self) -> dict | None:
        """The last evaluation document written by `evaluate`, None if never evaluated."""
        path = self.path / EVALUATION_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def has_stage(self, stage: str) -> bool:
        """Whether `stage` finished (was committed by `finish_stage`)."""
        return self.summary(stage) is not None

    def load_model(self, stage: str = PRETRAIN_STAGE) -> RecGPT:
        """The model with the stage's selected weights."""
        if not self.has_stage(stage):
            state = "did not finish (interrupted, or failed)" if stage in self.config else "was not trained"
            raise RunDirectoryError(f"{self.path}: stage {stage!r} {state}; train it (recgpt train --stages {stage})")
        objective = self.stage_config(PRETRAIN_STAGE).get("objective", "softmax")
        prompt_tuned = stage == PROMPT_STAGE
        # The checkpoint also holds the stage's optimizer (learning rate, step count,
        # moments). Loaded straight into `model`, Keras would restore it into whatever
        # optimizer the next stage compiles, overriding that stage's learning rate, so
        # only the model's own variables are carried over.
        # Unsmoothed, as every loaded model has trained on (prompt-tuning and fine-tuning among them).
        source = build_model(self.model_config, objective, prompt_tuned, label_smoothing=0.0)
        try:
            source.load_weights(str(self.stage_dir(stage) / "weights")).expect_partial()
        except (tf.errors.OpError, OSError, ValueError) as error:  # a weights file missing, cut or of other shapes
            reason = getattr(error, "message", str(error)).splitlines()[0]
            raise RunDirectoryError(f"{self.stage_dir(stage)}: its weights cannot be read ({reason}); train the stage again") from None
        model = build_model(self.model_config, objective, prompt_tuned, label_smoothing=0.0)
        model.set_weights(source.get_weights())
        return model

    def fork(self, path: Path | str) -> "Run":
        """A run directory sharing this run's configuration, vocabularies and pre-trained weights (e.g. to
        prompt-tune with another K).

        A fork of this very pre-training at `path` is reused with its stages. A fork of an earlier
        pre-training on the same data is brought up to date: its later stages followed from the old
        weights, so they are dropped, as `train` drops them when pre-training anew. A run on other data
        is refused.
        """
        path = Path(path)
        if (path / CONFIG_FILE).is_file():
            fork = Run.open(path)
            if fork.config.get("statistics") != self.config.get("statistics"):
                raise RunDirectoryError(f"{path} holds a run on other data ({fork.config.get('dataset')}); fork into another directory")
            finished = self.summary(PRETRAIN_STAGE)
            if finished is not None and fork.summary(PRETRAIN_STAGE) == finished:  # a summary is unique to one training
                return fork
            fork._drop_stages_after_pretraining()
            (path / EVALUATION_FILE).unlink(missing_ok=True)  # it scored the old weights
        (path / PRETRAIN_STAGE).mkdir(parents=True, exist_ok=True)
        for name in (CONFIG_FILE, ITEMS_FILE, USERS_FILE, FEATURES_FILE, SAMPLES_FILE):
            if (self.path / name).exists():
                shutil.copy(self.path / name, path / name)
        for file in [*self.stage_dir(PRETRAIN_STAGE).glob("weights*"), self.stage_dir(PRETRAIN_STAGE) / SUMMARY_FILE]:
            if file.exists():
                shutil.copy(file, path / PRETRAIN_STAGE / file.name)
        return Run.open(path)

    def dataset(self, data: Path | str, data_format: str | None = None, columns: Mapping[str, str] | None = None) -> Dataset:
        """`data` encoded with this run's vocabularies."""
        return Dataset.from_file(data, data_format, item_vocab=self.item_vocab, user_vocab=self.user_vocab, columns=columns)

    # --- the paper's stages ----------------------------------------------------------------

    def train(
        self,
        dataset: Dataset | StreamedDataset,
        stages: str = "all",
        train_config: TrainConfig | None = None,
        prompt_config: PromptConfig | None = None,
        verbose: int = 1,
        on_stage_end: Callable[[str, dict], None] | None = None,
        warm_start: Path | str | None = None,
    ) -> dict[str, dict]:
        """Trains `stages` on `dataset` (encoded with this run's vocabularies); an interrupted stage resumes.

        The stage policy: "all" pre-trains, then prompt-tunes. Prompt-tuning and
        fine-tuning start from the run's pre-trained weights and take their seed and
        batch size from `train_config` when given, else from the pre-training recorded
        in config.json; their other settings are their own defaults
        (`PromptConfig().train`, `TrainConfig.finetuning()`).

        A stage already finished with the same settings is kept, not retrained (so a run
        interrupted in prompt-tuning resumes there); pre-training anew removes the stages
        trained from the old weights. Training any stage drops the run's last evaluation,
        which no longer describes it.

        Args:
            dataset: Training data in the run's ids.
            stages: A key of `STAGE_PLANS`: "pretrain", "prompt", "finetune" or "all".
            train_config: Pre-training schedule (default: the recorded one, else `TrainConfig()`).
            prompt_config: Prompt-tuning settings (default `PromptConfig()`, with the seed and
                batch size above).
            verbose: 1 one line an epoch (and a progress bar on a terminal), 2 one line an epoch, 0 silent.
            on_stage_end: Optional callable(stage, summary), e.g. to print progress.
            warm_start: An earlier run directory (yesterday's) whose pre-trained model pre-training starts
                from: known items and users keep their rows, new ones start beside them (`training.warm_start`).

        Returns:
            {stage: summary} for the stages of the plan (`already_trained` set on those kept).

        Raises:
            RunDirectoryError: another process is training this run (`lock`).
        """
        check_choice("stages", stages, STAGE_PLANS)
        if warm_start is not None and PRETRAIN_STAGE not in STAGE_PLANS[stages]:
            raise ConfigError(
                "warm_start",
                f"starts pre-training from an earlier run; stages {stages!r} start from this run's own pre-trained weights "
                "(warm-start with stages 'pretrain' or 'all')",
            )
        with self.lock():
            return self._train(dataset, STAGE_PLANS[stages], train_config, prompt_config, verbose, on_stage_end, warm_start)

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Holds the run's lock while the block runs: a second process training the same directory is
        refused (its epochs would interleave with ours), naming the holder; a dead holder's lock is taken over."""
        return exclusive_lock(
            self.path / LOCK_FILE,
            lambda holder: RunDirectoryError(
                f"{self.path} is being trained by {holder}; wait for it to end, or train into another directory"
            ),
        )

    def _train(
        self,
        dataset: Dataset | StreamedDataset,
        plan: tuple[str, ...],
        train_config: TrainConfig | None,
        prompt_config: PromptConfig | None,
        verbose: int,
        on_stage_end: Callable[[str, dict], None] | None,
        warm_start: Path | str | None = None,
    ) -> dict[str, dict]:
        if isinstance(dataset, StreamedDataset) and plan != (PRETRAIN_STAGE,):
            raise ConfigError(
                "stages",
                f"must be {PRETRAIN_STAGE!r} for streamed TFRecord input; prompt-tuning and fine-tuning generate or "
                "read every user's sequence in memory (give them the data file, or data.read_examples)",
            )
        if train_config is None:
            recorded = self.stage_config(PRETRAIN_STAGE)
            train_config = TrainConfig.from_recorded(recorded) if recorded and PRETRAIN_STAGE not in plan else TrainConfig()
        # Later stages keep their own schedule (learning rate, epochs, patience) but take the run's seed and batch
        # size (`TrainConfig.for_stage`).
        prompt_config = prompt_config or PromptConfig()
        prompt_config = dataclasses.replace(prompt_config, train=train_config.for_stage(prompt_config.train))
        finetune_config = train_config.for_stage(TrainConfig.finetuning())
        source = {"path": str(Path(warm_start).resolve()), "fingerprint": Run.open(warm_start).fingerprint()} if warm_start else None
        planned = {
            PRETRAIN_STAGE: _pretraining_record(train_config, dataset, source)[1],
            PROMPT_STAGE: prompt_config.to_dict(),
            FINETUNE_STAGE: finetune_config.to_dict(),
        }
        summaries = {}
        chief = self._chief()
        for stage in plan:
            finished = chief.summary(stage) if chief else None
            if finished is not None and chief.stage_config(stage) == without_retired(json.loads(json.dumps(planned[stage]))):
                # Finished with these very settings (a rerun after an interruption in a later stage): keep it.
                summaries[stage] = {**finished, "already_trained": True}
                if on_stage_end:
                    on_stage_end(stage, summaries[stage])
                continue
            (self.path / EVALUATION_FILE).unlink(missing_ok=True)  # no longer describes the run
            if stage == PRETRAIN_STAGE:
                self._drop_stages_after_pretraining()
                source = self.warm_start_source(warm_start) if warm_start is not None else None
                _, summary = self.pretrain(dataset, train_config, verbose, warm_start_from=source)
            elif stage == PROMPT_STAGE:
                _, summary = self.prompt_tune(self.load_model(PRETRAIN_STAGE), dataset, prompt_config, verbose)
            else:
                _, summary = self.fine_tune(self.load_model(PRETRAIN_STAGE), dataset, finetune_config, verbose)
            summaries[stage] = summary
            if on_stage_end:
                on_stage_end(stage, summary)
        return summaries

    def warm_start_source(self, path: Path | str) -> WarmStartSource:
        """The finished pre-training of the run at `path`, to start this run's from (refused: this very run,
        or one without a finished pre-training)."""
        old = Run.open(path)
        if old.path.resolve() == self.path.resolve():
            raise ConfigError("warm_start", f"must be another run than {self.path} (yesterday's)")
        features = old.item_features()
        return WarmStartSource(
            old.load_model(PRETRAIN_STAGE),
            old.item_vocab,
            old.user_vocab,
            str(old.path.resolve()),
            old.fingerprint(),
            features.values if features else (),
        )

    def _chief(self) -> "Run | None":
        """The run whose finished stages every worker follows: this one, or on a non-chief worker the
        chief's, None while the chief has not written it yet (the workers start together; none is finished)."""
        if self.chief_path is None:
            return self
        return Run.open(self.chief_path) if (self.chief_path / CONFIG_FILE).is_file() else None

    def _drop_stages_after_pretraining(self) -> None:
        """Removes the stages trained from the pre-trained weights (their weights, prompt cache, logs and
        configuration): pre-training is training anew, so they no longer follow from it."""
        for later in (PROMPT_STAGE, FINETUNE_STAGE):
            shutil.rmtree(self.stage_dir(later), ignore_errors=True)
            shutil.rmtree(self.log_dir(later), ignore_errors=True)
        dropped = [self.config.pop(later, None) for later in (PROMPT_STAGE, FINETUNE_STAGE)]
        if any(config is not None for config in dropped):
            write_json(self.path / CONFIG_FILE, self.config)

    def evaluate(self, dataset: Dataset) -> dict:
        """Every trained variant on the paper's protocol (the `evaluate --json` document), written to
        evaluation.json, where the export reads the two-step split chosen on validation."""
        from recgpt_tf.evaluation.report import evaluate_dataset

        models = {stage: self.load_model(stage) for stage in TRAINED_STAGES if self.has_stage(stage)}
        report = evaluate_dataset(models, dataset, self.train_seconds())
        write_json(self.path / EVALUATION_FILE, report)
        return report

    def chosen_first_step(self, k: int) -> int:
        """m for a k-list, chosen on validation by the last evaluation; k (one step) if none."""
        per_k = (self.evaluation() or {}).get("two_step_per_k", {})
        chosen = per_k.get("recgpt") or per_k.get("pretrain_two_step") or {}
        return int(chosen[str(k)]["m"]) if str(k) in chosen else k

    def fingerprint(self) -> str:
        """A digest of what an export of the run is built from: its vocabularies, item features and sample requests, its
        committed stages (a summary is written once per training, after its weights) and its last evaluation
        (the chosen m). Retraining or re-evaluating the run changes it."""
        digest = hashlib.sha256()
        for name in (ITEMS_FILE, USERS_FILE, SAMPLES_FILE, EVALUATION_FILE, *(f"{stage}/{SUMMARY_FILE}" for stage in TRAINED_STAGES)):
            path = self.path / name
            digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"(none)") + b"\0")
        if (self.path / FEATURES_FILE).is_file():  # only where there is one: an id-only run's digest is as it was
            digest.update(FEATURES_FILE.encode() + b"\0" + (self.path / FEATURES_FILE).read_bytes() + b"\0")
        return digest.hexdigest()[:16]

    def current_export(self, export_base: Path | str, name: str = "recgpt") -> Path:
        """A SavedModel version of the run as it is now: the newest version of EXPORT_BASE/NAME when it was
        exported from this very state (its recgpt.json records the run's `fingerprint`), else a new export,
        older versions removed. So answers from a retrained run never come from its old weights."""
        model_dir = Path(export_base) / name
        model_dir.mkdir(parents=True, exist_ok=True)
        busy = lambda holder: RunDirectoryError(f"{model_dir} is being exported by {holder}; wait for it to end")  # noqa: E731
        with exclusive_lock(model_dir / LOCK_FILE, busy):  # two batch jobs on one retrained run export it once
            return self._current_export_locked(model_dir, export_base, name)

    def _current_export_locked(self, model_dir: Path, export_base: Path | str, name: str) -> Path:
        from recgpt_tf.contract import METADATA_FILE, version_numbers

        versions = version_numbers(model_dir)
        if versions:
            newest = model_dir / str(versions[-1])
            recorded = newest / "assets.extra" / METADATA_FILE
            if recorded.is_file() and json.loads(recorded.read_text()).get("run_fingerprint") == self.fingerprint():
                return newest
        published = self.export(export_base, name)
        for old in versions:
            shutil.rmtree(model_dir / str(old), ignore_errors=True)
        return Path(published.path)

    def export(
        self,
        export_base: Path | str,
        name: str,
        index_kind: str = ExportConfig.index_kind,
        top_k: int = ExportConfig.top_k,
        first_step_size: int | None = None,
        steps: int = ExportConfig.steps,
        recall_threshold: float = ExportConfig.recall_threshold,
        tuning_seconds: float = ExportConfig.tuning_seconds,
        version: int | None = None,
        jit_compile: bool = False,
        item_features: ItemFeatures | None = None,
    ) -> PublishedVersion:
        """Publishes the run (prompt-tuned weights when present) as a version of `name` under `export_base`.

        The recgpt.json written with it holds the run, the stage, the configuration and, when the
        run was evaluated, its test metrics ("eval_metrics").

        Args:
            item_features: Today's catalogue (`read_item_features`), for a run trained with item features: every
                item of it is served, those no training sequence held by their features alone
                (`export.catalogue.extend_catalogue`); recgpt.json's "catalogue" counts them.

        Returns:
            `export.PublishedVersion`: the version's path and the metadata written.
        """
        from recgpt_tf.export.catalogue import extend_catalogue
        from recgpt_tf.export.publish import export_model

        stage = PROMPT_STAGE if self.has_stage(PROMPT_STAGE) else PRETRAIN_STAGE
        m = first_step_size if first_step_size is not None else self.chosen_first_step(top_k)
        samples = self.sample_requests()
        metadata = {
            "run": str(self.path.resolve()),
            "run_fingerprint": self.fingerprint(),
            "stage": stage,
            "config": self.committed_config(),
        }
        evaluation = self.evaluation()
        if evaluation:
            metadata["eval_metrics"] = evaluation["results"]
        model = self.load_model(stage)
        items, users = self.vocabulary_files
        with tempfile.TemporaryDirectory(prefix="recgpt-catalogue-") as scratch:
            if item_features is not None:
                model, vocabulary, metadata["catalogue"] = extend_catalogue(model, self.item_vocab, self.item_features(), item_features)
                items = Path(scratch) / ITEMS_FILE  # the served vocabulary: the trained items, then the feature-only ones
                vocabulary.save(items)
            return export_model(
                model,
                items,
                users,
                export_base,
                name,
                split_k(top_k, m, steps),
                index_kind=index_kind,
                sample_users=samples["users"],
                sample_histories=samples["histories"],
                recall_threshold=recall_threshold,
                tuning_seconds=tuning_seconds,
                version=version,
                metadata=metadata,
                jit_compile=jit_compile,
            )
