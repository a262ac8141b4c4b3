"""SGMV with Triton kernels (CUDA; or CPU under ``TRITON_INTERPRET=1``).

Same signatures as :mod:`sgmv.torch_ops`. ``triton`` is imported only when a
function here is first called, so CPU users without triton are unaffected.
Launch parameters come from host values already in the metadata and bank:
nothing here waits on the device.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType

import torch

from .metadata import SGMVMetadata
from .packed import PackedLoraWeights

__all__ = ["sgmv_shrink", "sgmv_expand", "triton_available"]


def triton_available() -> bool:
    """True when triton can be imported."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def _kernels() -> ModuleType:
    from . import _triton_kernels

    return _triton_kernels


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def _precision(dtype: torch.dtype) -> str:
    # float32 inputs: exact IEEE products (tf32 would lose ~3 digits). The CPU
    # interpreter's half-precision dot is unreliable, so there inputs are
    # upcast to float32 too; on a GPU, bf16/fp16 use the tensor cores.
    if dtype == torch.float32 or os.environ.get("TRITON_INTERPRET") == "1":
        return "ieee"
    return "default"


def sgmv_shrink(
    x: torch.Tensor,
    lora: PackedLoraWeights,
    meta: SGMVMetadata,
    v: torch.Tensor | None = None,
) -> torch.Tensor:
    """Shrink ``v = x · A_slot`` (split-K into float32). See :func:`sgmv.torch_ops.sgmv_shrink`."""
    k = _kernels()
    max_rank = lora.max_total_rank
    # Split-K accumulates with atomics, so v starts at zero.
    if v is None:
        v = torch.zeros(meta.num_tokens, lora.v_width, dtype=torch.float32, device=x.device)
    else:
        v.zero_()
    if meta.num_lora_tokens == 0 or max_rank == 0:
        return v
    K = x.shape[1]
    block_m = 16 if meta.max_segment <= 16 else (32 if meta.max_segment <= 64 else 64)
    block_n = 16 if max_rank <= 16 else 32
    block_k = 64 if K >= 64 else 32
    m_tiles = _cdiv(meta.max_segment, block_m)
    n_tiles = _cdiv(max_rank, block_n)
    # Few output tiles (decode): split K so enough programs stream x and A.
    split_k = max(1, min(8, _cdiv(K, 4 * block_k), 64 // max(1, m_tiles * n_tiles)))
    grid = (m_tiles * n_tiles, split_k, lora.num_slots)
    a = lora.lora_a
    k.sgmv_shrink_kernel[grid](
        x,
        a,
        v,
        meta.sorted_tokens,
        meta.seg_counts,
        meta.seg_starts,
        lora.total_ranks,
        K,
        x.stride(0),
        x.stride(1),
        a.stride(0),
        a.stride(1),
        a.stride(2),
        v.stride(0),
        v.stride(1),
        n_tiles,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        SPLIT_K=split_k,
        DOT_PRECISION=_precision(x.dtype),
    )
    return v


def sgmv_expand(
    v: torch.Tensor,
    lora: PackedLoraWeights,
    meta: SGMVMetadata,
    y: torch.Tensor | Sequence[torch.Tensor],
) -> None:
    """Expand ``y += v · B_slot`` in place, tiled over output columns. See :func:`sgmv.torch_ops.sgmv_expand`.

    A packed ``y`` (slices side by side) is one launch; a list of per-slice
    outputs is one launch per slice.
    """
    k = _kernels()
    if meta.num_lora_tokens == 0 or lora.max_total_rank == 0:
        return
    block_m = 16 if meta.max_segment <= 16 else (32 if meta.max_segment <= 64 else 64)
    block_n = 64
    block_k = 16
    m_tiles = _cdiv(meta.max_segment, block_m)
    if isinstance(y, torch.Tensor):
        if y.shape[-1] != lora.out_features:
            raise ValueError(f"y has {y.shape[-1]} columns; projection {lora.spec.name!r} has {lora.out_features}")
        launches = [(y, 0, lora.num_slices, 0)]
    else:
        ys = list(y)
        if len(ys) != lora.num_slices or any(t.shape[-1] != w for t, w in zip(ys, lora.slice_widths)):
            raise ValueError(f"y must be {lora.num_slices} tensors of widths {lora.slice_widths}")
        launches = [(t, s, 1, lora.y_offsets[s]) for s, t in enumerate(ys)]
    for out, slice_base, n_launch, y_col_base in launches:
        max_w = max(lora.slice_widths[slice_base : slice_base + n_launch])
        n_tiles = _cdiv(max_w, block_n)
        grid = (m_tiles * n_tiles, n_launch, lora.num_slots)
        k.sgmv_expand_kernel[grid](
            v,
            lora.lora_b,
            out,
            meta.sorted_tokens,
            meta.seg_counts,
            meta.seg_starts,
            lora.ranks,
            lora.rank_offsets,
            lora.slice_table,
            slice_base,
            lora.num_slices,
            v.stride(0),
            v.stride(1),
            lora.lora_b.stride(0),
            out.stride(0),
            out.stride(1),
            y_col_base,
            n_tiles,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_K=block_k,
            DOT_PRECISION=_precision(torch.float32),
        )
