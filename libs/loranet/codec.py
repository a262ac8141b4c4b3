"""MessagePack codec for loranet's wire schemas.

Every message on the bus is a MessagePack map validated on decode by pydantic
(strict: an int is not a float, bytes are not text).  Canonical bytes — what
gets signed and hashed — are a MessagePack *array* of the schema's fields in
declaration order, so they never depend on a dict's iteration order.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, TypeVar

import msgpack
from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer

from .errors import Invalid

# Hard ceilings for any message; a subject may set a lower one.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_MAX_DEPTH = 32


class DecodeError(Invalid):
    """A message could not be decoded into its schema.

    `field` names the offending field where one is known; `reason` is a short
    machine-readable code (``too_large``, ``not_msgpack``, ``invalid``,
    ``unsupported_version``).
    """

    def __init__(self, reason: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.reason}: {self.message}{where}"


class Wire(BaseModel):
    """Base of every wire schema: strict, immutable, no unknown fields."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    # Fields excluded from canonical bytes (the signature over them, mostly). A ClassVar, not a private
    # attribute: pydantic deep-copies private attributes into every instance it builds.
    _unsigned_fields: ClassVar[tuple[str, ...]] = ("signature",)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="python")

    def canonical(self) -> list[Any]:
        """Field values in declaration order (nested schemas likewise), signature excluded."""
        canonical: list[Any] = _canonical(self.model_dump(mode="python", exclude=set(self._unsigned_fields)))
        return canonical


class AdditiveWire(Wire):
    """A schema that grew optional fields after v1 (listed in `_additive`).

    An additive field left at its default is omitted when the message is dumped
    (on the wire and in canonical bytes), so such a message is byte for byte what
    it was before the field existed: earlier signatures, hashes and decoders stay
    valid.  Set, it is appended in declaration order."""

    _additive: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_default_additive(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            fields = type(self).model_fields
            for name in self._additive:
                if name in data and getattr(self, name) == fields[name].default:
                    del data[name]
        return data


def _canonical(value: Any) -> Any:
    # Schemas have no free-form dict fields, so every dict here is a nested
    # schema dumped in declaration order: keep the order, drop the keys.
    if isinstance(value, dict):
        return [_canonical(v) for v in value.values()]
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def canonical_bytes(message: Wire, domain: str) -> bytes:
    """Domain-tagged canonical bytes of `message` (signature fields excluded)."""
    packed: bytes = msgpack.packb([domain, message.canonical()], use_bin_type=True)
    return packed


def content_id(message: Wire, domain: str) -> str:
    """sha256 hex of the message's canonical bytes under `domain`."""
    return hashlib.sha256(canonical_bytes(message, domain)).hexdigest()


def encode(message: Wire) -> bytes:
    packed: bytes = msgpack.packb(message.to_wire(), use_bin_type=True)
    return packed


M = TypeVar("M", bound=Wire)


def _depth(obj: Any, depth: int = 0) -> int:
    if depth > _MAX_DEPTH:
        return depth
    if isinstance(obj, dict):
        return max((_depth(v, depth + 1) for v in obj.values()), default=depth + 1)
    if isinstance(obj, list):
        return max((_depth(v, depth + 1) for v in obj), default=depth + 1)
    return depth


def decode(schema: type[M], data: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> M:
    """Decode and validate `data` as `schema`, or raise DecodeError."""
    if len(data) > max_bytes:
        raise DecodeError(
            "too_large", f"message of {len(data)} bytes exceeds the {max_bytes}-byte limit for {schema.__name__}"
        )
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
        )
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError("not_msgpack", f"not a MessagePack document: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError("invalid", f"expected a map for {schema.__name__}, got {type(obj).__name__}")
    if _depth(obj) > _MAX_DEPTH:
        raise DecodeError("invalid", f"nesting deeper than {_MAX_DEPTH} levels")
    version = obj.get("v")
    expected = schema.model_fields["v"].default if "v" in schema.model_fields else None
    if expected is not None and version != expected:
        raise DecodeError(
            "unsupported_version", f"{schema.__name__} version {version!r} is not supported (expected {expected})", "v"
        )
    try:
        return schema.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ()))
        raise DecodeError("invalid", f"{schema.__name__}: {err.get('msg', 'invalid')}", field) from None
