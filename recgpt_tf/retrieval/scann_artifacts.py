"""Reading a trained ScaNN searcher back from its serialized directory.

`scann_ops_pybind.ScannSearcher.serialize(dir)` writes the k-means tree as
`serialized_partitioner.pb` and each datapoint's leaf as `datapoint_to_token.npy`.
The scann package ships the protos of its configuration but not those of the
partitioner (`SerializedPartitioner` → `SerializedKMeansTreePartitioner` →
`SerializedKMeansTree`), so their schema is declared here, field for field
with ScaNN's `partitioner.proto`, `kmeans_tree_partitioner.proto` and
`kmeans_tree.proto`, and parsed with the protobuf runtime: a schema change in a
future ScaNN fails loudly here instead of producing a wrong index.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from recgpt_tf.errors import DataFormatError, ExportError

PARTITIONER_FILE = "serialized_partitioner.pb"
TOKENS_FILE = "datapoint_to_token.npy"


@dataclasses.dataclass
class KMeansPartition:
    """A flat k-means partition of the catalogue, as ScaNN trained it.

    Attributes:
        centroids: [L, d] float32 leaf centres (row l is leaf l).
        leaf_of_item: [N] int32 leaf of each datapoint (row j of the indexed table).
    """

    centroids: np.ndarray
    leaf_of_item: np.ndarray

    @property
    def num_leaves(self) -> int:
        return int(self.centroids.shape[0])


@functools.lru_cache(maxsize=1)
def _partitioner_message():
    """The `SerializedPartitioner` message class, built from a declared schema."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    Field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="recgpt_scann_partitioner.proto", package="recgpt_scann", syntax="proto2")

    def field(message, name, number, kind, label=Field.LABEL_OPTIONAL, type_name=None, packed=False):
        f = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            f.type_name = type_name
        if packed:
            f.options.packed = True

    tree = file.message_type.add(name="SerializedKMeansTree")
    center = tree.nested_type.add(name="Center")
    field(center, "dimension", 1, Field.TYPE_DOUBLE, Field.LABEL_REPEATED, packed=True)
    field(center, "float_dimension", 2, Field.TYPE_FLOAT, Field.LABEL_REPEATED, packed=True)
    node = tree.nested_type.add(name="Node")
    field(node, "centers", 1, Field.TYPE_MESSAGE, Field.LABEL_REPEATED, ".recgpt_scann.SerializedKMeansTree.Center")
    field(node, "indices", 2, Field.TYPE_UINT32, Field.LABEL_REPEATED)
    field(node, "children", 3, Field.TYPE_MESSAGE, Field.LABEL_REPEATED, ".recgpt_scann.SerializedKMeansTree.Node")
    field(node, "learned_spilling_threshold", 4, Field.TYPE_DOUBLE)
    field(node, "leaf_id", 5, Field.TYPE_INT32)
    field(node, "residual_stdevs", 6, Field.TYPE_DOUBLE, Field.LABEL_REPEATED, packed=True)
    field(tree, "root", 1, Field.TYPE_MESSAGE, type_name=".recgpt_scann.SerializedKMeansTree.Node")
    field(tree, "learned_spilling_type", 3, Field.TYPE_INT32)
    field(tree, "max_centers_for_learned_spilling", 4, Field.TYPE_UINT32)
    kmeans = file.message_type.add(name="SerializedKMeansTreePartitioner")
    field(kmeans, "kmeans_tree", 1, Field.TYPE_MESSAGE, type_name=".recgpt_scann.SerializedKMeansTree")
    partitioner = file.message_type.add(name="SerializedPartitioner")
    field(partitioner, "n_tokens", 1, Field.TYPE_INT32)
    field(partitioner, "kmeans", 2, Field.TYPE_MESSAGE, type_name=".recgpt_scann.SerializedKMeansTreePartitioner")
    field(partitioner, "uses_projection", 3, Field.TYPE_BOOL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("recgpt_scann.SerializedPartitioner"))


def _center(center) -> list[float]:
    return list(center.float_dimension) if len(center.float_dimension) else list(center.dimension)


def read_partition(directory: Path | str) -> KMeansPartition:
    """The leaf centres and each datapoint's leaf from a serialized ScaNN searcher.

    Raises:
        DataFormatError: naming the file, if the directory does not hold a one-level
            k-means tree over un-projected data (what `builder(...).tree(...)` makes).
    """
    directory = Path(directory)
    path = directory / PARTITIONER_FILE
    if not path.is_file() or not (directory / TOKENS_FILE).is_file():
        raise DataFormatError(directory, None, f"not a serialized ScaNN tree searcher ({PARTITIONER_FILE} and {TOKENS_FILE} expected)")
    message = _partitioner_message()()
    message.ParseFromString(path.read_bytes())
    if message.uses_projection or not message.HasField("kmeans"):
        raise DataFormatError(path, None, "only a k-means tree partitioner without projection can be read back")
    root = message.kmeans.kmeans_tree.root
    if any(len(child.children) for child in root.children):
        raise DataFormatError(path, None, "a multi-level k-means tree; build the searcher with one level of leaves")
    leaf_ids = [child.leaf_id for child in root.children]
    if sorted(leaf_ids) != list(range(len(leaf_ids))) or len(root.centers) != len(leaf_ids):
        raise DataFormatError(path, None, f"leaf ids {leaf_ids[:8]}… do not number the {len(root.centers)} centres 0..L-1")
    centroids = np.zeros((len(leaf_ids), len(_center(root.centers[0]))), np.float32)
    for leaf, center in zip(leaf_ids, root.centers):
        centroids[leaf] = _center(center)
    leaf_of_item = np.load(directory / TOKENS_FILE).astype(np.int32).reshape(-1)
    if leaf_of_item.size and (leaf_of_item.min() < 0 or leaf_of_item.max() >= len(leaf_ids)):
        raise DataFormatError(directory / TOKENS_FILE, None, f"leaf ids outside 0..{len(leaf_ids) - 1}")
    return KMeansPartition(centroids=centroids, leaf_of_item=leaf_of_item)


def import_scann():
    """The scann package, or an ImportError that says how to install it."""
    try:
        import scann  # noqa: F401  (also registers the Scann>… TF ops)
        from scann import scann_ops_pybind
        from scann.scann_ops.py import scann_ops
    except ImportError as error:  # pragma: no cover - scann is a dependency
        raise ImportError("building a ScaNN-trained index needs the scann package: pip install 'scann[tf]==1.4.2'") from error
    return scann_ops_pybind, scann_ops


def default_num_leaves(num_items: int) -> int:
    """About 2·√N leaves (at 1M items, 2,000 leaves of ~500), but at least ~100 items a
    leaf: ScaNN's k-means handles clusters under its `min_cluster_size` (50) specially."""
    return max(1, min(4096, num_items // 100, int(round(2 * np.sqrt(num_items)))))


def train_kmeans_partition(candidates: np.ndarray, num_leaves: int, training_sample_size: int = 250_000) -> KMeansPartition:
    """Trains ScaNN's k-means tree over `candidates` [N, d] and reads it back.

    ScaNN does the training (its partitioner, as `--index scann` uses); only the
    result, the leaf centres and each item's leaf, leaves this function.
    """
    scann_ops_pybind, _ = import_scann()
    import tempfile

    candidates = np.ascontiguousarray(candidates, dtype=np.float32)
    num_leaves = int(min(num_leaves, len(candidates)))
    builder = scann_ops_pybind.builder(candidates, 1, "dot_product").tree(
        num_leaves=num_leaves, num_leaves_to_search=num_leaves, training_sample_size=min(len(candidates), training_sample_size)
    )
    searcher = builder.score_brute_force().build()
    with tempfile.TemporaryDirectory(prefix="recgpt-scann-") as directory:
        searcher.serialize(directory)
        partition = read_partition(directory)
    if partition.leaf_of_item.shape[0] != len(candidates):
        raise ExportError(f"ScaNN assigned {partition.leaf_of_item.shape[0]} datapoints to leaves; expected {len(candidates)}")
    return partition
