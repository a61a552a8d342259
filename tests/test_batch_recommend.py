"""`recgpt recommend-batch`: every user of a file answered by the exported signature itself (the online
answer), resumable after a kill, with request-time exclusions from JSON lines."""

import json

import numpy as np
import pytest
import tensorflow as tf

from helpers import export_from_run, tiny_run, tiny_train_config
from recgpt_tf.cli import main
from recgpt_tf.contract import RECOMMEND_SIGNATURE, pad_histories
from recgpt_tf.training import pretrain


@pytest.fixture(scope="module")
def published(tiny_dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    model, _ = pretrain(tiny_run(tiny_dataset, folder / "run"), tiny_dataset, tiny_train_config(epochs=1), verbose=0)
    version = export_from_run(folder / "run", model, folder / "export", (9, 1), index_kind="brute-force")
    users = folder / "users.txt"  # the sequence format: each user's whole history
    interactions = {
        user: tiny_dataset.item_vocab.decode(sequence)
        for user, sequence in zip(tiny_dataset.user_vocab.decode(tiny_dataset.users[:300]), tiny_dataset.sequences[:300])
    }
    users.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in interactions.items()))
    return folder, version, users, interactions


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_offline_answers_are_the_online_signature_and_a_killed_run_resumes(published, tmp_path, capsys):
    folder, version, users, interactions = published
    out = tmp_path / "recs.jsonl"
    assert main(["recommend-batch", str(version.parent), str(users), "--out", str(out), "--batch-size", "64", "--quiet"]) == 0
    full = _lines(out)
    assert [row["user_id"] for row in full] == list(interactions)
    signature = tf.saved_model.load(str(version)).signatures[RECOMMEND_SIGNATURE]
    online = signature(user_id=tf.constant(list(interactions)), history=tf.constant(pad_histories(list(interactions.values()))))
    assert [row["item_ids"] for row in full] == online["item_ids"].numpy().astype(str).tolist()
    np.testing.assert_allclose([row["scores"] for row in full], online["scores"].numpy(), atol=1e-5)
    assert "users/s" in capsys.readouterr().out

    # Killed after 100 users, in the middle of writing the 101st line: the rerun continues from there.
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:100]) + text[100][:17])
    assert main(["recommend-batch", str(version.parent), str(users), "--out", str(out), "--quiet"]) == 0
    assert _lines(out) == full and "resumed after 100 already answered" in capsys.readouterr().out


def test_json_line_requests_with_exclusions_and_a_run_directory(published, tmp_path):
    folder, _, _, interactions = published
    plain = tmp_path / "plain.jsonl"
    requests = tmp_path / "requests.jsonl"
    first = list(interactions.items())[:5]
    requests.write_text("".join(json.dumps({"user_id": u, "history": h}) + "\n" for u, h in first))
    assert main(["recommend-batch", str(folder / "run"), str(requests), "--out", str(plain), "--quiet"]) == 0  # exports the run once
    banned = [row["item_ids"][:3] for row in _lines(plain)]
    requests.write_text("".join(json.dumps({"user_id": u, "history": h, "exclude": b}) + "\n" for (u, h), b in zip(first, banned)))
    excluded = tmp_path / "excluded.jsonl"
    assert main(["recommend-batch", str(folder / "run"), str(requests), "--out", str(excluded), "--quiet"]) == 0
    for row, removed in zip(_lines(excluded), banned):
        assert len(row["item_ids"]) == 10 and not set(row["item_ids"]) & set(removed)
    requests.write_text('{"user_id": 7}\n')
    assert main(["recommend-batch", str(folder / "run"), str(requests), "--out", str(tmp_path / "x.jsonl"), "--quiet"]) == 1
