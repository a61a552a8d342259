"""Scoring gathered candidates in core TF ops: asymmetric hashing (ScaNN's LUT16 codes)
against exact float32 / bfloat16 dot products, at equal candidate counts.

The partitioned index gathers each query's candidate blocks and scores them. ScaNN
scores with AH codes (4-bit codes per 2-dim block, a per-query lookup table), which
moves 16x fewer bytes than float32; but in TF ops a LUT lookup is a gather per code,
not a SIMD shuffle. This measures which is faster on this CPU, per query batch, for
the scoring step alone (the gather of codes or vectors included, the re-score not:
AH would need an exact re-score on top, the exact scorers do not).

    python benchmarks/ah_scoring.py --json benchmarks/results/ah_scoring.json
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import recgpt_tf  # noqa: F401  (first: it selects Keras 2, which TFRS needs, before TensorFlow loads)

# isort: split

import numpy as np
import tensorflow as tf

from lab import utc_now
from recgpt_tf.files import write_json


def p50_ms(fn, calls: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--candidates", type=int, nargs="+", default=[2_000, 10_000, 40_000])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    blocks = args.dim // 2  # ScaNN's default: 2 dimensions per AH block, 16 centres each
    table = rng.normal(size=(args.items, args.dim)).astype(np.float32)
    codes = tf.constant(rng.integers(0, 16, size=(args.items, blocks)).astype(np.uint8))
    codebook = tf.constant(rng.normal(size=(blocks, 16, 2)).astype(np.float32))  # (blocks, centres, dims per block)
    f32, bf16 = tf.constant(table), tf.constant(table.astype(tf.bfloat16.as_numpy_dtype))
    offsets = tf.range(blocks, dtype=tf.int32) * 16

    @tf.function
    def ah(queries, rows):  # rows (B, W)
        lut = tf.einsum("bjd,jcd->bjc", tf.reshape(queries, [-1, blocks, 2]), codebook)  # (B, blocks, 16)
        index = tf.cast(tf.gather(codes, rows), tf.int32) + offsets  # (B, W, blocks)
        return tf.reduce_sum(tf.gather(tf.reshape(lut, [tf.shape(queries)[0], -1]), index, batch_dims=1), axis=-1)  # (B, W)

    def exact(vectors):
        @tf.function
        def score(queries, rows):
            gathered = tf.gather(vectors, rows)  # (B, W, d)
            return tf.cast(tf.matmul(gathered, tf.cast(queries, vectors.dtype)[:, :, tf.newaxis])[:, :, 0], tf.float32)

        return score

    scorers = {"ah_lut16": ah, "exact_float32": exact(f32), "exact_bfloat16": exact(bf16)}
    result = {
        "items": args.items,
        "dim": args.dim,
        "ah_blocks": blocks,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "measured": utc_now(),
        "p50_ms": {},
    }
    for width in args.candidates:
        for batch in (1, 64):
            queries = tf.constant(rng.normal(size=(batch, args.dim)).astype(np.float32))
            rows = tf.constant(np.sort(rng.choice(args.items, size=(batch, width)), axis=1).astype(np.int32))
            key = f"candidates_{width}_batch_{batch}"
            result["p50_ms"][key] = {name: p50_ms(lambda: fn(queries, rows), 50 if batch == 1 else 10) for name, fn in scorers.items()}
            print(key, result["p50_ms"][key], flush=True)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
