"""benchmarks/seeds.py's result file: processes training different recipes into one JSON keep each other's rows."""

import json
import multiprocessing
import runpy
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmarks' harness, benchmarks/lab.py, as the scripts find it beside them
SAVE = runpy.run_path(str(BENCHMARKS / "seeds.py"))["save"]
RECIPES = [f"recipe{i}" for i in range(4)]
SEEDS = 40


def _save_rows(path: Path, recipe: str) -> None:
    """One process's saves: a row per seed, as seeds.py records each finished run."""
    report = {"dataset": "toy", "machine": "test", "protocol": "test", "recipes": {}}
    for seed in range(SEEDS):
        runs = report["recipes"].setdefault(recipe, {"runs": {}})["runs"]
        runs[str(seed)] = {"seed": seed, "valid": {"HR@10": 0.1, "NDCG@10": 0.05}, "best_epoch": 1}
        report = SAVE(path, report, [recipe])


def test_concurrent_saves_keep_every_recipe(tmp_path):
    path = tmp_path / "results" / "seeds_toy.json"
    context = multiprocessing.get_context("fork")  # the children only read and write JSON
    workers = [context.Process(target=_save_rows, args=(path, recipe), daemon=True) for recipe in RECIPES]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * len(RECIPES)

    written = json.loads(path.read_text())["recipes"]
    assert {recipe: len(written.get(recipe, {}).get("runs", {})) for recipe in RECIPES} == dict.fromkeys(RECIPES, SEEDS)
    table = path.with_suffix(".md").read_text()
    assert all(f"| {recipe} | {SEEDS} |" in table for recipe in RECIPES)
