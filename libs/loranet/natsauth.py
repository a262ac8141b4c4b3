"""Per-client NATS identities: nats-server's auth callout, answered with the client's own permissions.

Every client (SDK, CLI) connects with its loranet Ed25519 key presented as a NATS
user NKEY and signs the server's nonce with it (`connect_options`).  nats-server
(≥ 2.10, `authorization { auth_callout { ... } }` in deploy/nats/auth.conf) does
not decide such a connection itself: it sends a signed authorization request to
`$SYS.REQ.USER.AUTH`, which the auth service (services/auth) answers.  `authorize`
below checks the request's server signature and the client's signature over the
nonce, and answers with a user JWT, signed by the callout issuer (an account
NKEY), whose permissions let this key reach only its own subjects:

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
from dataclasses import dataclass
from typing import Any

import nkeys
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from . import protocol as p
from .signing import Identity

PREFIX_ACCOUNT = nkeys.PREFIX_BYTE_ACCOUNT
PREFIX_USER = nkeys.PREFIX_BYTE_USER
PREFIX_SERVER = nkeys.PREFIX_BYTE_SERVER

AUTH_CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH"
GLOBAL_ACCOUNT = "$G"  # server-configuration mode: every user is in the global account
_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


class AuthError(ValueError):
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
    return nkeys.encode_seed(bytes(identity.signing_key), prefix).decode()


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
    signing_input = _b64(json.dumps(_HEADER, separators=(",", ":")).encode()) + "." + \
        _b64(json.dumps(body, separators=(",", ":")).encode())
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


# ---------------------------------------------------------------------------
# A client's permissions
# ---------------------------------------------------------------------------

# Durable consumers on EVENTS that services own: a client may not create or update a
# consumer under these names (an update could narrow the datastore's filter).
SERVICE_EVENT_DURABLES = ("datastore",)


def client_permissions(client_id: str) -> dict[str, dict[str, list[str]]]:
    """What one client key may publish and subscribe: its own events, records and inbox only."""
    if not p.CLIENT_ID.match(client_id):
        raise ValueError(f"not a client id: {client_id!r}")
    own_events = p.job_events_of(client_id)
    return {
        "pub": {
            "allow": [
                p.JOBS_SUBMIT.pattern,
                # follow its own jobs' events: a named consumer whose filter is in the API subject
                f"$JS.API.CONSUMER.CREATE.EVENTS.*.{own_events}",
                "$JS.FC.EVENTS.>",
                p.datastore_job_get(client_id),
                p.DATASTORE_MODEL_GET.pattern, p.DATASTORE_ADAPTER_GET.pattern, p.DATASTORE_ADAPTER_LIST.pattern,
                p.DATASTORE_ADAPTER_PUT.pattern,  # adapter developers register their adapters
                p.SETTLEMENT_BALANCE.pattern, p.SETTLEMENT_FAUCET.pattern, p.SETTLEMENT_STAKE.pattern,
                # confidential jobs: watch the node registry and the verifiers' keys, read-only
                "$JS.API.STREAM.INFO.KV_nodes", "$JS.API.CONSUMER.CREATE.KV_nodes",
                "$JS.API.CONSUMER.CREATE.KV_nodes.>", "$JS.API.CONSUMER.INFO.KV_nodes.*",
                "$JS.API.CONSUMER.DELETE.KV_nodes.>", "$JS.FC.KV_nodes.>",
                "$JS.API.STREAM.INFO.KV_verifiers", "$JS.API.CONSUMER.CREATE.KV_verifiers",
                "$JS.API.CONSUMER.CREATE.KV_verifiers.>", "$JS.API.CONSUMER.INFO.KV_verifiers.*",
                "$JS.API.CONSUMER.DELETE.KV_verifiers.>", "$JS.FC.KV_verifiers.>",
            ],
            "deny": [f"$JS.API.CONSUMER.CREATE.EVENTS.{name}.>" for name in SERVICE_EVENT_DURABLES],
        },
        "sub": {"allow": [inbox_prefix(client_id) + ".>"], "deny": []},
    }


# ---------------------------------------------------------------------------
# The callout
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What `authorize` decided: the response JWT for the server, and for the log the client or the reason."""

    response: str
    client_id: str = ""
    error: str = ""


def _nonce_signature(text: str) -> bytes:
    for decode in (lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), base64.b64decode):
        try:
            sig = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(sig) == 64:
            return sig
    raise AuthError("the nonce signature is not 64 bytes of base64")


def check_request(request_jwt: str) -> tuple[dict[str, Any], str, str]:
    """(claims, server id, user nkey) of a server-signed authorization request."""
    claims = decode_jwt(request_jwt, PREFIX_SERVER)
    nats_claims = claims.get("nats")
    if not isinstance(nats_claims, dict):
        raise AuthError("authorization request without its nats claims")
    server = nats_claims.get("server_id") or {}
    server_id, user_nkey = str(server.get("id", "")), str(nats_claims.get("user_nkey", ""))
    if server_id != claims.get("iss"):
        raise AuthError("authorization request not signed by the server it names")
    decode_public(user_nkey, PREFIX_USER)
    return nats_claims, server_id, user_nkey


def client_key_of(nats_claims: dict[str, Any]) -> bytes:
    """The client's Ed25519 key, once its signature over the server's nonce verifies."""
    opts = nats_claims.get("connect_opts") or {}
    info = nats_claims.get("client_info") or {}
    nkey, sig, nonce = str(opts.get("nkey", "")), str(opts.get("sig", "")), str(info.get("nonce", ""))
    if not nkey or not sig or not nonce:
        raise AuthError("a client connects with its Ed25519 key as a NATS NKEY and signs the server's nonce")
    key = decode_public(nkey, PREFIX_USER)
    try:
        VerifyKey(key).verify(nonce.encode(), _nonce_signature(sig))
    except BadSignatureError:
        raise AuthError(f"nonce signature does not verify for {nkey}") from None
    return key


def authorize(request_jwt: str, issuer: SigningKey, user_ttl_s: float = 0.0) -> Decision:
    """Answer one authorization request: a user JWT with the client's own permissions, or a refusal.

    The response is always for the server and user key the request names (nats-server ignores
    any other); a request that is not the server's own gets no answer (AuthError)."""
    nats_claims, server_id, user_nkey = check_request(request_jwt)
    response: dict[str, Any] = {"sub": user_nkey, "aud": server_id,
                                "nats": {"type": "authorization_response", "version": 2}}
    try:
        client_id = p.client_id(client_key_of(nats_claims))
    except AuthError as exc:
        response["nats"]["error"] = str(exc)
        return Decision(encode_jwt(response, issuer), error=str(exc))
    perms = client_permissions(client_id)
    user: dict[str, Any] = {
        "sub": user_nkey, "aud": GLOBAL_ACCOUNT, "name": f"client-{client_id[:16]}",
        "nats": {"pub": perms["pub"], "sub": perms["sub"], "subs": -1, "data": -1, "payload": -1,
                 "type": "user", "version": 2},
    }
    if user_ttl_s > 0:
        user["exp"] = int(time.time() + user_ttl_s)
    response["nats"]["jwt"] = encode_jwt(user, issuer)
    return Decision(encode_jwt(response, issuer), client_id=client_id)


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
    print(f"LORANET_NATS_AUTH_ISSUER={issuer_public}\nLORANET_AUTH_ISSUER_SEED={issuer_seed}\n"
          f"LORANET_NATS_AUTH_NKEY={public_of(service)}\nLORANET_AUTH_NKEY_SEED={seed_of(service)}")
