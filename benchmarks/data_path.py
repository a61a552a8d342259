"""The data path's cost curve (issue 34): interaction logs grouped into per-user sequences and written as
TFRecord shards (`recgpt convert`), at growing sizes; wall time, CPU time and peak memory of each run.

A log of N interactions has N/20 users and N/100 items (the issue's 5M-row log: 250,000 users, 50,000
items), `user_id, item_id, timestamp` as int64, users uniform, items skewed (a Zipf-like draw), timestamps
random epoch seconds; written as one Parquet file in row groups of 1,000,000 rows (seeded, made once and kept
under --work). Each measured command runs in its own process (`recgpt convert LOG OUT --shards 4`, or the
Beam pipeline with `--runner`), measured by the operating system (getrusage of the child: user + system CPU,
maximum resident set).

    python benchmarks/data_path.py --rows 1000000 5000000 --json benchmarks/results/data_path.json
    python benchmarks/data_path.py --rows 5000000 --runner DirectRunner --workers 1 2 --json ...
    python benchmarks/data_path.py --plot benchmarks/results/data_path.png --json benchmarks/results/data_path.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_log(path: Path, rows: int, seed: int = 0, row_group: int = 1_000_000) -> Path:
    """The synthetic log of `rows` interactions at `path` (made once)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    users, items = max(1, rows // 20), max(1, rows // 100)
    tmp = path.with_name(f".{path.name}.tmp")
    with pq.ParquetWriter(tmp, pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64())])) as writer:
        for start in range(0, rows, row_group):
            size = min(row_group, rows - start)
            item = np.minimum((rng.pareto(1.2, size=size) * items / 50).astype(np.int64), items - 1)
            writer.write_table(
                pa.table(
                    {
                        "user_id": rng.integers(0, users, size=size),
                        "item_id": item,
                        "timestamp": rng.integers(1_600_000_000, 1_700_000_000, size=size),
                    }
                )
            )
    tmp.replace(path)
    return path


def measure(command: list[str]) -> dict:
    """Wall and CPU seconds and peak memory (MB) of `command`, run by a fresh process of this script
    (`--child`) so that the operating system's peak is this command's own."""
    result = subprocess.run([sys.executable, __file__, "--child", *command], capture_output=True, text=True)
    if result.returncode:
        return {"failed": result.returncode, "stderr": result.stderr[-2000:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def child(command: list[str]) -> None:
    """Runs `command`; prints its wall and CPU seconds and peak resident memory as a JSON line."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        sys.stderr.write(result.stderr[-4000:])
        sys.exit(result.returncode)
    summary = {
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_mb": round(usage.ru_maxrss / 1024, 1),
        "output": (result.stdout.strip().splitlines() or [""])[-1],
    }
    print(json.dumps(summary))


def plot(report: dict, path: Path) -> None:
    """Wall time and peak memory against interactions, one line per path (one process, Beam's workers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (seconds, memory) = plt.subplots(1, 2, figsize=(10, 4))
    names = sorted({name for runs in report["runs"].values() for name in runs})
    for name in names:
        points = sorted((int(rows), runs[name]) for rows, runs in report["runs"].items() if name in runs and "wall_seconds" in runs[name])
        label = "one process" if name == "local" else name.replace("beam_DirectRunner_", "Beam DirectRunner, workers: ")
        seconds.plot([r / 1e6 for r, _ in points], [e["wall_seconds"] for _, e in points], marker="o", label=label)
        memory.plot([r / 1e6 for r, _ in points], [e["peak_mb"] / 1024 for _, e in points], marker="o", label=label)
    for axis, title in ((seconds, "wall time (s)"), (memory, "peak memory (GB)")):
        axis.set_xlabel("interactions (millions)")
        axis.set_title(f"recgpt convert: {title}")
        axis.grid(alpha=0.3)
    seconds.legend()
    figure.suptitle(f"{report.get('machine', '')}, {report.get('updated', '')}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--runner", default=None, help="also (or only, with --no-local) the Beam pipeline on this runner")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="Beam DirectRunner workers (--direct_num_workers)")
    parser.add_argument("--no-local", action="store_true", help="skip the one-machine path")
    parser.add_argument("--work", type=Path, default=Path("/tmp/recgpt-data-path"))
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--plot", type=Path, help="draw the curve of --json into this PNG, and measure nothing")
    args = parser.parse_args()
    if args.plot:
        return plot(json.loads(args.json.read_text()), args.plot)
    from lab import machine, utc_now
    from recgpt_tf.files import write_json

    args.work.mkdir(parents=True, exist_ok=True)
    report = json.loads(args.json.read_text()) if args.json.exists() else {"runs": {}}
    report.update(machine=machine(), updated=utc_now())
    recgpt = os.path.join(os.path.dirname(sys.executable), "recgpt")
    for rows in args.rows:
        log = make_log(args.work / f"log_{rows}.parquet", rows)
        paths = [] if args.no_local else [("local", [])]
        if args.runner:
            paths += [
                (
                    f"beam_{args.runner}_{w}",
                    ["--runner", args.runner, f"--direct_num_workers={w}"] + (["--direct_running_mode=multi_processing"] if w > 1 else []),
                )
                for w in args.workers
            ]
        for name, flags in paths:
            out = args.work / f"out_{rows}_{name}" / "train.tfrecord.gz"
            entry = measure([recgpt, "convert", str(log), str(out), "--shards", "4", *flags])
            report["runs"].setdefault(str(rows), {})[name] = {**entry, "measured": utc_now()}
            print(rows, name, json.dumps(entry), flush=True)
            write_json(args.json, report)  # partial results survive an interruption


if __name__ == "__main__":
    main()
