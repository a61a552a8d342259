"""Pre-training quality on the paper's datasets, next to the paper's rows.

Trains RecGPT with the default configuration (or overrides) on each dataset,
selects the epoch on validation NDCG@10, and reports validation and test
HR/NDCG@{5,10,20} under the paper's protocol, the popularity baseline, the
objective, epochs, seconds per epoch, sequences per second and the time of one
full-ranking evaluation of every user.

    python benchmarks/quality.py --json results/quality.json --markdown results/quality.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import time
from pathlib import Path

import recgpt_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from recgpt_tf.config import ModelConfig, TrainConfig
from recgpt_tf.data import Dataset
from recgpt_tf.evaluation import evaluate_model, evaluate_popularity
from recgpt_tf.runs import Run
from recgpt_tf.training import pretrain

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_DATA = [SHARED / "Beauty.txt", SHARED / "Sports_and_Outdoors.txt"]

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


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}"


def run_one(path: Path, model_overrides: dict, train_config: TrainConfig, run_root: Path) -> dict:
    dataset = Dataset.from_file(path)
    model_config = ModelConfig(num_items=dataset.num_items, num_users=dataset.num_users, **model_overrides)
    pretrain(Run.create(run_root / dataset.name, dataset, model_config, seed=train_config.seed), dataset, train_config, verbose=2)
    return describe_pretraining(run_root / dataset.name, path)


def describe_pretraining(run_dir: Path, path: Path) -> dict:
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


def markdown(results: list[dict], when: str) -> str:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/quality.json"))
    parser.add_argument("--markdown", type=Path, default=Path("benchmarks/results/quality.md"))
    parser.add_argument("--runs", type=Path, default=Path("runs/quality"))
    for field in dataclasses.fields(TrainConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=None)
    for field in dataclasses.fields(ModelConfig):
        if field.name in ("num_items", "num_users"):
            continue
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(field.default, bool) else type(field.default)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=None)
    args = parser.parse_args()

    train_config = TrainConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None}
    )
    model_overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ModelConfig)
        if f.name not in ("num_items", "num_users") and getattr(args, f.name) is not None
    }
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = [run_one(path, model_overrides, train_config, args.runs) for path in args.data]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"measured": when, "machine": machine(), "results": results}, indent=2) + "\n")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(markdown(results, when))
    print(markdown(results, when))


if __name__ == "__main__":
    main()
