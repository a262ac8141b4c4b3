"""Scheduler settings (LORANET_* environment variables)."""

from loranet.settings import CommonSettings


class SchedulerSettings(CommonSettings):
    scheduler_id: str = "scheduler"
    # Ed25519 seed (hex, mode 0600) that signs work assignments; "" = <state_dir>/<scheduler_id>.key.
    # Its public key is announced in KV `schedulers` (verifiers refuse results no announced key assigned).
    state_dir: str = ".devnet/state"
    key_file: str = ""
    # Admitted jobs are collected this long before a routing plan sends them (0 = at once).
    batch_window_ms: float = 20.0
    max_batch_jobs: int = 64
    # Jobs fetched and in admission or waiting for a node at once: the memory bound.  When
    # every node is full these slots fill up and further jobs wait in JetStream.
    admission_slots: int = 256
    # A queued group's score grows by 1 per aging_s waited; a full group scores 1.
    aging_s: float = 1.0
    # A node may hold slots_total * node_jobs_per_slot jobs dispatched and not answered.
    node_jobs_per_slot: int = 4
    # A node with the adapter hot is preferred until its load (outstanding / capacity) is this
    # much above a cold node's: then the group goes to the cold node (bench/scheduler_bench.py).
    cold_penalty: float = 0.25
    # Adapters assumed to fit a node's hot cache when predicting affinity.
    node_adapter_slots: int = 16
    # Memory a cold adapter needs on a node that reports free memory (CUDA nodes).
    adapter_bytes: int = 64 * 1024 * 1024
    # Device classes accepted (prefixes such as "cuda"); [] = any.
    node_devices: list[str] = []
    # Refresh of the node registry view and of adapter look-ups.
    registry_refresh_s: float = 0.5
    adapter_cache_s: float = 30.0
    # Clock skew tolerated on a job's created_at.
    max_clock_skew_s: float = 300.0
    # A non-empty queue is planned again at least this often (room also frees on results).
    no_node_retry_s: float = 0.25
    # How often the WORK stream is checked for dead nodes' unfinished batches.
    failover_check_s: float = 1.0
    # A node whose durable holds no batch has answered every job sent to it this long ago.
    idle_reconcile_s: float = 5.0
    # Lock each job's max fee on chain at admission (settlement.reserve); a job that will not run is
    # released (settlement.release). Off: only check the escrow balance (require_escrow).
    reserve_escrow: bool = True
    # Per client key: jobs a second on average and the burst admitted; beyond, jobs are rejected.
    client_rate_per_s: float = 50.0
    client_burst: int = 500
    require_escrow: bool = True
    # Heartbeats are checked against what their node declared in the Registry (settlement.stake by its
    # key; refreshed every declaration_refresh_s): a contradicting node gets no work. Undeclared nodes
    # get work unless require_declared.
    check_declarations: bool = True
    require_declared: bool = False
    declaration_refresh_s: float = 30.0
