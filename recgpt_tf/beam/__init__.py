"""recgpt-tf's data and batch steps on Apache Beam (the `beam` extra: `pip install "recgpt-tf[beam]"`), as TFX
runs its own: locally on the DirectRunner, at scale on Flink, Spark or Dataflow, with the same code.

- `convert`: interaction logs to per-user sequences, vocabularies with counts and TFRecord shards.
- `inference`: batch recommendations through the exported SavedModel's own signature (RunInference).
"""
