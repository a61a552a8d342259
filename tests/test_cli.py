import json

import pytest

from recgpt_tf.cli import main
from recgpt_tf.data import synthetic_sequences

TINY_FLAGS = [
    "--hidden-size",
    "16",
    "--num-layers",
    "1",
    "--intermediate-size",
    "32",
    "--max-length",
    "20",
    "--epochs",
    "2",
    "--batch-size",
    "64",
    "--quiet",
]


@pytest.mark.slow
def test_train_then_evaluate_writes_the_contract_json(tmp_path, capsys):
    data = tmp_path / "data.txt"
    seqs = synthetic_sequences(num_users=150, num_items=60, num_topics=5, seed=4)
    data.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in seqs.items()))
    assert main(["train", str(data), "--out", str(tmp_path / "run"), *TINY_FLAGS]) == 0
    assert main(["evaluate", str(tmp_path / "run"), str(data), "--json", str(tmp_path / "eval.json")]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["dataset"] == "data" and report["users"] == 150 and report["items"] == 60
    assert report["protocol"] == "leave-one-out, full ranking, history excluded"
    assert set(report["results"]["pretrain"]) == {"HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"}
    assert report["train_seconds"] > 0
    assert "pretrain" in capsys.readouterr().out


def test_bad_data_exits_with_file_and_line(tmp_path, capsys):
    data = tmp_path / "bad.txt"
    data.write_text("1 2 3\n2 4 oops\n")
    assert main(["train", str(data), "--out", str(tmp_path / "run"), *TINY_FLAGS]) == 1  # the work failed
    assert "bad.txt:2: item id 'oops' is not an integer" in capsys.readouterr().err


def test_evaluate_names_a_missing_run(tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("1 2 3 4\n")
    assert main(["evaluate", str(tmp_path / "nowhere"), str(data)]) == 1
    assert "not a trained run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_export_tunes_the_partitioned_index_and_reports_its_recall(tmp_path, capsys):
    data = tmp_path / "data.txt"
    seqs = synthetic_sequences(num_users=300, num_items=400, num_topics=8, seed=5)
    data.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in seqs.items()))
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--stages", "pretrain", *TINY_FLAGS]) == 0
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "base"), "--name", "m", "--index", "partitioned"]) == 0
    printed = capsys.readouterr().out
    assert "partitioned index" in printed and "recall@10 against exact search: step_1" in printed
    meta = json.loads((tmp_path / "base" / "m" / "1" / "assets.extra" / "recgpt.json").read_text())["index"]
    assert meta["kind"] == "partitioned" and meta["requested"] == "partitioned" and min(meta["recall"].values()) >= 0.95
    assert 1 <= meta["leaves_to_search"] <= meta["num_leaves"] and meta["settings_tried"]
    # auto: below PARTITIONED_MIN_ITEMS items it is exact search.
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "base"), "--name", "m"]) == 0
    meta = json.loads((tmp_path / "base" / "m" / "2" / "assets.extra" / "recgpt.json").read_text())["index"]
    assert meta == {"kind": "brute-force", "requested": "auto"}


def test_rerunning_train_resumes_the_recorded_architecture_not_todays_defaults(tmp_path, capsys):
    """After an upgrade changes the defaults, the same command (without the model flags) still resumes a run."""
    data = tmp_path / "data.txt"
    seqs = synthetic_sequences(num_users=120, num_items=50, num_topics=4, seed=6)
    data.write_text("".join(f"{u} {' '.join(items)}\n" for u, items in seqs.items()))
    run = str(tmp_path / "run")
    assert main(["train", str(data), "--out", run, "--stages", "pretrain", *TINY_FLAGS]) == 0
    capsys.readouterr()
    assert main(["train", str(data), "--out", run, "--stages", "pretrain", "--epochs", "2", "--batch-size", "64", "--quiet"]) == 0
    assert "pre-training already trained with these settings, kept" in capsys.readouterr().out
    assert main(["train", str(data), "--out", run, "--stages", "pretrain", "--hidden-size", "32", "--quiet"]) == 1
    assert "hidden_size 16 -> 32" in capsys.readouterr().err


def test_library_errors_name_the_flag_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data.txt"
    data.write_text("1 2 3 4\n2 3 4 5\n")
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--filter-mix", "1", *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recgpt train: error: --filter-mix must be in [0, 1)"), err
    assert main(["export", str(tmp_path / "nowhere"), str(tmp_path / "base"), "--name", "m"]) == 1
    assert "not a trained run directory" in capsys.readouterr().err
    # A usage error (2) is told from a failed run (1) and a failed server call (3).
    assert (
        main(["train", str(data), "--out", str(tmp_path / "r2"), "--validation-users", "0", "--format", "tfrecord", "--stages", "pretrain"])
        == 2
    )
    assert "--validation-users must be >= 1; got 0" in capsys.readouterr().err  # it became 50,000

    # An error the library did not mean to raise is a bug: it propagates with its traceback.
    import recgpt_tf.runs

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(recgpt_tf.runs.Run, "open", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["evaluate", str(tmp_path / "run"), str(data)])


def test_train_help_shows_the_products_settings_on_one_screen(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = capsys.readouterr().out
    assert len(shown.splitlines()) <= 60
    for lab in ("--layer-norm", "--activation", "--position-mode", "--ema-momentum", "--weight-decay", "--examples", "--target-copies"):
        assert lab not in shown  # the lab's switches are the lab's (recgpt_tf.experimental), not the product's flags
    assert "--epochs" in shown and "More settings (docs/cli.md): --num-heads" in shown and "--filter-mix" in shown
    with pytest.raises(SystemExit):
        main(["train", "data.txt", "--out", "run", "--layer-norm", "pre"])
