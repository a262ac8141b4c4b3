"""Per-client NATS identities: nats-server's auth callout, answered with the client's own permissions.

Every client (SDK, CLI) connects with its loranet Ed25519 key presented as a NATS
user NKEY and signs the server's nonce with it (`connect_options`).  nats-server
(≥ 2.10, `authorization { auth_callout { ... } }` in deploy/nats/auth.conf) does
not decide such a connection itself: it sends a signed authorization request to
`$SYS.REQ.USER.AUTH`, which the auth service (services/auth) answers.  `authorize`
(services/auth/domain.py) checks the request's server signature and the client's signature over the
nonce, and answers with a user JWT, signed by the callout issuer (an account
NKEY), whose permissions let this key reach only its own subjects (the decision
is services/auth/domain.py's; this module holds the encodings both sides share):

* job events `jobs.events.<client_id>.<job_id>`: a consumer on EVENTS only through the
  filtered create subject `$JS.API.CONSUMER.CREATE.EVENTS.<name>.jobs.events.<client_id>.*`
  (nats-server checks that the filter in the request equals the one in the subject);
* its job records: `datastore.job.get.<client_id>` (the datastore answers only for jobs
  whose request this key signed);
* replies only on its own inbox prefix `_INBOX_<client_id>.>`.

`client_id` is the full hex of the Ed25519 public key (protocol.client_id), so no
key can be ground to collide with another client's subjects.  Service roles keep
their static users (auth.conf `auth_users`), which bypass the callout.

The JWT and NKEY encodings are those of github.com/nats-io/jwt v2 and nkeys:
base64url(header).base64url(claims).base64url(ed25519 signature), header
{"typ":"JWT","alg":"ed25519-nkey"}; keys are base32(prefix byte + 32-byte key + crc16).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from typing import Any

import nkeys
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from . import protocol as p
from .errors import Invalid
from .signing import Identity

PREFIX_ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
PREFIX_USER = nkeys.PREFIX_BYTE_USER
PREFIX_SERVER = nkeys.PREFIX_BYTE_SERVER

AUTH_CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH"
GLOBAL_ACCOUNT = "$G"  # server-configuration mode: every user is in the global account
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


class AuthError(Invalid):
    """An authorization request that must be refused (the reason goes back to the server)."""


# ---------------------------------------------------------------------------
# NKEY encoding
# ---------------------------------------------------------------------------


def encode_public(raw: bytes, prefix: int) -> str:
    """A 32-byte Ed25519 public key as an NKEY public key ('U…' user, 'A…' account, 'N…' server)."""
    if len(raw) != 32:
        raise ValueError("an NKEY is 32 bytes")
    body = bytes([prefix]) + raw
    return base64.b32encode(body + nkeys.crc16(bytearray(body)).to_bytes(2, "little")).decode().rstrip("=")


def decode_public(key: str, prefix: int) -> bytes:
    """The 32-byte Ed25519 key of an NKEY public key; AuthError unless it has `prefix` and a valid checksum."""
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
    except (binascii.Error, ValueError):
        raise AuthError(f"not an NKEY: {key[:60]!r}") from None
    if len(raw) != 35 or raw[0] != prefix:
        raise AuthError(f"not an NKEY of the expected kind: {key[:60]!r}")
    if nkeys.crc16(bytearray(raw[:33])) != int.from_bytes(raw[33:], "little"):
        raise AuthError(f"NKEY checksum mismatch: {key[:60]!r}")
    return raw[1:33]


def seed_of(identity: Identity, prefix: int = PREFIX_USER) -> str:
    """The NKEY seed ('SU…' for a user) of a loranet identity: the same Ed25519 key, NATS-encoded."""
    return str(nkeys.encode_seed(bytes(identity.signing_key), prefix).decode())


def public_of(identity: Identity, prefix: int = PREFIX_USER) -> str:
    return encode_public(identity.public, prefix)


def inbox_prefix(client_id: str) -> str:
    """The only inbox prefix a client may subscribe under (nats.connect(inbox_prefix=...))."""
    return f"_INBOX_{client_id}"


def connect_options(identity: Identity) -> dict[str, Any]:
    """nats.connect(**...) for a client: its key as an NKEY (nonce signed) and its own inbox prefix."""
    return {"nkeys_seed_str": seed_of(identity), "inbox_prefix": inbox_prefix(p.client_id(identity.public))}


# ---------------------------------------------------------------------------
# JWT (nats-io/jwt v2)
# ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(claims: dict[str, Any], issuer: SigningKey, issuer_prefix: int = PREFIX_ACCOUNT) -> str:
    """Sign `claims` as a NATS v2 JWT issued by `issuer` (iss, iat and jti are set here)."""
    body = dict(claims)
    body["iss"] = encode_public(bytes(issuer.verify_key), issuer_prefix)
    body["iat"] = int(time.time())
    body.pop("jti", None)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = (
        _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(body, separators=(",", ":")).encode())
    )
    return signing_input + "." + _b64(issuer.sign(signing_input.encode()).signature)


def decode_jwt(token: str, issuer_prefix: int) -> dict[str, Any]:
    """The claims of a NATS v2 JWT whose signature verifies under its own `iss` (an NKEY of `issuer_prefix`)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise AuthError("a JWT has three parts")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except (ValueError, binascii.Error):
        raise AuthError("a JWT part does not decode") from None
    if not isinstance(header, dict) or header.get("alg") != "ed25519-nkey" or not isinstance(claims, dict):
        raise AuthError("not an ed25519-nkey JWT")
    key = decode_public(str(claims.get("iss", "")), issuer_prefix)
    try:
        VerifyKey(key).verify((parts[0] + "." + parts[1]).encode(), signature)
    except (BadSignatureError, ValueError):
        raise AuthError("JWT signature does not verify") from None
    return claims


def new_issuer() -> tuple[str, str]:
    """A fresh callout issuer: (account public key 'A…', account seed 'SA…')."""
    key = SigningKey.generate()
    return encode_public(bytes(key.verify_key), PREFIX_ACCOUNT), nkeys.encode_seed(bytes(key), PREFIX_ACCOUNT).decode()


def issuer_from_seed(seed: str) -> SigningKey:
    """The signing key of an account seed ('SA…')."""
    try:
        prefix, raw = nkeys.decode_seed(bytearray(seed.strip().encode()))
    except nkeys.NkeysError as exc:
        raise ValueError(f"not an NKEY seed: {exc}") from None
    if prefix != PREFIX_ACCOUNT:
        raise ValueError("the auth callout issuer is an account seed ('SA…')")
    return SigningKey(bytes(raw))


if __name__ == "__main__":  # python -m loranet.natsauth: fresh keys for a deployment, as environment lines
    issuer_public, issuer_seed = new_issuer()
    service = Identity(SigningKey.generate())
    print(
        f"LORANET_NATS_AUTH_ISSUER={issuer_public}\nLORANET_AUTH_ISSUER_SEED={issuer_seed}\n"
        f"LORANET_NATS_AUTH_NKEY={public_of(service)}\nLORANET_AUTH_NKEY_SEED={seed_of(service)}"
    )
