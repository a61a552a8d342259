"""The benchmark harness that every script in `benchmarks/` uses: the machine and date stamp of a result,
timing percentiles, reports written as JSON (and Markdown), a free local port, and a synthetic-catalogue
export for the speed benchmarks. Benchmarks import this module, never each other.
"""

from __future__ import annotations

import recgpt_tf  # noqa: F401 (first: it selects Keras 2 and quiets TensorFlow's C++ log before TensorFlow loads)
import recgpt_tf.experimental  # noqa: F401 (the lab's configs known, so that every benchmark opens the lab's runs)

# isort: split

import argparse
import dataclasses
import datetime
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from recgpt_tf.config import ModelConfig, TrainConfig
from recgpt_tf.contract import pad_histories
from recgpt_tf.data import Dataset
from recgpt_tf.data.synthetic import structured_sequences
from recgpt_tf.data.vocab import Vocabulary
from recgpt_tf.evaluation import evaluate_model, evaluate_popularity
from recgpt_tf.files import write_json, write_text_atomic
from recgpt_tf.runs import Run

# Paper Table 2, (HR@5, NDCG@5, HR@10, NDCG@10).
PAPER = {
    "Beauty": {"SASRec": (0.0398, 0.0261, 0.0614, 0.0331), "Pre-train": (0.0418, 0.0272, 0.0610, 0.0334)},
    "Sports_and_Outdoors": {"SASRec": (0.0203, 0.0135, 0.0324, 0.0174), "Pre-train": (0.0203, 0.0132, 0.0324, 0.0171)},
}
# RecBole 1.2.1 SASRec (CE), paper protocol: Beauty on this machine kind by issue 10's author (21 epochs,
# time box); Sports by benchmarks/peers/recbole_sasrec.py on a GPU, 10 epochs (peer_sasrec_*_h200_partial.json).
PEER_FILES = {"Beauty": "peer_sasrec_Beauty_cpu.json", "Sports_and_Outdoors": "peer_sasrec_Sports_and_Outdoors_h200_partial.json"}
PEERS = {
    "Beauty": {"RecBole SASRec (CE, 21 epochs)": (None, None, 0.0915, 0.0561)},
    "Sports_and_Outdoors": {"RecBole SASRec (CE, 10 epochs)": (0.0332, 0.0233, 0.0488, 0.0283)},
}


# The synthetic export: random weights (serving cost does not depend on what the model learned), a fixed
# user base, request histories of 3..SYNTHETIC_MAX_HISTORY items, the two-step 9_1 recall.
SYNTHETIC_STEPS = (9, 1)
SYNTHETIC_USERS = 1000
SYNTHETIC_MAX_HISTORY = 29


def machine() -> str:
    """What a figure was measured on: architecture, cores, Python and TensorFlow versions."""
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, TensorFlow {tf.__version__}"


SEED_METRICS = ("HR@10", "NDCG@10")  # what a seed row's summary keeps


def mean_std(values: list[float]) -> dict:
    """{"mean", "std"}: the mean and the sample standard deviation (0 for one value) of a figure over seeds."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def seed_summary(rows: list[dict]) -> dict:
    """Mean and sample standard deviation over seed rows (benchmarks/seeds.py, prompt_ablations.py) of each
    split's HR@10 and NDCG@10 (`valid`, `test`) and, where every row has them, of each stage's validation
    (`stage_valid`) and each test variant (`test_variants`: pre-training alone, prompt-tuned with one step,
    RecGPT with the two-step recall)."""
    result = {"seeds": [row["seed"] for row in rows]}
    for split in ("valid", "test"):
        values = {m: [row[split][m] for row in rows if split in row] for m in SEED_METRICS}
        if rows and all(len(v) == len(rows) for v in values.values()):
            result[split] = {m: mean_std(v) for m, v in values.items()}
    for field in ("stage_valid", "test_variants"):
        if rows and all(field in row for row in rows):
            names = [n for n in rows[0][field] if all(n in row[field] for row in rows)]
            result[field] = {n: {m: mean_std([row[field][n][m] for row in rows]) for m in SEED_METRICS} for n in names}
    return result


def utc_now() -> str:
    """The time a result is measured, as every result file records it ("2026-12-01 06:14 UTC")."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def stamp(report: dict) -> dict:
    """`report` with the date and machine every result carries ("measured", "machine")."""
    return {**report, "measured": utc_now(), "machine": machine()}


def write_report(path: Path | str, report: dict, markdown: str | None = None) -> None:
    """Writes `report` as JSON at `path` (atomically) and, when given, `markdown` beside it (.md)."""
    path = Path(path)
    write_json(path, report)
    if markdown is not None:
        write_text_atomic(path.with_suffix(".md"), markdown)


def latency_summary(latencies_ms: list[float], seconds: float | None = None) -> dict:
    """p50 / p99 of `latencies_ms` (and the throughput when the wall `seconds` are given)."""
    summary = {
        "requests": len(latencies_ms),
        "p50_ms": float(np.percentile(latencies_ms, 50)),
        "p99_ms": float(np.percentile(latencies_ms, 99)),
    }
    if seconds:
        summary["throughput_rps"] = len(latencies_ms) / seconds
    return summary


def time_calls(fn: Callable[[int], object], calls: int, warmup: int = 3) -> dict:
    """Times `calls` calls of `fn(i)` after `warmup` untimed ones: {"p50_ms", "p99_ms", "calls"}."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        times.append(1000 * (time.perf_counter() - start))
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "calls": calls}


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drip_predict_body(port: int, stop: threading.Event, every: float = 1.0, length: int = 100_000) -> None:
    """A slow client: a predict's headers to the REST port on 127.0.0.1, then its body one byte every
    `every` seconds until `stop` is set or the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"POST /v1/models/recgpt:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode())
        while not stop.wait(every):
            try:
                sock.sendall(b" ")
            except OSError:
                return


def synthetic_model(num_items: int, hidden_size: int = 64):
    """A RecGPT with random weights over `num_items` items: the architecture the speed figures were
    measured with (2 blocks, FFN 4x, no dropout)."""
    from recgpt_tf.models import RecGPT

    model = RecGPT(
        num_items=num_items,
        num_users=SYNTHETIC_USERS,
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_layers=2,
        dropout=0.0,
    )
    model({"user_id": tf.zeros([1], tf.int32), "item_ids": tf.zeros([1, 1], tf.int32)})
    return model


def random_requests(rng: np.random.Generator, num_items: int, batch: int) -> tuple[list[str], list[list[str]]]:
    """`batch` (user, history) requests in the synthetic vocabularies ("1".."N")."""
    lengths = rng.integers(3, SYNTHETIC_MAX_HISTORY + 1, size=batch)
    histories = [[str(i) for i in rng.integers(1, num_items + 1, size=n)] for n in lengths]
    return [str(u) for u in rng.integers(1, SYNTHETIC_USERS + 1, size=batch)], histories


def as_tensors(users: list[str], histories: list[list[str]]) -> tuple[tf.Tensor, tf.Tensor]:
    """The signature's inputs for `users` and `histories`."""
    return tf.constant(users), tf.constant(pad_histories(histories))


def export_synthetic(model, flavour: str, work: Path | None = None, name: str = "recgpt", jit_compile: bool = False, index=None) -> Path:
    """Exports `model` with the real exporter (vocabularies "1".."N", "1".."USERS"); returns the version path.
    `index`: an (index, metadata) pair to embed instead of tuning one (`publish_with_index`)."""
    from recgpt_tf.export import export_model, publish_with_index

    work = Path(work or tempfile.mkdtemp(prefix="recgpt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    items, users = work / "items.txt", work / "users.txt"
    if not items.exists():
        items.write_text("".join(f"{i}\n" for i in range(1, model.num_items + 1)))
        users.write_text("".join(f"{u}\n" for u in range(1, SYNTHETIC_USERS + 1)))
    sample_users, sample_histories = random_requests(np.random.default_rng(1), model.num_items, 64)
    requests = {"sample_users": sample_users, "sample_histories": sample_histories, "jit_compile": jit_compile}
    if index is not None:
        return publish_with_index(model, items, users, work / "base", name, SYNTHETIC_STEPS, index, **requests).path
    return export_model(
        model, items, users, work / "base", name, SYNTHETIC_STEPS, index_kind=flavour, recall_threshold=0.0, **requests
    ).path


def pretraining_report(run_dir: Path, path: Path) -> dict:
    """The quality document of a finished pre-training run: its configuration and timing, the selected
    epoch's validation figures, test figures and the popularity baseline."""
    run = Run.open(run_dir)
    dataset = run.dataset(path)
    model = run.load_model("pretrain")
    summary = run.summary("pretrain")
    train = run.config["pretrain"]
    test = dataset.split("test")
    start = time.perf_counter()
    test_metrics = evaluate_model(model, test)
    eval_seconds = time.perf_counter() - start
    return {
        "dataset": dataset.name,
        "statistics": dataset.statistics(),
        "model": run.model_config.to_dict(),
        "train": train,
        "objective": train["objective"],
        "epochs": summary["epochs"],
        "best_epoch": summary["best_epoch"],
        "train_seconds": summary["seconds"],
        "seconds_per_epoch": summary["seconds_per_epoch"],
        "sequences_per_second": summary["sequences_per_second"],
        "full_ranking_eval_seconds": eval_seconds,
        "eval_users": len(test),
        "valid": summary["valid"],
        "test": test_metrics,
        "popularity_test": evaluate_popularity(dataset, test),
    }


def pretraining_markdown(results: list[dict], when: str) -> str:
    """The quality table of `pretraining_report` documents, beside the paper's rows and the peer's (quoted)."""
    fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        f"Measured {when} on {machine()}. Test split, leave-one-out, full ranking, history excluded.",
        "",
        "| dataset | model | HR@5 | NDCG@5 | HR@10 | NDCG@10 | epochs | s/epoch | seq/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        name = r["dataset"]
        for label, row in PAPER.get(name, {}).items():
            lines.append(f"| {name} | {label} (quoted: the paper's Table 2) | " + " | ".join(fmt(v) for v in row) + " | | | |")
        for label, row in PEERS.get(name, {}).items():
            lines.append(
                f"| {name} | {label} (quoted, not measured by this script: {PEER_FILES[name]}) | "
                + " | ".join(fmt(v) for v in row)
                + " | | | |"
            )
        t, p = r["test"], r["popularity_test"]
        lines.append(f"| {name} | popularity | {fmt(p['HR@5'])} | {fmt(p['NDCG@5'])} | {fmt(p['HR@10'])} | {fmt(p['NDCG@10'])} | | | |")
        lines.append(
            f"| {name} | **recgpt-tf pre-train ({r['objective']})** | {fmt(t['HR@5'])} | {fmt(t['NDCG@5'])} | "
            f"{fmt(t['HR@10'])} | {fmt(t['NDCG@10'])} | {r['epochs']} (best {r['best_epoch']}) | "
            f"{r['seconds_per_epoch']:.1f} | {r['sequences_per_second']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def add_catalogue_arguments(parser: argparse.ArgumentParser) -> None:
    """The synthetic catalogue's flags (`make_dataset` reads them), used by trained_catalogue.py and distributed_throughput.py."""
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--topics", type=int, default=2000)
    parser.add_argument("--mean-length", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)


def make_dataset(args) -> Dataset:
    sequences = structured_sequences(args.users, args.items, args.topics, args.mean_length, args.seed)
    return Dataset(
        name=f"synthetic-{args.items}",
        item_vocab=Vocabulary([str(i) for i in range(1, args.items + 1)]),
        user_vocab=Vocabulary([str(u) for u in range(1, args.users + 1)]),
        users=np.arange(1, args.users + 1, dtype=np.int32),
        sequences=sequences,
    )


def configs(num_items: int, num_users: int, model_changes: dict, train_changes: dict) -> tuple[ModelConfig, TrainConfig]:
    """The product's `ModelConfig` and `TrainConfig` with the changes, or where a change names a setting only the lab
    has (`recgpt_tf.experimental`: another layout, positions or activation; weight decay, a moving average,
    prefixes, target copies), the lab's config: a recipe of the product's settings trains the product itself."""
    from recgpt_tf.experimental import LabModelConfig, LabTrainConfig

    def pick(product, lab, changes: dict):
        return product if set(changes) <= {field.name for field in dataclasses.fields(product)} else lab

    model_class = pick(ModelConfig, LabModelConfig, model_changes)
    train_class = pick(TrainConfig, LabTrainConfig, train_changes)
    return model_class(num_items=num_items, num_users=num_users, **model_changes), train_class(**train_changes)
