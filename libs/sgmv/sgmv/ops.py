"""Backend choice and the one-call LoRA application used by model wrappers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType

import torch

from . import torch_ops
from .metadata import SGMVMetadata
from .packed import PackedLoraWeights

__all__ = ["select_backend", "apply_lora"]

BACKENDS = ("torch", "triton")


def select_backend(device: torch.device | str, backend: str | None = None) -> ModuleType:
    """The ops module for ``device``: Triton on CUDA when triton imports, torch otherwise.

    ``backend`` (or the ``SGMV_BACKEND`` environment variable) forces ``"torch"``
    or ``"triton"`` (the latter on CPU needs ``TRITON_INTERPRET=1``).
    """
    choice = backend or os.environ.get("SGMV_BACKEND") or None
    if choice is not None and choice not in BACKENDS:
        raise ValueError(f"unknown SGMV backend {choice!r}; expected one of {BACKENDS}")
    if choice == "torch":
        return torch_ops
    from . import triton_ops

    if choice == "triton":
        return triton_ops
    if torch.device(device).type == "cuda" and triton_ops.triton_available():
        return triton_ops
    return torch_ops


def apply_lora(
    x: torch.Tensor,
    lora: PackedLoraWeights,
    meta: SGMVMetadata,
    y: torch.Tensor | Sequence[torch.Tensor],
    backend: str | None = None,
    v: torch.Tensor | None = None,
) -> None:
    """``y += scale_i · (x · A_i) · B_i`` for each token's slot i, every slice in one call.

    ``x`` is ``[T, in]``; ``y`` is ``[T, sum(widths)]`` or one ``[T, w_s]`` per slice.
    """
    ops = select_backend(x.device, backend)
    if ops is torch_ops:  # its own entry point: it may pad many short segments into one bmm
        torch_ops.sgmv_apply(x, lora, meta, y, v)
    else:
        ops.sgmv_expand(ops.sgmv_shrink(x, lora, meta, v), lora, meta, y)
