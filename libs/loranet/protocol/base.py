"""Field types, limits and the envelope every message shares: the bottom of the protocol package.

Imports nothing from loranet above the codec and signing.
"""

from __future__ import annotations

import re
import secrets
from typing import Annotated, ClassVar, Literal, Self

from pydantic import BeforeValidator, Field, PlainSerializer, StringConstraints

from .. import signing
from ..codec import Wire

JobId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
ContentId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
OptContentId = Annotated[str, StringConstraints(pattern=r"^([0-9a-f]{64})?$")]
Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
# Node ids appear inside subjects (work.<node_id>): no dots, no wildcards.
NodeId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
ShortText = Annotated[str, StringConstraints(max_length=1024)]
PublicKey = Annotated[bytes, Field(min_length=32, max_length=32)]
# Empty until signed; signing.verify insists on 64 bytes.
Signature = Annotated[bytes, Field(max_length=64)]


def _wei_from_wire(value: object) -> object:
    # Amounts travel as decimal strings: MessagePack integers stop at 2**64.
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 30:
            raise ValueError("an amount is a decimal string of digits")
        return int(value)
    return value


Wei = Annotated[int, BeforeValidator(_wei_from_wire), Field(ge=0, lt=2**96), PlainSerializer(str, return_type=str)]
Bps = Annotated[int, Field(ge=0, le=10_000)]
TokenId = Annotated[int, Field(ge=0, lt=2**31)]
Timestamp = Annotated[float, Field(ge=0)]

MAX_PROMPT_CHARS = 32_768
MAX_TOKENS_LIMIT = 4096
MAX_TOKEN_IDS = MAX_PROMPT_CHARS + MAX_TOKENS_LIMIT + 8
MAX_BLOB_BYTES = 6 * 1024 * 1024


def new_job_id() -> str:
    """A fresh 128-bit job id as 32 hex characters."""
    return secrets.token_hex(16)


class Signed:
    """A signed message: it knows its signature domain and which of its fields holds the signer's key.

    job = job.signed_by(client)   # a copy with `signature` set
    job.verify()                  # SignatureInvalid unless it verifies under job.client_key
    """

    SIGNING_DOMAIN: ClassVar[str]
    SIGNER_FIELD: ClassVar[str]

    def signer_key(self) -> bytes:
        return bytes(getattr(self, self.SIGNER_FIELD))

    def signed_by(self, identity: signing.Identity) -> Self:
        return signing.sign(self, identity)  # type: ignore[type-var]

    def verify(self) -> None:
        """Raise signing.SignatureInvalid unless the signature verifies under the message's own signer key."""
        signing.verify(self, self.signer_key())  # type: ignore[arg-type]


class ErrorReply(Wire):
    """Error body of any request-reply endpoint."""

    v: Literal[1] = 1
    code: Literal["invalid", "not_found", "hash_mismatch", "conflict", "unavailable", "internal", "forbidden"]
    message: ShortText
    field: Annotated[str, StringConstraints(max_length=128)] = ""


class Ok(Wire):
    v: Literal[1] = 1


class DeadLetter(Wire):
    """A message that could not be handled, with why (subject dlq.<subject>)."""

    v: Literal[1] = 1
    subject: Annotated[str, StringConstraints(max_length=256)]
    service: Name
    reason: ShortText
    data: Annotated[bytes, Field(max_length=8 * 1024 * 1024)]
    deliveries: Annotated[int, Field(ge=0)] = 0
    at: Timestamp


# A name token inside a subject: no dots, no wildcards.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def subject_token(value: str, what: str) -> str:
    """`value` if it can stand as one token of a subject; ValueError naming `what` otherwise."""
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r} cannot be used in a subject (letters, digits, '-' and '_' only)")
    return value
