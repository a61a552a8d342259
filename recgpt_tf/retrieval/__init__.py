"""Item retrieval: one interface (`ItemIndex.query_with_exclusions`), three indexes.

- `BruteForceIndex`: exact, stock ops.
- `PartitionedIndex`: ScaNN-trained k-means partition searched with stock ops.
- `ScannOpIndex`: ScaNN's searcher as custom TF ops (needs scann at serving time).
`tune_index` picks the cheapest search setting that reaches a recall target on
real queries; the exporter, evaluation and `AutoRegressiveRecall` all use these.
"""

from recgpt_tf.retrieval.base import ItemIndex
from recgpt_tf.retrieval.brute_force import BruteForceIndex
from recgpt_tf.retrieval.exclusions import exclude_candidates, exclude_scores, pad_exclusions
from recgpt_tf.retrieval.partitioned import PartitionedIndex
from recgpt_tf.retrieval.scann_artifacts import KMeansPartition, default_num_leaves, read_partition, train_kmeans_partition
from recgpt_tf.retrieval.scann_op import ScannOpIndex
from recgpt_tf.retrieval.tuning import (
    PARTITIONED_MIN_ITEMS,
    build_index,
    recall_at_k,
    resolve_index_kind,
    tune_leaves,
)

__all__ = [
    "PARTITIONED_MIN_ITEMS",
    "BruteForceIndex",
    "ItemIndex",
    "KMeansPartition",
    "PartitionedIndex",
    "ScannOpIndex",
    "default_num_leaves",
    "exclude_candidates",
    "exclude_scores",
    "pad_exclusions",
    "read_partition",
    "recall_at_k",
    "train_kmeans_partition",
    "tune_leaves",
    "build_index",
    "resolve_index_kind",
]
