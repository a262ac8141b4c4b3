"""Scheduler settings (LORANET_* environment variables)."""

from loranet.settings import CommonSettings


class SchedulerSettings(CommonSettings):
    scheduler_id: str = "scheduler"
    # Jobs for one node are collected this long before their work batch is sent.
    batch_window_ms: float = 20.0
    max_batch_jobs: int = 64
    # Jobs fetched and in admission at once.
    admission_slots: int = 256
    # Refresh of the node registry view and of adapter look-ups.
    registry_refresh_s: float = 0.5
    adapter_cache_s: float = 30.0
    # Clock skew tolerated on a job's created_at.
    max_clock_skew_s: float = 300.0
    # When no node can take a job, it is handed back to JetStream for this long.
    no_node_retry_s: float = 2.0
    require_escrow: bool = True
