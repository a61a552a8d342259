import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from harness import run_layer_test, run_model_saving_test
from helpers import TINY_MODEL, assert_causal, random_batch
from recgpt_tf.config import FILTER_MIX, ModelConfig
from recgpt_tf.layers import ItemRows
from recgpt_tf.layers.low_pass import low_pass_weights
from recgpt_tf.models import RecGPT, make_task, retrieval_loss
from recgpt_tf.training import build_model

N, U = 30, 10


def make_model(**overrides) -> RecGPT:
    model = RecGPT(num_items=N, num_users=U, **{**TINY_MODEL, "dropout": 0.0, **overrides})
    model(random_batch(N, U))
    return model


@pytest.mark.parametrize("filter_mix", [0.0, 0.7])  # plain attention, and beside the low-pass filter branch
def test_no_future_leakage(filter_mix):
    model = make_model(num_layers=2, filter_mix=filter_mix)
    assert_causal(model)


def test_every_block_output_is_normalised():
    hidden = make_model().call(random_batch(N, U, batch=3, length=6, seed=2)).numpy()
    np.testing.assert_allclose(hidden.mean(-1), 0.0, atol=1e-5)  # the last block's output norm, gamma 1 and beta 0 at initialisation
    np.testing.assert_allclose(hidden.std(-1), 1.0, atol=1e-2)


def test_the_filter_branch_trains_and_survives_a_saved_model_round_trip(tmp_path):
    model = make_model(attention_dropout=0.6, dropout=0.6, filter_mix=0.7)
    batch = random_batch(N, U, batch=4, length=6, seed=4)
    assert np.isfinite(model(batch, training=True).numpy()).all()
    run_model_saving_test(model, {key: tf.constant(value) for key, value in batch.items()}, tmp_path / "saved", atol=1e-5)


def test_user_module_personalises_every_position():
    model = make_model()
    batch = random_batch(N, U, batch=1, length=5)
    other = {**batch, "user_id": (batch["user_id"] % U) + 1}
    assert np.abs(model(batch).numpy() - model(other).numpy()).min(axis=-1).max() > 0


@pytest.mark.parametrize("scale_items", [True, False])
def test_input_embedding_is_item_times_scale_plus_position(scale_items):
    model = make_model(scale_items=scale_items, use_user_embedding=False)
    embedding = model.backbone.embedding
    items = np.array([[3, 7, 9]], np.int32)
    out = embedding(np.array([1], np.int32), items, np.zeros_like(items)).numpy()
    scale = np.sqrt(embedding.config.hidden_size) if scale_items else 1.0
    summed = embedding.item_embedding.embeddings.numpy()[items[0]] * scale + embedding.position_embedding.embeddings.numpy()[:3]
    expected = (summed - summed.mean(-1, keepdims=True)) / np.sqrt(summed.var(-1, keepdims=True) + 1e-6)  # the norm, at gamma 1, beta 0
    np.testing.assert_allclose(out[0], expected, rtol=1e-4, atol=1e-5)


def test_init_stddev_draws_projections_from_a_narrow_normal():
    narrow = make_model(init_stddev=0.02).backbone.blocks[0]
    default = make_model().backbone.blocks[0]
    assert 0.015 < np.std(narrow.ffn_inner.kernel.numpy()) < 0.02  # truncated at 2 sigma: std 0.88 x 0.02
    assert np.std(default.ffn_inner.kernel.numpy()) > 0.05  # Glorot on these tiny widths is far wider


def test_prompt_tuning_freezes_every_backbone_weight_but_the_segment_table():
    model = make_model()
    model.start_prompt_tuning()
    expected = [model.backbone.embedding.segment_embedding.embeddings, model.prompt_output.embeddings]
    assert {id(v) for v in model.trainable_variables} == {id(v) for v in expected}, [v.name for v in model.trainable_variables]


@pytest.mark.parametrize("layout", [dict(filter_mix=0.0), dict(filter_mix=0.6, filter_frequencies=2)])
def test_config_round_trip_and_weights_give_identical_scores(tmp_path, layout):
    batch = {key: tf.constant(value) for key, value in random_batch(N, U, seed=5).items()}
    run_layer_test(
        lambda: RecGPT(num_items=N, num_users=U, **{**TINY_MODEL, "objective": "bce", "attention_dropout": 0.2, **layout}), batch
    )


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="objective must be one of"):
        RecGPT(num_items=N, num_users=U, objective="hinge")
    with pytest.raises(ValueError, match="divisible by num_heads"):
        RecGPT(num_items=N, num_users=U, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="softmax objective only"):
        RecGPT(num_items=N, num_users=U, objective="bce", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"filter_frequencies must be in 1\.\.26"):
        RecGPT(num_items=N, num_users=U, filter_mix=0.5, filter_frequencies=27)
    with pytest.raises(ValueError, match=r"filter_mix must be in \[0, 1\)"):
        ModelConfig(num_items=N, num_users=U, filter_mix=1.0)


def test_the_filter_branch_is_the_default_and_is_recorded_resolved():
    assert ModelConfig(num_items=N, num_users=U).filter_mix == FILTER_MIX > 0
    assert ModelConfig(num_items=N, num_users=U, filter_mix=0.0).filter_mix == 0.0
    assert make_model().backbone.blocks[0].low_pass is not None
    assert make_model(filter_mix=0.0).backbone.blocks[0].low_pass is None


@pytest.mark.parametrize("max_length", [12, 11])
def test_low_pass_weights_are_bsarecs_fft_filter_at_the_last_position_of_every_left_padded_prefix(max_length):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(max_length, 4))
    weights = low_pass_weights(max_length, frequencies=3)
    for t in range(max_length):
        padded = np.zeros_like(x)
        padded[max_length - t - 1 :] = x[: t + 1]  # the prefix ending at t, left-padded with zeros
        spectrum = np.fft.rfft(padded, axis=0, norm="ortho")
        spectrum[3:] = 0
        expected = np.fft.irfft(spectrum, n=max_length, axis=0, norm="ortho")[-1]
        np.testing.assert_allclose(weights[t] @ x, expected, atol=1e-6)
    np.testing.assert_allclose(np.triu(weights, 1), 0.0)  # causal
    np.testing.assert_allclose(low_pass_weights(max_length, 1)[-1], 1 / max_length)  # one bin: the mean over max_length


def _losses(seed=0):
    rng = np.random.default_rng(seed)
    queries = tf.constant(rng.normal(size=(5, 4)), tf.float32)
    table = tf.constant(rng.normal(size=(N + 2, 4)), tf.float32)
    positives = tf.constant([1, 3, 3, 7, N], tf.int32)
    return queries, table, positives


def _rows(table):
    """The output rows of `table` [N + 2, d], as a step reads them."""
    layer = keras.layers.Embedding(*table.shape, embeddings_initializer=keras.initializers.Constant(table.numpy()))
    layer.build(None)
    return ItemRows(layer)


def test_full_softmax_is_cross_entropy_over_catalogue():
    queries, table, positives = _losses()
    loss = retrieval_loss(make_task("softmax"), "softmax", queries, positives, _rows(table), N, tf.zeros([N + 2]))
    logits = queries.numpy() @ table.numpy()[1 : N + 1].T
    logits -= logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(5), positives.numpy() - 1].mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_mixes_in_the_uniform_target():
    queries, table, positives = _losses()
    epsilon = 0.2
    loss = retrieval_loss(make_task("softmax", epsilon), "softmax", queries, positives, _rows(table), N, tf.zeros([N + 2]))
    logits = queries.numpy() @ table.numpy()[1 : N + 1].T
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    target = np.full((5, N), epsilon / N)
    target[np.arange(5), positives.numpy() - 1] += 1 - epsilon
    assert float(loss) == pytest.approx(-(target * log_softmax).sum(axis=1).mean(), rel=1e-5)


def test_sampled_softmax_removes_accidental_hits_and_corrects_log_q():
    queries, table, positives = _losses()
    log_q = tf.constant(np.log(np.linspace(0.01, 0.05, N + 2)), tf.float32)
    loss = retrieval_loss(make_task("sampled_softmax"), "sampled_softmax", queries, positives, _rows(table), N, log_q)
    pos = positives.numpy()
    logits = queries.numpy() @ table.numpy()[pos].T - log_q.numpy()[pos][None, :]  # log-Q correction
    for i in range(5):
        for j in range(5):
            if i != j and pos[i] == pos[j]:
                logits[i, j] = -np.inf  # the same item as the positive is not a negative
    logits -= logits.max(axis=1, keepdims=True)
    expected = -(np.diag(logits) - np.log(np.exp(logits).sum(axis=1))).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_bce_is_positive_plus_one_sampled_negative():
    queries, table, positives = _losses()
    tf.random.set_seed(11)
    loss = float(retrieval_loss(make_task("bce"), "bce", queries, positives, _rows(table), N, tf.zeros([N + 2])))
    pos_logit = np.sum(queries.numpy() * table.numpy()[positives.numpy()], axis=1)
    pos_term = np.log1p(np.exp(-pos_logit)).mean()
    # One negative per query contributes log(1 + e^s) >= 0: the loss is above the
    # positive term alone and below it plus the largest possible negative term.
    all_neg = np.log1p(np.exp(queries.numpy() @ table.numpy()[1 : N + 1].T))
    assert pos_term < loss <= pos_term + all_neg.max(axis=1).mean() + 1e-5


@pytest.mark.parametrize("objective", ["softmax", "sampled_softmax", "bce"])
def test_every_objective_trains_through_compute_loss(objective):
    keras.utils.set_random_seed(0)  # weights, dropout and bce's negatives: one fixed draw
    model = make_model(objective=objective)
    batch = random_batch(N, U, batch=4, length=6, seed=2)
    batch["targets"] = np.roll(batch["item_ids"], -1, axis=1)
    batch["targets"][:, -1] = 0
    optimizer = keras.optimizers.Adam(learning_rate=0.05)
    losses = []
    for _ in range(30):  # the same batch: the loss its gradients minimise must fall
        with tf.GradientTape() as tape:
            loss = model.compute_loss(batch, training=True)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:3]), losses  # sampled negatives (bce) make single steps noisy


def test_build_model_sizes_every_table_from_the_config():
    from recgpt_tf.config import ModelConfig

    config = ModelConfig(num_items=N, num_users=U, **TINY_MODEL)
    model = build_model(config)
    d = TINY_MODEL["hidden_size"]
    shapes = [tuple(v.shape) for v in model.backbone.weights]
    assert model.backbone.item_table.shape == (N + 2, d)  # padding 0, items 1..N, OOV N + 1
    assert (U + 1, d) in shapes  # OOV (cold-start) user 0, users 1..U
    assert (TINY_MODEL["max_length"], d) in shapes and (2, d) in shapes  # positions, segments
    assert model.max_length == config.max_length and model.get_config()["num_items"] == N


def test_unknown_users_and_items_use_their_oov_slots():
    model = make_model()
    same_items = np.array([[2, 3], [2, 3]], np.int32)
    users = model({"user_id": np.array([0, U], np.int32), "item_ids": same_items}).numpy()
    assert not np.allclose(users[0], users[1]), "the OOV user 0 has a row of its own, not user U's"
    items = model({"user_id": np.array([1, 1], np.int32), "item_ids": np.array([[N + 1, 3], [N, 3]], np.int32)}).numpy()
    assert not np.allclose(items[0], items[1]), "the OOV item N + 1 is not clamped to item N"
    table = model.backbone.item_table.numpy()
    assert not np.allclose(table[N + 1], table[0]) and not np.allclose(table[N + 1], table[N])
    from recgpt_tf.data import Vocabulary

    vocab = Vocabulary.build([str(i) for i in range(1, N + 1)])
    assert vocab.encode(["never-seen"]).tolist() == [N + 1]
