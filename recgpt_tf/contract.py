"""Names of the SavedModel contract, shared by export/ and serving/ (architecture.md)."""

RECOMMEND_SIGNATURE = "serving_default"
EMBEDDINGS_SIGNATURE = "user_embeddings"

INPUT_USER_ID = "user_id"  # string [batch]
INPUT_HISTORY = "history"  # string [batch, T], oldest first, right-padded with ""

OUTPUT_ITEM_IDS = "item_ids"  # string [batch, k]
OUTPUT_SCORES = "scores"  # float32 [batch, k]
OUTPUT_RECALL_STEP = "recall_step"  # int32 [batch, k], 1 or 2
OUTPUT_EMBEDDINGS = "embeddings"  # float32 [batch, steps, d]
OUTPUT_FIRST_ITEM = "first_item"  # string [batch]

METADATA_FILE = "recgpt.json"  # in assets.extra/
WARMUP_FILE = "tf_serving_warmup_requests"  # in assets.extra/
INDEX_KINDS = ("brute-force", "partitioned", "scann")  # recgpt.json "index.kind"
AUTO_INDEX = "auto"  # partitioned for large catalogues, brute force below (retrieval.resolve_index_kind)
INDEX_CHOICES = (*INDEX_KINDS, AUTO_INDEX)  # what `--index` / `index_kind` accept
# From this catalogue size up, "auto" exports the partitioned index (benchmarks/index_latency.py
# measures where its signature beats brute force on a trained model); below it exact search is as fast.
PARTITIONED_MIN_ITEMS = 50_000
