"""Settlement settings (LORANET_* environment variables)."""

from loranet.settings import CommonSettings


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
    # Independent accepting verdicts needed before a job is paid.
    verdict_quorum: int = 1
    # Devnet convenience: settlement.faucet hands out OPEN from the deployer.
    faucet: bool = True
    price_per_prompt_token: int = 10**12
    price_per_output_token: int = 4 * 10**12
    price_per_job: int = 0
