"""The auth service's decision, with no I/O: who a connecting client is, and what it may reach.

nats-server sends a server-signed authorization request (a JWT) for every client connection;
`authorize` checks the server's signature and the client's signature over the server's nonce
(the client presents its loranet Ed25519 key as a NATS NKEY), and answers with a user JWT whose
permissions (`client_permissions`) let that key reach only its own subjects.  See
libs/loranet/natsauth.py for the encodings.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from loranet import protocol as p
from loranet.natsauth import (
    GLOBAL_ACCOUNT,
    PREFIX_SERVER,
    PREFIX_USER,
    AuthError,
    decode_jwt,
    decode_public,
    encode_jwt,
    inbox_prefix,
)

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
                p.datastore_job_list(client_id),  # its own jobs only
                p.DATASTORE_MODEL_GET.pattern,
                p.DATASTORE_ADAPTER_GET.pattern,
                p.DATASTORE_ADAPTER_LIST.pattern,
                p.DATASTORE_ADAPTER_PUT.pattern,  # adapter developers register their adapters
                p.DATASTORE_DATANET_CREATE.pattern,  # datanets: anyone creates one, contributes, reads
                p.DATASTORE_DATANET_CONTRIBUTE.pattern,
                p.DATASTORE_DATANET_GET.pattern,
                p.DATASTORE_CONTRIBUTION_GET.pattern,
                p.SETTLEMENT_DATANET_RECORD.pattern,  # a datanet version's root, on chain
                p.SETTLEMENT_BALANCE.pattern,
                p.SETTLEMENT_FAUCET.pattern,
                p.SETTLEMENT_STAKE.pattern,
                p.SETTLEMENT_EPOCHS.pattern,
                p.SETTLEMENT_CLAIM.pattern,  # anyone may have a contributor's balance claimed: only it is paid
                # confidential jobs: watch the node registry and the verifiers' keys, read-only
                "$JS.API.STREAM.INFO.KV_nodes",
                "$JS.API.CONSUMER.CREATE.KV_nodes",
                "$JS.API.CONSUMER.CREATE.KV_nodes.>",
                "$JS.API.CONSUMER.INFO.KV_nodes.*",
                "$JS.API.CONSUMER.DELETE.KV_nodes.>",
                "$JS.FC.KV_nodes.>",
                "$JS.API.STREAM.INFO.KV_verifiers",
                "$JS.API.CONSUMER.CREATE.KV_verifiers",
                "$JS.API.CONSUMER.CREATE.KV_verifiers.>",
                "$JS.API.CONSUMER.INFO.KV_verifiers.*",
                "$JS.API.CONSUMER.DELETE.KV_verifiers.>",
                "$JS.FC.KV_verifiers.>",
            ],
            "deny": [f"$JS.API.CONSUMER.CREATE.EVENTS.{name}.>" for name in SERVICE_EVENT_DURABLES],
        },
        "sub": {"allow": [inbox_prefix(client_id) + ".>", p.job_tokens_of(client_id)], "deny": []},
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
    response: dict[str, Any] = {
        "sub": user_nkey,
        "aud": server_id,
        "nats": {"type": "authorization_response", "version": 2},
    }
    try:
        client_id = p.client_id(client_key_of(nats_claims))
    except AuthError as exc:
        response["nats"]["error"] = str(exc)
        return Decision(encode_jwt(response, issuer), error=str(exc))
    perms = client_permissions(client_id)
    user: dict[str, Any] = {
        "sub": user_nkey,
        "aud": GLOBAL_ACCOUNT,
        "name": f"client-{client_id[:16]}",
        "nats": {
            "pub": perms["pub"],
            "sub": perms["sub"],
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        },
    }
    if user_ttl_s > 0:
        user["exp"] = int(time.time() + user_ttl_s)
    response["nats"]["jwt"] = encode_jwt(user, issuer)
    return Decision(encode_jwt(response, issuer), client_id=client_id)
