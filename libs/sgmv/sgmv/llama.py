"""Serve many LoRA adapters through a transformers Llama-family model.

``wrap_llama(model, bank)`` replaces q/k/v/o/gate/up/down Linear modules with
:class:`SGMVLinear` modules. Before a forward the caller names each token's
slot (``-1`` = base model only)::

    with lora_context(model, token_slots):
        out = model(input_ids, past_key_values=cache)

``token_slots`` holds one slot per token of the forward (``batch*seq``,
flattened row-major) or one per sequence (broadcast over its tokens), so the
same map works for prefill and for every decode step of ``generate``.

q/k/v (and gate/up) share their input: the first of them to run computes the
LoRA of all its siblings in one packed shrink/expand, the others pick up their
result. Base weights are untouched, so with no adapter token every output is
bit-identical to the unwrapped model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .bank import AdapterBank
from .metadata import SGMVMetadata, build_metadata
from .ops import apply_lora
from .packed import PackedLoraWeights, ProjectionSpec

__all__ = [
    "LLAMA_TARGETS",
    "llama_projection_specs",
    "wrap_llama",
    "set_token_slots",
    "lora_context",
    "SGMVLinear",
]

# (parent attribute, packed projection name, member Linear modules)
_LLAMA_PACKING = (
    ("self_attn", "qkv_proj", ("q_proj", "k_proj", "v_proj")),
    ("self_attn", "o_proj", ("o_proj",)),
    ("mlp", "gate_up_proj", ("gate_proj", "up_proj")),
    ("mlp", "down_proj", ("down_proj",)),
)
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _decoder_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for path, module in model.named_modules():
        if hasattr(module, "self_attn") and hasattr(module, "mlp"):
            yield path, module


def llama_projection_specs(model: nn.Module, target_modules: Sequence[str] | None = None) -> list[ProjectionSpec]:
    """Projection specs (packed q/k/v and gate/up) for every decoder layer of ``model``."""
    targets = set(target_modules or LLAMA_TARGETS)
    unknown = targets - set(LLAMA_TARGETS)
    if unknown:
        raise ValueError(f"unsupported target modules {sorted(unknown)}; supported: {LLAMA_TARGETS}")
    specs = []
    for layer_path, layer in _decoder_layers(model):
        for parent_attr, packed, all_members in _LLAMA_PACKING:
            members = [m for m in all_members if m in targets]
            if not members:
                continue
            parent = getattr(layer, parent_attr)
            linears = [getattr(parent, m) for m in members]
            linears = [lin.base if isinstance(lin, SGMVLinear) else lin for lin in linears]
            if not all(isinstance(lin, nn.Linear) for lin in linears):
                raise TypeError(f"{layer_path}.{parent_attr}: {members} must be nn.Linear modules")
            prefix = f"{layer_path}.{parent_attr}" if layer_path else parent_attr
            specs.append(
                ProjectionSpec(
                    name=f"{prefix}.{packed}",
                    in_features=linears[0].in_features,
                    slice_modules=tuple(f"{prefix}.{m}" for m in members),
                    slice_widths=tuple(lin.out_features for lin in linears),
                )
            )
    if not specs:
        raise ValueError("no Llama-style decoder layers (modules with .self_attn and .mlp) found in the model")
    return specs


class _SlotState:
    """The token -> slot map of the current forward and its metadata (built once per token count)."""

    def __init__(self, bank: AdapterBank, backend: str | None):
        self.bank, self.backend = bank, backend
        self.token_slots: torch.Tensor | None = None
        self._meta: dict[int, SGMVMetadata] = {}

    def set(self, token_slots: torch.Tensor | Sequence[int] | None) -> None:
        if token_slots is None:
            self.token_slots = None
        else:
            t = token_slots if isinstance(token_slots, torch.Tensor) else torch.as_tensor(token_slots)
            self.token_slots = t.detach().to("cpu", torch.int64).reshape(-1)
        self._meta = {}

    def metadata_for(self, x: torch.Tensor) -> SGMVMetadata | None:
        """Metadata for an input ``[..., in]``; None when no token of it uses an adapter."""
        if self.token_slots is None:
            return None
        num_tokens = x.numel() // x.shape[-1]
        meta = self._meta.get(num_tokens)
        if meta is None:
            slots = self.token_slots
            if slots.numel() == num_tokens:
                flat = slots
            elif x.dim() >= 3 and slots.numel() == x.shape[0]:
                flat = slots.repeat_interleave(num_tokens // x.shape[0])
            else:
                raise ValueError(
                    f"token_slots has {slots.numel()} entries but the forward has {num_tokens} tokens "
                    f"in {x.shape[0] if x.dim() >= 3 else 1} sequences: give one slot per token or per sequence"
                )
            meta = build_metadata(flat, self.bank.num_slots, device=x.device)
            self._meta[num_tokens] = meta
        return meta if meta.num_lora_tokens else None


def _version(x: torch.Tensor) -> int:
    # Inference-mode tensors keep no version counter (and cannot be modified
    # in place outside inference mode); identity is the check there.
    return -1 if x.is_inference() else x._version


class _PackedGroup:
    """Sibling Linear modules sharing one input and one packed LoRA projection."""

    def __init__(self, lora: PackedLoraWeights, bases: list[nn.Linear], state: _SlotState):
        self.lora, self.bases, self.state = lora, bases, state
        self._cache: Any = None  # (x, x._version, meta, outputs, slices still to hand out)

    def forward_slice(self, s: int, x: torch.Tensor) -> torch.Tensor:
        meta = self.state.metadata_for(x)
        if meta is None:
            out: torch.Tensor = self.bases[s](x)
            return out
        c = self._cache
        if c is not None and c[0] is x and c[1] == _version(x) and c[2] is meta and s in c[4]:
            c[4].discard(s)
            if not c[4]:
                self._cache = None
            cached: torch.Tensor = c[3][s]
            return cached
        ys: list[torch.Tensor] = [base(x) for base in self.bases]
        x2 = x.reshape(-1, x.shape[-1])
        apply_lora(x2, self.lora, meta, [y.view(-1, y.shape[-1]) for y in ys], backend=self.state.backend)
        rest = set(range(len(ys))) - {s}
        self._cache = (x, _version(x), meta, ys, rest) if rest else None
        return ys[s]


class SGMVLinear(nn.Module):
    """A Linear whose output gets each token's adapter delta (via its packed group)."""

    def __init__(self, base: nn.Linear, group: _PackedGroup, slice_index: int):
        super().__init__()
        self.base = base
        self._group = group
        self.slice_index = slice_index
        self.in_features, self.out_features = base.in_features, base.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> Any:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._group.forward_slice(self.slice_index, x)


def wrap_llama(model: nn.Module, bank: AdapterBank, backend: str | None = None) -> nn.Module:
    """Make ``model`` apply the bank's adapters per token; returns the same model.

    Every projection the bank holds is replaced by an :class:`SGMVLinear`.
    ``backend`` forces ``"torch"`` or ``"triton"`` (default: by device).
    """
    if getattr(model, "_sgmv_state", None) is not None:
        raise ValueError("model is already wrapped by sgmv.wrap_llama")
    state = _SlotState(bank, backend)
    modules = dict(model.named_modules())
    for proj_name, lora in bank.projections.items():
        parents: list[tuple[nn.Module, str]] = []
        bases: list[nn.Linear] = []
        for module_path in lora.spec.slice_modules:
            parent_path, _, attr = module_path.rpartition(".")
            parent: nn.Module | None = modules.get(parent_path) if parent_path else model
            base = getattr(parent, attr, None) if parent is not None else None
            if not isinstance(base, nn.Linear):
                raise ValueError(f"bank projection {proj_name!r}: {module_path!r} is not an nn.Linear of this model")
            if (base.in_features, base.out_features) != (lora.in_features, lora.slice_widths[len(bases)]):
                raise ValueError(f"{module_path}: shape differs from the bank's projection {proj_name!r}")
            assert parent is not None  # base is a Linear found on it
            parents.append((parent, attr))
            bases.append(base)
        group = _PackedGroup(lora, bases, state)
        for i, (parent, attr) in enumerate(parents):
            setattr(parent, attr, SGMVLinear(bases[i], group, i))
    model._sgmv_state = state  # type: ignore[assignment]  # nn.Module's __setattr__ takes any value
    return model


def _state(model: nn.Module) -> _SlotState:
    state: _SlotState | None = getattr(model, "_sgmv_state", None)
    if state is None:
        raise ValueError("model is not wrapped: call sgmv.wrap_llama(model, bank) first")
    return state


def set_token_slots(model: nn.Module, token_slots: torch.Tensor | Sequence[int] | None) -> None:
    """Set the slot map for the next forward(s): one slot per token or per sequence; None = base only.

    Metadata is built on first use for each token count and reused until the
    map is set again (so a decode loop with a per-sequence map sets it once).
    """
    _state(model).set(token_slots)


@contextmanager
def lora_context(model: nn.Module, token_slots: torch.Tensor | Sequence[int]) -> Iterator[nn.Module]:
    """``with lora_context(model, slots): model(...)``: the map holds inside the block only."""
    state = _state(model)
    state.set(token_slots)
    try:
        yield model
    finally:
        state.set(None)


def bank_for_model(
    model: torch.nn.Module,
    num_slots: int,
    max_rank: int = 64,
    target_modules: Sequence[str] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> AdapterBank:
    """An adapter bank for a transformers Llama-family model (q/k/v/o/gate/up/down).

    ``target_modules`` restricts the projections (default: all seven); dtype and device default to the
    model's."""
    p = next(model.parameters())
    return AdapterBank(
        llama_projection_specs(model, target_modules),
        num_slots,
        max_rank,
        dtype=dtype or p.dtype,
        device=device or p.device,
    )
