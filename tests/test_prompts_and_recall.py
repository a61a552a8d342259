import numpy as np
import pytest
import tensorflow as tf

from helpers import tiny_run, tiny_train_config
from recgpt_tf.data.features import next_real_targets
from recgpt_tf.evaluation import evaluate_model, two_step_sweep
from recgpt_tf.evaluation.variants import list_gain
from recgpt_tf.inference import AutoRegressiveRecall, PromptGenerator, prompt_layout, split_k
from recgpt_tf.training import PromptConfig


class _ScriptedModel:
    """Stands in for RecGPT's decoder so generation is checkable by hand: the
    "guess" after a context is 100 + (sum of its tokens) mod 7, read off h."""

    num_items, max_length = 200, 6

    def __init__(self):
        self.contexts = []
        outer = self

        class _Backbone:
            def __call__(self, inputs, training=False):
                tokens = tf.cast(inputs["item_ids"], tf.float32)
                outer.contexts.append((inputs["item_ids"].numpy().tolist(), inputs["segment_ids"].numpy().tolist()))
                guess = 100.0 + tf.math.floormod(tf.reduce_sum(tokens, axis=1, keepdims=True), 7.0)  # (B, 1)
                h = tf.one_hot(tf.cast(guess[:, 0], tf.int32) - 1, outer.num_items)  # scores pick `guess`
                return tf.repeat(h[:, None, :], tf.shape(tokens)[1], axis=1)

        self.backbone = _Backbone()

    def candidate_embeddings(self):
        return tf.eye(self.num_items)


@pytest.fixture
def eager():
    tf.config.run_functions_eagerly(True)  # the scripted decoder records its inputs
    yield
    tf.config.run_functions_eagerly(False)


def test_prompt_layout_and_segments_for_a_hand_built_case(eager):
    model = _ScriptedModel()
    tokens, segments = PromptGenerator(model, prompt_window=2).generate_batch(np.array([1]), [np.array([3, 5, 9])])
    # s* = v1, p, p, v2, p, p, v3 with each prompt = 100 + sum(context) mod 7.
    p1 = 100 + 3 % 7
    p2 = 100 + (3 + p1) % 7
    p3 = 100 + (3 + p1 + p2 + 5) % 7
    p4 = 100 + (3 + p1 + p2 + 5 + p3) % 7
    assert tokens[0].tolist() == [3, p1, p2, 5, p3, p4, 9]
    assert segments[0].tolist() == [0, 1, 1, 0, 1, 1, 0]
    # The context is capped at the most recent max_length (6) tokens.
    assert all(len(ctx[0][0]) <= 6 for ctx in model.contexts)
    assert model.contexts[-1][1][0] == [0, 1, 1, 0, 1]  # segments seen when generating p4
    real, segs = prompt_layout(3, 2)
    assert real.tolist() == [0, 3, 6] and segs.tolist() == [0, 1, 1, 0, 1, 1, 0]
    with pytest.raises(ValueError, match="prompt_window"):
        PromptGenerator(model, prompt_window=-1)


def test_prompt_window_zero_is_the_plain_sequence(eager):
    tokens, segments = PromptGenerator(_ScriptedModel(), prompt_window=0).generate_batch(
        np.array([1, 2]), [np.array([4, 2, 8]), np.array([7])]
    )
    assert [t.tolist() for t in tokens] == [[4, 2, 8], [7]] and [s.tolist() for s in segments] == [[0, 0, 0], [0]]


def test_next_real_targets_skip_prompts():
    tokens = np.array([3, 101, 102, 5, 103, 104, 9])
    segments = np.array([0, 1, 1, 0, 1, 1, 0])
    # v1 and its prompts target v2; v2 and its prompts target v3; nothing follows v3.
    assert next_real_targets(tokens, segments).tolist() == [5, 5, 5, 9, 9, 9, 0]
    assert next_real_targets(np.array([4, 2]), np.array([0, 0])).tolist() == [2, 0]  # K = 0: plain next item


@pytest.fixture(scope="module")
def tuned(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("prompt_run")
    run = tiny_run(tiny_dataset, run_dir)
    model, _ = run.pretrain(tiny_dataset, tiny_train_config(epochs=4), verbose=0)
    frozen_before = {v.name: v.numpy().copy() for v in model.backbone.weights}
    table_before = model.backbone.item_table.numpy().copy()
    model, summary = run.prompt_tune(model, tiny_dataset, PromptConfig(1, tiny_train_config(epochs=2)), verbose=0)
    return run_dir, model, summary, frozen_before, table_before


def test_prompt_tuning_changes_only_segment_embedding_and_output_layer(tuned):
    _, model, _, before, table_before = tuned
    for variable in model.backbone.weights:
        changed = not np.array_equal(variable.numpy(), before[variable.name])
        assert changed == ("segment_embedding" in variable.name), variable.name
    assert not np.array_equal(model.prompt_output.embeddings.numpy(), table_before)  # W_l was trained
    expected = {id(model.backbone.embedding.segment_embedding.embeddings), id(model.prompt_output.embeddings)}
    assert {id(w) for w in model.trainable_weights} == expected


def test_generated_sequences_are_cached(tuned, tiny_dataset):
    run_dir, model, summary, _, _ = tuned
    assert (run_dir / "prompt" / "prompted_K1.npz").exists() and summary["generation"]["cached"] is False
    from recgpt_tf.training.prompt_tuning import generate_prompted_sequences

    _, segments, info = generate_prompted_sequences(model, tiny_dataset, 1, run_dir / "prompt", verbose=0)
    assert info["cached"] is True and len(segments) == len(tiny_dataset.users)


def test_two_step_lists(tuned, tiny_dataset):
    _, model, _, _, _ = tuned
    split = tiny_dataset.split("test")
    users, histories = split.users[:40], split.histories[:40]
    recall = AutoRegressiveRecall(model)
    one_items, _, one_steps = recall.recommend(users, histories, (10,))
    assert (one_steps == 1).all()
    for m in (1, 4, 9):
        items, scores, steps = recall.recommend(users, histories, (m, 10 - m))
        for row, history in zip(items, histories):
            assert len(set(row.tolist())) == 10  # k distinct items
            assert not set(row.tolist()) & set(history.tolist())  # no history item
        np.testing.assert_array_equal(items[:, :m], one_items[:, :m])  # first m = one-step top-m
        assert (steps[:, :m] == 1).all() and (steps[:, m:] == 2).all()
    items, _, steps = recall.recommend(users, histories, (4, 3, 3))  # G = 3 steps
    assert steps[0].tolist() == [1] * 4 + [2] * 3 + [3] * 3
    assert all(len(set(r.tolist())) == 10 for r in items)


def test_sweep_matches_recommend_and_m_equal_k_is_one_step(tuned, tiny_dataset):
    _, model, _, _, _ = tuned
    split = tiny_dataset.split("valid")
    sweep = two_step_sweep(model, split, cutoffs=(10,))
    recall = AutoRegressiveRecall(model)
    for m in (3, 10):
        sizes = (m, 10 - m) if m < 10 else (10,)
        items, _, _ = recall.recommend(split.users, split.histories, sizes)
        hit, ndcg = list_gain(items, split.targets)
        assert sweep[10][m] == pytest.approx((hit.mean(), ndcg.mean()))
    one_step = evaluate_model(model, split)
    assert sweep[10][10] == pytest.approx((one_step["HR@10"], one_step["NDCG@10"]), abs=1e-9)


def test_split_k():
    assert split_k(10, 9) == (9, 1) and split_k(10, 10) == (10,)
    assert split_k(10, 4, num_steps=3) == (4, 3, 3) and split_k(12, 2, num_steps=6) == (2, 2, 2, 2, 2, 2)
    with pytest.raises(ValueError):
        split_k(10, 0)
