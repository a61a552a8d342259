"""Input embeddings: item + position + user ("user module") + segment (paper section 1); an item is its id row,
plus the mean of its feature values' rows when the model has item features."""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from recgpt_tf.config import ModelConfig
from recgpt_tf.layers.configured import ConfiguredLayer


class ItemRows:
    """The item rows one step reads: an id table, each row kept or left out by the step's one draw of the id
    dropout, plus each item's mean feature-value row with features.

    `table()` is every item's row, [N + 2, d]: the full softmax scores them all. `gather(ids)` is the rows of
    `ids`, [..., d]: a batch, or a sampled softmax's candidates, whose step then never builds [N + 2, d] rows, so
    its cost and its tables' gradients (sparse) grow with the ids read, not the catalogue. Every read is a
    lookup, in the order asked, which a parameter server's sharded table supports (its `tf.gather` groups the
    rows by shard).

    Args:
        id_rows: The id rows [N + 2, d]: the item embedding, or prompt-tuning's W_l.
        features: The embedding whose items' feature rows are added (`RecGPTEmbedding.pooled_of`,
            `pooled_features`), or None for id rows alone.
        kept: [N + 2, 1] 1.0 for each id row kept this step, 0.0 for one left out; None keeps every row.
        whole: The step builds `table()` anyway (the full softmax): `gather` reads from it.
    """

    def __init__(
        self,
        id_rows: keras.layers.Embedding,
        features: RecGPTEmbedding | None = None,
        kept: tf.Tensor | None = None,
        whole: bool = False,
    ) -> None:
        self.id_rows, self.features, self.kept, self.whole = id_rows, features, kept, whole
        self._table = None

    def table(self) -> tf.Variable | tf.Tensor:
        """[N + 2, d] every item's row (built once; the id table itself where nothing is added)."""
        if self._table is None:
            table = self.id_rows.embeddings
            if self.kept is not None:
                table = table * self.kept  # not rescaled: a kept row is the row served
            if self.features is not None:
                table = table + self.features.pooled_features()
            self._table = table
        return self._table

    def gather(self, item_ids: tf.Tensor) -> tf.Tensor:
        """[..., d] the rows of `item_ids` [...]."""
        if self.whole and (self.kept is not None or self.features is not None):  # a built table, not a variable
            return tf.gather(self.table(), item_ids)
        rows = self.id_rows(item_ids)
        if self.kept is not None:
            rows *= tf.gather(self.kept, item_ids)  # (..., 1)
        if self.features is not None:
            rows += self.features.pooled_of(item_ids)
        return rows


@keras.utils.register_keras_serializable(package="recgpt_tf")
class RecGPTEmbedding(ConfiguredLayer):
    """h0 = LN(item_emb[v_t]·√d + pos_emb[t] + user_emb[u] + seg_emb[segment_t]), then dropout.

    The item table doubles as the output table of pre-training (score = h · e_i),
    as in SASRec; scaling the input by √d (`scale_items`) keeps the two roles balanced.

    With item features (`config.num_feature_values` > 0) an item's row is e_i = id_emb[i] + mean of
    feature_emb[f] over its values f, in the input and the output table alike: an item no sequence holds (its
    id row left at zero) is known by its features. The item → feature-value matrix is a non-trainable weight,
    `item_features` [N + 2, M] (0 pads a row; row 0 and the OOV row hold none), so checkpoints and SavedModels
    carry it; `RecGPT.set_item_features` fills it.

    Args:
        config: The architecture (`ModelConfig`): num_items (the table has N + 2 rows: 0 padding, N+1 OOV),
            num_users (U + 1 rows: 0 the OOV user), max_length positions, hidden_size d, num_segments (0 real
            item, 1 prompt), dropout on the sum, use_user_embedding, user_dropout (the training-time
            probability of replacing a user by the OOV user) and scale_items (multiply item embeddings by √d on
            input; False: RecBole's SASRec). Positions number the tokens 0..T-1 from the first kept token. The
            sum is layer-normalised before dropout (the post-LN blocks never normalise their input).
    """

    def __init__(self, config: ModelConfig, **kwargs) -> None:
        super().__init__(config, **kwargs)
        n, d = config.max_length, config.hidden_size
        init = lambda: keras.initializers.TruncatedNormal(stddev=0.02)  # noqa: E731 (one instance per table)
        self.item_embedding = keras.layers.Embedding(config.num_items + 2, d, embeddings_initializer=init(), name="item_embedding")
        self.position_embedding = keras.layers.Embedding(n, d, embeddings_initializer=init(), name="position_embedding")
        self.segment_embedding = keras.layers.Embedding(config.num_segments, d, embeddings_initializer="zeros", name="segment_embedding")
        self.user_embedding = (
            keras.layers.Embedding(config.num_users + 1, d, embeddings_initializer=init(), name="user_embedding")
            if config.use_user_embedding
            else None
        )
        self.feature_embedding = self.item_features = None  # the matrix is made in `build`
        if config.has_item_features:
            # Rows: 0 padding (never read), 1..F the known values, F + 1 the bucket of rare and unknown ones.
            self.feature_embedding = keras.layers.Embedding(
                config.num_feature_values + 2, d, embeddings_initializer=init(), name="feature_embedding"
            )
        self.embedding_norm = keras.layers.LayerNormalization(epsilon=1e-6, name="embedding_norm")
        self.embedding_dropout = keras.layers.Dropout(config.dropout, name="embedding_dropout")

    def build(self, input_shape) -> None:
        if self.feature_embedding is not None:  # every item's row is read whole, before any lookup builds the tables
            self.item_features = self.add_weight(
                name="item_features",
                shape=(self.config.num_items + 2, self.config.max_item_features),
                dtype=tf.int32,
                initializer="zeros",
                trainable=False,
            )
            self.item_embedding.build(None)
            self.feature_embedding.build(None)
        super().build(input_shape)

    def call(
        self,
        user_id: tf.Tensor,
        item_ids: tf.Tensor,
        segment_ids: tf.Tensor,
        training: bool | None = None,
        step_rows: ItemRows | None = None,
    ) -> tf.Tensor:
        """Embeds a right-padded batch.

        Args:
            user_id: [B] int user ids.
            item_ids: [B, T] int item ids, T <= max_length.
            segment_ids: [B, T] int segment ids.
            step_rows: The step's item rows (`item_rows`), where the caller reads them for its output table too (a
                training step); otherwise every id row as it is, the rows of `item_ids` alone made.

        Returns:
            [B, T, d] float embeddings.
        """
        tf.debugging.assert_less_equal(
            tf.shape(item_ids)[1], self.config.max_length, message=f"item_ids longer than max_length={self.config.max_length}"
        )
        x = (step_rows if step_rows is not None else self.item_rows()).gather(item_ids)
        if self.config.scale_items:
            x *= math.sqrt(self.config.hidden_size)
        x += self.positions(item_ids)
        x += self.segment_embedding(segment_ids)
        if self.user_embedding is not None:
            if training and self.config.user_dropout > 0:
                drop = tf.random.uniform(tf.shape(user_id)) < self.config.user_dropout
                user_id = tf.where(drop, tf.zeros_like(user_id), user_id)
            x += self.user_embedding(user_id)[:, tf.newaxis, :]  # (B, 1, d)
        return self.embedding_dropout(self.normalize(x), training=training)

    def item_rows(self, training: bool | None = None, whole: bool = False) -> ItemRows:
        """The item rows of one step (`ItemRows`): the id table, plus each item's mean feature row with features;
        in training, each id row left out with probability `item_id_dropout` (one draw of N + 2 flags, which the
        step's input and output table share). `whole`: the step builds the whole table (the full softmax)."""
        if self.item_features is None:
            return ItemRows(self.item_embedding, whole=whole)
        kept = None
        if training and self.config.item_id_dropout > 0:
            kept = tf.cast(tf.random.uniform([self.config.num_items + 2, 1]) >= self.config.item_id_dropout, tf.float32)
        return ItemRows(self.item_embedding, self, kept, whole)

    def pooled_of(self, item_ids: tf.Tensor) -> tf.Tensor:
        """[..., d] the mean feature-value row of each of `item_ids` [...], with static shapes (a decoder pass
        compiled by XLA reads it); its cost grows with the ids asked, not the catalogue."""
        values = tf.nn.embedding_lookup(self.item_features, item_ids)  # (..., M); a lookup: the matrix may be sharded
        held = tf.cast(values > 0, tf.float32)[..., tf.newaxis]
        total = tf.reduce_sum(self.feature_embedding(values) * held, axis=-2)
        return total / tf.maximum(tf.reduce_sum(held, axis=-2), 1.0)

    def pooled_features(self) -> tf.Tensor:
        """[N + 2, d] each item's mean feature-value row (zeros for an item without features), summed over the
        values held only (its cost grows with the catalogue's values, not N × M)."""
        matrix = tf.convert_to_tensor(self.item_features)
        held = tf.where(matrix > 0)  # (P, 2) (item, slot) of every value held
        rows = self.feature_embedding(tf.gather_nd(matrix, held))  # (P, d)
        return tf.math.unsorted_segment_mean(rows, held[:, 0], num_segments=self.config.num_items + 2)

    def positions(self, item_ids: tf.Tensor) -> tf.Tensor:
        """[1, T, d] embeddings of the positions 0..T-1 of a [B, T] batch."""
        return self.position_embedding(tf.range(tf.shape(item_ids)[1]))[tf.newaxis]

    def normalize(self, x: tf.Tensor) -> tf.Tensor:
        """The summed embeddings [B, T, d], layer-normalised."""
        return self.embedding_norm(x)
