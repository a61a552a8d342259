"""Offline batch recommendations (`recgpt recommend-batch`): users per second through the exported
signature, at Beauty's catalogue size and at a million items, on this machine.

The model has random weights (the cost does not depend on what it learned) and the export is the real
one (`lab.export_synthetic`); requests are random histories of 3..29 items, answered
by `recgpt_tf.inference.batch.recommend_batch` exactly as the CLI does, into a JSON-lines file; with
`--beam-workers`, also by the Beam pipeline (`recgpt_tf.beam.inference`, RunInference on the DirectRunner,
multi-processing with 2 or more workers), from the same requests as a JSON-lines file. Each Beam time is the
whole pipeline's: start-up, model loads in each worker, the answers, and the shards and manifest written.

    python benchmarks/batch_recommend.py --json benchmarks/results/batch_recommend.json
    python benchmarks/batch_recommend.py --index partitioned --beam-workers 1 2 --json ...
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from lab import export_synthetic, random_requests, stamp, synthetic_model, write_report
from recgpt_tf.inference.batch import recommend_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[12101, 1_000_000])
    parser.add_argument("--users", type=int, default=4096, help="requests answered per catalogue")
    parser.add_argument("--index", default="brute-force")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--beam-workers", type=int, nargs="*", default=[], help="also on Beam's DirectRunner with these worker counts")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/batch_recommend.json"))
    args = parser.parse_args()

    report = stamp({"index": args.index, "batch_size": args.batch_size, "catalogues": {}})
    for items in args.items:
        work = Path(tempfile.mkdtemp(prefix="recgpt-batch-"))
        version = export_synthetic(synthetic_model(items), args.index, work)
        users, histories = random_requests(np.random.default_rng(0), items, args.users)
        requests = [{"user_id": u, "history": h, "exclude": None} for u, h in zip(users, histories)]
        stats = recommend_batch(version, requests, work / "recs.jsonl", args.batch_size, progress=False)
        entry = {"users": stats["users"], "seconds": round(stats["seconds"], 2), "users_per_second": round(stats["users_per_second"], 1)}
        if args.beam_workers:
            from recgpt_tf.beam.inference import recommend_batch as recommend_on_beam

            (work / "requests.jsonl").write_text("".join(json.dumps({"user_id": u, "history": h}) + "\n" for u, h in zip(users, histories)))
            for workers in args.beam_workers:
                options = ["--runner", "DirectRunner", f"--direct_num_workers={workers}"]
                options += ["--direct_running_mode=multi_processing"] if workers > 1 else []
                start = time.perf_counter()
                recommend_on_beam(
                    version, work / "requests.jsonl", work / f"beam{workers}" / "recs.jsonl", workers, args.batch_size, beam_args=options
                )
                seconds = time.perf_counter() - start
                entry[f"beam_direct_{workers}_workers"] = {
                    "seconds": round(seconds, 2),
                    "users_per_second": round(len(requests) / seconds, 1),
                }
        report["catalogues"][str(items)] = entry
        print(items, entry, flush=True)
        write_report(args.json, report)


if __name__ == "__main__":
    main()
