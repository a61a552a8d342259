"""The paper's Table 2 and Table 3 on Beauty and Sports, next to the published figures.

Per dataset, with the default configuration: pre-training (timed, as in
benchmarks/quality.py), the Fine-tuning baseline, prompt-tuning (K=1), then every
variant on the test split with the two-step m chosen per k on validation. Writes JSON,
a Markdown table and PNG plots. The K sensitivity study, at several seeds, is
`benchmarks/prompt_ablations.py` (its K variants, from the runs of `seeds.py --stages all`).

    python benchmarks/paper_tables.py --json benchmarks/results/paper_tables.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lab import (  # noqa: E402
    machine,
    pretraining_markdown,
    pretraining_report,
    utc_now,
)
from recgpt_tf.config import ModelConfig  # noqa: E402
from recgpt_tf.data import Dataset  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_DATA = [SHARED / "Beauty.txt", SHARED / "Sports_and_Outdoors.txt"]
from recgpt_tf.config import TrainConfig  # noqa: E402
from recgpt_tf.runs import Run  # noqa: E402
from recgpt_tf.training import PromptConfig  # noqa: E402

# Table 2 (HR@5, NDCG@5, HR@10, NDCG@10) and Table 3 rows of the paper.
PAPER_T2 = {
    "Beauty": {
        "pretrain": (0.0418, 0.0272, 0.0610, 0.0334),
        "fine_tuning": (0.0421, 0.0275, 0.0618, 0.0338),
        "recgpt_1": (0.0426, 0.0283, 0.0651, 0.0356),
        "recgpt": (0.0440, 0.0289, 0.0654, 0.0357),
        "pretrain_two_step": (None, None, 0.0560, 0.0315),
    },
    "Sports_and_Outdoors": {
        "pretrain": (0.0203, 0.0132, 0.0324, 0.0171),
        "fine_tuning": (0.0212, 0.0141, 0.0328, 0.0178),
        "recgpt_1": (0.0213, 0.0141, 0.0333, 0.0180),
        "recgpt": (0.0219, 0.0143, 0.0339, 0.0181),
        "pretrain_two_step": (None, None, 0.0226, 0.0135),
    },
}
ROWS = [
    ("pretrain", "Pre-train (Variant_3)"),
    ("fine_tuning", "Fine-tuning"),
    ("pretrain_two_step", "Variant_1: two-step, no prompt-tuning"),
    ("recgpt_1", "RecGPT_1 (Variant_2)"),
    ("recgpt", "RecGPT"),
]


def one_dataset(path: Path, runs: Path) -> dict:
    run_dir = runs / path.stem
    quality_file = runs / f"{path.stem}.quality.json"  # beside the run: only `Run` writes inside it
    run = Run.open(run_dir) if (run_dir / "pretrain" / "summary.json").exists() else None
    if run is None:
        dataset = Dataset.from_file(path)
        model_config = ModelConfig(num_items=dataset.num_items, num_users=dataset.num_users)
        Run.create(run_dir, dataset, model_config).pretrain(dataset, TrainConfig(), verbose=2)
        pre = pretraining_report(run_dir, path)
        run = Run.open(run_dir)
    elif quality_file.exists():
        pre = json.loads(quality_file.read_text())
    else:  # pre-trained elsewhere (e.g. by benchmarks/backbone_ablations.py with the same settings)
        pre = pretraining_report(run_dir, path)
    quality_file.write_text(json.dumps(pre, indent=2))
    dataset = run.dataset(path)
    stages = {}
    if not run.has_stage("finetune"):
        _, stages["finetune"] = run.fine_tune(run.load_model("pretrain"), dataset, verbose=2)
    if not run.has_stage("prompt"):
        _, stages["prompt"] = run.prompt_tune(run.load_model("pretrain"), dataset, PromptConfig(1), verbose=2)
    for stage in ("finetune", "prompt"):
        stages[stage] = run.summary(stage)
    start = time.perf_counter()
    report = run.evaluate(dataset)
    report["evaluate_seconds"] = time.perf_counter() - start
    return {"pretrain_run": pre, "stages": stages, "report": report}


def markdown(results: list[dict], when: str) -> str:
    fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        f"Measured {when} on {machine()}. Test split, leave-one-out, full ranking, history excluded; "
        "two-step m chosen per k on validation.",
        "",
    ]
    for r in results:
        rep = r["report"]
        name = rep["dataset"]
        lines += [
            f"**{name}** ({rep['users']} users, {rep['items']} items; two-step m_n for k=10: "
            f"{rep['two_step'].get('m')}_{rep['two_step'].get('n')})",
            "",
            "| variant | HR@5 | NDCG@5 | HR@10 | NDCG@10 | paper HR@5 | paper NDCG@5 | paper HR@10 | paper NDCG@10 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for key, label in ROWS:
            if key not in rep["results"]:
                continue
            m = rep["results"][key]
            paper = PAPER_T2.get(name, {}).get(key, (None,) * 4)
            lines.append(
                f"| {label} | {fmt(m['HR@5'])} | {fmt(m['NDCG@5'])} | {fmt(m['HR@10'])} | {fmt(m['NDCG@10'])} | "
                + " | ".join(fmt(v) for v in paper)
                + " |"
            )
        gen = r["stages"]["prompt"]["generation"]
        lines += [
            "",
            f"Prompt generation (K=1): {gen.get('sequences_per_second', float('nan')):.0f} sequences/s; "
            f"prompt-tuning {r['stages']['prompt']['seconds']:.0f}s ({r['stages']['prompt']['epochs']} epochs); "
            f"fine-tuning {r['stages']['finetune']['seconds']:.0f}s.",
            "",
        ]
    return "\n".join(lines) + "\n"


def plots(results: list[dict], directory: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install '.[notebooks]'): no plots")
        return []
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        for variant, sweep in r["report"]["valid_m_sweep_k10"].items():
            labels = list(sweep)
            ax.plot(labels, [sweep[m]["NDCG@10"] for m in labels], marker="o", label=f"{r['report']['dataset']} {variant}")
    ax.set_xlabel("m_n (k = 10)"), ax.set_ylabel("validation NDCG@10"), ax.legend(fontsize=7), ax.set_title("Two-step split m_n")
    fig.tight_layout(), fig.savefig(directory / "m_n_sweep.png", dpi=120), written.append(str(directory / "m_n_sweep.png"))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", default=DEFAULT_DATA)
    parser.add_argument("--runs", type=Path, default=Path("runs/paper"))
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/paper_tables.json"))
    args = parser.parse_args()
    when = utc_now()
    results = [one_dataset(path, args.runs) for path in args.data]
    out = args.json.parent
    out.mkdir(parents=True, exist_ok=True)
    pngs = plots(results, out)
    args.json.write_text(json.dumps({"measured": when, "machine": machine(), "results": results, "plots": pngs}, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(markdown(results, when))
    (out / "quality.json").write_text(
        json.dumps({"measured": when, "machine": machine(), "results": [r["pretrain_run"] for r in results]}, indent=2) + "\n"
    )
    (out / "quality.md").write_text(pretraining_markdown([r["pretrain_run"] for r in results], when))
    print(pretraining_markdown([r["pretrain_run"] for r in results], when))
    print(markdown(results, when))


if __name__ == "__main__":
    main()
