"""Which TF Serving runs the exports: each export kind loaded by older TensorFlow runtimes, each in its own
virtual environment (the runtime a TF Serving release of that version links), answers compared with the
pinned TensorFlow's.

For each index kind (and the partitioned index's bfloat16 storage with its exact re-score, which the
tuning picks when it is faster) an export of a random-weight model over 500 items is written with the
pinned stack;
each runtime then loads it with plain `tf.saved_model.load` (no recgpt_tf, no ScaNN) in a subprocess and
answers fixed requests with every signature. A runtime is verified for a kind when it loads the export
and its item lists equal the pinned ones (scores within 1e-4). The ops of the exports a runtime verified
are recorded ("verified_ops"); a test keeps every new brute-force and partitioned export inside them.

    python -m venv /work/compat/tf2.16 && /work/compat/tf2.16/bin/pip install "tensorflow-cpu==2.16.*"
    python benchmarks/tf_serving_compat.py --runtime 2.16=/work/compat/tf2.16/bin/python \
        --runtime 2.18=/work/compat/tf2.18/bin/python --json benchmarks/results/tf_serving_compat.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import recgpt_tf  # noqa: F401  (first: it selects Keras 2, which TFRS needs, before TensorFlow loads)

# isort: split

import numpy as np
import tensorflow as tf

from lab import export_synthetic, random_requests, stamp, synthetic_model, write_report
from recgpt_tf.contract import EMBEDDINGS_SIGNATURE, EXCLUDING_SIGNATURE, RECOMMEND_SIGNATURE, pad_histories
from recgpt_tf.export.stock_ops import saved_model_ops
from recgpt_tf.retrieval import PartitionedIndex
from recgpt_tf.retrieval.scann_artifacts import default_num_leaves, train_kmeans_partition

KINDS = ("brute-force", "partitioned", "partitioned-bfloat16", "scann")

# Runs under the other runtime: TensorFlow alone.
_ANSWER = """
import json, sys
import numpy as np
import tensorflow as tf
request = json.load(sys.stdin)
out = {"tensorflow": tf.__version__}
try:
    signatures = tf.saved_model.load(request["path"]).signatures
except Exception as error:
    out["error"] = f"{type(error).__name__}: " + (str(error).strip().splitlines() or [""])[0][:300]
    print(json.dumps(out)); sys.exit(0)
inputs = {k: tf.constant(np.array(v, dtype=object)) for k, v in request["inputs"].items()}
for name in request["signatures"]:
    wanted = signatures[name].structured_input_signature[1]
    result = signatures[name](**{k: v for k, v in inputs.items() if k in wanted})
    out[name] = {k: (v.numpy().astype(str).tolist() if v.dtype == tf.string else v.numpy().tolist()) for k, v in result.items()}
print(json.dumps(out))
"""


def answers(python: str, path: Path, inputs: dict) -> dict:
    request = {"path": str(path), "inputs": inputs, "signatures": [RECOMMEND_SIGNATURE, EXCLUDING_SIGNATURE, EMBEDDINGS_SIGNATURE]}
    result = subprocess.run([python, "-c", _ANSWER], input=json.dumps(request), capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def same(pinned: dict, other: dict) -> bool:
    for name in (RECOMMEND_SIGNATURE, EXCLUDING_SIGNATURE, EMBEDDINGS_SIGNATURE):
        for key, value in pinned[name].items():
            theirs = other.get(name, {}).get(key)
            if theirs is None:
                return False
            if isinstance(value[0][0] if isinstance(value[0], list) else value[0], str):
                if value != theirs:
                    return False
            elif not np.allclose(np.array(value, dtype=float), np.array(theirs, dtype=float), atol=1e-4):
                return False
    return True


def bfloat16_index(model) -> tuple:
    """The partitioned index's other storage flavour, with its exact re-score (the tuning picks float32 or
    this one by speed, so both must load everywhere), as an (index, metadata) pair for `publish_with_index`."""
    candidates = model.candidate_embeddings().numpy()
    partition = train_kmeans_partition(candidates, default_num_leaves(len(candidates)))
    index = PartitionedIndex(candidates, partition, leaves_to_search=2, storage_dtype="bfloat16", rescore_depth=20)
    return index, {**index.get_config(), "recall": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", action="append", default=[], metavar="VERSION=PYTHON", help="an older runtime's interpreter")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/tf_serving_compat.json"))
    args = parser.parse_args()

    tf.random.set_seed(0)
    model = synthetic_model(500)
    work = Path(tempfile.mkdtemp(prefix="recgpt-compat-"))
    users, histories = random_requests(np.random.default_rng(0), 500, 16)
    inputs = {"user_id": users, "history": pad_histories(histories).tolist(), "exclude": pad_histories([h[:2] for h in histories]).tolist()}
    runtimes = {"pinned": sys.executable, **dict(item.split("=", 1) for item in args.runtime)}
    report = stamp({"runtimes": {}, "kinds": {}})
    verified_ops: set[str] = set()
    for kind in KINDS:
        flavour, prebuilt = ("partitioned", bfloat16_index(model)) if kind == "partitioned-bfloat16" else (kind, None)
        path = export_synthetic(model, flavour, work / kind, index=prebuilt)
        ops = sorted(saved_model_ops(path))
        pinned = answers(sys.executable, path, inputs)  # the pinned interpreter too runs it without recgpt_tf or ScaNN
        entry = report["kinds"][kind] = {"ops": len(ops), "runtimes": {}}
        for version, python in runtimes.items():
            other = pinned if version == "pinned" else answers(python, path, inputs)
            report["runtimes"][version] = other.get("tensorflow")
            loads = "error" not in other
            entry["runtimes"][version] = {"loads": loads, "answers_equal_pinned": loads and "error" not in pinned and same(pinned, other)}
            if not loads:
                entry["runtimes"][version]["error"] = other["error"]
        if all(r["answers_equal_pinned"] for r in entry["runtimes"].values()):
            verified_ops.update(ops)
        print(kind, json.dumps(entry["runtimes"]), flush=True)
    report["verified_runtimes"] = sorted(v for v in report["runtimes"].values() if v)
    report["verified_ops"] = sorted(verified_ops)  # every op of the kinds all runtimes loaded and answered alike
    write_report(args.json, report)


if __name__ == "__main__":
    main()
