"""loranet.natsauth: the auth callout's encodings and decisions (the server side is
tests/deploy/test_nats_permissions.py)."""

from __future__ import annotations

import base64
import time

import nkeys
import pytest
from nacl.signing import SigningKey

from loranet import natsauth
from loranet import protocol as p
from loranet.signing import Identity
from services.auth import domain as auth_domain


def _request(server: SigningKey, user_nkey: str, opts: dict, nonce: str = "n0nce-from-srv") -> str:
    server_id = natsauth.encode_public(bytes(server.verify_key), natsauth.PREFIX_SERVER)
    claims = {
        "sub": "A-issuer",
        "aud": "nats-authorization-request",
        "exp": int(time.time()) + 2,
        "nats": {
            "server_id": {"id": server_id, "name": "s", "host": "127.0.0.1"},
            "user_nkey": user_nkey,
            "client_info": {"nonce": nonce} if opts.get("sig") else {},
            "connect_opts": opts,
            "type": "authorization_request",
            "version": 2,
        },
    }
    return natsauth.encode_jwt(claims, server, natsauth.PREFIX_SERVER)


def _signed_opts(key: Identity, by: Identity, nonce: str = "n0nce-from-srv") -> dict:
    return {"nkey": natsauth.public_of(key), "sig": base64.b64encode(by.sign_bytes(nonce.encode())).decode()}


def test_nkey_encoding_matches_the_nkeys_package():
    ident = Identity.generate()
    kp = nkeys.from_seed(bytearray(natsauth.seed_of(ident).encode()))
    assert kp.public_key.decode() == natsauth.public_of(ident)
    assert natsauth.decode_public(natsauth.public_of(ident), natsauth.PREFIX_USER) == ident.public
    with pytest.raises(natsauth.AuthError):
        natsauth.decode_public(natsauth.public_of(ident), natsauth.PREFIX_ACCOUNT)
    broken = natsauth.public_of(ident)
    with pytest.raises(natsauth.AuthError):
        natsauth.decode_public(broken[:-2] + ("A" if broken[-2] != "A" else "B") + broken[-1], natsauth.PREFIX_USER)


def test_an_honest_client_gets_its_own_permissions_only():
    issuer_public, issuer_seed = natsauth.new_issuer()
    issuer, server, client = natsauth.issuer_from_seed(issuer_seed), SigningKey.generate(), Identity.generate()
    user_nkey = natsauth.public_of(Identity.generate())  # the server's per-connection key
    decision = auth_domain.authorize(_request(server, user_nkey, _signed_opts(client, client)), issuer)
    assert decision.client_id == p.client_id(client.public) and not decision.error
    response = natsauth.decode_jwt(decision.response, natsauth.PREFIX_ACCOUNT)
    assert response["iss"] == issuer_public and response["sub"] == user_nkey
    assert response["aud"] == natsauth.encode_public(bytes(server.verify_key), natsauth.PREFIX_SERVER)
    user = natsauth.decode_jwt(response["nats"]["jwt"], natsauth.PREFIX_ACCOUNT)
    assert user["sub"] == user_nkey and user["aud"] == "$G" and user["nats"]["type"] == "user"
    cid = p.client_id(client.public)
    assert user["nats"]["sub"]["allow"] == [f"_INBOX_{cid}.>", f"jobs.tokens.{cid}.*"]  # its inbox, its tokens
    allow = user["nats"]["pub"]["allow"]
    assert f"$JS.API.CONSUMER.CREATE.EVENTS.*.jobs.events.{cid}.*" in allow
    assert f"datastore.job.get.{cid}" in allow
    events_rights = [s for s in allow if "EVENTS" in s and not s.startswith("$JS.FC.")]
    assert events_rights == [f"$JS.API.CONSUMER.CREATE.EVENTS.*.jobs.events.{cid}.*"]  # no filterless create
    assert "$JS.API.CONSUMER.CREATE.EVENTS.datastore.>" in user["nats"]["pub"]["deny"]


@pytest.mark.parametrize("case", ["no key", "wrong signer", "other nonce", "garbled signature"])
def test_a_client_that_does_not_prove_its_key_is_refused(case):
    _, issuer_seed = natsauth.new_issuer()
    issuer, server = natsauth.issuer_from_seed(issuer_seed), SigningKey.generate()
    alice, mallory = Identity.generate(), Identity.generate()
    opts = {
        "no key": {"user": "client", "pass": "x"},
        "wrong signer": _signed_opts(alice, mallory),
        "other nonce": _signed_opts(alice, alice, nonce="another-nonce"),
        "garbled signature": {"nkey": natsauth.public_of(alice), "sig": "!!"},
    }[case]
    user_nkey = natsauth.public_of(Identity.generate())
    decision = auth_domain.authorize(_request(server, user_nkey, opts), issuer)
    assert decision.client_id == "" and decision.error
    response = natsauth.decode_jwt(decision.response, natsauth.PREFIX_ACCOUNT)
    assert response["nats"]["error"] and "jwt" not in response["nats"]


def test_a_request_not_signed_by_the_server_it_names_gets_no_answer():
    _, issuer_seed = natsauth.new_issuer()
    issuer, server, client = natsauth.issuer_from_seed(issuer_seed), SigningKey.generate(), Identity.generate()
    token = _request(server, natsauth.public_of(Identity.generate()), _signed_opts(client, client))
    head, body, sig = token.split(".")
    forged_sig = (
        base64.urlsafe_b64encode(SigningKey.generate().sign(f"{head}.{body}".encode()).signature).decode().rstrip("=")
    )
    with pytest.raises(natsauth.AuthError):
        auth_domain.authorize(f"{head}.{body}.{forged_sig}", issuer)
    with pytest.raises(natsauth.AuthError):
        auth_domain.authorize("not.a.jwt", issuer)
