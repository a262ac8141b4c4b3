"""Triton SGMV kernels. Imported lazily by :mod:`sgmv.triton_ops`.

Grids put the slot on axis 2: a program whose slot has no tokens in this
forward, no rank, or whose tile lies past the slot's segment/rank exits at
once. Segment bounds come from the metadata tensors, so launching needs no
host synchronisation. ``TRITON_INTERPRET=1`` must be set before this module is
imported for the kernels to run on CPU (triton decides at decoration time).
"""

import triton
import triton.language as tl


@triton.jit
def sgmv_shrink_kernel(
    x_ptr,
    a_ptr,
    v_ptr,
    sorted_tokens_ptr,
    seg_counts_ptr,
    seg_starts_ptr,
    total_ranks_ptr,
    K,
    stride_xm,
    stride_xk,
    stride_as,
    stride_ar,
    stride_ak,
    stride_vm,
    stride_vn,
    num_n_tiles,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_mn = tl.program_id(0)
    pid_k = tl.program_id(1)
    slot = tl.program_id(2)
    count = tl.load(seg_counts_ptr + slot)
    rank = tl.load(total_ranks_ptr + slot)
    pid_m = pid_mn // num_n_tiles
    pid_n = pid_mn % num_n_tiles
    if pid_m * BLOCK_M >= count:
        return
    if pid_n * BLOCK_N >= rank:
        return
    start = tl.load(seg_starts_ptr + slot)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < count
    tokens = tl.load(sorted_tokens_ptr + start + offs_m, mask=m_mask, other=0)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < rank
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    a_base = a_ptr + slot.to(tl.int64) * stride_as
    for k0 in range(pid_k * BLOCK_K, K, BLOCK_K * SPLIT_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        xt = tl.load(
            x_ptr + tokens[:, None].to(tl.int64) * stride_xm + offs_k[None, :] * stride_xk,
            mask=m_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        at = tl.load(
            a_base + offs_n[None, :] * stride_ar + offs_k[:, None] * stride_ak,
            mask=n_mask[None, :] & k_mask[:, None],
            other=0.0,
        )
        if DOT_PRECISION == "ieee":
            acc += tl.dot(xt.to(tl.float32), at.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(xt, at.to(xt.dtype))
    v_ptrs = v_ptr + (start + offs_m)[:, None].to(tl.int64) * stride_vm + offs_n[None, :] * stride_vn
    out_mask = m_mask[:, None] & n_mask[None, :]
    if SPLIT_K == 1:
        tl.store(v_ptrs, acc, mask=out_mask)
    else:
        tl.atomic_add(v_ptrs, acc, mask=out_mask)


@triton.jit
def sgmv_expand_kernel(
    v_ptr,
    b_ptr,
    y_ptr,
    sorted_tokens_ptr,
    seg_counts_ptr,
    seg_starts_ptr,
    ranks_ptr,
    rank_offsets_ptr,
    slice_table_ptr,
    slice_base,
    num_slices,
    stride_vm,
    stride_vn,
    stride_bs,
    stride_ym,
    stride_yn,
    y_col_base,
    num_n_tiles,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_mn = tl.program_id(0)
    s = slice_base + tl.program_id(1)
    slot = tl.program_id(2)
    count = tl.load(seg_counts_ptr + slot)
    rank = tl.load(ranks_ptr + slot * num_slices + s)
    pid_m = pid_mn // num_n_tiles
    pid_n = pid_mn % num_n_tiles
    if pid_m * BLOCK_M >= count:
        return
    if rank == 0:
        return
    width = tl.load(slice_table_ptr + s * 3)
    if pid_n * BLOCK_N >= width:
        return
    b_offset = tl.load(slice_table_ptr + s * 3 + 1)
    y_col = tl.load(slice_table_ptr + s * 3 + 2) - y_col_base
    r_off = tl.load(rank_offsets_ptr + slot * num_slices + s)
    start = tl.load(seg_starts_ptr + slot)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < count
    tokens = tl.load(sorted_tokens_ptr + start + offs_m, mask=m_mask, other=0)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < width
    b_base = b_ptr + slot.to(tl.int64) * stride_bs + b_offset
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, rank, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < rank
        vt = tl.load(
            v_ptr + (start + offs_m)[:, None].to(tl.int64) * stride_vm + (r_off + offs_k)[None, :] * stride_vn,
            mask=m_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        bt = tl.load(
            b_base + offs_k[:, None] * width + offs_n[None, :],
            mask=k_mask[:, None] & n_mask[None, :],
            other=0.0,
        )
        acc += tl.dot(vt, bt.to(tl.float32), input_precision=DOT_PRECISION)
    # Each (token, column) belongs to exactly one program: a plain read-add-write.
    y_ptrs = y_ptr + tokens[:, None].to(tl.int64) * stride_ym + (y_col + offs_n)[None, :] * stride_yn
    out_mask = m_mask[:, None] & n_mask[None, :]
    y_old = tl.load(y_ptrs, mask=out_mask, other=0.0)
    tl.store(y_ptrs, (y_old.to(tl.float32) + acc).to(y_old.dtype), mask=out_mask)
