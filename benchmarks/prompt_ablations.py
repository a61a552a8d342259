"""Prompt-tuning variants (K, the stage's schedule) from finished runs, one run per seed.

Each run given is one seed of a `seeds.py --stages all` row: pre-trained, then prompt-tuned (the `reference`,
read from the run as it stands). Each variant forks the run (its pre-trained weights, vocabularies and
configuration), prompt-tunes it with one change to the run's own prompt-stage settings (so at its seed and
batch size), and records the validation figures of the epoch picked by validation NDCG@10, and with
`--test` every test variant of `Run.evaluate` (one-step and two-step recall, m_n chosen on validation).
Variants are chosen on validation only. One JSON holds one dataset. It is rewritten after every fork; a
rerun skips the rows it holds, an interrupted fork resumes, and a fork tuned with other settings is tuned
anew.

    python benchmarks/prompt_ablations.py --data ../shared/data/Beauty.txt --test \
        --run runs/seeds/Beauty/defaults+all@seed{1,2,3} --json benchmarks/results/prompt_sweep_Beauty.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lab import machine, seed_summary, utc_now  # noqa: E402
from recgpt_tf.config import PromptConfig, TrainConfig  # noqa: E402
from recgpt_tf.experimental import LabPromptConfig  # noqa: E402
from recgpt_tf.files import write_json, write_text_atomic  # noqa: E402
from recgpt_tf.runs import Run  # noqa: E402

REFERENCE = "reference"
# name -> (changes to the run's PromptConfig, changes to its training settings, what it tests)
VARIANTS: dict[str, tuple[dict, dict, str]] = {
    REFERENCE: ({}, {}, "the run's own prompt stage, as it trained"),
    # The paper tunes K from 0 to 6 and finds 1 to 3 best (its Figure 3).
    "K0": ({"prompt_window": 0}, {}, "no generated prompts (K 0): θ_LP tuned on the plain sequences"),
    "K2": ({"prompt_window": 2}, {}, "two generated prompts before each real item (K 2)"),
    "K3": ({"prompt_window": 3}, {}, "three generated prompts before each real item (K 3)"),
    # The default stage keeps its first epoch on every seed of the defaults (best epoch 1 of 4): a slower
    # schedule may find a better optimum than the first step does.
    "lr_1e-4": ({}, {"learning_rate": 1e-4}, "prompt-tuning at learning rate 1e-4 (default 5e-4)"),
}


def variant_config(recorded: dict, name: str) -> PromptConfig:
    """The prompt stage `recorded` (a run's `stage_config("prompt")`) with variant `name`'s changes."""
    prompt_changes, train_changes, _ = VARIANTS[name]
    train = TrainConfig.from_recorded(recorded, **train_changes)
    prompt = {"prompt_window": recorded["prompt_window"], "loss_positions": recorded.get("loss_positions", "all"), **prompt_changes}
    if prompt["loss_positions"] == "all":  # the product's loss; another is the lab's (recgpt_tf.experimental)
        del prompt["loss_positions"]
        return PromptConfig(**prompt, train=train)
    return LabPromptConfig(**prompt, train=train)


def run_variant(run: Run, data: Path, name: str, with_test: bool) -> dict:
    """Prompt-tunes a fork of `run` with variant `name` (the reference is `run` itself) and returns its row."""
    dataset = run.dataset(data)
    start = time.perf_counter()
    if name == REFERENCE:
        fork = run
    else:
        fork = run.fork(run.path.parent / f"{run.path.name}_prompt" / name)
        config = variant_config(run.stage_config("prompt"), name)
        if fork.stage_config("prompt") != json.loads(json.dumps(config.to_dict())):  # untuned, or tuned otherwise
            fork.prompt_tune(fork.load_model("pretrain"), dataset, config, verbose=2)
    summary = fork.summary("prompt")
    row = {
        "seed": summary["config"]["seed"],
        "run": str(fork.path),
        "valid": summary["valid"],
        "best_epoch": summary["best_epoch"],
        "epochs": summary["epochs"],
        "train_seconds": round(summary["seconds"], 1),
        "finished": utc_now(),
    }
    if with_test:
        report = (name == REFERENCE and fork.evaluation()) or fork.evaluate(dataset)
        row["test_variants"] = {v: report["results"][v] for v in ("recgpt_1", "recgpt")}
        row["two_step"] = report["two_step"]
    row["run_seconds"] = round(time.perf_counter() - start, 1)
    return row


def markdown(report: dict) -> str:
    cell = lambda s: f"{s['mean']:.4f} ± {s['std']:.4f}"  # noqa: E731
    lines = [
        f"{report['dataset']}, prompt-tuning variants from the runs {', '.join(report['runs'])}: {report['protocol']}; "
        f"{report['machine']}.",
        "",
        "| variant | seeds | valid HR@10 | valid NDCG@10 | test RecGPT_1 HR@10 / NDCG@10 | test RecGPT HR@10 / NDCG@10 | best epochs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in report["variants"].items():
        if "runs" not in entry:
            continue
        summary = seed_summary(list(entry["runs"].values()))
        tests = summary.get("test_variants", {})
        lines.append(
            f"| {name} | {len(summary['seeds'])} | {cell(summary['valid']['HR@10'])} | {cell(summary['valid']['NDCG@10'])} | "
            + " | ".join(f"{cell(tests[v]['HR@10'])} / {cell(tests[v]['NDCG@10'])}" if v in tests else "—" for v in ("recgpt_1", "recgpt"))
            + f" | {', '.join(str(r['best_epoch']) for r in entry['runs'].values())} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, nargs="+", required=True, help="runs with finished prompt-tuning, one per seed")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), default=[REFERENCE, "K0", "K2", "K3"])
    parser.add_argument("--test", action="store_true", help="also score every test variant (never used to choose)")
    args = parser.parse_args()

    runs = [Run.open(path) for path in args.run]
    for run in runs:
        if run.summary("prompt") is None:
            parser.error(f"{run.path} has no finished prompt stage: train it with --stages all first")
    report = json.loads(args.json.read_text()) if args.json.exists() else {}
    for run in runs:
        if report.get("dataset", run.config.get("dataset")) != run.config.get("dataset"):
            parser.error(f"{args.json} holds {report['dataset']}; {run.path} trained on {run.config.get('dataset')}: use another --json")
    report.update(
        dataset=runs[0].config.get("dataset"),
        runs=[str(run.path) for run in runs],
        machine=machine(),
        protocol="leave-one-out, full ranking, history excluded; epoch chosen on validation NDCG@10; mean ± sample std over seeds",
        reference={k: v for k, v in runs[0].stage_config("prompt").items() if k != "seed"},  # the runs' own, seed apart
    )
    variants = report.setdefault("variants", {})
    for name in args.only:
        prompt_changes, train_changes, description = VARIANTS[name]
        entry = variants.setdefault(name, {"runs": {}})
        entry.update(description=description, prompt_changes=prompt_changes, train_changes=train_changes)
        for run in runs:
            row = entry["runs"].get(run.path.name)
            if row is not None and ("test_variants" in row or not args.test):
                continue
            entry["runs"][run.path.name] = run_variant(run, args.data, name, args.test)
            entry.update(seed_summary(list(entry["runs"].values())))
            valid = entry["runs"][run.path.name]["valid"]
            print(f"{name} {run.path.name}: valid NDCG@10 {valid['NDCG@10']:.4f}  HR@10 {valid['HR@10']:.4f}", flush=True)
            write_json(args.json, report)
            write_text_atomic(args.json.with_suffix(".md"), markdown(report))


if __name__ == "__main__":
    main()
