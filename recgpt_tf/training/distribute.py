"""Training on TensorFlow's own distributed engine (`tf.distribute`), behind one setting.

`TrainConfig.strategy`:
    "single"        one process, no strategy (the default; nothing changes on this path).
    "mirrored"      `MirroredStrategy`: data parallel over this machine's devices (GPUs).
    "multi-worker"  `MultiWorkerMirroredStrategy`: data parallel over the processes that
                    `TF_CONFIG` lists, as Keras documents it. The chief (the "chief" task, or
                    worker 0 when there is none) writes the run directory; every other worker
                    trains into a scratch run directory of its own (`worker_run_dir`).
    "parameter-server"  `ParameterServerStrategy` with `model.fit`: this process (TF_CONFIG task
                    "chief") coordinates; the "worker" and "ps" tasks run `recgpt cluster-task`
                    (`serve_cluster_task`). Variables of `min_shard_bytes` or more, the item and
                    user tables above all, are split over the parameter servers (`ShardedVariable`),
                    so a table larger than one host's memory trains; checkpoints and the export
                    read them back whole.

Each input pipeline (one per worker) trains on its own share of the users, batched as the
configuration says at the per-replica batch size, repeated; every worker runs the same number
of steps an epoch (the fewest any share yields), so no worker waits at an all-reduce forever.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Callable

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import STRATEGIES
from recgpt_tf.errors import ConfigError


def cluster_spec() -> dict:
    """TF_CONFIG as a dict; {} when unset, a `ConfigError` when it is not JSON."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ConfigError("TF_CONFIG", f"is not JSON: {error}") from None


def is_chief() -> bool:
    """Whether this process writes the run: the "chief" task, or worker 0 of a cluster without one."""
    config = cluster_spec()
    task = config.get("task", {})
    if not task:
        return True
    has_chief = "chief" in config.get("cluster", {})
    return task.get("type") == "chief" or (not has_chief and task.get("type") == "worker" and int(task.get("index", 0)) == 0)


# Variables this large or larger are split over the parameter servers (up to one shard per server).
MIN_SHARD_BYTES = 4 << 10


@functools.lru_cache(maxsize=None)
def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy for `name` (one per process: TensorFlow allows one multi-worker strategy, created before
    the model)."""
    if name == "single":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        if not cluster_spec().get("cluster"):
            raise ConfigError("strategy", "'multi-worker' needs TF_CONFIG naming the cluster and this task (see README, Training at scale)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "parameter-server":
        cluster = cluster_spec().get("cluster", {})
        if not cluster.get("ps") or not cluster.get("worker"):
            raise ConfigError("strategy", "'parameter-server' needs TF_CONFIG with worker and ps tasks (see README, Training at scale)")
        partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=MIN_SHARD_BYTES, max_shards=len(cluster["ps"])
        )
        return tf.distribute.experimental.ParameterServerStrategy(
            tf.distribute.cluster_resolver.TFConfigClusterResolver(), variable_partitioner=partitioner
        )
    raise ConfigError("strategy", f"must be one of {', '.join(STRATEGIES)}; got {name!r}")


def worker_run_dir(run_dir: Path | str, strategy: str) -> Path:
    """Where this process keeps its run: `run_dir` for the chief (and single-process training), a scratch
    directory for the other workers of a multi-worker run, which must not write the chief's files."""
    if strategy == "multi-worker" and not is_chief():
        return Path(tempfile.mkdtemp(prefix="recgpt-worker-run-"))
    return Path(run_dir)


def distributed_batches(
    strategy: tf.distribute.Strategy, num_pipelines: int, batch_size: int, make_batches: Callable[[int, int, int], tf.data.Dataset]
) -> tuple[object, int]:
    """(input for `model.fit`, steps per epoch) for a strategy with several replicas.

    Args:
        strategy: The training strategy.
        num_pipelines: Input pipelines (one per worker).
        batch_size: The global batch size (sequences a step across all replicas, on average).
        make_batches: (pipeline index, pipelines, per-replica batch size) → that pipeline's batches of one epoch.

    Returns:
        A `DatasetCreator` whose pipelines repeat their share, and the fewest batches any share yields an epoch.
    """
    per_replica = max(1, batch_size // strategy.num_replicas_in_sync)
    steps = min(int(make_batches(i, num_pipelines, per_replica).reduce(0, lambda n, _: n + 1)) for i in range(num_pipelines))

    def pipeline(context: tf.distribute.InputContext) -> tf.data.Dataset:
        # The batch size the steps were counted with, so every pipeline really yields `steps` an epoch.
        return make_batches(context.input_pipeline_id, context.num_input_pipelines, per_replica).repeat()

    return keras.utils.experimental.DatasetCreator(pipeline), max(1, steps)


def num_input_pipelines(strategy: str) -> int:
    """Processes that read training data: the workers (and, for multi-worker, the chief); 1 without a cluster."""
    cluster = cluster_spec().get("cluster", {})
    readers = len(cluster.get("worker", [])) + (len(cluster.get("chief", [])) if strategy == "multi-worker" else 0)
    return max(1, readers)


def table_placement(model) -> dict[str, list[str]]:
    """The devices holding each shard of the item, user and feature-value tables (one entry for an unsharded
    table; a table the model lacks is left out)."""
    embedding = model.backbone.embedding
    tables = {"item_table": embedding.item_embedding.embeddings}
    if embedding.user_embedding is not None:
        tables["user_table"] = embedding.user_embedding.embeddings
    if embedding.feature_embedding is not None:
        tables["feature_table"] = embedding.feature_embedding.embeddings
    return {name: [v.device for v in getattr(table, "variables", [table])] for name, table in tables.items()}


def free_local_ports(count: int) -> list[int]:
    """`count` TCP ports free on 127.0.0.1 now, for a cluster of local processes (tests, benchmarks)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def serve_cluster_task() -> None:
    """Runs this process as the TF_CONFIG task it names (a "worker" or "ps" of a parameter-server cluster)
    until it is killed."""
    config = cluster_spec()
    task = config.get("task", {})
    if task.get("type") not in ("worker", "ps"):
        raise ConfigError("TF_CONFIG", f"must name a worker or ps task for this process; got {task or 'none'}")
    server = tf.distribute.Server(
        tf.train.ClusterSpec(config["cluster"]), job_name=task["type"], task_index=int(task.get("index", 0)), protocol="grpc", start=True
    )
    server.join()
