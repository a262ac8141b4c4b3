"""Prometheus metrics of the inference node (low-cardinality labels only)."""

from prometheus_client import Counter, Gauge, Histogram

TOKENS = Counter("loranet_inference_tokens_total", "Tokens processed by the engine", ["kind"])  # prefill | decode
TOKENS_PER_S = Gauge("loranet_inference_tokens_per_second", "Generated tokens per second over the last window")
BATCH_SIZE = Histogram(
    "loranet_inference_batch_sequences", "Sequences in one engine forward", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
BATCH_TOKENS = Histogram(
    "loranet_inference_batch_tokens", "Tokens in one engine forward", buckets=(1, 4, 16, 64, 256, 1024, 4096)
)
STEP_SECONDS = Histogram(
    "loranet_inference_step_seconds",
    "Time of one engine step (forward + sampling)",
    buckets=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3),
)
QUEUE_SECONDS = Histogram(
    "loranet_inference_queue_seconds",
    "Time a job waited before its prefill",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30),
)
JOBS = Counter("loranet_inference_jobs_total", "Jobs finished by the engine", ["finish_reason"])
ADAPTER_CACHE = Counter(
    "loranet_inference_adapter_cache_total", "Adapter cache lookups and evictions", ["tier", "outcome"]
)  # tier: device | host; outcome: hit | miss | eviction | prefetch
RUNNING = Gauge("loranet_inference_running_sequences", "Sequences in the running batch")
WAITING = Gauge("loranet_inference_waiting_jobs", "Jobs queued for admission")
KV_FREE_BLOCKS = Gauge("loranet_inference_kv_free_blocks", "Free pages of the KV pool")
