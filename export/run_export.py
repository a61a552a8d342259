"""Exporting from a run directory, or from an in-memory Keras model (no run directory)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Sequence

from recgpt_tf.contract import AUTO_INDEX
from recgpt_tf.data.vocab import Vocabulary
from recgpt_tf.export.publish import export_model
from recgpt_tf.inference.recall import split_k


def chosen_first_step(run_dir: Path, k: int) -> int:
    """m for a k-list from the run's last `recgpt evaluate` (chosen on validation); k (one step) if none."""
    report = Path(run_dir) / "evaluation.json"
    if report.exists():
        per_k = json.loads(report.read_text()).get("two_step_per_k", {})
        chosen = per_k.get("recgpt") or per_k.get("pretrain_two_step") or {}
        if str(k) in chosen:
            return int(chosen[str(k)]["m"])
    return k


def export_run(run_dir: Path | str, export_base: Path | str, name: str, index_kind: str = AUTO_INDEX, top_k: int = 10,
               first_step_size: int | None = None, steps: int = 2, recall_threshold: float = 0.95, version: int | None = None,
               jit_compile: bool = False) -> Path:
    """Publishes a trained run (prompt-tuned weights when present) as the next version of `name`."""
    from recgpt_tf.runs import Run

    run = Run.open(run_dir)
    stage = "prompt" if run.has_stage("prompt") else "pretrain"
    m = first_step_size if first_step_size is not None else chosen_first_step(run.path, top_k)
    samples_file = run.path / "sample_requests.json"
    samples = json.loads(samples_file.read_text()) if samples_file.exists() else {"users": [], "histories": []}
    return export_model(
        run.load_model(stage), run.path / "items.txt", run.path / "users.txt", export_base, name, split_k(top_k, m, steps),
        index_kind=index_kind, sample_users=samples["users"], sample_histories=samples["histories"],
        recall_threshold=recall_threshold, version=version, metadata={"run": str(run.path.resolve()), "stage": stage, "config": run.config},
        jit_compile=jit_compile,
    )


def export_keras_model(model, item_vocab: Vocabulary, user_vocab: Vocabulary, export_base: Path | str, name: str,
                       step_sizes: Sequence[int] = (9, 1), index_kind: str = AUTO_INDEX,
                       sample_users: Sequence[str] = (), sample_histories: Sequence[Sequence[str]] = (), **kwargs) -> Path:
    """Publishes an in-memory `RecGPT` (e.g. straight after `model.fit`) with its vocabularies."""
    with tempfile.TemporaryDirectory(prefix="recgpt-vocab-") as tmp:
        item_vocab.save(Path(tmp) / "items.txt")
        user_vocab.save(Path(tmp) / "users.txt")
        # The vocabulary files are copied into the SavedModel's assets while saving.
        return export_model(model, Path(tmp) / "items.txt", Path(tmp) / "users.txt", export_base, name, step_sizes,
                            index_kind=index_kind, sample_users=sample_users, sample_histories=sample_histories, **kwargs)
