"""The README's plain-Keras example, on tiny data: build, fit with the user's own callbacks on the
project's tf.data pipeline, evaluate; and the model it builds is the one `recgpt train` trains."""

import dataclasses

import pytest
import tf_keras as keras

from helpers import TINY_MODEL
from recgpt_tf import RecGPT
from recgpt_tf.config import ModelConfig, TrainConfig
from recgpt_tf.evaluation import evaluate_model, evaluate_popularity
from recgpt_tf.training import RankingValidation
from recgpt_tf.training.fit import build_model


def test_the_readme_model_is_the_one_recgpt_train_trains(tiny_dataset):
    data = tiny_dataset
    readme = RecGPT(num_items=data.num_items, num_users=data.num_users)
    trained = build_model(ModelConfig(num_items=data.num_items, num_users=data.num_users), **_objective(TrainConfig(), data.num_items))
    assert readme.get_config() == trained.get_config()
    assert readme.get_config()["hidden_size"] == ModelConfig.hidden_size and readme.label_smoothing > 0


def _objective(config: TrainConfig, num_items: int) -> dict:
    resolved = config.for_catalogue(num_items)
    return {"objective": resolved.objective, "label_smoothing": resolved.label_smoothing}


@pytest.mark.slow
def test_plain_model_fit_with_user_callbacks(tiny_dataset, tmp_path):
    data = tiny_dataset
    config = dataclasses.replace(TrainConfig(), epochs=6, patience=3, learning_rate=3e-3, batch_size=64)  # tiny
    model = RecGPT(num_items=data.num_items, num_users=data.num_users, **TINY_MODEL)
    model.set_item_frequencies(data.item_counts())
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    seen = []
    history = model.fit(
        data.training_batches(model.max_length, config),
        epochs=config.epochs,
        verbose=0,
        callbacks=[
            RankingValidation(data.split("valid"), verbose=False),
            keras.callbacks.EarlyStopping("val_NDCG@10", mode="max", patience=config.patience, restore_best_weights=True),
            keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs["val_NDCG@10"])),
            keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt"), save_weights_only=True),
        ],
    )
    assert len(seen) == len(history.history["loss"]) and history.history["loss"][-1] < history.history["loss"][0]
    test = data.split("test")
    assert evaluate_model(model, test)["NDCG@10"] > evaluate_popularity(data, test)["NDCG@10"]
