"""The local TF-Serving-compatible endpoint, driven through the real clients on loopback."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from helpers import export_from_run, tiny_run, tiny_train_config
from recgpt_tf.cli import main
from recgpt_tf.contract import RECOMMEND_SIGNATURE, pad_histories
from recgpt_tf.serving import GrpcClient, LocalServer, RestClient, RestError
from recgpt_tf.serving.client import history_proto, user_proto


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("serve_run")
    model, _ = tiny_run(tiny_dataset, run_dir).pretrain(tiny_dataset, tiny_train_config(epochs=3), verbose=0)
    return run_dir, model


def publish(run_dir, model, base, version=None):
    return export_from_run(run_dir, model, base, (9, 1), version=version)


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):
    run_dir, model = trained
    base = tmp_path_factory.mktemp("serve_base")
    path = publish(run_dir, model, base)
    server = LocalServer(base, grpc_port=0, rest_port=0, workers=8, poll_seconds=0.3).start()
    yield server, path
    server.stop(grace=1.0)


def _grpc(server, **kwargs):
    return GrpcClient(f"127.0.0.1:{server.grpc_port}", "recgpt", **kwargs)


def _requests(dataset, count=20):
    split = dataset.split("test")
    return dataset.user_vocab.decode(split.users[:count]), [dataset.item_vocab.decode(h) for h in split.histories[:count]]


def test_grpc_and_rest_equal_the_in_process_saved_model(served, tiny_dataset):
    server, path = served
    users, histories = _requests(tiny_dataset)
    local = tf.saved_model.load(str(path)).signatures[RECOMMEND_SIGNATURE](
        user_id=tf.constant(users), history=tf.constant(pad_histories(histories))
    )
    for rows in (
        _grpc(server).recommend(users, histories),
        RestClient(f"127.0.0.1:{server.rest_port}", "recgpt").recommend(users, histories),
    ):
        assert [r["item_ids"] for r in rows] == local["item_ids"].numpy().astype(str).tolist()
        np.testing.assert_allclose([r["scores"] for r in rows], local["scores"].numpy(), rtol=1e-6)
        assert [r["recall_step"] for r in rows] == local["recall_step"].numpy().tolist()


def test_request_time_exclusions_over_grpc_rest_and_the_cli(served, tiny_dataset, capsys):
    server, _ = served
    users, histories = _requests(tiny_dataset, 8)
    plain = _grpc(server).recommend(users, histories)
    banned = [row["item_ids"][:3] for row in plain]  # what each user would get first
    rest = RestClient(f"127.0.0.1:{server.rest_port}", "recgpt")
    over_grpc, over_rest = _grpc(server).recommend(users, histories, exclude=banned), rest.recommend(users, histories, exclude=banned)
    assert [r["item_ids"] for r in over_grpc] == [r["item_ids"] for r in over_rest]
    for row, first, removed in zip(over_grpc, plain, banned):
        # Step 1 ranks as before without the 3 removed items (step 2 follows another first pick).
        assert not set(row["item_ids"]) & set(removed) and row["item_ids"][:6] == first["item_ids"][3:9]
    argv = ["recommend", "--server", f"127.0.0.1:{server.grpc_port}", "--model", "recgpt", "--user", users[0]]
    assert main([*argv, "--history", ",".join(histories[0]), "--exclude", ",".join(banned[0])]) == 0
    assert not set(banned[0]) & set(capsys.readouterr().out.split())
    with pytest.raises(grpc.RpcError) as error:  # bounded like the other inputs, and refused, never cut
        _grpc(server, retries=0).recommend(users[:1], histories[:1], exclude=[[str(i) for i in range(10_001)]])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "exclude" in error.value.details()


@pytest.mark.reliability
def test_a_row_with_fewer_allowed_items_than_k_over_grpc_and_rest(served, tiny_dataset):
    """The signature keeps k slots: one no allowed item can fill holds item "" and score -inf. REST writes
    that score as TF Serving's json_tensor does (a bare -Infinity); the project's clients leave such slots out."""
    server, _ = served
    users, histories = _requests(tiny_dataset, 1)
    catalogue = [item for item in tiny_dataset.item_vocab.decode(range(1, tiny_dataset.num_items + 1)) if item not in histories[0]]
    banned = [catalogue[3:]]  # all but 3 items, beside the history
    raw = _grpc(server).predict(users, histories, "recommend_excluding", exclude=banned).outputs
    items, scores = tf.make_ndarray(raw["item_ids"])[0], tf.make_ndarray(raw["scores"])[0]
    assert sorted(items[:3].astype(str)) == sorted(catalogue[:3]) and items[3:].tolist() == [b""] * 7 and np.isneginf(scores[3:]).all()
    body = json.dumps(
        {"signature_name": "recommend_excluding", "instances": [{"user_id": users[0], "history": histories[0], "exclude": banned[0]}]}
    )
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}/v1/models/recgpt:predict", data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    assert text.count("-Infinity") == 7 and '"Infinity"' not in text and "null" not in text
    for rows in (
        _grpc(server).recommend(users, histories, exclude=banned),
        RestClient(f"127.0.0.1:{server.rest_port}", "recgpt").recommend(users, histories, exclude=banned),
    ):
        assert sorted(rows[0]["item_ids"]) == sorted(catalogue[:3]) and len(rows[0]["scores"]) == len(rows[0]["recall_step"]) == 3


def test_metadata_and_status(served):
    server, _ = served
    client = _grpc(server)
    assert client.signature_names() == ["recommend_excluding", "serving_default", "user_embeddings"]
    assert client.status() == [(1, "AVAILABLE")]
    rest = RestClient(f"127.0.0.1:{server.rest_port}", "recgpt")
    assert rest.status()["model_version_status"][0]["state"] == "AVAILABLE"
    assert set(rest.metadata()["metadata"]["signature_def"]["signatureDef"]) >= {"serving_default", "user_embeddings"}


def _raw_predict(server, inputs, model="recgpt", version=None, signature=RECOMMEND_SIGNATURE):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    return _grpc(server, retries=0).predictions.Predict(request, timeout=30)


def test_bad_requests_get_the_right_status_and_the_endpoint_survives(served):
    server, _ = served
    good = {"user_id": user_proto(["1"]), "history": history_proto([["3", "4"]])}
    cases = [
        (
            {"user_id": tf.make_tensor_proto(np.array([1], np.int64)), "history": good["history"]},
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "'user_id' must be string",
        ),
        ({"user_id": good["user_id"], "history": user_proto(["3"])}, {}, grpc.StatusCode.INVALID_ARGUMENT, "'history' must have rank 2"),
        ({"user_id": good["user_id"]}, {}, grpc.StatusCode.INVALID_ARGUMENT, "'history' is missing"),
        (good, {"model": "nope"}, grpc.StatusCode.NOT_FOUND, "nope"),
        (good, {"version": 99}, grpc.StatusCode.NOT_FOUND, "99"),
        (good, {"signature": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, "nope"),
        ({"user_id": user_proto([]), "history": history_proto([])}, {}, grpc.StatusCode.INVALID_ARGUMENT, "empty batch"),
        (
            {"user_id": user_proto(["1"] * 300), "history": history_proto([["3"]] * 300)},
            {},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "exceeds the limit",
        ),
    ]
    for inputs, spec, code, fragment in cases:
        with pytest.raises(grpc.RpcError) as error:
            _raw_predict(server, inputs, **spec)
        assert error.value.code() == code and fragment in error.value.details(), (code, error.value.details())
    rest = f"http://127.0.0.1:{server.rest_port}/v1/models/recgpt:predict"
    for body, status in [
        (b"{not json", 400),
        (b'{"instances": []}', 400),
        (b'{"instances": [{"user_id": 1, "history": []}]}', 400),
        (b'{"inputs": {"user_id": ["1"]}}', 400),
    ]:
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(urllib.request.Request(rest, data=body), timeout=30)
        assert error.value.code == status and "error" in json.loads(error.value.read())
    with pytest.raises(RestError) as error:
        RestClient(f"127.0.0.1:{server.rest_port}", "nope").recommend(["1"], [["3"]])
    assert error.value.status == 404
    assert len(_grpc(server).recommend(["1"], [["3", "4"]])[0]["item_ids"]) == 10  # still answering


def test_a_10000_item_history_is_answered_from_its_most_recent_items(served, tiny_dataset):
    server, _ = served
    rng = np.random.default_rng(0)
    # Drawn from half the catalogue, so items outside the history remain to recommend.
    long_history = [str(i) for i in rng.integers(1, tiny_dataset.num_items // 2, size=10_000)]
    row = _grpc(server).recommend(["1"], [long_history])[0]
    assert len(row["item_ids"]) == 10 and not set(row["item_ids"]) & set(long_history[-1000:])
    assert row == _grpc(server).recommend(["1"], [long_history[-1000:]])[0]


@pytest.mark.slow
def test_new_version_is_picked_up_with_zero_failed_requests(trained, tmp_path):
    run_dir, model = trained
    publish(run_dir, model, tmp_path)
    server = LocalServer(tmp_path, grpc_port=0, rest_port=0, poll_seconds=0.2).start()
    try:
        client = _grpc(server)
        failures, versions, stop = [], set(), threading.Event()

        def loop():
            while not stop.is_set():
                try:
                    response = client.predict(["1"], [["3", "4"]])
                    versions.add(response.model_spec.version.value)
                except grpc.RpcError as error:
                    failures.append(error.code())

        thread = threading.Thread(target=loop)
        thread.start()
        time.sleep(0.5)
        publish(run_dir, model, tmp_path)  # version 2, built aside and renamed in
        deadline = time.time() + 60
        while 2 not in versions and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        stop.set()
        thread.join()
        assert failures == [] and versions == {1, 2}
        assert client.status() == [(2, "AVAILABLE")]
    finally:
        server.stop(grace=1.0)


def test_bounded_load_8_clients_x_250_requests(served, tiny_dataset):
    server, _ = served
    users, histories = _requests(tiny_dataset, 50)
    errors, done = [], []

    def worker(seed):
        client = _grpc(server)
        rng = np.random.default_rng(seed)
        for _ in range(250):
            i = int(rng.integers(len(users)))
            try:
                rows = client.recommend([users[i]], [histories[i]])
                done.append(len(rows[0]["item_ids"]))
            except grpc.RpcError as error:
                errors.append(error.code())
        client.close()

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == [] and len(done) == 2000 and set(done) == {10}


@pytest.mark.slow
def test_cli_recommend_and_sigterm_shutdown(served, tmp_path, capsys):
    server, path = served

    def listed(output: str) -> list[str]:  # "  1. ITEM  score S  step G" lines
        return [line.split()[1] for line in output.splitlines() if line.split() and line.split()[0].rstrip(".").isdigit()]

    args = ["--model", "recgpt", "--user", "1", "--history", "3,4"]
    assert main(["recommend", "--server", f"127.0.0.1:{server.grpc_port}", *args]) == 0
    over_grpc = listed(capsys.readouterr().out)
    assert main(["recommend", "--server", f"127.0.0.1:{server.rest_port}", "--rest", *args]) == 0
    over_rest = listed(capsys.readouterr().out)
    expected = GrpcClient(f"127.0.0.1:{server.grpc_port}", "recgpt").recommend(["1"], [["3", "4"]])[0]["item_ids"]
    assert over_grpc == over_rest == expected and len(expected) == 10 and not {"3", "4"} & set(expected)
    assert main(["recommend", "--server", f"127.0.0.1:{server.grpc_port}", "--model", "nope", "--user", "1"]) == 3  # the server said no
    assert "NOT_FOUND" in capsys.readouterr().err
    # The plain TF Serving client example (no recgpt_tf import) prints the same list.
    example = Path(__file__).resolve().parents[1] / "serving" / "examples" / "grpc_predict.py"
    result = subprocess.run(
        [sys.executable, str(example), "--server", f"127.0.0.1:{server.grpc_port}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert listed(result.stdout) == expected
    recgpt = os.path.join(os.path.dirname(sys.executable), "recgpt")
    process = subprocess.Popen(
        [recgpt, "serve", str(path.parent.parent), "--grpc-port", "0", "--rest-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "recgpt serve:" in line, line
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
