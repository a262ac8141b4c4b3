"""Settlement settings (LORANET_* environment variables)."""

from typing import Self

from pydantic import Field, field_validator, model_validator

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
    # Independent agreeing verdicts needed to decide a run of a job (k). With committee_size (n) above 1,
    # every run whose first verdict is an audit or a rejection (and committee_sample_rate of the others)
    # is decided by a committee of n registered verifiers drawn at random in proportion to their stake
    # once that verdict is in: each member is asked to audit it (results.audit.<verifier_id>), only
    # members' audits and rejections count, k of them must agree (k > n/2), and a run whose committee
    # cannot be drawn, or does not decide, before the job expires is refunded. Runs whose first verdict
    # is a cheap-checks acceptance outside the sample settle on it alone.
    verdict_quorum: int = Field(default=1, ge=1, le=16)
    committee_size: int = Field(default=1, ge=1, le=16)
    committee_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    committee_retry_s: float = Field(default=2.0, gt=0)
    # Share of a registered verifier's stake slashed to the treasury for each audit or rejection of
    # its that contradicts its committee's decision (evidence: the verdict; once per verdict); 0 = never.
    verifier_slash_bps: int = Field(default=1000, ge=0, le=10_000)
    # Share of a staked node's bond slashed once `verdict_quorum` distinct registered verifiers flagged
    # its statistics (flags.<node_id>: its jobs may each pass, its figures depart from honest nodes'),
    # once per node key; 0 = never.
    statistics_slash_bps: int = Field(default=1000, ge=0, le=10_000)
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

    @model_validator(mode="after")
    def _committee_decides(self) -> Self:
        if self.committee_size > 1 and not (self.committee_size / 2 < self.verdict_quorum <= self.committee_size):
            raise ValueError(
                f"verdict_quorum {self.verdict_quorum} must be a majority of committee_size {self.committee_size}"
            )
        return self

    @field_validator("fault_point")
    @classmethod
    def _known_fault_point(cls, value: str) -> str:
        if value not in FAULT_POINTS:
            raise ValueError(f"expected one of {', '.join(repr(f) for f in FAULT_POINTS)}")
        return value
