"""A packed-batch Llama forward over a transformers model's own modules, with a paged KV cache.

Why not `model(...)`: HF's forward wants one rectangular batch and one cache
object for it; continuous batching needs sequences of different lengths
(prefills of whole prompts beside one-token decodes) in ONE forward, each
with its own positions and its own cache pages.  So this file runs the
decoder layers itself, token-packed (`[T, H]`, no padding in any
projection), with the model's own norms, activation and q/k/v/o/gate/up/down
Linear modules, and adds each token's adapter from the sgmv `AdapterBank`
per packed projection (q/k/v in one shrink, gate/up in one): metadata from
`sgmv.build_metadata` once per forward, then `sgmv.apply_lora` (the Triton
kernels on CUDA; on CPU sgmv's torch path, which pads a continuous batch's
short segments into one bmm).  Attention is
a causal SDPA per fresh prefill and one masked SDPA for all decodes over
pages gathered from the pool.

The KV pool is preallocated once (`num_blocks` pages of `block_size`
positions per layer); a sequence reserves the pages it can ever need on
admission and returns them when it finishes, so memory is bounded and never
reallocated per job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import rotate_half

from sgmv import AdapterBank, apply_lora, build_metadata


class KVPool:
    """Paged K/V storage for every layer: `[layers, num_blocks * block_size, kv_heads, head_dim]`."""

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.block_size, self.num_blocks = block_size, num_blocks
        shape = (num_layers, num_blocks * block_size, kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self._free = list(range(num_blocks - 1, -1, -1))

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def allocate(self, tokens: int) -> list[int] | None:
        """Reserve pages for `tokens` positions; None if the pool cannot hold them now."""
        n = self.blocks_for(tokens)
        if n > len(self._free):
            return None
        return [self._free.pop() for _ in range(n)]

    def release(self, blocks: list[int]) -> None:
        self._free.extend(blocks)

    def position_index(self, blocks: list[int]) -> torch.Tensor:
        """Row of the flat pool for each position 0..len(blocks)*block_size-1 of a sequence."""
        b = torch.tensor(blocks, dtype=torch.long)
        return (b[:, None] * self.block_size + torch.arange(self.block_size)).reshape(-1)

    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


@dataclass
class PackedBatch:
    """One forward's tokens, sequence by sequence (prefills first, then decodes).

    input_ids / positions / write_index / token_slots: [T] each (write_index =
    the pool row each token's K/V goes to). prefill_spans: (start, end) of each
    fresh prefill in the packed tokens. decode_rows: packed rows of the decode
    tokens; decode_index [B, L] pool rows of each decode sequence's positions
    0..L-1 (padded), decode_mask [B, 1, 1, L] True where valid. logit_rows:
    packed rows whose logits are wanted.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    write_index: torch.Tensor
    token_slots: torch.Tensor
    prefill_spans: list[tuple[int, int]]
    decode_rows: torch.Tensor | None
    decode_index: torch.Tensor | None
    decode_mask: torch.Tensor | None
    logit_rows: torch.Tensor


class PackedLlama:
    """Runs a transformers Llama plus an sgmv `AdapterBank` over a `PackedBatch` with a `KVPool`."""

    def __init__(self, model: Any, bank: AdapterBank, lora_backend: str | None = None) -> None:
        # `model` is a transformers LlamaForCausalLM: its submodules are reached by attribute (Any).
        self.model: Any = model
        self.bank = bank
        cfg: Any = model.config
        self.layers: list[Any] = list(model.model.layers)
        self.num_heads: int = cfg.num_attention_heads
        self.kv_heads: int = cfg.num_key_value_heads
        self.head_dim: int = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scaling = self.head_dim**-0.5
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.lora_backend = lora_backend  # None: sgmv picks (Triton on CUDA, torch on CPU)
        # Per layer: the bank's packed projections (None where the bank holds none).
        self.projections = []
        for i in range(len(self.layers)):
            pre = f"model.layers.{i}"
            self.projections.append(
                {
                    k: bank.projections.get(f"{pre}.{name}")
                    for k, name in (
                        ("qkv", "self_attn.qkv_proj"),
                        ("o", "self_attn.o_proj"),
                        ("gate_up", "mlp.gate_up_proj"),
                        ("down", "mlp.down_proj"),
                    )
                }
            )

        # q/k/v and gate/up as one Linear each; the modules' weights become views of the fused ones (no copy kept).
        self.fused = [
            (_fuse(layer.self_attn, ("q_proj", "k_proj", "v_proj")), _fuse(layer.mlp, ("gate_proj", "up_proj")))
            for layer in self.layers
        ]
        widths = [self.num_heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim]
        if any(qkv[2] != widths for qkv, _ in self.fused):
            raise ValueError(f"q/k/v widths {self.fused[0][0][2]} are not heads x head_dim {widths}")

    def _lora(self, x: torch.Tensor, lora, y: torch.Tensor, meta) -> None:
        if lora is not None and meta is not None:
            apply_lora(x, lora, meta, y, backend=self.lora_backend)

    @torch.inference_mode()
    def forward(self, batch: PackedBatch, pool: KVPool) -> tuple[torch.Tensor, torch.Tensor]:
        """(final-norm hidden states [T, H], logits [len(logit_rows), V] float32)."""
        dev = self.device
        ids = batch.input_ids.to(dev, non_blocking=True)
        pos = batch.positions.to(dev, non_blocking=True)
        write = batch.write_index.to(dev, non_blocking=True)
        x = self.model.model.embed_tokens(ids)
        cos, sin = self.model.model.rotary_emb(x[None], pos[None])
        cos, sin = cos[0][:, None, :], sin[0][:, None, :]  # [T, 1, d]
        T = ids.shape[0]
        nh, kvh, d = self.num_heads, self.kv_heads, self.head_dim
        meta = None
        if bool((batch.token_slots >= 0).any()):
            meta = build_metadata(batch.token_slots, self.bank.num_slots, device=dev)
        dec_rows: Any = None
        dec_index: Any = None
        dec_mask: Any = None
        if batch.decode_rows is not None:
            assert batch.decode_index is not None and batch.decode_mask is not None  # set together
            dec_rows = batch.decode_rows.to(dev, non_blocking=True)
            dec_index = batch.decode_index.to(dev, non_blocking=True)
            dec_mask = batch.decode_mask.to(dev, non_blocking=True)
        # A decode-only step (most steps): its decode rows are every row, in order; no gather, no scatter.
        decode_only = dec_rows is not None and not batch.prefill_spans and dec_rows.numel() == T
        for li, layer in enumerate(self.layers):
            attn, mlp, proj = layer.self_attn, layer.mlp, self.projections[li]
            (qkv_w, qkv_b, _), (gu_w, gu_b, gu_split) = self.fused[li]
            h = layer.input_layernorm(x)
            qkv = F.linear(h, qkv_w, qkv_b)
            self._lora(h, proj["qkv"], qkv, meta)
            # Rotary on q and k together (one set of elementwise ops instead of two; the same values).
            qk = qkv[:, : (nh + kvh) * d].view(T, nh + kvh, d)
            qk = qk * cos + rotate_half(qk) * sin
            q, k = qk[:, :nh], qk[:, nh:]
            v = qkv[:, (nh + kvh) * d :].view(T, kvh, d)
            pool.k[li].index_copy_(0, write, k)
            pool.v[li].index_copy_(0, write, v)
            out: Any = None if decode_only else torch.empty(T, nh, d, dtype=q.dtype, device=q.device)
            for a, b in batch.prefill_spans:
                # A fresh prefill attends only to itself: causal over its own new K/V.
                o = F.scaled_dot_product_attention(
                    q[a:b].transpose(0, 1)[None],
                    k[a:b].transpose(0, 1)[None],
                    v[a:b].transpose(0, 1)[None],
                    is_causal=True,
                    scale=self.scaling,
                    enable_gqa=True,
                )
                out[a:b] = o[0].transpose(0, 1)
            if dec_rows is not None:
                # index_select, not advanced indexing: the latter is several times slower on CPU.
                flat, shape = dec_index.view(-1), (*dec_index.shape, kvh, d)
                kk = pool.k[li].index_select(0, flat).view(shape).transpose(1, 2)  # [B, kvh, L, d]
                vv = pool.v[li].index_select(0, flat).view(shape).transpose(1, 2)
                qq = (q if decode_only else q.index_select(0, dec_rows))[:, :, None, :]  # [B, nh, 1, d]
                o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=dec_mask, scale=self.scaling, enable_gqa=True)
                if decode_only:
                    out = o[:, :, 0, :]
                else:
                    out.index_copy_(0, dec_rows, o[:, :, 0, :])
            out = out.reshape(T, nh * d)
            o = attn.o_proj(out)
            self._lora(out, proj["o"], o, meta)
            x = x + o
            h = layer.post_attention_layernorm(x)
            gu = F.linear(h, gu_w, gu_b)
            self._lora(h, proj["gate_up"], gu, meta)
            g, u = gu.split(gu_split, dim=-1)
            a = mlp.act_fn(g) * u
            dn = mlp.down_proj(a)
            self._lora(a, proj["down"], dn, meta)
            x = x + dn
        hidden = self.model.model.norm(x)
        logits = self.model.lm_head(hidden.index_select(0, batch.logit_rows.to(dev))).float()
        return hidden, logits


def _fuse(parent: torch.nn.Module, names: tuple[str, ...]):
    """(fused weight, fused bias or None, output widths) of sibling Linears reading the same input."""
    linears = [getattr(parent, n) for n in names]
    with torch.no_grad():
        weight = torch.cat([lin.weight for lin in linears])
        has_bias = [lin.bias is not None for lin in linears]
        bias = torch.cat([lin.bias for lin in linears]) if all(has_bias) else None
        if any(has_bias) and bias is None:
            raise ValueError(f"{names}: some of these projections have a bias and some not")
        row = 0
        for lin in linears:
            n = lin.out_features
            lin.weight = torch.nn.Parameter(weight[row : row + n], requires_grad=False)
            if bias is not None:
                lin.bias = torch.nn.Parameter(bias[row : row + n], requires_grad=False)
            row += n
    return weight, bias, [lin.out_features for lin in linears]
