"""Prompt-tuning ablations on the validation split, from one finished pre-training run.

Each variant forks the pre-trained run (same weights, vocabularies and configuration), prompt-tunes
it with one change to the default `PromptConfig`, and records the validation figures of the epoch
picked by validation NDCG@10. The test split is never read. Results are appended to the JSON after
each variant; a rerun skips the variants already there.

    python benchmarks/prompt_ablations.py --run runs/ablations/Beauty/post_ln+token_budget \
        --data ../shared/data/Beauty.txt --json benchmarks/results/prompt_ablations_Beauty.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shutil
from pathlib import Path

from recgpt_tf.benchmarking import machine  # noqa: E402
from recgpt_tf.files import write_json  # noqa: E402
from recgpt_tf.runs import Run  # noqa: E402
from recgpt_tf.training import PromptConfig, prompt_tune  # noqa: E402

# name -> (changes to PromptConfig().train, what it tests)
VARIANTS: dict[str, tuple[dict, str]] = {
    "bucketed": ({"batching": "bucketed"}, "length buckets of batch_size sequences"),
    "token_budget": ({"batching": "token_budget"}, "length buckets sized to equal targets per batch"),
}


def run_variant(run: Run, data: Path, name: str, forks: Path) -> dict:
    train_changes, description = VARIANTS[name]
    fork_dir = forks / name
    if (fork_dir / "prompt" / "summary.json").exists():
        shutil.rmtree(fork_dir)  # finished but missing from the JSON: redo it rather than trust a stale one
    fork = run.fork(fork_dir)
    config = PromptConfig()
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **train_changes))
    _, summary = prompt_tune(fork.load_model("pretrain"), fork.dataset(data), fork, config, verbose=0)
    return {
        "description": description,
        "train_changes": train_changes,
        "valid": summary["valid"],
        "best_epoch": summary["best_epoch"],
        "epochs": summary["epochs"],
        "train_seconds": round(summary["seconds"], 1),
        "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a run directory with finished pre-training")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--forks", type=Path, default=None, help="where the variants' runs go (default: RUN_prompt_ablations)")
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS))
    args = parser.parse_args()

    run = Run.open(args.run)
    forks = args.forks or args.run.parent / f"{args.run.name}_prompt_ablations"
    report = json.loads(args.json.read_text()) if args.json.exists() else {}
    report.update(
        run=str(args.run),
        pretrain=run.config.get("pretrain"),
        machine=machine(),
        protocol="validation split only: leave-one-out, full ranking, history excluded; epoch chosen on validation NDCG@10",
        reference=PromptConfig().to_dict(),
    )
    results = report.setdefault("variants", {})
    for name in args.only or list(VARIANTS):
        if name in results:
            continue
        results[name] = run_variant(run, args.data, name, forks)
        valid = results[name]["valid"]
        print(
            f"{name:<14} valid NDCG@10 {valid['NDCG@10']:.4f}  HR@10 {valid['HR@10']:.4f}  "
            f"best epoch {results[name]['best_epoch']}/{results[name]['epochs']}  {results[name]['train_seconds']:.0f}s",
            flush=True,
        )
        write_json(args.json, report)


if __name__ == "__main__":
    main()
