"""Datanets through the running datastore (real NATS + Redis): signed contributions, immutable versions."""

from __future__ import annotations

import hashlib
import json

import pytest
from ds_helpers import adapter_put, model_manifest
from eth_utils import keccak

from loranet import merkle
from loranet import protocol as p
from loranet.errors import RemoteError
from loranet.runtime import request
from loranet.signing import Identity, sign

ALICE, BOB = Identity.from_seed(b"a" * 32), Identity.from_seed(b"b" * 32)
A_PAY, B_PAY = "0x" + "a1" * 20, "0x" + "b2" * 20


def records(*answers: str) -> bytes:
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": a}]} for a in answers]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def contribution(who: Identity, data: bytes, payout: str, datanet: str = "sea") -> p.Contribution:
    c = p.Contribution(datanet=datanet, contributor_key=who.public, payout_address=payout, records=data, created_at=1.0)
    return sign(c, who)


async def call(ds, subject, message):
    return await request(ds.nc, subject, message, timeout=10)


async def refused(ds, subject, message, code: str, phrase: str = "") -> None:
    with pytest.raises(RemoteError) as err:
        await call(ds, subject, message)
    assert err.value.code == code and phrase in err.value.message, (err.value.code, err.value.message)


async def test_contributions_make_immutable_versions_with_a_merkle_root(datastore):
    ds = datastore
    v0 = await call(ds, p.DATASTORE_DATANET_CREATE, p.DatanetCreate(name="sea", description="sea shanties"))
    assert (v0.version, v0.contributions, v0.merkle_root) == (0, [], "")
    again = await call(ds, p.DATASTORE_DATANET_CREATE, p.DatanetCreate(name="sea"))
    assert again == v0  # creating twice is a no-op
    alice_data, bob_data = records("Yo ho", "Heave ho"), records("Avast")
    v1 = await call(ds, p.DATASTORE_DATANET_CONTRIBUTE, contribution(ALICE, alice_data, A_PAY))
    v2 = await call(ds, p.DATASTORE_DATANET_CONTRIBUTE, contribution(BOB, bob_data, B_PAY))
    ids = [hashlib.sha256(alice_data).hexdigest(), hashlib.sha256(bob_data).hexdigest()]
    assert [c.contribution_id for c in v2.contributions] == ids and v2.version == 2
    assert [c.records for c in v2.contributions] == [2, 1] and v2.contributions[0].payout_address == A_PAY
    assert v2.merkle_root == "0x" + merkle.root([keccak(bytes.fromhex(i)) for i in ids]).hex()
    # Versions never change; the latest is the default.
    assert await call(ds, p.DATASTORE_DATANET_GET, p.DatanetGet(name="sea", version=1)) == v1
    assert await call(ds, p.DATASTORE_DATANET_GET, p.DatanetGet(name="sea")) == v2
    await refused(ds, p.DATASTORE_DATANET_GET, p.DatanetGet(name="sea", version=3), "not_found")
    # The same contribution again is no new version; its records come back checked.
    assert await call(ds, p.DATASTORE_DATANET_CONTRIBUTE, contribution(ALICE, alice_data, A_PAY)) == v2
    got = await call(ds, p.DATASTORE_CONTRIBUTION_GET, p.ContributionGet(contribution_id=ids[0]))
    assert got.records == alice_data


async def test_bad_contributions_are_refused_with_their_reason_and_nothing_changes(datastore, models):
    ds = datastore
    await call(ds, p.DATASTORE_DATANET_CREATE, p.DatanetCreate(name="reef"))
    mine = records("Coral")
    await call(ds, p.DATASTORE_DATANET_CONTRIBUTE, contribution(ALICE, mine, A_PAY, "reef"))
    # The same content from another contributor: the first keeps it.
    await refused(ds, p.DATASTORE_DATANET_CONTRIBUTE, contribution(BOB, mine, B_PAY, "reef"), "conflict", "first")
    # A key claiming an address another key claimed first.
    other = records("Kelp")
    await refused(ds, p.DATASTORE_DATANET_CONTRIBUTE, contribution(BOB, other, A_PAY, "reef"), "forbidden", "belongs")
    # Forged: signed by one key, naming another.
    forged = contribution(ALICE, other, A_PAY, "reef").model_copy(update={"contributor_key": BOB.public})
    await refused(ds, p.DATASTORE_DATANET_CONTRIBUTE, forged, "forbidden", "signature")
    # Malformed records, an unknown datanet.
    for bad in (b"not json\n", b'{"messages": []}\n', b'{"text": ""}\n', b"\n\n"):
        await refused(ds, p.DATASTORE_DATANET_CONTRIBUTE, contribution(ALICE, bad, A_PAY, "reef"), "invalid")
    await refused(ds, p.DATASTORE_DATANET_CONTRIBUTE, contribution(ALICE, other, A_PAY, "nowhere"), "not_found")
    latest = await call(ds, p.DATASTORE_DATANET_GET, p.DatanetGet(name="reef"))
    assert latest.version == 1  # nothing refused made a version
    # Other blobs are not served under a contribution's name.
    await call(ds, p.DATASTORE_MODEL_PUT, p.ModelPut(manifest=model_manifest(models.model_id)))
    await call(ds, p.DATASTORE_ADAPTER_PUT, adapter_put(models.adapters[0], models.model_id))
    weights = hashlib.sha256(models.adapters[0].weights).hexdigest()
    await refused(ds, p.DATASTORE_CONTRIBUTION_GET, p.ContributionGet(contribution_id=weights), "not_found")
