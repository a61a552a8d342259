"""Training objectives as TFRS retrieval tasks over the item table.

Every objective scores the same queries (hidden states at real positions)
against candidate item embeddings with `tfrs.tasks.Retrieval`; they differ in
which candidates each query sees:

- softmax: every item of the catalogue (SASRec-style cross-entropy), through
  `CatalogueRetrieval`, a `Retrieval` whose positives are named by catalogue
  index: the stock task's dense [P, P + N] label and mask matrices cost 2.5x
  the sparse cross-entropy on this machine (measured), for the same loss.
- sampled_softmax: the other positives of the batch, with log-Q correction
  (`candidate_sampling_probability`) and accidental-hit removal.
- bce: the paper's loss; one uniformly sampled negative per position, scored with
  a sigmoid (binary cross-entropy), L = -[log σ(h·e⁺) + log(1 − σ(h·e⁻))].
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from recgpt_tf.config import check_objective
from recgpt_tf.errors import ConfigError
from recgpt_tf.layers import ItemRows


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


@keras.utils.register_keras_serializable(package="recgpt_tf")
class CatalogueRetrieval(tfrs.tasks.Retrieval):
    """A retrieval task whose candidates are the whole catalogue.

    Where `tfrs.tasks.Retrieval` pairs query i with candidate i, this task scores
    every query against every catalogue item and names each query's positive by
    its catalogue index, so the loss is a sparse softmax cross-entropy over the
    full catalogue (mean over queries). Loss metrics work as in the base task.

    Args:
        label_smoothing: ε: the target puts 1 − ε on the positive and ε spread
            evenly over the catalogue.
        name: Layer name.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "catalogue_retrieval") -> None:
        super().__init__(name=name)
        self.label_smoothing = label_smoothing

    def call(
        self,
        query_embeddings: tf.Tensor,
        candidate_embeddings: tf.Tensor,
        positive_indices: tf.Tensor,
        sample_weight: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Args:
            query_embeddings: [P, d].
            candidate_embeddings: [N, d], the catalogue.
            positive_indices: [P] int, row of each query's positive in the catalogue.
            sample_weight: Optional [P] weights.

        Returns:
            Scalar mean cross-entropy (against the smoothed target when `label_smoothing` > 0).
        """
        scores = tf.matmul(query_embeddings, candidate_embeddings, transpose_b=True)  # (P, N)
        if self._temperature is not None:
            scores = scores / self._temperature
        per_query = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positive_indices, logits=scores)
        if self.label_smoothing:
            # (1 − ε)·CE + ε·(logsumexp(s) − mean(s)) = CE + ε·(s_positive − mean(s)). Both scores are linear
            # in the query (the mean score is the query against the mean candidate), so smoothing costs no
            # second pass over the P × N scores, which dominate a step at catalogue scale.
            positive = tf.reduce_sum(query_embeddings * tf.gather(candidate_embeddings, positive_indices), axis=-1)  # (P,)
            margin = positive - tf.linalg.matvec(query_embeddings, tf.reduce_mean(candidate_embeddings, axis=0))  # (P,)
            if self._temperature is not None:
                margin = margin / self._temperature
            per_query = per_query + self.label_smoothing * margin
        if sample_weight is None:
            loss = tf.reduce_mean(per_query)
        else:
            weight = tf.cast(sample_weight, per_query.dtype)
            loss = tf.math.divide_no_nan(tf.reduce_sum(per_query * weight), tf.reduce_sum(weight))
        update_ops = [metric.update_state(loss) for metric in self._loss_metrics]
        with tf.control_dependencies(update_ops):
            return tf.identity(loss)


def make_task(objective: str, label_smoothing: float = 0.0) -> tfrs.tasks.Retrieval:
    """The retrieval task for an objective (`retrieval_loss` turns its output into the mean over positions).

    The stock tasks' losses reduce to one value per query (Reduction.NONE): Keras refuses a loss that
    averages over the batch itself inside a `tf.distribute` strategy, and the mean is taken in
    `retrieval_loss` instead. `label_smoothing` applies to the softmax objective only."""
    check_objective(objective, label_smoothing)
    if objective == "auto":
        raise ConfigError("objective", "'auto' must be resolved for the catalogue first (TrainConfig.for_catalogue)")
    if label_smoothing is None:
        raise ConfigError("label_smoothing", "None must be resolved for the objective first (TrainConfig.for_catalogue)")
    per_query = keras.losses.Reduction.NONE
    if objective == "softmax":
        task = CatalogueRetrieval(label_smoothing=label_smoothing, name="softmax_task")
    elif objective == "sampled_softmax":
        task = tfrs.tasks.Retrieval(
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, reduction=per_query),
            remove_accidental_hits=True,
            name="sampled_softmax_task",
        )
    else:  # bce
        task = tfrs.tasks.Retrieval(loss=SigmoidPairLoss(reduction=per_query), name="bce_task")
    task.built = True  # no weights to create; a model that never trained (exported from weights) saves it whole
    return task


def retrieval_loss(
    task: tfrs.tasks.Retrieval,
    objective: str,
    queries: tf.Tensor,
    positives: tf.Tensor,
    item_rows: ItemRows,
    num_items: int,
    item_log_probability: tf.Tensor,
) -> tf.Tensor:
    """Scores `queries` for their `positives` under `objective`.

    Args:
        task: From `make_task(objective)` (a `tfrs.tasks.Retrieval`).
        objective: One of `OBJECTIVES`.
        queries: [P, d] hidden states at real positions.
        positives: [P] int32 next-item ids (1..N).
        item_rows: The output item rows, [N + 2, d]: read whole by the full softmax, by id by the others.
        num_items: N.
        item_log_probability: [N + 2] log unigram probability of each item (log-Q).

    Returns:
        Scalar loss.
    """
    if objective == "softmax":
        return task(queries, item_rows.table()[1 : num_items + 1], positive_indices=positives - 1)
    positive_embeddings = item_rows.gather(positives)  # (P, d)
    own = tf.eye(tf.shape(queries)[0], dtype=tf.bool)  # each query sees its own positive
    if objective == "sampled_softmax":
        return tf.reduce_mean(
            task(
                queries,
                positive_embeddings,
                # A lookup, not tf.gather: a parameter server's sharded vector would come back grouped by shard.
                candidate_sampling_probability=tf.exp(tf.nn.embedding_lookup(item_log_probability, positives)),
                candidate_ids=positives,
                compute_metrics=False,
                compute_batch_metrics=False,
            )
        )
    # bce (the objective was checked when `make_task` built the task).
    negatives = tf.random.uniform(tf.shape(positives), 1, num_items + 1, dtype=positives.dtype)
    candidates = tf.concat([positive_embeddings, item_rows.gather(negatives)], axis=0)
    # Query i sees column i (its positive) and column P + i (its negative),
    # unless the draw hit the positive itself.
    mask = tf.concat([own, own & (negatives != positives)[:, tf.newaxis]], axis=1)  # (P, 2P)
    return tf.reduce_mean(task(queries, candidates, score_mask=mask, compute_metrics=False, compute_batch_metrics=False))
