"""Reading a trained run directory back (see `training.pretrain` for its layout)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from recgpt_tf.config import ModelConfig
from recgpt_tf.data.dataset import Dataset
from recgpt_tf.data.vocab import Vocabulary
from recgpt_tf.models.recgpt import RecGPT

# Architecture fields added after runs existed, with the values those runs were trained with
# (attention dropout was the model's one dropout rate).
LEGACY_MODEL_FIELDS = {"layer_norm": "pre", "activation": "relu", "init_stddev": 0.0, "scale_items": True}


class RunDirectoryError(FileNotFoundError):
    """A run directory is missing or incomplete; the message names what is missing."""


@dataclasses.dataclass
class Run:
    """A trained run: its configuration and vocabularies."""

    path: Path
    config: dict
    item_vocab: Vocabulary
    user_vocab: Vocabulary

    @classmethod
    def open(cls, path: Path | str) -> "Run":
        path = Path(path)
        for name in ("config.json", "items.txt", "users.txt"):
            if not (path / name).is_file():
                raise RunDirectoryError(f"{path}: not a trained run directory (no {name}); create one with `recgpt train DATA --out {path}`")
        return cls(
            path=path,
            config=json.loads((path / "config.json").read_text()),
            item_vocab=Vocabulary.load(path / "items.txt", oov_id="end"),
            user_vocab=Vocabulary.load(path / "users.txt", oov_id="zero"),
        )

    @property
    def model_config(self) -> ModelConfig:
        # Runs written before these fields existed were built with what was then the only layout.
        model = self.config["model"]
        return ModelConfig(**{**LEGACY_MODEL_FIELDS, "attention_dropout": model.get("dropout", 0.5), **model})

    def has_stage(self, stage: str) -> bool:
        return (self.path / stage / "weights.index").is_file()

    def load_model(self, stage: str = "pretrain") -> RecGPT:
        """The model with the stage's selected weights."""
        from recgpt_tf.training.pretrain import build_model

        if not self.has_stage(stage):
            raise RunDirectoryError(f"{self.path}: stage {stage!r} has no weights ({self.path / stage / 'weights.index'} missing)")
        objective = self.config.get("pretrain", {}).get("objective", "softmax")
        prompt_tuned = stage == "prompt"
        # The checkpoint also holds the stage's optimizer (learning rate, step count,
        # moments). Loaded straight into `model`, Keras would restore it into whatever
        # optimizer the next stage compiles, overriding that stage's learning rate, so
        # only the model's own variables are carried over.
        source = build_model(self.model_config, objective, prompt_tuned)
        source.load_weights(str(self.path / stage / "weights")).expect_partial()
        model = build_model(self.model_config, objective, prompt_tuned)
        model.set_weights(source.get_weights())
        return model

    def fork(self, path: Path | str) -> "Run":
        """A new run directory sharing this run's configuration, vocabularies and
        pre-trained weights (e.g. to prompt-tune with another K); reused if present."""
        path = Path(path)
        (path / "pretrain").mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "items.txt", "users.txt", "sample_requests.json"):
            if (self.path / name).exists() and not (path / name).exists():
                shutil.copy(self.path / name, path / name)
        for file in (self.path / "pretrain").glob("weights*"):
            shutil.copy(file, path / "pretrain" / file.name)
        return Run.open(path)

    def dataset(self, data: Path | str, data_format: str | None = None) -> Dataset:
        """`data` encoded with this run's vocabularies."""
        return Dataset.from_file(data, data_format, item_vocab=self.item_vocab, user_vocab=self.user_vocab)
