"""Item features files (`data.item_features`): the formats a catalogue has, and bad input named by FILE:LINE."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recgpt_tf.data.item_features import CatalogueFeatures, ItemFeatures, read_item_features
from recgpt_tf.errors import ConfigError, DataFormatError


def _csv(tmp_path, text, name="items.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_csv_with_multi_valued_and_empty_cells(tmp_path):
    path = _csv(tmp_path, "item_id,category,brand\ni1,face|skin,Nivea\ni2,,Dove\ni3,,\n\n")
    features = read_item_features(path)
    assert features.columns == ("category", "brand")
    assert features.items == {"i1": (("face", "skin"), ("Nivea",)), "i2": ((), ("Dove",)), "i3": ((), ())}
    assert features.tokens("i1") == ["category=face", "category=skin", "brand=Nivea"]
    assert features.tokens("i3") == [] and features.tokens("unknown") == []  # featureless, and not in the file
    assert features.statistics() == {"items": 3, "columns": 2, "featureless_items": 1, "values_per_item": 4 / 3, "distinct_values": 4}


def test_the_same_catalogue_from_tsv_json_lines_and_parquet(tmp_path):
    expected = {"1": (("a", "b"), ("3",)), "2": ((), ("4",))}
    tsv = _csv(tmp_path, "itemId\ttags\tprice_band\n1\ta|b\t3\n2\t\t4\n", "items.tsv")
    jsonl = _csv(
        tmp_path, '{"item_id": "1", "tags": ["a", "b"], "price_band": 3}\n{"item_id": "2", "tags": [], "price_band": "4"}\n', "items.jsonl"
    )
    parquet = tmp_path / "items.parquet"
    pq.write_table(pa.table({"product_id": ["1", "2"], "tags": [["a", "b"], []], "price_band": ["3", "4"]}), parquet)
    for path in (tsv, jsonl, parquet):
        features = read_item_features(path)
        assert features.columns == ("tags", "price_band") and features.items == expected, path


def test_the_s3rec_attribute_file_reads_directly(tmp_path):
    path = tmp_path / "Beauty_item2attributes.json"
    path.write_text(json.dumps({"4": [1, 2, 3], "83": [4, 5, 6], "7": []}))
    features = read_item_features(path)
    assert features == ItemFeatures(("attributes",), {"4": (("1", "2", "3"),), "83": (("4", "5", "6"),), "7": ((),)})
    path.write_text('{"4": [1], "4": [2]}')
    with pytest.raises(DataFormatError, match="item '4' appears twice"):
        read_item_features(path)


def test_columns_pick_and_order_the_features(tmp_path):
    path = _csv(tmp_path, "item_id,category,brand,colour\ni1,face,Nivea,red\n")
    assert read_item_features(path, columns=["colour", "category"]).items == {"i1": (("red",), ("face",))}
    with pytest.raises(DataFormatError, match=r"no feature column \['size'\]; its feature columns are \['category', 'brand', 'colour'\]"):
        read_item_features(path, columns=["size"])


@pytest.mark.reliability
@pytest.mark.parametrize(
    "text, message",
    [
        ("item_id,brand\ni1,a\ni2,b\ni1,c\n", r"items.csv:4: item 'i1' appears again \(first on line 2\)"),
        ("sku,brand\ni1,a\n", r"items.csv: names no item column; its columns are \['sku', 'brand'\]"),
        ("item_id\ni1\n", "has no feature column beside the item column 'item_id'"),
        ("item_id,brand\ni1,a,b\n", "items.csv:2: has 3 fields where the header has 2"),
        ("item_id,brand\n,a\n", r"items.csv:2: must hold exactly one item id in 'item_id'; got \[\]"),
        ("", "items.csv:1: is empty"),
    ],
)
def test_bad_features_files_are_named_by_file_and_line(tmp_path, text, message):
    with pytest.raises(DataFormatError, match=message):
        read_item_features(_csv(tmp_path, text))


@pytest.mark.reliability
def test_bad_json_lines_and_an_unknown_suffix(tmp_path):
    path = _csv(tmp_path, '{"item_id": "1", "tags": ["a"]}\n{"item_id": "2", "tags": [{"x": 1}]}\n', "items.jsonl")
    with pytest.raises(DataFormatError, match=r"items.jsonl:2: column 'tags' holds \{'x': 1\}"):
        read_item_features(path)
    path.write_text('{"item_id": "1", "tags": "a"}\n[1, 2]\n')
    with pytest.raises(DataFormatError, match="items.jsonl:2: must be a JSON object"):
        read_item_features(path)
    with pytest.raises(ConfigError, match="cannot tell the format"):
        read_item_features(_csv(tmp_path, "x", "items.xml"))


# --- encoding a catalogue's features for the model ------------------------------------------------------------


def _catalogue():
    return ItemFeatures(
        ("category", "brand"),
        {
            "1": (("face",), ("Nivea",)),
            "2": (("face", "skin"), ("Dove",)),
            "3": (("skin",), ("Nivea",)),
            "4": ((), ()),  # a row, no values
            "9": (("hair",), ("Dove",)),  # not in the data
        },
    )


def test_values_held_by_one_trained_item_share_the_oov_bucket_and_counts_say_what_the_file_covered():
    encoded = CatalogueFeatures.build(_catalogue(), ["1", "2", "3", "4", "5"])
    # face (2 items), Nivea (2), skin (2), Dove (1 trained item: rare); hair is on an untrained item only.
    assert encoded.values == ("category=face", "brand=Nivea", "category=skin")
    assert encoded.oov == 4
    assert encoded.rows == ((1, 2), (1, 3, 4), (3, 2), (), ())
    assert encoded.coverage == {
        "items_with_features": 3,
        "items_without_row": 1,  # "5"
        "items_not_in_data": 1,  # "9"
        "values_known": 3,
        "values_rare": 1,
    }
    matrix = encoded.matrix()
    assert matrix.shape == (7, 3) and matrix.dtype == np.int32
    assert matrix[0].tolist() == [0, 0, 0] and matrix[6].tolist() == [0, 0, 0]  # padding and the OOV item hold none
    assert matrix[2].tolist() == [1, 3, 4] and matrix[1].tolist() == [1, 2, 0]
    assert encoded.ids(["category=hair", "brand=Nivea", "brand=Nivea"]) == (4, 2)  # unknown → OOV; a repeat counted once
    assert CatalogueFeatures.from_dict(json.loads(json.dumps(encoded.to_dict()))) == encoded
    with pytest.raises(ConfigError, match="holds 3 values"):
        encoded.matrix(width=2)


def test_a_file_sharing_no_item_with_the_data_is_refused_by_name():
    with pytest.raises(ConfigError, match="no item of the data has a feature value.*'1', '2', '3'"):
        CatalogueFeatures.build(_catalogue(), ["a", "b"])


# --- the feature part of the model --------------------------------------------------------------------------


def _featured_model(matrix, num_values, objective="softmax", **changes):
    from recgpt_tf.config import ModelConfig
    from recgpt_tf.training.fit import build_model

    config = ModelConfig(num_items=matrix.shape[0] - 2, num_users=3, hidden_size=8, num_heads=2, intermediate_size=16,
                         num_feature_values=num_values, max_item_features=matrix.shape[1], **changes)  # fmt: skip
    model = build_model(config, objective)
    model.set_item_features(matrix)
    return model


def test_an_item_is_its_id_row_plus_the_mean_of_its_value_rows_in_the_input_and_the_output_table():
    encoded = CatalogueFeatures.build(_catalogue(), ["1", "2", "3", "4", "5"])
    model = _featured_model(encoded.matrix(), encoded.num_values)
    embedding = model.backbone.embedding
    ids, values = embedding.item_embedding.embeddings.numpy(), embedding.feature_embedding.embeddings.numpy()
    expected = ids.copy()
    expected[1] += values[[1, 2]].mean(axis=0)
    expected[2] += values[[1, 3, 4]].mean(axis=0)
    expected[3] += values[[3, 2]].mean(axis=0)  # items 4 and 5, padding and OOV: their id rows alone
    np.testing.assert_allclose(model.backbone.item_table.numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.candidate_embeddings().numpy(), expected[1:6], rtol=1e-6, atol=1e-7)
    # The input reads the same rows: the first hidden state moves when an item's feature row moves.
    batch = {"user_id": np.array([1], np.int32), "item_ids": np.array([[2]], np.int32)}
    before = model(batch).numpy()
    moved = values.copy()
    moved[4] += np.linspace(-1.0, 1.0, moved.shape[1])  # the OOV value, one of item 2's (not a constant: layer norm removes one)
    embedding.feature_embedding.embeddings.assign(moved)
    assert not np.allclose(model(batch).numpy(), before)
    # Prompt-tuned, W_l holds the id part; each item's value rows are still added.
    model.start_prompt_tuning()
    np.testing.assert_allclose(model.prompt_output.embeddings.numpy(), ids, rtol=1e-6)
    np.testing.assert_allclose(model.output_item_table().numpy(), model.backbone.item_table.numpy(), rtol=1e-6, atol=1e-7)


def test_the_item_matrix_is_checked_and_an_id_only_model_has_no_feature_weights():
    from recgpt_tf.models.recgpt import RecGPT

    model = _featured_model(np.zeros((5, 2), np.int32), 3)
    with pytest.raises(ConfigError, match=r"shape \(5, 2\)"):
        model.set_item_features(np.zeros((5, 3), np.int32))
    with pytest.raises(ConfigError, match=r"0\.\.4"):
        model.set_item_features(np.full((5, 2), 5, np.int32))
    plain = RecGPT(num_items=3, num_users=3, hidden_size=8, num_heads=2, intermediate_size=16)
    plain({"user_id": np.zeros([1], np.int32), "item_ids": np.zeros([1, 1], np.int32)})
    assert not any("feature" in w.name for w in plain.weights)
    assert plain.backbone.item_table is plain.backbone.embedding.item_embedding.embeddings  # today's variable, as before
    with pytest.raises(ConfigError, match="without item features"):
        plain.set_item_features(np.zeros((5, 1), np.int32))


def test_id_dropout_leaves_id_rows_out_in_training_only():
    encoded = CatalogueFeatures.build(_catalogue(), ["1", "2", "3", "4", "5"])
    model = _featured_model(encoded.matrix(), encoded.num_values, item_id_dropout=0.5)
    embedding = model.backbone.embedding
    table = lambda training: embedding.item_rows(training, whole=True).table().numpy()  # noqa: E731
    whole, pooled = table(None), embedding.pooled_features().numpy()
    np.testing.assert_allclose(table(False), whole)  # served: every id row
    dropped = 0
    for _ in range(20):
        rows = table(True)
        left_out = np.all(np.isclose(rows, pooled, atol=1e-7), axis=1)
        kept = np.all(np.isclose(rows, whole, atol=1e-7), axis=1)
        assert np.all(left_out | kept)  # each row whole, or its features alone
        dropped += left_out.sum()
    assert 0.3 < dropped / (20 * 7) < 0.7
    # The loss sees it: pre-training's output table is the training one.
    np.testing.assert_allclose(model.output_item_table().numpy(), whole)
    with pytest.raises(ConfigError, match="0 without item features"):
        _featured_model(np.zeros((5, 0), np.int32), 0, item_id_dropout=0.2)


def test_a_batch_reads_the_rows_the_whole_table_holds():
    # Served and validated batches make their items' rows alone (static shapes, for XLA); a training step reads
    # them from the whole table: the two agree.
    encoded = CatalogueFeatures.build(_catalogue(), ["1", "2", "3", "4", "5"])
    model = _featured_model(encoded.matrix(), encoded.num_values)
    embedding = model.backbone.embedding
    ids = np.array([[2, 1, 4, 0], [6, 3, 5, 2]], np.int32)
    np.testing.assert_allclose(embedding.pooled_of(ids).numpy(), embedding.pooled_features().numpy()[ids], rtol=1e-6, atol=1e-7)
    batch = {"user_id": np.array([1, 2], np.int32), "item_ids": ids}
    np.testing.assert_allclose(
        model.backbone(batch).numpy(), model.backbone(batch, step_rows=embedding.item_rows(whole=True)).numpy(), rtol=1e-5, atol=1e-6
    )


def _sampled_batch():
    import tensorflow as tf

    # Targets that cross the shards of a split table both ways (item 5 is in the second half, 1 in the first).
    return {"user_id": tf.constant([1, 2]), "item_ids": tf.constant([[2, 1, 4], [3, 5, 0]]), "targets": tf.constant([[5, 4, 1], [3, 2, 0]])}


@pytest.mark.parametrize("prompt_tuned", [False, True])
def test_a_sampled_softmax_step_reads_its_own_rows_alone_and_scores_them_as_the_whole_table_would(prompt_tuned, monkeypatch):
    # At a million items a step must not build every item's row: the sampled softmax reads the batch's and its
    # candidates' rows, and the tables' gradients stay sparse (as an id-only model's are), on a parameter server too.
    import tensorflow as tf

    from recgpt_tf.layers import ItemRows, RecGPTEmbedding
    from recgpt_tf.models import make_task, retrieval_loss

    encoded = CatalogueFeatures.build(_catalogue(), ["1", "2", "3", "4", "5"])
    model = _featured_model(encoded.matrix(), encoded.num_values, "sampled_softmax", item_id_dropout=0.5)
    if prompt_tuned:
        model.start_prompt_tuning()
        model.compile()
    embedding = model.backbone.embedding
    tables = [model.prompt_output.embeddings] if prompt_tuned else [embedding.item_embedding.embeddings]
    tables.append(embedding.feature_embedding.embeddings)
    with monkeypatch.context() as patch:
        patch.setattr(RecGPTEmbedding, "pooled_features", lambda self: pytest.fail("a sampled step built every item's row"))
        with tf.GradientTape() as tape:
            loss = model.compute_loss(_sampled_batch(), training=True)
    gradients = tape.gradient(loss, tables)
    assert all(isinstance(g, tf.IndexedSlices) for g in gradients), gradients
    # The rows by id are the whole table's rows, under one draw of the id dropout.
    kept = tf.constant([[1.0], [0.0], [1.0], [1.0], [0.0], [1.0], [1.0]])
    by_id, whole = (ItemRows(embedding.item_embedding, embedding, kept, whole=w) for w in (False, True))
    ids = tf.constant([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(by_id.gather(ids).numpy(), whole.table().numpy()[ids.numpy()], rtol=1e-6, atol=1e-7)
    queries, positives = tf.random.stateless_normal([3, 8], seed=[1, 2]), tf.constant([1, 3, 5])
    losses = [
        retrieval_loss(make_task("sampled_softmax"), "sampled_softmax", queries, positives, rows, 5, tf.zeros([7]))
        for rows in (by_id, whole)
    ]
    assert float(losses[0]) == pytest.approx(float(losses[1]), rel=1e-6)


@pytest.mark.parametrize("features", [True, False])
@pytest.mark.parametrize("objective", ["sampled_softmax", "softmax"])
def test_tables_split_over_parameter_servers_are_read_in_the_order_asked(objective, features):
    # A parameter server splits each table of 4 KiB or more into shards (ShardedVariable), whose tf.gather returns
    # the rows grouped by shard, not in the order asked: a step scores the same loss from split tables as from whole.
    import tensorflow as tf
    from tensorflow.python.distribute.sharded_variable import ShardedVariable

    encoded = CatalogueFeatures.build(_catalogue(), ["1", "2", "3", "4", "5"])
    if features:
        model = _featured_model(encoded.matrix(), encoded.num_values, objective)
    else:  # an id-only model, the same five items
        from recgpt_tf.config import ModelConfig
        from recgpt_tf.training.fit import build_model

        model = build_model(ModelConfig(num_items=5, num_users=3, hidden_size=8, num_heads=2, intermediate_size=16), objective)
    model.set_item_frequencies(np.array([1, 9, 1, 4, 2, 7, 1], np.float32))
    expected = float(model.compute_loss(_sampled_batch()))

    def split(variable):  # two shards, the first one row longer, as a parameter-server partitioner splits
        value, cut = variable.numpy(), (variable.shape[0] + 1) // 2
        return ShardedVariable(
            [tf.Variable(value[:cut], trainable=variable.trainable), tf.Variable(value[cut:], trainable=variable.trainable)]
        )

    embedding = model.backbone.embedding
    model.item_log_probability = split(model.item_log_probability)
    embedding.item_embedding.embeddings = split(embedding.item_embedding.embeddings)
    if features:
        embedding.item_features = split(embedding.item_features)
        embedding.feature_embedding.embeddings = split(embedding.feature_embedding.embeddings)
    assert float(tf.function(model.compute_loss)(_sampled_batch())) == pytest.approx(expected, rel=1e-5)


def test_every_value_rare_is_refused_by_name():
    titles = ItemFeatures(("title",), {item: ((f"title of {item}",),) for item in ("1", "2", "3")})
    with pytest.raises(ConfigError, match="every value of the file is held by fewer than 2 of the data's items"):
        CatalogueFeatures.build(titles, ["1", "2", "3"])


def test_the_export_grows_the_model_by_the_new_items_features():
    from recgpt_tf.data import Vocabulary
    from recgpt_tf.export.catalogue import extend_catalogue

    trained = ["1", "2", "3", "4", "5"]
    encoded = CatalogueFeatures.build(_catalogue(), trained)
    model = _featured_model(encoded.matrix(), encoded.num_values)
    model.start_prompt_tuning()
    model.prompt_output.embeddings.assign(model.prompt_output.embeddings + 0.1)  # W_l moved by tuning
    today = ItemFeatures(
        ("category", "brand"),
        {
            **_catalogue().items,
            "n1": (("face", "skin", "hair"), ("Nivea", "Acme")),  # 5 values, 3 known + 2 unknown (one OOV id): wider than M = 3
            "n2": (("new",), ()),  # unknown values only
            "n3": ((), ()),  # no value: left out
        },
    )
    grown, vocab, counts = extend_catalogue(model, Vocabulary(trained), encoded, today)
    assert vocab.tokens == [*trained, "9", "n1", "n2"]  # "9" was in yesterday's file but in no sequence (hair, Dove: both rare)
    assert counts == {"items": 8, "trained_items": 5, "feature_only_items": 3, "feature_only_with_unknown_values_only": 2,
                      "left_out_without_values": 1}  # fmt: skip
    embedding, before = grown.backbone.embedding, model.backbone.embedding
    matrix = embedding.item_features.numpy()
    assert matrix.shape == (10, 4) and matrix[7].tolist() == [1, 3, 4, 2] and matrix[8].tolist() == [4, 0, 0, 0]
    np.testing.assert_array_equal(matrix[:6, :3], before.item_features.numpy()[:6])
    old_ids, new_ids = before.item_embedding.embeddings.numpy(), embedding.item_embedding.embeddings.numpy()
    np.testing.assert_array_equal(new_ids[:6], old_ids[:6])
    np.testing.assert_array_equal(new_ids[9], old_ids[6])  # the OOV row, moved past the new items
    np.testing.assert_array_equal(new_ids[6:9], 0.0)
    # Trained items score as before; a new item by its features alone (its W_l row zero too).
    old_table, new_table = model.candidate_embeddings().numpy(), grown.candidate_embeddings().numpy()
    np.testing.assert_allclose(new_table[:5], old_table, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(new_table[5:], embedding.pooled_features().numpy()[6:9], rtol=1e-6, atol=1e-7)
    with pytest.raises(ConfigError, match=r"has the columns \['kind'\]; the run was trained with \['category', 'brand'\]"):
        extend_catalogue(model, Vocabulary(trained), encoded, ItemFeatures(("kind",), {"n1": (("a",),)}))


@pytest.mark.slow
def test_an_xla_compiled_export_of_a_model_with_features_answers_as_the_plain_one(tmp_path):
    import tensorflow as tf

    from recgpt_tf.contract import RECOMMEND_SIGNATURE, pad_histories
    from recgpt_tf.data import Vocabulary
    from recgpt_tf.export import export_keras_model

    matrix = np.zeros((22, 2), np.int32)
    matrix[1:21, 0] = np.arange(20) % 4 + 1
    matrix[1:21:2, 1] = 5  # every other item holds a second value, the OOV bucket's
    model = _featured_model(matrix, 4, max_length=10)
    items, users = Vocabulary([str(i) for i in range(1, 21)]), Vocabulary(["a", "b", "c"])
    answers = []
    for jit in (False, True):
        published = export_keras_model(
            model, items, users, tmp_path, f"m{jit}", step_sizes=(4, 1), index_kind="brute-force", jit_compile=jit
        )
        signature = tf.saved_model.load(str(published.path)).signatures[RECOMMEND_SIGNATURE]
        answers.append(signature(user_id=tf.constant(["a", "z"]), history=tf.constant(pad_histories([["1", "2", "3"], ["5"]]))))
    assert answers[0]["item_ids"].numpy().tolist() == answers[1]["item_ids"].numpy().tolist()
    np.testing.assert_allclose(answers[0]["scores"].numpy(), answers[1]["scores"].numpy(), rtol=1e-4, atol=1e-5)
