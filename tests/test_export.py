"""The exported SavedModel: parity with the Python recall, both index flavours,
TF Serving assets, atomic publishing, robustness to odd inputs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from helpers import export_from_run, tiny_run, tiny_train_config
from recgpt_tf.contract import EMBEDDINGS_SIGNATURE, EXCLUDING_SIGNATURE, MAX_EXCLUDE, RECOMMEND_SIGNATURE, pad_histories
from recgpt_tf.errors import ExportError
from recgpt_tf.evaluation import two_step_sweep
from recgpt_tf.export import export_model, publish
from recgpt_tf.export.stock_ops import saved_model_ops, unregistered_ops
from recgpt_tf.inference import AutoRegressiveRecall
from recgpt_tf.runs import Run
from recgpt_tf.training import PromptConfig

STEPS = (9, 1)


@pytest.fixture(scope="module")
def run(tiny_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export_run")
    run = tiny_run(tiny_dataset, run_dir)
    model, _ = run.pretrain(tiny_dataset, tiny_train_config(epochs=4), verbose=0)
    model, _ = run.prompt_tune(model, tiny_dataset, PromptConfig(1, tiny_train_config(epochs=1)), verbose=0)
    return run_dir, model


def _export(run_dir, model, base, index, **kwargs):
    return export_from_run(run_dir, model, base, STEPS, index_kind=index, **kwargs)


@pytest.fixture(scope="module")
def exports(run, tmp_path_factory):
    run_dir, model = run
    base = tmp_path_factory.mktemp("base")
    return base, _export(run_dir, model, base, "brute-force"), _export(run_dir, model, base, "scann")


@pytest.fixture(scope="module")
def partitioned(run, exports):
    run_dir, model = run
    return _export(run_dir, model, exports[0], "partitioned")


def _signature_lists(path, users, histories):
    signature = tf.saved_model.load(str(path)).signatures[RECOMMEND_SIGNATURE]
    out = signature(user_id=tf.constant(users), history=tf.constant(pad_histories(histories)))
    return out["item_ids"].numpy().astype(str), out["scores"].numpy(), out["recall_step"].numpy()


def _test_requests(dataset, count=None):
    split = dataset.split("test")
    count = count or len(split)
    users = dataset.user_vocab.decode(split.users[:count])
    histories = [dataset.item_vocab.decode(h) for h in split.histories[:count]]
    return split, users, histories


def test_layout_versions_and_serving_files(exports):
    base, brute, scann = exports
    assert (brute.name, scann.name) == ("1", "2")
    for version in (brute, scann):
        assert (version / "saved_model.pb").exists() and (version / "assets" / "items.txt").exists()
        assert (version / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    meta = json.loads((scann / "assets.extra" / "recgpt.json").read_text())
    assert meta["index"]["kind"] == "scann" and min(meta["index"]["recall"].values()) >= 0.95 and meta["step_sizes"] == [9, 1]
    assert 'name: "recgpt"' in (base / "models.config").read_text()
    assert "max_batch_size" in (base / "batching_parameters.txt").read_text()
    assert {p.name for p in (base / "recgpt").iterdir()} == {"1", "2"}  # no staging directories left


def test_brute_force_signature_equals_python_two_step_recall(exports, run, tiny_dataset):
    _, brute, _ = exports
    _, model = run
    split, users, histories = _test_requests(tiny_dataset, 200)
    items, scores, steps = _signature_lists(brute, users, histories)
    expected, expected_scores, expected_steps = AutoRegressiveRecall(model).recommend(split.users[:200], split.histories[:200], STEPS)
    np.testing.assert_array_equal(items, np.array([tiny_dataset.item_vocab.decode(r) for r in expected]))
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(steps, expected_steps)


@pytest.mark.parametrize("kind", ["scann", "partitioned"])
def test_approximate_signatures_overlap_the_exact_lists(kind, exports, partitioned, tiny_dataset):
    _, brute, scann = exports
    path = scann if kind == "scann" else partitioned
    meta = json.loads((path / "assets.extra" / "recgpt.json").read_text())["index"]
    assert meta["kind"] == kind and set(meta["recall"]) == {"step_1", "step_2"} and min(meta["recall"].values()) >= 0.95
    _, users, histories = _test_requests(tiny_dataset, 200)
    exact, exact_scores, _ = _signature_lists(brute, users, histories)
    approx, scores, steps = _signature_lists(path, users, histories)
    overlap = np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)])
    assert overlap >= 0.9, overlap
    assert all(len(set(row)) == 10 and "" not in row for row in approx)  # k distinct real items
    for row, history in zip(approx, histories):
        assert not set(row) & set(history)


@pytest.mark.parametrize("kind", ["brute-force", "scann", "partitioned"])
def test_request_time_exclusions_hold_for_every_index_kind(kind, exports, partitioned, run, tiny_dataset):
    """recommend_excluding never returns an excluded item, at either step, for every index kind; through the
    exact index it is the Python recall with the same exclusions."""
    _, brute, scann = exports
    path = {"brute-force": brute, "scann": scann, "partitioned": partitioned}[kind]
    split, users, histories = _test_requests(tiny_dataset, 100)
    # Each user's own exact top 12 is excluded (the items it would otherwise get), plus an unknown id.
    exact, _, _ = _signature_lists(brute, users, histories)
    excluded = [list(row[:12]) + ["no-such-item"] for row in exact]
    signature = tf.saved_model.load(str(path)).signatures[EXCLUDING_SIGNATURE]
    out = signature(user_id=tf.constant(users), history=tf.constant(pad_histories(histories)), exclude=tf.constant(pad_histories(excluded)))
    items = out["item_ids"].numpy().astype(str)
    for row, history, banned in zip(items, histories, excluded):
        assert len(set(row)) == 10 and not set(row) & (set(history) | set(banned)), (row, banned)
    if kind == "brute-force":
        expected, expected_scores, _ = AutoRegressiveRecall(run[1]).recommend(
            split.users[:100], split.histories[:100], STEPS, exclude=[tiny_dataset.item_vocab.encode(row[:12]) for row in excluded]
        )
        np.testing.assert_array_equal(items, np.array([tiny_dataset.item_vocab.decode(r) for r in expected]))
        np.testing.assert_allclose(out["scores"].numpy(), expected_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.reliability
def test_the_signature_itself_refuses_a_row_of_more_exclusions_than_the_limit(exports):
    """Stock TF Serving runs the graph with no cap of its own: the signature answers INVALID_ARGUMENT."""
    signature = tf.saved_model.load(str(exports[1])).signatures[EXCLUDING_SIGNATURE]
    inputs = dict(user_id=tf.constant(["1"]), history=tf.constant([["1"]]))
    assert signature(**inputs, exclude=tf.constant([["x"] * MAX_EXCLUDE]))["item_ids"].shape == (1, 10)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"input exclude lists more than {MAX_EXCLUDE} items in a row"):
        signature(**inputs, exclude=tf.constant([["x"] * (MAX_EXCLUDE + 1)]))


def test_exports_use_only_ops_the_oldest_verified_tf_serving_runtime_loaded(exports, partitioned):
    """benchmarks/tf_serving_compat.py loaded brute-force and partitioned exports under TF 2.16, 2.18 and 2.20
    with the same answers and recorded their ops; a new op must be verified there before it ships."""
    compat = json.loads((Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "tf_serving_compat.json").read_text())
    assert min(compat["verified_runtimes"]).startswith("2.16")
    for path in (exports[1], partitioned):
        assert saved_model_ops(path) <= set(compat["verified_ops"]), sorted(saved_model_ops(path) - set(compat["verified_ops"]))


def test_auto_falls_back_to_exact_search_when_the_index_cannot_keep_its_promise_in_time(run, tmp_path, monkeypatch):
    run_dir, model = run
    monkeypatch.setattr("recgpt_tf.retrieval.tuning.PARTITIONED_MIN_ITEMS", 1)  # auto picks partitioned for this catalogue
    meta = json.loads((_export(run_dir, model, tmp_path, "auto", tuning_seconds=0.0) / "assets.extra" / "recgpt.json").read_text())["index"]
    assert meta["kind"] == "brute-force" and meta["requested"] == "auto" and "time budget" in meta["fallback"]
    with pytest.raises(ExportError, match="time budget"):  # asked for by name: refused, nothing published
        _export(run_dir, model, tmp_path, "partitioned", tuning_seconds=0.0)


def test_hr_through_the_signature_equals_evaluate(exports, run, tiny_dataset):
    _, brute, _ = exports
    _, model = run
    split, users, histories = _test_requests(tiny_dataset)
    items, _, _ = _signature_lists(brute, users, histories)
    targets = np.array(tiny_dataset.item_vocab.decode(split.targets))
    hr10 = float(np.mean([t in row for t, row in zip(targets, items)]))
    assert hr10 == pytest.approx(two_step_sweep(model, split, cutoffs=(10,))[10][9][0], abs=1e-12)


def test_cold_start_unknown_ids_and_variable_lengths(exports):
    _, brute, _ = exports
    items, scores, steps = _signature_lists(brute, ["1", "no-such-user", "2"], [["3", "5", "7"], [], ["never-seen-item", "4"]])
    assert items.shape == (3, 10) and np.isfinite(scores).all()
    for row in items:
        assert len(set(row)) == 10 and "" not in row and "[OOV]" not in row
    assert not {"3", "5", "7"} & set(items[0]) and "4" not in items[2]
    assert steps[0].tolist() == [1] * 9 + [2]


def test_user_embeddings_signature(exports, run, tiny_dataset):
    _, brute, _ = exports
    split, users, histories = _test_requests(tiny_dataset, 5)
    signature = tf.saved_model.load(str(brute)).signatures[EMBEDDINGS_SIGNATURE]
    out = signature(user_id=tf.constant(users), history=tf.constant(pad_histories(histories)))
    vectors, prompts = AutoRegressiveRecall(run[1]).user_vectors(split.users[:5], split.histories[:5], num_steps=2)
    np.testing.assert_allclose(out["embeddings"].numpy(), vectors, rtol=1e-5, atol=1e-5)
    assert out["first_item"].numpy().astype(str).tolist() == tiny_dataset.item_vocab.decode(prompts[:, 0])


def test_one_step_export_still_returns_h1_and_h2(run, tiny_dataset, tmp_path):
    run_dir, model = run
    requests = Run.open(run_dir).sample_requests()
    path = export_model(
        model,
        run_dir / "items.txt",
        run_dir / "users.txt",
        tmp_path,
        "recgpt",
        (10,),
        sample_users=requests["users"],
        sample_histories=requests["histories"],
    ).path
    split, users, histories = _test_requests(tiny_dataset, 4)
    loaded = tf.saved_model.load(str(path)).signatures
    out = loaded[EMBEDDINGS_SIGNATURE](user_id=tf.constant(users), history=tf.constant(pad_histories(histories)))
    assert out["embeddings"].shape == (4, 2, 32)
    vectors, _ = AutoRegressiveRecall(model).user_vectors(split.users[:4], split.histories[:4], num_steps=2)
    np.testing.assert_allclose(out["embeddings"].numpy(), vectors, rtol=1e-5, atol=1e-5)
    steps = loaded[RECOMMEND_SIGNATURE](user_id=tf.constant(users), history=tf.constant(pad_histories(histories)))["recall_step"]
    assert (steps.numpy() == 1).all()


def test_wrong_dtype_or_rank_is_rejected(exports):
    _, brute, _ = exports
    signature = tf.saved_model.load(str(brute)).signatures[RECOMMEND_SIGNATURE]
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        signature(user_id=tf.constant([1, 2]), history=tf.constant([["a"], ["b"]]))
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        signature(user_id=tf.constant(["1"]), history=tf.constant(["a", "b"]))


def _flavour(kind, exports, partitioned):
    return {"brute-force": exports[1], "scann": exports[2], "partitioned": partitioned}[kind]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["brute-force", "partitioned"])
def test_stock_flavours_load_and_answer_in_a_process_without_scann(kind, exports, partitioned, tiny_dataset):
    path = _flavour(kind, exports, partitioned)
    _, users, histories = _test_requests(tiny_dataset, 8)
    expected, _, _ = _signature_lists(path, users, histories)
    code = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        f"sig = tf.saved_model.load({str(path)!r}).signatures['serving_default']\n"
        f"out = sig(user_id=tf.constant({users!r}), history=tf.constant({pad_histories(histories).tolist()!r}))\n"
        "assert 'scann' not in sys.modules, 'scann was imported'\n"
        "print(json.dumps(out['item_ids'].numpy().astype(str).tolist()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected.tolist()


@pytest.mark.parametrize(
    "kind, missing", [("brute-force", set()), ("partitioned", set()), ("scann", {"Scann>ScannSearchBatched", "Scann>TensorsToScann"})]
)
def test_every_op_is_registered_in_stock_tensorflow_except_scanns(kind, missing, exports, partitioned):
    path = _flavour(kind, exports, partitioned)
    ops = saved_model_ops(path)
    assert {"MatMul", "TopKV2", "LookupTableFindV2"} <= ops  # the walk reaches the signature's function bodies
    if kind == "partitioned":
        assert {"RaggedRange", "GatherV2", "BatchMatMulV2"} <= ops
    assert unregistered_ops(path) == missing


def test_partitioned_export_served_by_the_endpoint_gives_the_in_process_lists(partitioned, tiny_dataset, tmp_path):
    from recgpt_tf.serving import GrpcClient, LocalServer

    shutil.copytree(partitioned, tmp_path / "recgpt" / "1")
    _, users, histories = _test_requests(tiny_dataset, 16)
    expected, expected_scores, _ = _signature_lists(partitioned, users, histories)
    with LocalServer(tmp_path, grpc_port=0, rest_port=0) as server:
        rows = GrpcClient(f"127.0.0.1:{server.grpc_port}", "recgpt").recommend(users, histories)
    assert [row["item_ids"] for row in rows] == expected.tolist()
    np.testing.assert_allclose([row["scores"] for row in rows], expected_scores, rtol=1e-5)


def test_saved_model_cli_lists_both_signatures(exports):
    _, brute, _ = exports
    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run([str(cli), "show", "--dir", str(brute), "--all"], capture_output=True, text=True, timeout=300).stdout
    for fragment in (
        "signature_def['serving_default']",
        "signature_def['user_embeddings']",
        "inputs['history']",
        "DT_STRING",
        "outputs['recall_step']",
        "DT_INT32",
        "outputs['embeddings']",
        "shape: (-1, 2, 32)",
    ):
        assert fragment in shown, fragment


def test_a_failed_export_publishes_nothing(run, tmp_path, monkeypatch):
    run_dir, model = run

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(publish, "write_warmup", broken)
    with pytest.raises(OSError, match="simulated"):
        _export(run_dir, model, tmp_path, "brute-force")
    assert list((tmp_path / "recgpt").iterdir()) == []  # no version, no staging leftovers


@pytest.mark.parametrize("kind", ["scann", "partitioned"])
def test_an_index_below_the_recall_threshold_is_refused(kind, run, tmp_path):
    run_dir, model = run
    with pytest.raises(ExportError, match=r"recall@10 >= 1.01 .*no search setting reached it.*nothing was published"):
        _export(run_dir, model, tmp_path, kind, recall_threshold=1.01)
    assert not (tmp_path / "recgpt").exists()  # refused before anything was written


@pytest.mark.slow
def test_xla_compiled_decoder_gives_the_same_lists_and_serves(exports, run, tiny_dataset, tmp_path):
    """`--jit-compile` changes how the decoder runs (one XLA program over a fixed window), not what it returns."""
    from recgpt_tf.serving import GrpcClient, LocalServer

    run_dir, model = run
    _, brute, _ = exports
    jit = _export(run_dir, model, tmp_path, "brute-force", jit_compile=True)
    assert json.loads((jit / "assets.extra" / "recgpt.json").read_text())["jit_compile"] is True
    _, users, histories = _test_requests(tiny_dataset)
    histories = histories[:-3] + [[], ["no-such-item"], histories[0] * 3]  # cold start, OOV, longer than the window
    expected_ids, expected_scores, expected_steps = _signature_lists(brute, users, histories)
    ids, scores, steps = _signature_lists(jit, users, histories)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(steps, expected_steps)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-4)
    # The endpoint runs the SignatureDef in a session, as TF Serving does with XLA enabled.
    with LocalServer(tmp_path, grpc_port=0, rest_port=0) as server:
        rows = GrpcClient(f"127.0.0.1:{server.grpc_port}", "recgpt").recommend(users[:4], histories[:4])
    assert [row["item_ids"] for row in rows] == expected_ids[:4].tolist()


def test_version_allocation_and_the_export_base_files(tmp_path):
    from recgpt_tf.errors import ConfigError
    from recgpt_tf.export import allocate_version, update_export_base

    assert allocate_version(tmp_path, "recgpt", None) == (tmp_path / "recgpt", 1)
    (tmp_path / "recgpt" / "1").mkdir(parents=True)
    (tmp_path / "recgpt" / ".3.staging-x").mkdir()  # a staging directory is not a version
    assert allocate_version(tmp_path, "recgpt", None) == (tmp_path / "recgpt", 2)
    with pytest.raises(ExportError, match="1 already exists"):
        allocate_version(tmp_path, "recgpt", 1)
    with pytest.raises(ConfigError, match="name must be a model name a server serves"):
        allocate_version(tmp_path, "../elsewhere", None)
    with pytest.raises(ConfigError, match="name must be a model name a server serves"):
        allocate_version(tmp_path, "..", None)  # the export base's parent
    update_export_base(tmp_path, "recgpt")
    update_export_base(tmp_path, "recgpt_scann")
    config = (tmp_path / "models.config").read_text()
    assert config.count("config {") == 2 and 'base_path: "/models/recgpt_scann"' in config
    assert "max_batch_size" in (tmp_path / "batching_parameters.txt").read_text()
