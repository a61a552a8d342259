"""Reliability under attack and accident (issue 13's matrix): bounded requests, the model lifecycle, safe
exports, resumable training, strict data reading, the deploy probe. Marked `reliability`."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from tensorflow_serving.apis import predict_pb2

from helpers import export_from_run, tiny_run, tiny_train_config, write_lines
from recgpt_tf.cli import main
from recgpt_tf.contract import RECOMMEND_SIGNATURE
from recgpt_tf.data import load_interactions, synthetic_sequences
from recgpt_tf.errors import ConfigError, DataFormatError, ExportError, RecGPTError
from recgpt_tf.export.publish import remove_abandoned_staging, write_monitoring_config
from recgpt_tf.runs import Run
from recgpt_tf.serving import GrpcClient, LocalServer
from recgpt_tf.serving.client import history_proto, user_proto

pytestmark = pytest.mark.reliability
DEPLOY = Path(__file__).resolve().parents[1] / "serving" / "deploy"


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reliability_run")
    model, _ = tiny_run(tiny_dataset, run_dir).pretrain(tiny_dataset, tiny_train_config(epochs=2), verbose=0)
    return run_dir, model


@pytest.fixture(scope="module")
def version_dir(trained, tmp_path_factory):
    """One published version, copied into each scenario's export base."""
    run_dir, model = trained
    return Path(export_from_run(run_dir, model, tmp_path_factory.mktemp("published"), (10,), index_kind="brute-force"))


@pytest.fixture(scope="module")
def served(version_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    shutil.copytree(version_dir, base / "recgpt" / "1")
    server = LocalServer(base, grpc_port=0, rest_port=0, workers=4, poll_seconds=0.2).start()
    yield server
    server.stop(grace=1.0)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _predict(server, inputs: dict, **spec) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.get("model", "recgpt")
    request.model_spec.signature_name = RECOMMEND_SIGNATURE
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)


GOOD = {"user_id": user_proto(["1"]), "history": history_proto([["3", "4"]])}


# --- resource exhaustion ----------------------------------------------------------------------


def test_a_tiny_grpc_request_declaring_a_huge_tensor_is_refused_at_once_without_memory(served):
    history = _shape_proto([256, 1_000_000])  # a lone string_val broadcasts to the whole declared shape
    assert len(history.SerializeToString()) < 64
    before = _rss_mb()
    for inputs, fragment in [
        ({"user_id": user_proto(["1"] * 256), "history": history}, "above the limit"),
        ({"user_id": GOOD["user_id"], "history": _shape_proto([1, -5])}, "negative dimension"),
        ({"user_id": GOOD["user_id"], "history": _shape_proto([1, 10**12])}, "above the limit"),
    ]:
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as error:
            _predict(served, inputs)
        assert time.perf_counter() - start < 1.0
        assert error.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
        assert fragment in error.value.details(), error.value.details()
    assert _rss_mb() - before < 50, (before, _rss_mb())  # was +2-4 GB per request
    assert len(_predict(served, GOOD).outputs["item_ids"].string_val) == 10


def _shape_proto(shape: list[int]):
    proto = tf.make_tensor_proto(np.array([b"7"], dtype=object))
    proto.tensor_shape.Clear()
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def test_one_long_rest_row_beside_empty_ones_is_refused_before_padding(served):
    body = json.dumps({"inputs": {"user_id": ["1"] * 64, "history": [["7"] * 1_000_000] + [[]] * 63}}).encode()
    before = _rss_mb()
    start = time.perf_counter()
    status, payload = _rest(served, "POST", "/v1/models/recgpt:predict", body)
    assert status == 429 and "above the limit" in payload["error"]
    assert time.perf_counter() - start < 2.0 and _rss_mb() - before < 200, _rss_mb() - before  # parsing the body itself


# --- REST protocol errors ---------------------------------------------------------------------


def _rest(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"inputs": {"user_id": ["\\ud800"], "history": [["3"]]}}', "not valid Unicode"),
        (b'{"signature_name": ["serving_default"], "inputs": {"user_id": ["1"], "history": [["3"]]}}', "not found"),
    ],
)
def test_malformed_rest_bodies_are_400_not_500(served, body, fragment):
    status, payload = _rest(served, "POST", "/v1/models/recgpt:predict", body)
    assert status == 400 and fragment in payload["error"], payload


def _raw_http(server, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as connection:
        connection.sendall(data)
        received = b""
        while True:
            try:
                chunk = connection.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break  # closed by the server
            received += chunk
    return received


def test_an_unread_body_is_never_parsed_as_the_next_request(served):
    hidden = b"GET /v1/models/recgpt HTTP/1.1\r\nHost: x\r\n\r\n"
    oversized = f"POST /v1/models/recgpt:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 30}\r\n\r\n".encode()
    answer = _raw_http(served, oversized + hidden)
    assert answer.startswith(b"HTTP/1.1 429") and answer.count(b"HTTP/1.1 ") == 1, answer[:400]
    for length in (b"abc", b"-5"):
        answer = _raw_http(
            served, b"POST /v1/models/recgpt:predict HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n" + hidden
        )
        assert answer.startswith(b"HTTP/1.1 400") and answer.count(b"HTTP/1.1 ") == 1, answer[:400]


# --- model lifecycle --------------------------------------------------------------------------


def _hammer(server, stop: threading.Event, failures: list, versions: set) -> threading.Thread:
    client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "recgpt", timeout=30, retries=0)

    def loop():
        while not stop.is_set():
            try:
                versions.add(client.predict(["1"], [["3", "4"]]).model_spec.version.value)
            except grpc.RpcError as error:
                failures.append((error.code(), error.details()))

    thread = threading.Thread(target=loop)
    thread.start()
    return thread


def _wait_for(condition, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.1)
    assert condition()


def test_a_broken_newest_version_falls_back_is_retried_when_its_files_change_and_removal_rolls_back(version_dir, tmp_path):
    model = tmp_path / "recgpt"
    for version in (1, 2):
        shutil.copytree(version_dir, model / str(version))
    shutil.copytree(version_dir, model / "3")
    shutil.rmtree(model / "3" / "variables")  # broken newest (or a copy that has not finished)
    server = LocalServer(tmp_path, grpc_port=0, rest_port=0, workers=4, poll_seconds=0.2).start()
    stop, failures, versions = threading.Event(), [], set()
    try:
        client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "recgpt", timeout=30)
        assert client.status()[0] == (2, "AVAILABLE") and (3, "END") in client.status()  # served, and the failure reported
        thread = _hammer(server, stop, failures, versions)
        shutil.copytree(version_dir / "variables", model / "3" / "variables")  # the copy completes
        _wait_for(lambda: 3 in versions)
        shutil.rmtree(model / "3")  # the newest is deleted: back to 2, never answering from 3 again
        _wait_for(lambda: client.status() == [(2, "AVAILABLE")])
        versions.clear()
        time.sleep(0.5)
        stop.set()
        thread.join()
        assert failures == [] and versions == {2}
    finally:
        stop.set()
        server.stop(grace=1.0)


def test_version_labels_resolve_through_models_config_and_unknown_labels_are_refused(version_dir, tmp_path):
    shutil.copytree(version_dir, tmp_path / "recgpt" / "1")
    (tmp_path / "models.config").write_text(
        'model_config_list { config { name: "recgpt" base_path: "/models/recgpt" model_platform: "tensorflow" '
        'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 7 } } }\n'
    )
    with LocalServer(tmp_path, grpc_port=0, rest_port=0, workers=2) as server:
        assert _predict(server, GOOD, label="stable").model_spec.version.value == 1
        for label, code in (("nope", grpc.StatusCode.INVALID_ARGUMENT), ("canary", grpc.StatusCode.NOT_FOUND)):
            with pytest.raises(grpc.RpcError) as error:
                _predict(server, GOOD, label=label)
            assert error.value.code() == code, error.value.details()
        assert _rest(server, "GET", "/v1/models/recgpt/labels/stable")[0] == 200
        assert _rest(server, "GET", "/v1/models/recgpt/labels/nope")[0] == 400


def test_a_second_server_on_a_used_grpc_port_fails_instead_of_sharing_it(served, tmp_path):
    with pytest.raises(RecGPTError, match="in use"):
        LocalServer(tmp_path, grpc_port=served.grpc_port, rest_port=0)


# --- exports ----------------------------------------------------------------------------------


def test_export_versions_are_validated_allocated_once_and_readable_by_other_users(trained, tmp_path):
    run_dir, model = trained
    for bad in (0, -3):
        with pytest.raises(ConfigError, match="version"):
            export_from_run(run_dir, model, tmp_path, (10,), index_kind="brute-force", version=bad)
    with pytest.raises(ConfigError, match="name"):
        Run.open(run_dir).export(tmp_path, "..", "brute-force")

    # A killed export's staging (a dead process on this host) is removed; a live one's is kept.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "recgpt").mkdir()
    abandoned = tmp_path / "recgpt" / f".1.staging-{dead.pid}@{socket.gethostname()}@x"
    live = tmp_path / "recgpt" / f".1.staging-{os.getpid()}@{socket.gethostname()}@y"
    elsewhere = tmp_path / "recgpt" / f".1.staging-{dead.pid}@{socket.gethostname()}-12@z"  # host "HOST-12" shares the base
    for path in (abandoned, live, elsewhere):
        path.mkdir()
    assert remove_abandoned_staging(tmp_path / "recgpt") == [abandoned] and live.exists() and elsewhere.exists()
    live.rmdir(), elsewhere.rmdir()

    # Two `recgpt export` processes racing for version 1: both publish, under different numbers, whole.
    recgpt = os.path.join(os.path.dirname(sys.executable), "recgpt")
    command = [recgpt, "export", str(run_dir), str(tmp_path), "--name", "recgpt", "--index", "brute-force"]
    exports = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [export.communicate(timeout=300)[0] for export in exports]
    errors = [output[-2000:] for export, output in zip(exports, outputs) if export.returncode != 0]
    results = sorted((tmp_path / "recgpt").iterdir())
    assert errors == [] and [p.name for p in results] == ["1", "2"], errors
    for path in results:
        assert json.loads((path / "assets.extra" / "recgpt.json").read_text())["version"] == int(path.name)
        umask = int(next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("Umask:")).split()[1], 8)
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask  # as any directory this user makes, not mkdtemp's 0700
    assert [p.name for p in (tmp_path / "recgpt").iterdir() if p.name.startswith(".")] == []
    with pytest.raises(ExportError, match="already exists"):
        export_from_run(run_dir, model, tmp_path, (10,), index_kind="brute-force", version=2)


# --- training ---------------------------------------------------------------------------------

FLAGS = ["--hidden-size", "16", "--num-layers", "1", "--intermediate-size", "32", "--max-length", "20", "--batch-size", "64"]


def _train(data: str, out: Path, *flags: str) -> subprocess.Popen:
    recgpt = os.path.join(os.path.dirname(sys.executable), "recgpt")
    command = [recgpt, "train", data, "--out", str(out), *FLAGS, "--quiet", *flags]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_run_killed_in_either_stage_resumes_where_it_stopped(tmp_path):
    seqs = synthetic_sequences(num_users=300, num_items=80, num_topics=6, seed=5)
    data = write_lines(tmp_path / "data.txt", [f"{u} {' '.join(items)}" for u, items in seqs.items()])
    out = tmp_path / "run"
    flags = ("--epochs", "6", "--patience", "6")

    def epochs(stage: str) -> list[int]:
        path = out / stage / "history.csv"
        return [int(row.split(",")[0]) for row in path.read_text().splitlines()[1:]] if path.exists() else []

    for stage in ("pretrain", "prompt"):  # killed after two epochs of each stage in turn
        job = _train(data, out, *flags)
        _wait_for(lambda: len(epochs(stage)) >= 2, seconds=300)
        job.kill()
        job.wait()
    output = _train(data, out, *flags).communicate(timeout=600)[0]
    assert "pre-training already trained with these settings, kept" in output, output[-2000:]
    assert epochs("pretrain") == list(range(6)) and epochs("prompt") == list(range(6))  # each epoch once; --epochs caps both

    # A truncated prompt cache is regenerated, not a traceback.
    cache = out / "prompt" / "prompted_K1.npz"
    cache.write_bytes(cache.read_bytes()[:100])
    shutil.rmtree(out / "prompt" / "backup", ignore_errors=True)
    (out / "prompt" / "summary.json").unlink()
    output = _train(data, out, *flags).communicate(timeout=600)[0]
    assert "is unreadable" in output and "prompt-tuning (K=1) done" in output, output[-2000:]


# --- data files -------------------------------------------------------------------------------


def test_data_files_with_a_bom_or_another_encoding_read_or_fail_naming_the_line(tmp_path):
    csv_file = tmp_path / "events.csv"
    csv_file.write_bytes("\ufeffu1,i1,1\nu1,i2,2\nu2,i1,3\n".encode())
    assert list(load_interactions(csv_file)) == ["u1", "u2"]  # no phantom "\ufeffu1"
    inter = tmp_path / "events.inter"
    inter.write_bytes("\ufeffuser_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\n".encode())
    assert load_interactions(inter) == {"u1": ["i1"]}
    latin = tmp_path / "latin.csv"
    latin.write_bytes("u1,i1,1\nu2,caf\xe9,2\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin\.csv:2: is not UTF-8"):
        load_interactions(latin)
    import gzip

    packed = tmp_path / "data.txt"
    packed.write_bytes(gzip.compress(b"1 2 3\n"))
    with pytest.raises(DataFormatError, match="gzip-compressed"):
        load_interactions(packed)


# --- deploy files -----------------------------------------------------------------------------


def test_deploy_images_are_pinned_and_probed_on_loaded_models_with_metrics_enabled():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    kube = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d["kind"] == "Deployment"]
    containers = [d["spec"]["template"]["spec"]["containers"][0] for d in kube]
    images = [s["image"] for s in compose.values()] + [c["image"] for c in containers]
    assert not any(i.endswith(":latest") or i.endswith("-latest}") for i in images), images
    assert "tensorflow/serving:2.20.0" in [c["image"] for c in containers]
    for args in [s["command"] for s in compose.values()] + [c["args"] for c in containers]:
        assert "--monitoring_config_file=/models/monitoring.config" in args
    for deployment, container in zip(kube, containers):
        assert container["readinessProbe"]["httpGet"]["path"].endswith("/metadata")
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def _monitoring_config_class():
    """TF Serving's MonitoringConfig (tensorflow_serving/config/monitoring_config.proto), which the
    tensorflow-serving-api package does not ship: the same two messages, built from their descriptor."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="monitoring_config_test.proto", package="tensorflow.serving", syntax="proto3")
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_OPTIONAL,
        type_name=".tensorflow.serving.PrometheusConfig",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def test_the_monitoring_config_is_tf_servings_and_the_compose_probe_tells_loaded_from_not(served, tmp_path):
    from google.protobuf import text_format

    write_monitoring_config(tmp_path)
    config = text_format.Parse((tmp_path / "monitoring.config").read_text(), _monitoring_config_class()())
    assert config.prometheus_config.enable and config.prometheus_config.path == "/monitoring/prometheus/metrics"
    probe = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["tf-serving"]["healthcheck"]["test"]
    script = probe[-1].replace("8501", str(served.rest_port))
    assert subprocess.run(["bash", "-c", script], timeout=30).returncode == 0
    assert subprocess.run(["bash", "-c", script.replace("/recgpt/", "/not_loaded/")], timeout=30).returncode != 0


def test_the_cli_reports_a_used_port_as_an_error(served, tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--grpc-port", str(served.grpc_port), "--rest-port", "0"]) != 0
    assert "in use" in capsys.readouterr().err
