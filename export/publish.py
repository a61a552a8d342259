"""Export a trained run as a versioned SavedModel under a TF Serving model base.

    EXPORT_BASE/NAME/VERSION/saved_model.pb, variables/, assets/ (vocabularies)
    EXPORT_BASE/NAME/VERSION/assets.extra/tf_serving_warmup_requests, recgpt.json
    EXPORT_BASE/models.config, EXPORT_BASE/batching_parameters.txt

A version is built in a hidden sibling directory and renamed into place only
when complete, so TF Serving (which polls the base) never sees half a version;
a failed export leaves nothing behind.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from recgpt_tf.contract import (
    EMBEDDINGS_SIGNATURE,
    INDEX_KINDS,
    INPUT_HISTORY,
    INPUT_USER_ID,
    METADATA_FILE,
    RECOMMEND_SIGNATURE,
    WARMUP_FILE,
)
from recgpt_tf.export.index import build_scann, index_recall, scann_parameters
from recgpt_tf.export.serving_module import RecGPTServingModule


class ExportError(RuntimeError):
    """The export was refused or failed; nothing was published."""


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    return max(versions, default=0) + 1


def history_tensor(histories: Sequence[Sequence[str]]) -> np.ndarray:
    """Right-pads string histories with "" into a [B, T] array (T >= 1)."""
    width = max([len(h) for h in histories] + [1])
    out = np.full((len(histories), width), "", dtype=object)
    for i, h in enumerate(histories):
        out[i, : len(h)] = list(h)
    return out


def write_warmup(path: Path, model_name: str, users: Sequence[str], histories: Sequence[Sequence[str]], batch: int = 8) -> int:
    """TF Serving warmup records (PredictionLog) from real histories; returns the count."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature in (RECOMMEND_SIGNATURE, EMBEDDINGS_SIGNATURE):
            for start in range(0, min(len(users), 4 * batch), batch):
                request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
                request.inputs[INPUT_USER_ID].CopyFrom(tf.make_tensor_proto(np.array(users[start : start + batch], dtype=object)))
                request.inputs[INPUT_HISTORY].CopyFrom(tf.make_tensor_proto(history_tensor(histories[start : start + batch])))
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
                count += 1
    return count


def write_models_config(export_base: Path, model_name: str) -> None:
    """EXPORT_BASE/models.config for `--model_config_file`, keeping other models listed there."""
    path = export_base / "models.config"
    names = set(re.findall(r'name:\s*"([^"]+)"', path.read_text())) if path.exists() else set()
    names.add(model_name)
    entries = "".join(
        f'  config {{\n    name: "{n}"\n    base_path: "/models/{n}"\n    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ latest {{ num_versions: 1 }} }}\n  }}\n"
        for n in sorted(names)
    )
    _atomic_write(path, f"model_config_list {{\n{entries}}}\n")


def write_batching_parameters(export_base: Path) -> None:
    """EXPORT_BASE/batching_parameters.txt for `--enable_batching --batching_parameters_file`."""
    _atomic_write(
        export_base / "batching_parameters.txt",
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 2000 }\n"
        "max_enqueued_batches { value: 256 }\nnum_batch_threads { value: 4 }\n",
    )


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def export_model(
    model,
    item_vocab: Path,
    user_vocab: Path,
    export_base: Path | str,
    name: str,
    step_sizes: Sequence[int],
    index_kind: str = "brute-force",
    sample_users: Sequence[str] = (),
    sample_histories: Sequence[Sequence[str]] = (),
    recall_threshold: float = 0.95,
    version: int | None = None,
    metadata: dict | None = None,
    jit_compile: bool = False,
) -> Path:
    """Builds, checks and atomically publishes one SavedModel version; returns its path.

    Args:
        model: A trained `RecGPT`.
        item_vocab, user_vocab: Vocabulary files (become SavedModel assets).
        export_base: The TF Serving model base.
        name: Model name (directory under the base, `model_spec.name`).
        step_sizes: Items per generation step, e.g. (9, 1) for two-step 9_1.
        index_kind: "scann" or "brute-force".
        sample_users, sample_histories: Real requests, for the warmup file and for
            measuring the ScaNN index's recall.
        recall_threshold: A ScaNN index below this recall@k is refused.
        version: Version number (default: the next free one).
        metadata: Extra entries for assets.extra/recgpt.json (config, eval metrics).
        jit_compile: XLA-compile the decoder passes (see `RecGPTServingModule`).
    """
    if index_kind not in INDEX_KINDS:
        raise ExportError(f"--index must be one of {', '.join(INDEX_KINDS)}; got {index_kind!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ExportError(f"model name {name!r} may hold only letters, digits, '_', '.' and '-'")
    export_base = Path(export_base)
    model_dir = export_base / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = version or next_version(model_dir)
    if (model_dir / str(version)).exists():
        raise ExportError(f"{model_dir / str(version)} already exists")
    k = sum(step_sizes)
    candidates = model.candidate_embeddings()

    info: dict = {"index": {"kind": index_kind}}
    index = None
    if index_kind == "scann":
        params = scann_parameters(model.num_items, k)
        index = build_scann(candidates, k, params)
        info["index"]["params"] = params
    module = RecGPTServingModule(model, item_vocab, user_vocab, step_sizes, index=index, jit_compile=jit_compile)
    if sample_users:
        _, _, _, vectors, _ = module.recall(tf.constant(list(sample_users)), tf.constant(history_tensor(sample_histories)))
        queries = tf.reshape(vectors, [-1, vectors.shape[-1]])
        if index is not None:
            recall_k = min(model.num_items, k + 50)
            recall = index_recall(index, candidates, queries, recall_k)
            info["index"].update(recall=recall, recall_at=recall_k, recall_queries=int(queries.shape[0]), recall_threshold=recall_threshold)
            if recall < recall_threshold:
                raise ExportError(
                    f"ScaNN recall@{recall_k} {recall:.3f} is below the threshold {recall_threshold} "
                    f"(params {info['index']['params']}); nothing was published. Lower --recall-threshold or use --index brute-force"
                )
    elif index is not None:
        raise ExportError("a ScaNN export needs sample histories to measure the index's recall")

    staging = Path(tempfile.mkdtemp(prefix=f".{version}.staging-", dir=model_dir))
    try:
        start = time.perf_counter()
        tf.saved_model.save(
            module,
            str(staging),
            signatures={
                RECOMMEND_SIGNATURE: module.recommend.get_concrete_function(),
                EMBEDDINGS_SIGNATURE: module.user_embeddings.get_concrete_function(),
            },
        )
        extra = staging / "assets.extra"
        extra.mkdir()
        warmups = write_warmup(extra / WARMUP_FILE, name, list(sample_users), list(sample_histories)) if sample_users else 0
        payload = {
            "name": name,
            "version": version,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "num_items": model.num_items,
            "num_users": model.num_users,
            "max_length": model.max_length,
            "k": k,
            "step_sizes": list(step_sizes),
            "prompt_tuned": bool(model.prompt_tuned),
            "jit_compile": bool(jit_compile),
            "warmup_requests": warmups,
            "save_seconds": time.perf_counter() - start,
            **info,
            **(metadata or {}),
        }
        (extra / METADATA_FILE).write_text(json.dumps(payload, indent=2) + "\n")
        final = model_dir / str(version)
        staging.rename(final)  # atomic on one filesystem: the version appears whole
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_models_config(export_base, name)
    write_batching_parameters(export_base)
    return final
