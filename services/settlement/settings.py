"""Settlement settings (LORANET_* environment variables)."""

from pydantic import Field, field_validator

from loranet.settings import CommonSettings

FAULT_POINTS = ("", "before_send", "after_send", "after_receipt", "after_publish", "before_rerun_publish")


class SettlementSettings(CommonSettings):
    # "" = the in-process EVM (embedded devnet); else a JSON-RPC URL (anvil, an L2).
    rpc_url: str = ""
    deployer_key: str = ""  # "" = the devnet deployer key (never holds value)
    settler_key: str = ""
    treasury: str = ""
    token_address: str = ""
    registry_address: str = ""
    settlement_address: str = ""
    # An epoch closes at this many jobs or after this long, whichever first.
    epoch_max_jobs: int = 64
    epoch_max_s: float = 1.0
    # Serve settlement.reserve / settlement.release: the scheduler locks each job's max fee at
    # admission and releases jobs that will not run.
    reservations: bool = True
    # settlement.reserve batches the reservations asked for within this window into one transaction.
    reserve_window_s: float = 0.05
    # Independent accepting verdicts needed before a job is paid.
    verdict_quorum: int = 1
    # Count a verdict only when its Ed25519 key is bound to an active verifier registered in the Registry
    # (Registry.register_verifier) and it pays that verifier's payout address; any other verdict is
    # dead-lettered and changes nothing. The devnet stakes and registers its verifiers and turns this on.
    registered_verifiers_only: bool = False
    verifier_cache_s: float = 30.0
    # A job whose result the verifiers finally reject is run again on another node (every node that
    # failed it excluded) up to this many times; its escrow reservation stays held, the cheating node
    # is slashed and unpaid, and only when the re-runs are spent (or no other node can take it) is the
    # client refunded. 0 = refund at the first rejection. Needs the scheduler (jobs.rerun).
    max_reruns: int = Field(default=2, ge=0, le=15)
    # Devnet convenience: settlement.faucet hands out OPEN from the deployer.
    faucet: bool = True
    price_per_prompt_token: int = 10**12
    price_per_output_token: int = 4 * 10**12
    price_per_job: int = 0
    # Share of a staked node's stake (and unbonding stake) slashed to the treasury for each
    # result the verifiers reject, once per result (evidence = the result's hash); 0 = never.
    slash_bps: int = Field(default=1000, ge=0, le=10_000)
    # Crash testing only: exit abruptly (os._exit(137)) at this point of an epoch's commit:
    # before_send | after_send | after_receipt | after_publish | before_rerun_publish (a re-run recorded,
    # not yet published) ("" = never).
    fault_point: str = ""
    fault_after: int = 0  # pass the fault point this many times before crashing at it
    # The KV bucket holding the epoch being committed (the crash-recovery journal).
    journal_bucket: str = "settlement"  # loranet.p.SETTLEMENT_BUCKET

    @field_validator("fault_point")
    @classmethod
    def _known_fault_point(cls, value: str) -> str:
        if value not in FAULT_POINTS:
            raise ValueError(f"expected one of {', '.join(repr(f) for f in FAULT_POINTS)}")
        return value
