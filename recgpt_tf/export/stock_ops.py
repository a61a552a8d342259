"""Which ops a SavedModel needs that stock TensorFlow (and so stock TF Serving) does not register.

Importing scann (which TFRS, and so this package, does) registers ScaNN's
`Scann>…` ops in the process, so the registry is consulted in a fresh Python
process that imports TensorFlow alone. `python -m recgpt_tf.export.stock_ops DIR…`
prints each SavedModel's unregistered ops and exits 1 if there are any.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from recgpt_tf.errors import ExportError

# Runs in a clean interpreter: TensorFlow only, then the registry lookup.
_REGISTRY_CHECK = (
    "import json, sys\n"
    "import tensorflow as tf\n"
    "from tensorflow.python.framework import op_def_registry\n"
    "assert 'scann' not in sys.modules\n"
    "ops = json.load(sys.stdin)\n"
    "print(json.dumps(sorted(op for op in ops if op_def_registry.get(op) is None)))\n"
)


def saved_model_ops(path: Path | str) -> set[str]:
    """Every op type in the SavedModel's graphs and function libraries (calls of
    library functions by name excluded: they are not ops)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    ops, functions = set(), set()
    for meta_graph in saved.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            functions.add(function.signature.name)
            ops.update(node.op for node in function.node_def)
    return ops - functions


def unregistered_ops(path: Path | str, timeout: float = 300) -> set[str]:
    """The SavedModel's ops that stock TensorFlow's op registry lacks (checked in a clean process)."""
    result = subprocess.run(
        [sys.executable, "-c", _REGISTRY_CHECK],
        input=json.dumps(sorted(saved_model_ops(path))),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if result.returncode != 0:
        raise ExportError(f"the op-registry check of {path} failed: {result.stderr[-2000:]}")
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    if not paths:
        print("usage: python -m recgpt_tf.export.stock_ops SAVED_MODEL_DIR...", file=sys.stderr)
        return 2
    status = 0
    for path in paths:
        missing = sorted(unregistered_ops(path))
        print(f"{path}: {'stock TensorFlow ops only' if not missing else 'not registered in stock TensorFlow: ' + ', '.join(missing)}")
        status |= bool(missing)
    return status


if __name__ == "__main__":
    sys.exit(main())
