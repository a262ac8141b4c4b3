"""Inference node settings (LORANET_* environment variables)."""

from loranet.settings import CommonSettings


class InferenceSettings(CommonSettings):
    node_id: str = "node-0"
    # Ethereum address that receives this node's share; "" derives a devnet address from node_id.
    payout_address: str = ""
    # Base model: a local Llama-family checkpoint directory; "" = the built-in seeded model.
    model_path: str = ""
    model_id: str = ""  # expected content id; "" = trust what the path hashes to
    device: str = "cpu"
    region: str = ""
    # Work batches handled at once and adapter slots advertised.
    batch_slots: int = 2
    adapter_slots: int = 16
    heartbeat_s: float = 2.0
    state_dir: str = ".devnet/state"
    cache_dir: str = ""  # model and adapter cache; "" = ~/.cache/loranet (LORANET_CACHE)
    key_file: str = ""  # Ed25519 seed (hex, mode 0600); "" = <state_dir>/<node_id>.key
    max_prompt_tokens: int = 2048
