"""Nothing silently wrong (issue 20): exact timestamps, ids that survive the run directory, the export and
the server unchanged, stages that count only once committed, one trainer per run, REST requests with a
deadline that slow senders cannot turn into a denial of service. Marked `reliability`."""

import base64
import csv
import errno
import json
import socket
import string
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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import export_from_run, tiny_run, tiny_train_config, write_lines
from recgpt_tf.cli import main
from recgpt_tf.contract import RECOMMEND_SIGNATURE
from recgpt_tf.data import Dataset, load_interactions
from recgpt_tf.data.vocab import Vocabulary, storable_problem
from recgpt_tf.errors import ConfigError, DataFormatError, RunDirectoryError
from recgpt_tf.runs import Run
from recgpt_tf.serving.servable import failure_line
from recgpt_tf.training import PromptConfig

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))  # the benchmarks' helpers (benchmarks/lab.py)
from lab import drip_predict_body  # noqa: E402

pytestmark = pytest.mark.reliability


# --- timestamps ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf", "Infinity", "2024-01-05", "12:30", "1e", "1_000", "٣"])
def test_a_timestamp_that_is_not_a_finite_number_is_an_error_naming_the_line(tmp_path, stamp):
    rows = [f"u{i % 50},i{i},{1000 - i}" for i in range(1000)]
    rows[537] = f"u7,i537,{stamp}"
    with pytest.raises(DataFormatError, match=r"d\.csv:538: timestamp"):
        load_interactions(write_lines(tmp_path / "d.csv", rows))


def test_nanosecond_and_decimal_timestamps_sort_exactly_not_as_float64(tmp_path):
    # 1700000000000000100 and ...001 are one float64; sorted as floats, file order would win.
    rows = ["u,late,1700000000000000100", "u,early,1700000000000000001", "v,b,2", "v,a,1.9999999999999999999", "v,c,2.5e0"]
    assert load_interactions(write_lines(tmp_path / "d.csv", rows)) == {"u": ["early", "late"], "v": ["a", "b", "c"]}


def test_a_header_is_recognised_by_its_name_and_a_bad_first_data_row_is_reported_not_dropped(tmp_path):
    assert load_interactions(write_lines(tmp_path / "h.csv", ["user,item,timestamp", "u,a,1", "u,b,2"])) == {"u": ["a", "b"]}
    with pytest.raises(DataFormatError, match=r"n\.csv:1: timestamp '2024-01-05'"):
        load_interactions(write_lines(tmp_path / "n.csv", ["7,42,2024-01-05", "7,43,1700000000"]))
    with pytest.raises(DataFormatError, match=r"f\.csv:1: timestamp 'nan'"):
        load_interactions(write_lines(tmp_path / "f.csv", ["7,42,nan", "7,43,1700000000"]))


# --- ids ----------------------------------------------------------------------------------------------

# Characters that break naive id handling: whitespace, every Unicode line and paragraph separator, other
# control characters, combining marks, digits and numerals of other scripts, quotes and delimiters.
NASTY = " \t\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029\x00\x07\x1b\u0301\u0308\u200b\ufeff²³¹١٢٣०१੩๔߀-+,;\"'\\é"
id_text = st.text(alphabet=st.sampled_from(NASTY + string.ascii_letters + string.digits), min_size=1, max_size=12) | st.builds(
    lambda c, n: c * n, st.sampled_from("x\u2028é"), st.integers(1000, 5000)
)
storable_ids = id_text.filter(lambda token: storable_problem(token) is None)


def _write_csv(path, rows) -> str:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL).writerows(rows)
    return str(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(items=st.lists(storable_ids, min_size=3, max_size=8, unique=True), users=st.lists(storable_ids, min_size=1, max_size=3, unique=True))
def test_every_id_the_reader_accepts_survives_the_run_directory_unchanged(tmp_path_factory, items, users):
    folder = tmp_path_factory.mktemp("ids")
    rows = [(user, item, str(t)) for user in users for t, item in enumerate(items)]
    interactions = load_interactions(_write_csv(folder / "d.csv", rows))
    assert interactions == {user: items for user in users}  # exact: nothing stripped, split or merged
    dataset = Dataset.from_interactions(interactions)
    run = Run.create(folder / "run", dataset, seed=0)
    reopened = Run.open(run.path)
    assert reopened.item_vocab.tokens == dataset.item_vocab.tokens and reopened.user_vocab.tokens == dataset.user_vocab.tokens
    # The same file, read as the SavedModel reads it (TextFileInitializer): every id on its own line.
    table = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            str(run.vocabulary_files[0]), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER
        ),
        -1,
    )
    assert table.lookup(tf.constant(dataset.item_vocab.tokens)).numpy().tolist() == list(range(len(items)))


@pytest.mark.parametrize(
    "cell, problem",
    [("a\nb", "line break"), ("ab\r", "carriage return")],
)
def test_an_id_a_run_cannot_store_is_refused_at_read_time_naming_file_and_line(tmp_path, cell, problem):
    path = _write_csv(tmp_path / "d.csv", [("u", "ok", "1"), ("u", cell, "2")])
    with pytest.raises(DataFormatError, match=rf"d\.csv:2: item id .* {problem}"):
        load_interactions(path)


def test_quoted_ids_with_spaces_stay_distinct_and_numeric_looking_ids_build_a_vocabulary(tmp_path):
    path = _write_csv(tmp_path / "d.csv", [("u", " a", "1"), ("u", "a", "2"), ("u", "a ", "3")])
    assert load_interactions(path) == {"u": [" a", "a", "a "]}
    assert Vocabulary.build(["²", "--5", "١٢", "3"]).tokens == ["²", "--5", "١٢", "3"]  # first-seen: not all ASCII integers
    assert Vocabulary.build(["10", "-2", "01", "1"]).tokens == ["-2", "01", "1", "10"]


def test_sequence_files_split_on_blanks_only_and_refuse_non_ascii_numerals(tmp_path):
    with pytest.raises(DataFormatError, match=r"s\.txt:1: item id '2\\u20283' is not an integer"):
        load_interactions(write_lines(tmp_path / "s.txt", ["1 2\u20283 4"]))
    with pytest.raises(DataFormatError, match=r"t\.txt:1: item id '²'"):
        load_interactions(write_lines(tmp_path / "t.txt", ["1 ² 4"]))


def test_nasty_ids_train_export_and_serve_unchanged(tiny_dataset, tmp_path):
    """Items renamed to ids holding separators, controls and other scripts: the exported signature maps
    each history id to its own item (so it is excluded) and answers only catalogue ids."""
    nasty = [
        f"{c}{i}{c}" if storable_problem(f"{c}{i}{c}") is None else f"{c}{i}" for i, c in enumerate((NASTY * 9)[: tiny_dataset.num_items])
    ]
    names = dict(zip(tiny_dataset.item_vocab.tokens, nasty))
    interactions = {
        user: [names[item] for item in tiny_dataset.item_vocab.decode(sequence)]
        for user, sequence in zip(tiny_dataset.user_vocab.decode(tiny_dataset.users), tiny_dataset.sequences)
    }
    dataset = Dataset.from_interactions(interactions)
    model, _ = tiny_run(dataset, tmp_path / "run").pretrain(dataset, tiny_train_config(epochs=1), verbose=0)
    version = export_from_run(tmp_path / "run", model, tmp_path / "export", (10,), index_kind="brute-force")
    recommend = tf.saved_model.load(str(version)).signatures[RECOMMEND_SIGNATURE]
    catalogue = set(Run.open(tmp_path / "run").item_vocab.tokens)
    assert catalogue == set(nasty)
    histories = np.array([[item] for item in nasty], dtype=object)
    out = recommend(user_id=tf.constant([""] * len(nasty)), history=tf.constant(histories))
    answered = [[token.decode("utf-8") for token in row] for row in out["item_ids"].numpy()]
    for (item,), row in zip(histories, answered):
        assert set(row) <= catalogue and item not in row


# --- stages --------------------------------------------------------------------------------------------


@pytest.fixture()
def pretrained_run(tiny_dataset, tmp_path):
    run = tiny_run(tiny_dataset, tmp_path / "run")
    run.train(tiny_dataset, stages="pretrain", train_config=tiny_train_config(epochs=2), verbose=0)
    return run


def test_an_interrupted_prompt_rerun_never_passes_off_the_old_weights_as_its_own(
    pretrained_run, tiny_dataset, tmp_path, monkeypatch, capsys
):
    run = pretrained_run
    run.train(tiny_dataset, stages="prompt", prompt_config=PromptConfig.from_options(1, epochs=1), verbose=0)
    assert run.has_stage("prompt") and run.summary("prompt")["config"]["prompt_window"] == 1

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("recgpt_tf.training.prompt_tuning.fit_stage", disk_full)
    with pytest.raises(OSError):
        run.train(tiny_dataset, stages="prompt", prompt_config=PromptConfig.from_options(2, epochs=1), verbose=0)
    run = Run.open(run.path)
    assert (run.stage_dir("prompt") / "weights.index").exists()  # the K=1 weights are still on disk...
    assert not run.has_stage("prompt") and run.unfinished_stages() == ["prompt"]  # ...but nothing counts them
    with pytest.raises(RunDirectoryError, match="'prompt' did not finish"):
        run.load_model("prompt")
    published = run.export(tmp_path / "export", "recgpt", index_kind="brute-force")
    meta = json.loads((published.path / "assets.extra" / "recgpt.json").read_text())
    assert meta["stage"] == "pretrain" and "prompt" not in meta["config"] and not meta["prompt_tuned"]
    assert set(run.evaluate(tiny_dataset)["results"]) == {"pretrain", "pretrain_two_step"}


def test_a_run_directory_is_trained_by_one_process_at_a_time_and_a_dead_holder_is_taken_over(pretrained_run, tiny_dataset, capsys):
    run = pretrained_run
    with run.lock():
        with pytest.raises(RunDirectoryError, match="being trained by process"):
            Run.open(run.path).train(tiny_dataset, stages="pretrain", verbose=0)
    (run.path / ".lock").write_text("process 2999999")  # left by a process killed while training
    with Run.open(run.path).lock():
        pass
    assert "taking over the lock of process 2999999" in capsys.readouterr().err


# --- REST ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_dataset, tmp_path_factory):
    from recgpt_tf.serving import LocalServer

    folder = tmp_path_factory.mktemp("rest")
    model, _ = tiny_run(tiny_dataset, folder / "run").pretrain(tiny_dataset, tiny_train_config(epochs=1), verbose=0)
    export_from_run(folder / "run", model, folder / "export", (10,), index_kind="brute-force")
    server = LocalServer(folder / "export", grpc_port=0, rest_port=0, workers=2, poll_seconds=0.2).start()
    yield server
    server.stop(grace=1.0)


def test_slow_bodies_hold_no_slot_and_status_and_predicts_answer_at_once(server, tiny_dataset):
    port, stop = server.rest_port, threading.Event()
    drippers = [threading.Thread(target=drip_predict_body, args=(port, stop, 0.5, 1000), daemon=True) for _ in range(8)]  # 4x the 2 workers
    for thread in drippers:
        thread.start()
    try:
        time.sleep(1.0)
        start = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/recgpt", timeout=10) as response:
            assert response.status == 200
        assert time.perf_counter() - start < 1.0
        user = tiny_dataset.user_vocab.tokens[0]
        body = json.dumps({"instances": [{"user_id": user, "history": tiny_dataset.item_vocab.tokens[:3]}]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/recgpt:predict", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert len(json.loads(response.read())["predictions"][0]["item_ids"]) == 10
    finally:
        stop.set()


def test_a_request_that_outlasts_its_deadline_is_closed_with_408(server, monkeypatch):
    monkeypatch.setattr(server.rest_server.RequestHandlerClass, "timeout", 1.5)
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/models/recgpt:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        start = time.perf_counter()
        for _ in range(10):  # one byte every 0.4 s: each read is quick, the request is not
            time.sleep(0.4)
            try:
                sock.sendall(b" ")
            except OSError:
                break
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") and time.perf_counter() - start < 6


def _post(port: int, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/recgpt:predict", data=json.dumps(payload).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_rest_accepts_tf_servings_b64_strings_and_refuses_bad_base64(server, tiny_dataset):
    user, items = tiny_dataset.user_vocab.tokens[0], tiny_dataset.item_vocab.tokens[:3]
    b64 = lambda text: {"b64": base64.b64encode(text.encode()).decode()}  # noqa: E731
    plain = _post(server.rest_port, {"instances": [{"user_id": user, "history": items}]})
    binary = _post(server.rest_port, {"instances": [{"user_id": b64(user), "history": [b64(i) for i in items]}]})
    assert plain[0] == binary[0] == 200 and plain[1] == binary[1]
    status, answer = _post(server.rest_port, {"instances": [{"user_id": {"b64": "%%%"}, "history": items}]})
    assert status == 400 and "b64" in answer["error"]


# --- gRPC ----------------------------------------------------------------------------------------------


def test_a_broadcast_grpc_request_pays_for_what_it_sent(server):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    history = tf.make_tensor_proto(np.array([b"7"], dtype=object))
    history.tensor_shape.Clear()
    for size in (2, 1_000_000):  # one string_val, declared [2, 1000000]: TensorFlow would repeat it 2M times
        history.tensor_shape.dim.add().size = size
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "recgpt"
    request.inputs["user_id"].CopyFrom(tf.make_tensor_proto(np.array([b"1", b"2"], dtype=object)))
    request.inputs["history"].CopyFrom(history)
    assert request.ByteSize() < 100
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=30)
        assert time.perf_counter() - start < 0.1
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "carries 1 values" in error.value.details()


# --- export base ---------------------------------------------------------------------------------------


def test_only_ascii_digit_directories_are_versions_and_hidden_model_names_are_refused(server, tmp_path, caplog):
    base = server.manager.base
    (base / "recgpt" / "²").mkdir()
    (base / "recgpt" / "v2").mkdir()
    try:
        server.manager.poll()  # raised ValueError on int("²") and stopped every model's polling
        assert [row[0] for row in server.manager.status("recgpt")] == [1]
        assert "is not a version directory" in caplog.text
    finally:
        (base / "recgpt" / "²").rmdir(), (base / "recgpt" / "v2").rmdir()
    run = Run.open(Path(server.manager.base).parent / "run")
    with pytest.raises(ConfigError, match="not starting with '.'"):
        run.export(tmp_path, ".hidden", "brute-force")


# --- the CLI -------------------------------------------------------------------------------------------


def test_the_cli_says_in_one_line_what_failed(server, tmp_path, capsys, monkeypatch):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    cases = [
        (
            ["recommend", "--rest", "--server", f"127.0.0.1:{port}", "--model", "recgpt", "--user", "u"],
            "no answer from http://127.0.0.1",
            3,
        ),
        (["recommend", "--server", "localhost", "--model", "recgpt", "--user", "u"], "--server must be HOST:PORT", 2),
        (
            ["recommend", "--server", "localhost:8500", "--model", "m", "--user", "u", "--history-json", "[1]"],
            "--history-json must be a JSON list",
            2,
        ),
    ]
    for argv, fragment, status in cases:  # 3: the server failed; 2: a usage error
        assert main(argv) == status
        err = capsys.readouterr().err.strip()
        assert fragment in err and "Traceback" not in err and len(err.splitlines()) == 1, err

    def disk_full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "pretrain" / "weights"))

    monkeypatch.setattr("recgpt_tf.cli.cmd_export", disk_full)
    parser_main = main(["export", str(tmp_path), str(tmp_path / "e"), "--name", "m"])
    err = capsys.readouterr().err.strip()
    assert parser_main == 1 and err.startswith("recgpt export: error: No space left on device:") and "weights" in err


def test_an_id_holding_commas_travels_with_history_json(server, tiny_dataset, capsys):
    items = tiny_dataset.item_vocab.tokens[:2]
    argv = ["recommend", "--server", f"127.0.0.1:{server.grpc_port}", "--model", "recgpt", "--user", "u"]
    assert main([*argv, "--history-json", json.dumps(["x,y", *items])]) == 0
    assert "history x,y " in capsys.readouterr().out


def test_a_failed_versions_status_says_what_failed():
    try:
        tf.raw_ops.Reshape(tensor=tf.zeros([6]), shape=[4])
    except tf.errors.InvalidArgumentError as error:
        line = failure_line(error)
    assert line.startswith("InvalidArgumentError: ") and "reshape" in line.lower() and "Graph execution error" not in line
