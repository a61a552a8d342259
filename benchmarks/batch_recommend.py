"""Offline batch recommendations (`recgpt recommend-batch`): users per second through the exported
signature, at Beauty's catalogue size and at a million items, on this machine.

The model has random weights (the cost does not depend on what it learned) and the export is the real
one (`recgpt_tf.benchmarking.export_synthetic`); requests are random histories of 3..29 items, answered
by `recgpt_tf.inference.batch.recommend_batch` exactly as the CLI does, into a JSON-lines file.

    python benchmarks/batch_recommend.py --json benchmarks/results/batch_recommend.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from recgpt_tf.benchmarking import export_synthetic, random_requests, stamp, synthetic_model, write_report
from recgpt_tf.inference.batch import recommend_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[12101, 1_000_000])
    parser.add_argument("--users", type=int, default=4096, help="requests answered per catalogue")
    parser.add_argument("--index", default="brute-force")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/batch_recommend.json"))
    args = parser.parse_args()

    report = stamp({"index": args.index, "batch_size": args.batch_size, "catalogues": {}})
    for items in args.items:
        work = Path(tempfile.mkdtemp(prefix="recgpt-batch-"))
        version = export_synthetic(synthetic_model(items), args.index, work)
        users, histories = random_requests(np.random.default_rng(0), items, args.users)
        requests = ({"user_id": u, "history": h, "exclude": None} for u, h in zip(users, histories))
        stats = recommend_batch(version, requests, work / "recs.jsonl", args.batch_size, progress=False)
        report["catalogues"][str(items)] = {
            "users": stats["users"],
            "seconds": round(stats["seconds"], 2),
            "users_per_second": round(stats["users_per_second"], 1),
        }
        print(items, report["catalogues"][str(items)], flush=True)
    write_report(args.json, report)


if __name__ == "__main__":
    main()
