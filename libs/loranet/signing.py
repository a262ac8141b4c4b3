"""Ed25519 identities and signatures over domain-tagged canonical bytes.

Requests are signed by clients, results by nodes, verdicts by verifiers.  The
domain tag (one per signed schema: its `SIGNING_DOMAIN`, see loranet.protocol's
`Signed`) stops a signature made for one kind of message from being replayed as
another.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .codec import Wire, canonical_bytes
from .errors import Invalid


class SignatureInvalid(Invalid):
    """A signature does not verify for the claimed key and message."""


@dataclass(frozen=True)
class Identity:
    """An Ed25519 key pair; `public` is the 32-byte verify key."""

    signing_key: SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != 32:
            raise ValueError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(SigningKey(seed))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        """The identity whose seed is at `path`, created there (mode 0600) on first use."""
        if Path(path).exists():
            return cls.from_file(path)
        identity = cls.generate()
        identity.save(path)
        return identity

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Identity:
        """Load a hex seed from `path`; refuse files readable by group/others."""
        return cls.from_seed(bytes.fromhex(read_secret_file(path).strip()))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the seed as hex with mode 0600."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(bytes(self.signing_key).hex())

    @property
    def public(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def key_id(self) -> str:
        """Short printable id of the public key (first 16 hex chars)."""
        return self.public.hex()[:16]

    def sign_bytes(self, payload: bytes) -> bytes:
        return self.signing_key.sign(payload).signature


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """The text of a key file; refused if group or others may access it."""
    p = Path(path)
    mode = p.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"key file {p} is accessible by others (mode {oct(mode & 0o777)}); run: chmod 600 {p}")
    return p.read_text()


def write_secret_file(path: str | os.PathLike[str], text: str) -> None:
    """Write a key file with mode 0600."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


M = TypeVar("M", bound=Wire)


def signing_domain(message: Wire) -> str:
    """The domain tag a signed schema declares (TypeError for a schema that is not signed)."""
    domain = getattr(type(message), "SIGNING_DOMAIN", "")
    if not domain:
        raise TypeError(f"{type(message).__name__} is not a signed schema")
    return str(domain)


def sign(message: M, identity: Identity) -> M:
    """Return a copy of `message` (a signed schema) with its `signature` field set."""
    signature = identity.sign_bytes(canonical_bytes(message, signing_domain(message)))
    return message.model_copy(update={"signature": signature})


def verify(message: Wire, public_key: bytes) -> None:
    """Raise SignatureInvalid unless `message.signature` verifies under `public_key`."""
    domain = signing_domain(message)
    signature = getattr(message, "signature", b"")
    if len(public_key) != 32:
        raise SignatureInvalid(f"public key must be 32 bytes, got {len(public_key)}")
    if len(signature) != 64:
        raise SignatureInvalid(f"signature must be 64 bytes, got {len(signature)}")
    try:
        VerifyKey(public_key).verify(canonical_bytes(message, domain), signature)
    except BadSignatureError:
        raise SignatureInvalid(
            f"{type(message).__name__} signature does not verify for key {public_key.hex()[:16]}"
        ) from None


def devnet_address(name: str) -> str:
    """A deterministic placeholder Ethereum address for a devnet identity (holds no key)."""
    return "0x" + hashlib.sha256(f"loranet-devnet-address:{name}".encode()).hexdigest()[:40]
