"""Content ids of checkpoints and adapters, and the error raised on mismatch.

An id is sha256 over canonical bytes, independent of how files are laid out:

    domain tag
    canonical config JSON (sorted keys, compact, volatile keys removed)
    for each tensor, in sorted name order:
        name, dtype (safetensors spelling, e.g. "F32"), shape, raw little-endian bytes

each field length-prefixed. Tensors are read straight from the safetensors
headers and data (no torch, no dtype conversion), so sharding, tensor order
in the file and safetensors metadata do not change the id; a single changed
weight bit or config value does.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import HashMismatch, Invalid

MODEL_DOMAIN = b"loranet/model/v1\x00"
ADAPTER_DOMAIN = b"loranet/adapter/v1\x00"

# Keys that say how/where a file was written rather than what the model is.
VOLATILE_CONFIG_KEYS = frozenset({"transformers_version", "_name_or_path", "_commit_hash", "peft_version"})

# Bytes per element, safetensors dtype spelling.
_DTYPE_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


class ContentHashMismatch(HashMismatch):
    """A checkpoint or adapter's content does not hash to the id it was asked for.

    Refuse to use it: the files were changed, truncated, or are not the ones
    the job / registry names. Fetch them again from the datastore."""

    def __init__(self, kind: str, where: str, expected: str, found: str):
        self.kind, self.where, self.expected, self.found = kind, where, expected, found
        super().__init__(
            f"{kind} at {where}: content hash mismatch: expected {kind}_id {expected}, found {found}; "
            f"refusing to load it (re-fetch the {kind} or correct the id)"
        )


class InvalidSafetensors(Invalid):
    """A safetensors blob is malformed (bad header, offsets outside the data)."""


def canonical_config(config: dict[str, Any]) -> bytes:
    """Config JSON with sorted keys, compact separators, volatile keys dropped."""
    clean = {k: v for k, v in config.items() if k not in VOLATILE_CONFIG_KEYS}
    return json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _field(h: hashlib._Hash, data: bytes | memoryview) -> None:
    h.update(struct.pack("<Q", len(data)))
    h.update(data)


def safetensors_entries(
    buf: bytes | memoryview | mmap.mmap, where: str = "<blob>"
) -> Iterator[tuple[str, str, list[int], memoryview]]:
    """(name, dtype, shape, raw bytes) of each tensor of a safetensors blob, sorted by name.

    Validates the header: known dtypes, byte size = prod(shape)*itemsize,
    offsets inside the data."""
    view = memoryview(buf)
    if len(view) < 8:
        raise InvalidSafetensors(f"{where}: {len(view)} bytes is too short for a safetensors file")
    (hlen,) = struct.unpack("<Q", view[:8])
    if hlen > len(view) - 8:
        raise InvalidSafetensors(f"{where}: header length {hlen} exceeds the file size {len(view)}")
    try:
        header = json.loads(bytes(view[8 : 8 + hlen]))
    except ValueError as exc:
        raise InvalidSafetensors(f"{where}: header is not JSON: {exc}") from None
    data = view[8 + hlen :]
    for name in sorted(k for k in header if k != "__metadata__"):
        info = header[name]
        dtype, shape, (start, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
        if dtype not in _DTYPE_SIZES:
            raise InvalidSafetensors(f"{where}: tensor {name!r} has unknown dtype {dtype!r}")
        numel = 1
        for d in shape:
            numel *= int(d)
        if not (0 <= start <= end <= len(data)) or end - start != numel * _DTYPE_SIZES[dtype]:
            raise InvalidSafetensors(f"{where}: tensor {name!r} offsets {start}..{end} do not fit dtype/shape/data")
        yield name, dtype, shape, data[start:end]


def safetensors_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of a safetensors file, from its header, after checking every tensor's offsets
    against the file's size (InvalidSafetensors otherwise)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise InvalidSafetensors(f"{path}: {size} bytes is too short for a safetensors file")
        (hlen,) = struct.unpack("<Q", head)
        if hlen > size - 8:
            raise InvalidSafetensors(f"{path}: header length {hlen} exceeds the file size {size}")
        try:
            header = json.loads(f.read(hlen))
        except ValueError as exc:
            raise InvalidSafetensors(f"{path}: header is not JSON: {exc}") from None
    out = {}
    data_len = size - 8 - hlen
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], [int(d) for d in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InvalidSafetensors(f"{path}: tensor {name!r} has a malformed header entry") from None
        numel = 1
        for d in shape:
            numel *= d
        if (
            dtype not in _DTYPE_SIZES
            or not (0 <= start <= end <= data_len)
            or end - start != numel * _DTYPE_SIZES[dtype]
        ):
            raise InvalidSafetensors(f"{path}: tensor {name!r} offsets {start}..{end} do not fit dtype/shape/data")
        out[name] = tuple(shape)
    return out


def content_id(
    domain: bytes, config: dict[str, Any], weight_blobs: Iterable[tuple[str, bytes | memoryview | mmap.mmap]]
) -> str:
    """sha256 hex of domain + canonical config + every tensor of every blob, sorted by name.

    `weight_blobs` are (label for errors, safetensors bytes); a tensor name
    that appears in two blobs is an error."""
    tensors: dict[str, tuple[str, list[int], memoryview]] = {}
    for where, blob in weight_blobs:
        for name, dtype, shape, raw in safetensors_entries(blob, where):
            if name in tensors:
                raise InvalidSafetensors(f"{where}: tensor {name!r} appears in more than one file")
            tensors[name] = (dtype, shape, raw)
    h = hashlib.sha256(domain)
    _field(h, canonical_config(config))
    _field(h, struct.pack("<Q", len(tensors)))
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        _field(h, name.encode())
        _field(h, dtype.encode())
        _field(h, struct.pack(f"<{len(shape)}Q", *shape))
        _field(h, raw)
    return h.hexdigest()


class _MappedFiles:
    """Memory-maps safetensors files for hashing without reading them into memory."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self._files: list[Any] = []
        self._maps: list[mmap.mmap] = []

    def __enter__(self) -> list[tuple[str, mmap.mmap | bytes]]:
        out: list[tuple[str, mmap.mmap | bytes]] = []
        for p in self.paths:
            f = open(p, "rb")
            self._files.append(f)
            if os.fstat(f.fileno()).st_size == 0:
                out.append((str(p), b""))
                continue
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps.append(m)
            out.append((str(p), m))
        return out

    def __exit__(self, *exc: object) -> None:
        for m in self._maps:
            try:
                m.close()
            except BufferError:  # a memoryview still references it; GC will close it
                pass
        for f in self._files:
            f.close()


def directory_content_id(domain: bytes, directory: Path, config_name: str, weights_glob: str) -> str:
    """Content id of a checkpoint / adapter directory (config file + safetensors files)."""
    directory = Path(directory)
    config_path = directory / config_name
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory}: no {config_name}; not a checkpoint/adapter directory")
    config = json.loads(config_path.read_text())
    files = sorted(directory.glob(weights_glob))
    if not files:
        raise FileNotFoundError(f"{directory}: no {weights_glob} files (only safetensors weights are accepted)")
    with _MappedFiles(files) as blobs:
        return content_id(domain, config, blobs)


def model_content_id(path: str | os.PathLike[str]) -> str:
    """`model_id` of a Hugging Face checkpoint directory (config.json + *.safetensors)."""
    return directory_content_id(MODEL_DOMAIN, Path(path), "config.json", "*.safetensors")


def adapter_content_id(path: str | os.PathLike[str]) -> str:
    """`adapter_id` of a PEFT adapter directory (adapter_config.json + adapter_model.safetensors)."""
    return directory_content_id(ADAPTER_DOMAIN, Path(path), "adapter_config.json", "adapter_model.safetensors")
