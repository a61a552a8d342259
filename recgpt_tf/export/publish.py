"""Export a trained run as a versioned SavedModel under a TF Serving model base.

    EXPORT_BASE/NAME/VERSION/saved_model.pb, variables/, assets/ (vocabularies)
    EXPORT_BASE/NAME/VERSION/assets.extra/tf_serving_warmup_requests, recgpt.json
    EXPORT_BASE/models.config, EXPORT_BASE/batching_parameters.txt

A version is built in a hidden sibling directory and renamed into place only
when complete, so TF Serving (which polls the base) never sees half a version;
a failed export leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from recgpt_tf.config import ExportConfig
from recgpt_tf.contract import (
    AUTO_INDEX,
    EMBEDDINGS_SIGNATURE,
    EXCLUDING_SIGNATURE,
    INPUT_EXCLUDE,
    INPUT_HISTORY,
    INPUT_USER_ID,
    METADATA_FILE,
    MODEL_NAME,
    RECOMMEND_SIGNATURE,
    WARMUP_FILE,
    pad_histories,
    version_numbers,
)
from recgpt_tf.errors import ConfigError, ExportError, IndexRecallError
from recgpt_tf.export.serving_module import RecGPTServingModule
from recgpt_tf.files import write_text_atomic
from recgpt_tf.retrieval import build_index, pad_exclusions, resolve_index_kind
from recgpt_tf.retrieval.tuning import MAX_SERVING_BATCH


def next_version(model_dir: Path) -> int:
    return max(version_numbers(model_dir), default=0) + 1


_PUBLISH_ATTEMPTS = 100  # versions tried when concurrent exports keep taking the next number


def _staging_prefix(version: int | str) -> str:
    """Hidden staging directories name their host and process, so abandoned ones can be told apart."""
    return f".{version}.staging-{os.getpid()}@{socket.gethostname()}@"  # no host name holds "@"


def _umask() -> int:
    """The process umask, read without setting it (os.umask would change it for every thread meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def remove_abandoned_staging(model_dir: Path) -> list[Path]:
    """Removes the staging directories of exports on this host whose process is gone (killed mid-export);
    returns them. Staging of live processes, or of other hosts sharing the directory, is left alone."""
    removed = []
    pattern = re.compile(rf"^\.\d+\.staging-(\d+)@{re.escape(socket.gethostname())}@")
    for path in model_dir.iterdir() if model_dir.is_dir() else []:
        match = pattern.match(path.name)
        if match and path.is_dir() and not _process_alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def write_warmup(path: Path, model_name: str, users: Sequence[str], histories: Sequence[Sequence[str]], batch: int = 8) -> int:
    """TF Serving warmup records (PredictionLog) from real histories; returns the count."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature in (RECOMMEND_SIGNATURE, EMBEDDINGS_SIGNATURE, EXCLUDING_SIGNATURE):
            for start in range(0, min(len(users), 4 * batch), batch):
                request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
                request.inputs[INPUT_USER_ID].CopyFrom(tf.make_tensor_proto(np.array(users[start : start + batch], dtype=object)))
                request.inputs[INPUT_HISTORY].CopyFrom(tf.make_tensor_proto(pad_histories(histories[start : start + batch])))
                if signature == EXCLUDING_SIGNATURE:  # the first history item excluded: a business rule's shape
                    rows = [row[:1] for row in histories[start : start + batch]]
                    request.inputs[INPUT_EXCLUDE].CopyFrom(tf.make_tensor_proto(pad_histories(rows)))
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
                count += 1
    return count


def write_models_config(export_base: Path, model_name: str) -> None:
    """EXPORT_BASE/models.config for `--model_config_file`: adds `model_name` (latest-version policy) and keeps
    every model and setting already there, an operator's `version_labels` included."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = export_base / "models.config"
    config = model_server_config_pb2.ModelServerConfig()
    if path.exists():
        try:
            text_format.Parse(path.read_text(), config)
        except text_format.ParseError as error:
            raise ExportError(f"{path} is not a TF Serving ModelServerConfig ({error}); fix or remove it") from None
    models = config.model_config_list.config
    if model_name not in {model.name for model in models}:
        entry = models.add(name=model_name, base_path=f"/models/{model_name}", model_platform="tensorflow")
        entry.model_version_policy.latest.num_versions = 1
        ordered = sorted(models, key=lambda model: model.name)
        config.model_config_list.ClearField("config")
        config.model_config_list.config.extend(ordered)
    write_text_atomic(path, text_format.MessageToString(config))


def write_batching_parameters(export_base: Path) -> None:
    """EXPORT_BASE/batching_parameters.txt for `--enable_batching --batching_parameters_file`."""
    write_text_atomic(
        export_base / "batching_parameters.txt",
        f"max_batch_size {{ value: {MAX_SERVING_BATCH} }}\nbatch_timeout_micros {{ value: 2000 }}\n"
        "max_enqueued_batches { value: 256 }\nnum_batch_threads { value: 4 }\n",
    )


def recall_queries(module: RecGPTServingModule, users: Sequence[str], histories: Sequence[Sequence[str]], chunk: int = 256) -> dict:
    """The queries the index meets at serving time, from real requests, run exactly.

    Returns:
        {"step_g": (h_g [B, d], exclusions [B, E])} for each recall step g: the
        history, plus for g > 1 the items the earlier steps listed.
    """
    parts = []
    for start in range(0, len(users), chunk):  # the exact recall scores [chunk, N]: bounded at a million items
        user_ids, history = tf.constant(list(users[start : start + chunk])), tf.constant(pad_histories(histories[start : start + chunk]))
        ids, _, _, vectors, _ = module.recall(user_ids, history)
        _, items = module.encode_inputs(user_ids, history)
        exclusions = module.generation.history_exclusions(items).numpy()
        sets, listed = {}, 0
        for step, size in enumerate(module.step_sizes):
            sets[f"step_{step + 1}"] = (vectors[:, step].numpy(), np.concatenate([exclusions, ids[:, :listed].numpy()], axis=1))
            listed += size
        parts.append(sets)
    return {
        name: (np.concatenate([p[name][0] for p in parts]), pad_exclusions([row for p in parts for row in p[name][1]])) for name in parts[0]
    }


def tuned_index(
    model,
    item_vocab: Path,
    user_vocab: Path,
    step_sizes: Sequence[int],
    index_kind: str,
    sample_users: Sequence[str],
    sample_histories: Sequence[Sequence[str]],
    recall_threshold: float,
    tuning_seconds: float = ExportConfig.tuning_seconds,
):
    """The export's index, tuned on the run's own requests; (index, metadata for recgpt.json).

    With `index_kind` "auto", an approximate index that cannot keep its recall promise, or that is not
    faster than exact search at batch 1 and at the server's largest batch, gives way to exact search
    (recgpt.json says why); asked for by name, it is refused instead."""
    kind = resolve_index_kind(index_kind, model.num_items)
    if kind == "brute-force":
        return None, {"kind": kind, "requested": index_kind}
    if not sample_users:
        raise ExportError(f"a {kind} index is tuned on real requests: pass sample_users and sample_histories, or index_kind='brute-force'")
    exact = RecGPTServingModule(model, item_vocab, user_vocab, step_sizes)
    try:
        index, info = build_index(
            kind,
            model.candidate_embeddings().numpy(),
            recall_queries(exact, sample_users, sample_histories),
            sum(step_sizes),
            recall_threshold,
            tuning_seconds=tuning_seconds,
        )
    except IndexRecallError as error:
        if index_kind == AUTO_INDEX:
            return None, {"kind": "brute-force", "requested": index_kind, "fallback": f"{kind}: {error}"}
        raise ExportError(f"{error}; nothing was published") from error
    slowest = min(f["slowest_ratio_to_exact"] for f in info["settings_tried"])
    if index_kind == AUTO_INDEX and slowest >= 1.0:
        reason = f"{kind}: slower than exact search at batch 1 or {MAX_SERVING_BATCH} ({slowest:.2f}x at the worse)"
        return None, {"kind": "brute-force", "requested": index_kind, "fallback": reason}
    return index, {**info, "requested": index_kind}


@dataclasses.dataclass(frozen=True)
class PublishedVersion:
    """One published SavedModel version: where it is and the recgpt.json written with it."""

    path: Path
    metadata: dict


def allocate_version(export_base: Path | str, name: str, version: int | None) -> tuple[Path, int]:
    """(model directory, version number) for a new version of `name`, checked before anything is built."""
    if not MODEL_NAME.fullmatch(name):
        raise ConfigError(
            "name",
            f"must be a model name a server serves: letters, digits, '_', '.' or '-', not starting with '.' (hidden "
            f"directories are never polled) or '-'; got {name!r}",
        )
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ConfigError("version", f"must be a whole number >= 1 (TF Serving loads only those); got {version!r}")
    model_dir = Path(export_base) / name
    version = version or next_version(model_dir)
    if (model_dir / str(version)).exists():
        raise ExportError(f"{model_dir / str(version)} already exists")
    return model_dir, version


def write_version(
    module: RecGPTServingModule,
    model_dir: Path,
    version: int,
    metadata: dict,
    sample_users: Sequence[str] = (),
    sample_histories: Sequence[Sequence[str]] = (),
    take_next_free: bool = False,
) -> PublishedVersion:
    """Saves `module` as MODEL_DIR/VERSION with its warmup requests and recgpt.json, atomically.

    The version is built in a hidden sibling directory and renamed into place only when
    complete; on any failure the staging directory is removed and nothing is published.
    When another export published VERSION meanwhile, `take_next_free` publishes as the next
    free version instead (the number was not the caller's choice); otherwise it is an `ExportError`.
    Staging directories left by killed exports on this host are removed first.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(version)}", dir=model_dir))
    # mkdtemp creates 0700: a server running as another user (a hardened pod) could not read the version.
    staging.chmod(0o777 & ~_umask())
    try:
        start = time.perf_counter()
        tf.saved_model.save(
            module,
            str(staging),
            signatures={
                RECOMMEND_SIGNATURE: module.recommend.get_concrete_function(),
                EMBEDDINGS_SIGNATURE: module.user_embeddings.get_concrete_function(),
                EXCLUDING_SIGNATURE: module.recommend_excluding.get_concrete_function(),
            },
        )
        extra = staging / "assets.extra"
        extra.mkdir()
        warmups = write_warmup(extra / WARMUP_FILE, model_dir.name, list(sample_users), list(sample_histories)) if sample_users else 0
        payload = {
            "name": model_dir.name,
            "version": version,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **metadata,
            "warmup_requests": warmups,
            "save_seconds": time.perf_counter() - start,
        }
        for _ in range(_PUBLISH_ATTEMPTS):
            (extra / METADATA_FILE).write_text(json.dumps(payload, indent=2) + "\n")
            final = model_dir / str(payload["version"])
            try:
                os.rename(staging, final)  # atomic on one filesystem: the version appears whole
                break
            except OSError:
                if not final.exists():
                    raise
                if not take_next_free:
                    raise ExportError(f"{final} was published by another export meanwhile; choose another --version") from None
                payload["version"] = next_version(model_dir)  # a concurrent export took this number
        else:
            raise ExportError(f"no free version under {model_dir} after {_PUBLISH_ATTEMPTS} attempts (is something else writing there?)")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PublishedVersion(final, payload)


def write_monitoring_config(export_base: Path) -> None:
    """EXPORT_BASE/monitoring.config for `--monitoring_config_file`: TF Serving's Prometheus metrics on its
    REST port (it exports none without this file)."""
    write_text_atomic(
        export_base / "monitoring.config", 'prometheus_config {\n  enable: true\n  path: "/monitoring/prometheus/metrics"\n}\n'
    )


def update_export_base(export_base: Path | str, name: str) -> None:
    """The base's TF Serving configuration files, listing `name` beside the models already there."""
    write_models_config(Path(export_base), name)
    write_batching_parameters(Path(export_base))
    write_monitoring_config(Path(export_base))


def export_model(
    model,
    item_vocab: Path,
    user_vocab: Path,
    export_base: Path | str,
    name: str,
    step_sizes: Sequence[int],
    index_kind: str = AUTO_INDEX,
    sample_users: Sequence[str] = (),
    sample_histories: Sequence[Sequence[str]] = (),
    recall_threshold: float = ExportConfig.recall_threshold,
    tuning_seconds: float = ExportConfig.tuning_seconds,
    version: int | None = None,
    metadata: dict | None = None,
    jit_compile: bool = False,
) -> PublishedVersion:
    """Builds, checks and atomically publishes one SavedModel version.

    The steps, each its own function: `tuned_index` (build the index and check its recall on real requests),
    then `publish_with_index` (`allocate_version`, the serving module, `write_version`, `update_export_base`).

    Args:
        model: A trained `RecGPT`.
        item_vocab, user_vocab: Vocabulary files (become SavedModel assets).
        export_base: The TF Serving model base.
        name: Model name (directory under the base, `model_spec.name`).
        step_sizes: Items per generation step, e.g. (9, 1) for two-step 9_1.
        index_kind: "brute-force", "partitioned", "scann" or "auto" (partitioned from
            `PARTITIONED_MIN_ITEMS` items up, brute force below).
        sample_users, sample_histories: Real requests, for the warmup file and for
            tuning the index and measuring its recall.
        recall_threshold: The approximate indexes are tuned to reach this recall@k
            against exact search at every recall step, on held-out requests, or refused.
        tuning_seconds: Time budget of the index tuning.
        version: Version number (default: the next free one).
        metadata: Extra entries for assets.extra/recgpt.json (run, config, eval metrics).
        jit_compile: XLA-compile the decoder passes (see `RecGPTServingModule`).

    Returns:
        The published version's path and the recgpt.json written with it.
    """
    index = tuned_index(
        model, item_vocab, user_vocab, step_sizes, index_kind, sample_users, sample_histories, recall_threshold, tuning_seconds
    )
    return publish_with_index(
        model, item_vocab, user_vocab, export_base, name, step_sizes, index, sample_users, sample_histories, version, metadata, jit_compile
    )


def publish_with_index(
    model,
    item_vocab: Path,
    user_vocab: Path,
    export_base: Path | str,
    name: str,
    step_sizes: Sequence[int],
    index: tuple,
    sample_users: Sequence[str] = (),
    sample_histories: Sequence[Sequence[str]] = (),
    version: int | None = None,
    metadata: dict | None = None,
    jit_compile: bool = False,
) -> PublishedVersion:
    """Publishes one SavedModel version around `index`, an (ItemIndex or None for brute force, its recgpt.json
    entry) pair as `tuned_index` returns it; the other arguments are `export_model`'s."""
    requested = version
    model_dir, version = allocate_version(export_base, name, version)
    item_index, index_info = index
    module = RecGPTServingModule(model, item_vocab, user_vocab, step_sizes, index=item_index, jit_compile=jit_compile)
    model_metadata = {
        "num_items": model.num_items,
        "num_users": model.num_users,
        "max_length": model.max_length,
        "k": sum(step_sizes),
        "step_sizes": list(step_sizes),
        "prompt_tuned": bool(model.prompt_tuned),
        "jit_compile": bool(jit_compile),
        "index": index_info,
    }
    published = write_version(
        module, model_dir, version, {**model_metadata, **(metadata or {})}, sample_users, sample_histories, take_next_free=requested is None
    )
    update_export_base(export_base, name)
    return published
