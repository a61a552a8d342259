"""`recgpt recommend-batch`: every user of a file answered by the exported signature itself (the online
answer), resumable after a kill, with request-time exclusions from JSON lines."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from helpers import export_from_run, tiny_run, tiny_train_config
from recgpt_tf.cli import main
from recgpt_tf.contract import EXCLUDING_SIGNATURE, RECOMMEND_SIGNATURE, pad_histories, version_numbers
from recgpt_tf.inference import batch as batch_module
from recgpt_tf.inference import batch_output
from recgpt_tf.inference.batch_output import BatchJob, BatchOutput
from recgpt_tf.runs import Run


@pytest.fixture(scope="module")
def published(tiny_dataset, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    model, _ = tiny_run(tiny_dataset, folder / "run").pretrain(tiny_dataset, tiny_train_config(epochs=1), verbose=0)
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


def test_offline_answers_are_the_online_signature_and_a_killed_run_resumes(published, tmp_path, capsys, monkeypatch):
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

    # Killed after two batches, in the middle of writing the third: nothing under the final name, and the
    # rerun continues after the last complete line.
    killed = tmp_path / "killed.jsonl"
    real, calls = batch_module.answer_lines, []

    def dies_on_the_third_batch(signatures, batch):
        calls.append(len(batch))
        if len(calls) == 3:
            partial.open("a").write(json.dumps(full[128])[:17])
            raise KeyboardInterrupt
        return real(signatures, batch)

    partial = BatchOutput(killed).partial_path
    monkeypatch.setattr(batch_module, "answer_lines", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        main(["recommend-batch", str(version.parent), str(users), "--out", str(killed), "--batch-size", "64", "--quiet"])
    assert not killed.exists() and not BatchOutput(killed).manifest_path.exists() and partial.read_text().count("\n") == 128
    monkeypatch.setattr(batch_module, "answer_lines", real)
    assert main(["recommend-batch", str(version.parent), str(users), "--out", str(killed), "--quiet"]) == 0
    assert _lines(killed) == full and "resumed after 128 already answered" in capsys.readouterr().out
    assert not partial.exists()


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


# --- a batch output holds exactly one job's answers (issue 33, class 1) -------------------------------------


def _batch(model, requests, out, *flags):
    return main(["recommend-batch", str(model), str(requests), "--out", str(out), "--quiet", *flags])


@pytest.mark.reliability
def test_a_finished_file_is_never_mixed_with_another_jobs_answers(published, tmp_path, capsys):
    folder, version, users, interactions = published
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("".join(f"{u} {' '.join(h)}\n" for u, h in list(interactions.items())[:50]))
    second.write_text("".join(f"{u} {' '.join(h)}\n" for u, h in list(interactions.items())[50:100]))
    out = tmp_path / "recs.jsonl"
    assert _batch(version, first, out) == 0
    manifest = json.loads(BatchOutput(out).manifest_path.read_text())
    assert manifest["lines"] == manifest["requests"]["count"] == 50
    assert manifest["model"]["path"] == str(version.resolve()) and manifest["model"]["version"] == version.name
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and manifest["completed_at"]
    answered = out.read_bytes()

    assert _batch(version, first, out) == 0  # the same job again: already done
    assert "already holds this job's finished answers (50 users" in capsys.readouterr().out
    assert _batch(version, second, out) == 1  # another job: refused, the file untouched
    assert "holds another job's finished answers (they answer other requests (50 from" in capsys.readouterr().err
    assert out.read_bytes() == answered
    assert _batch(version, second, out, "--overwrite") == 0
    assert [row["user_id"] for row in _lines(out)] == list(interactions)[50:100]

    out.write_text(out.read_text()[:-30])  # changed after its manifest was written
    assert _batch(version, second, out) == 1 and "does not match its manifest" in capsys.readouterr().err


@pytest.mark.reliability
def test_partial_answers_resume_only_with_the_model_version_they_came_from(published, tmp_path, capsys):
    folder, version, users, interactions = published
    model_dir = tmp_path / "export" / "recgpt"
    shutil.copytree(version, model_dir / "1")
    out = tmp_path / "recs.jsonl"
    job = BatchJob(
        batch_output.model_identity(model_dir / "1"), batch_output.requests_identity(list(batch_module.read_requests(users)), str(users))
    )
    with pytest.raises(KeyboardInterrupt), BatchOutput(out).writing(job) as writer:
        writer.write_lines([json.dumps({"user_id": "x"})] * 20)  # 20 answers from version 1, then killed
        assert _batch(model_dir, users, out) == 1  # a second writer meanwhile: refused by the lock
        assert f"{out} is being written by process" in capsys.readouterr().err
        raise KeyboardInterrupt
    assert not out.exists()  # a reader cannot mistake the 20 lines for a finished file
    shutil.copytree(version, model_dir / "2")  # a new version is published
    assert _batch(model_dir, users, out) == 1
    error = capsys.readouterr().err
    assert "20 unfinished answers of another job (they came from the model at" in error and str((model_dir / "1").resolve()) in error
    assert not out.exists()
    assert _batch(model_dir, users, out, "--overwrite") == 0
    manifest = json.loads(BatchOutput(out).manifest_path.read_text())
    assert manifest["model"]["version"] == "2" and len(_lines(out)) == manifest["lines"] == len(interactions)


@pytest.mark.reliability
def test_a_retrained_run_is_exported_anew(published, tiny_dataset, tmp_path):
    folder, _, users, interactions = published
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run, ignore=shutil.ignore_patterns("batch_export"))
    assert _batch(run, users, tmp_path / "before.jsonl") == 0
    Run.open(run).pretrain(tiny_dataset, tiny_train_config(epochs=1, seed=99), verbose=0)  # retrained: new weights
    assert _batch(run, users, tmp_path / "after.jsonl") == 0
    assert version_numbers(run / "batch_export" / "recgpt") == [2]
    signature = tf.saved_model.load(str(run / "batch_export" / "recgpt" / "2")).signatures[RECOMMEND_SIGNATURE]
    online = signature(user_id=tf.constant(list(interactions)), history=tf.constant(pad_histories(list(interactions.values()))))
    assert [row["item_ids"] for row in _lines(tmp_path / "after.jsonl")] == online["item_ids"].numpy().astype(str).tolist()
    assert _lines(tmp_path / "after.jsonl") != _lines(tmp_path / "before.jsonl")


@pytest.mark.reliability
def test_rows_with_fewer_allowed_items_than_k_are_shorter_and_strict_json(published, tmp_path):
    folder, version, _, interactions = published
    user, history = next(iter(interactions.items()))
    catalogue = (folder / "run" / "items.txt").read_text().splitlines()
    allowed = [item for item in catalogue if item not in history][:3]  # the history is excluded too
    banned = [item for item in catalogue if item not in allowed]
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps({"user_id": user, "history": history, "exclude": banned})
        + "\n"
        + json.dumps({"user_id": user, "history": history, "exclude": catalogue})
        + "\n"
    )
    out = tmp_path / "recs.jsonl"
    assert _batch(version, requests, out) == 0
    refuse = lambda constant: pytest.fail(f"not strict JSON: {constant}")  # noqa: E731
    few, none = (json.loads(line, parse_constant=refuse) for line in out.read_text().splitlines())
    assert sorted(few["item_ids"]) == sorted(allowed) and len(few["scores"]) == len(few["recall_step"]) == 3
    assert none["item_ids"] == none["scores"] == none["recall_step"] == []
    signature = tf.saved_model.load(str(version)).signatures[EXCLUDING_SIGNATURE]  # the signature pads with "" and -inf
    padded = signature(user_id=tf.constant([user]), history=tf.constant(pad_histories([history])), exclude=tf.constant([banned]))
    assert padded["item_ids"].numpy()[0, 3:].tolist() == [b""] * 7 and np.isneginf(padded["scores"].numpy()[0, 3:]).all()


@pytest.mark.reliability
def test_request_files_and_outputs_fail_in_one_line(published, tmp_path, capsys):
    folder, version, _, interactions = published
    user, history = next(iter(interactions.items()))
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b"\xef\xbb\xbf" + json.dumps({"user_id": user, "history": history}).encode() + b"\n")
    assert _batch(version, requests, tmp_path / "bom.jsonl") == 0  # a byte-order mark is dropped
    requests.write_bytes(requests.read_bytes() + b'{"user_id": "caf\xe9", "history": []}\n')
    assert _batch(version, requests, tmp_path / "latin.jsonl") == 1
    assert "requests.jsonl:2: is not UTF-8 text (byte b'\\xe9' at column 17)" in capsys.readouterr().err
    assert _batch(version, requests, tmp_path) == 2
    assert f"--out names a folder ({tmp_path})" in capsys.readouterr().err
