"""Training objectives as TFRS retrieval tasks over the item table.

Every objective scores the same queries (hidden states at real positions)
against candidate item embeddings with `tfrs.tasks.Retrieval`; they differ in
which candidates each query sees:

- softmax: every item of the catalogue (SASRec-style cross-entropy).
- sampled_softmax: the other positives of the batch, with log-Q correction
  (`candidate_sampling_probability`) and accidental-hit removal.
- bce: the paper's loss; one uniformly sampled negative per position, scored with
  a sigmoid (binary cross-entropy), L = -[log σ(h·e⁺) + log(1 − σ(h·e⁻))].
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from recgpt_tf.config import OBJECTIVES


@keras.utils.register_keras_serializable(package="recgpt_tf")
class SigmoidPairLoss(keras.losses.Loss):
    """Binary cross-entropy summed over a query's candidates, averaged over queries.

    Masked candidates arrive with the task's minimum-float logit and a 0 label,
    so they add exactly 0; each query's loss is its positive and negative terms.
    """

    def __init__(self, name: str = "sigmoid_pair_loss", **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        per_candidate = tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true, logits=y_pred)
        return tf.reduce_sum(per_candidate, axis=-1)


def make_task(objective: str) -> tfrs.tasks.Retrieval:
    """The retrieval task for an objective; losses are means over positions."""
    mean = keras.losses.Reduction.SUM_OVER_BATCH_SIZE
    if objective == "softmax":
        return tfrs.tasks.Retrieval(loss=keras.losses.CategoricalCrossentropy(from_logits=True, reduction=mean), name="softmax_task")
    if objective == "sampled_softmax":
        return tfrs.tasks.Retrieval(
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, reduction=mean),
            remove_accidental_hits=True,
            name="sampled_softmax_task",
        )
    if objective == "bce":
        return tfrs.tasks.Retrieval(loss=SigmoidPairLoss(reduction=mean), name="bce_task")
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")


def retrieval_loss(
    task: tfrs.tasks.Retrieval,
    objective: str,
    queries: tf.Tensor,
    positives: tf.Tensor,
    item_table: tf.Tensor,
    num_items: int,
    item_log_probability: tf.Tensor,
) -> tf.Tensor:
    """Scores `queries` for their `positives` under `objective`.

    Args:
        task: From `make_task(objective)`.
        objective: One of `OBJECTIVES`.
        queries: [P, d] hidden states at real positions.
        positives: [P] int32 next-item ids (1..N).
        item_table: [N + 2, d] output item embeddings.
        num_items: N.
        item_log_probability: [N + 2] log unigram probability of each item (log-Q).

    Returns:
        Scalar loss.
    """
    positive_embeddings = tf.gather(item_table, positives)  # (P, d)
    num_queries = tf.shape(queries)[0]
    own = tf.eye(num_queries, dtype=tf.bool)  # each query sees its own positive
    if objective == "softmax":
        # Candidates: [own positive | whole catalogue]; the catalogue copy of the
        # positive and the other queries' positives are masked so each item
        # appears exactly once in each row's softmax.
        catalogue_ids = tf.range(1, num_items + 1, dtype=positives.dtype)
        candidates = tf.concat([positive_embeddings, item_table[1 : num_items + 1]], axis=0)
        mask = tf.concat([own, catalogue_ids[tf.newaxis, :] != positives[:, tf.newaxis]], axis=1)  # (P, P + N)
        return task(queries, candidates, score_mask=mask, compute_metrics=False, compute_batch_metrics=False)
    if objective == "sampled_softmax":
        return task(
            queries,
            positive_embeddings,
            candidate_sampling_probability=tf.exp(tf.gather(item_log_probability, positives)),
            candidate_ids=positives,
            compute_metrics=False,
            compute_batch_metrics=False,
        )
    if objective == "bce":
        negatives = tf.random.uniform(tf.shape(positives), 1, num_items + 1, dtype=positives.dtype)
        candidates = tf.concat([positive_embeddings, tf.gather(item_table, negatives)], axis=0)
        # Query i sees column i (its positive) and column P + i (its negative),
        # unless the draw hit the positive itself.
        mask = tf.concat([own, own & (negatives != positives)[:, tf.newaxis]], axis=1)  # (P, 2P)
        return task(queries, candidates, score_mask=mask, compute_metrics=False, compute_batch_metrics=False)
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
