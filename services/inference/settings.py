"""Inference node settings (LORANET_* environment variables)."""

from pydantic import Field

from loranet.settings import CommonSettings


class InferenceSettings(CommonSettings):
    node_id: str = "node-0"
    # Ethereum address that receives this node's share; "" derives a devnet address from node_id.
    payout_address: str = ""
    # Base model: a name (smollm2-135m-instruct, loranet-tiny-llama, one registered with `loranet model register`)
    # or a checkpoint directory; "" = $LORANET_MODEL, else smollm2-135m-instruct.
    model_path: str = ""
    model_id: str = ""  # expected content id; "" = trust what the path hashes to
    device: str = "cpu"  # cpu | cuda | cuda:N
    dtype: str = "float32"  # float32 | bfloat16 | float16 (the verifier re-computes in float32)
    region: str = ""
    # Work messages (each a batch of jobs) pulled at once; the engine batches their jobs together.
    batch_slots: int = Field(default=4, ge=1)
    # Sequences in the engine's running batch (advertised as slots_total).
    max_running: int = Field(default=64, ge=1)
    # Adapters in device memory (sgmv bank slots) and parsed in host memory.
    adapter_slots: int = Field(default=16, ge=1)
    host_adapters: int = Field(default=256, ge=1)
    max_lora_rank: int = Field(default=64, ge=1)
    # KV cache pages of kv_block_size positions; 0 = max_running * 512 positions.
    kv_blocks: int = Field(default=0, ge=0)
    kv_block_size: int = Field(default=16, ge=1)
    max_prefill_tokens: int = Field(default=4096, ge=1)
    heartbeat_s: float = 2.0
    state_dir: str = ".devnet/state"
    cache_dir: str = ""  # model and adapter cache; "" = ~/.cache/loranet (LORANET_CACHE)
    key_file: str = ""  # Ed25519 seed (hex, mode 0600); "" = <state_dir>/<node_id>.key
    max_prompt_tokens: int = 2048
    recent_results: int = 4096  # results kept to answer a redelivered job without running it again

    def engine_config(self):
        from .engine import EngineConfig

        return EngineConfig(
            adapter_slots=self.adapter_slots,
            host_adapters=self.host_adapters,
            max_running=self.max_running,
            kv_blocks=self.kv_blocks,
            block_size=self.kv_block_size,
            max_prefill_tokens=self.max_prefill_tokens,
            max_rank=self.max_lora_rank,
            dtype=self.dtype,
        )
