"""The README's plain-Keras example, on tiny data: build, fit with the user's own
callbacks on the project's tf.data pipeline, evaluate."""

import pytest
import tf_keras as keras

from helpers import TINY_MODEL
from recgpt_tf import RecGPT
from recgpt_tf.data import training_dataset
from recgpt_tf.evaluation import evaluate_model, evaluate_popularity
from recgpt_tf.training import RankingValidation


@pytest.mark.slow
def test_plain_model_fit_with_user_callbacks(tiny_dataset, tmp_path):
    data = tiny_dataset
    model = RecGPT(num_items=data.num_items, num_users=data.num_users, objective="sampled_softmax", **TINY_MODEL)
    model.set_item_frequencies(data.item_counts())  # log-Q correction for sampled softmax
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    train = training_dataset(data.users, data.train_sequences(), max_length=TINY_MODEL["max_length"], batch_size=64)
    seen = []
    history = model.fit(
        train,
        epochs=6,
        verbose=0,
        callbacks=[
            RankingValidation(data.split("valid"), verbose=False),
            keras.callbacks.EarlyStopping("val_NDCG@10", mode="max", patience=3, restore_best_weights=True),
            keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["val_NDCG@10"])),
            keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt"), save_weights_only=True),
        ],
    )
    assert len(seen) == len(history.history["loss"]) and history.history["loss"][-1] < history.history["loss"][0]
    test = data.split("test")
    assert evaluate_model(model, test)["NDCG@10"] > evaluate_popularity(data, test)["NDCG@10"]
