"""Models, adapters and blobs through the running datastore (real NATS + Redis)."""

from __future__ import annotations

import msgpack
import pytest
from ds_helpers import OTHER_OWNER, OWNER, adapter_manifest, adapter_put, model_manifest

from loranet import codec
from loranet import protocol as p
from loranet.errors import RemoteError
from loranet.runtime import request
from services.datastore import domain


async def call(ds, subject, message):
    return await request(ds.nc, subject, message, timeout=10)


async def expect_error(ds, subject, message, code, field=None):
    with pytest.raises(RemoteError) as err:
        await call(ds, subject, message)
    assert err.value.code == code, err.value.message
    if field is not None:
        assert err.value.field == field, err.value.message
    return err.value


async def raw_error(ds, subject: str, data: bytes) -> p.ErrorReply:
    reply = await ds.nc.request(subject, data, timeout=10)
    return codec.decode(p.ErrorReply, reply.data)


async def register(ds, models, n=3):
    await call(ds, p.DATASTORE_MODEL_PUT, p.ModelPut(manifest=model_manifest(models.model_id)))
    return [await call(ds, p.DATASTORE_ADAPTER_PUT, adapter_put(a, models.model_id)) for a in models.adapters[:n]]


async def test_model_register_get_idempotent_and_conflicts(datastore, models):
    ds = datastore
    put = p.ModelPut(manifest=model_manifest(models.model_id))
    first = await call(ds, p.DATASTORE_MODEL_PUT, put)
    assert first.registered_at > 0 and first.name == "tiny-llama"
    again = await call(ds, p.DATASTORE_MODEL_PUT, put)
    assert again == first  # idempotent: the first registration stands, timestamp included
    assert await call(ds, p.DATASTORE_MODEL_GET, p.ModelGet(model="tiny-llama")) == first
    assert await call(ds, p.DATASTORE_MODEL_GET, p.ModelGet(model=models.model_id)) == first
    # Same id, another name → conflict; same name, another id → conflict.
    renamed = p.ModelPut(manifest=model_manifest(models.model_id, name="renamed"))
    await expect_error(ds, p.DATASTORE_MODEL_PUT, renamed, "conflict", "manifest")
    squat = p.ModelPut(manifest=model_manifest(models.other_model_id, name="tiny-llama"))
    await expect_error(ds, p.DATASTORE_MODEL_PUT, squat, "conflict", "manifest.name")
    await expect_error(ds, p.DATASTORE_MODEL_GET, p.ModelGet(model="nope"), "not_found", "model")
    await expect_error(ds, p.DATASTORE_MODEL_GET, p.ModelGet(model="f" * 64), "not_found")
    id_like = p.ModelPut(manifest=model_manifest(models.other_model_id, name="0" * 64))
    await expect_error(ds, p.DATASTORE_MODEL_PUT, id_like, "invalid", "manifest.name")


async def test_adapter_register_get_list_blob(datastore, models):
    ds = datastore
    stored = await register(ds, models)
    a0 = models.adapters[0]
    assert stored[0].adapter_id == a0.adapter_id and stored[0].registered_at > 0
    # Re-upload of the same content is a no-op that returns the first registration.
    again = await call(ds, p.DATASTORE_ADAPTER_PUT, adapter_put(a0, models.model_id))
    assert again == stored[0]
    by_name = await call(ds, p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter=a0.name))
    by_id = await call(ds, p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter=a0.adapter_id))
    assert by_name == by_id == stored[0]
    await expect_error(ds, p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter="missing"), "not_found", "adapter")
    # Blobs come back byte-identical, and hash to the id; chunked (16 KiB chunks in tests).
    for a in models.adapters:
        blob = await call(ds, p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter=a.name))
        assert (blob.adapter_id, blob.config, blob.weights) == (a.adapter_id, a.config, a.weights)
    import hashlib

    sha = hashlib.sha256(models.adapters[2].weights).hexdigest()
    assert (
        int(await ds.redis.hget(domain.blob_meta_key(sha), "chunks"))
        == -(-len(models.adapters[2].weights) // (16 * 1024))
        > 1
    )
    await expect_error(ds, p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter="missing"), "not_found")


async def test_adapter_list_filters(datastore, models):
    ds = datastore
    await call(ds, p.DATASTORE_MODEL_PUT, p.ModelPut(manifest=model_manifest(models.model_id)))
    a0, a1, a2 = models.adapters
    await call(ds, p.DATASTORE_ADAPTER_PUT, adapter_put(a0, models.model_id))
    await call(ds, p.DATASTORE_ADAPTER_PUT, adapter_put(a1, models.model_id, owner=OTHER_OWNER))
    await call(
        ds, p.DATASTORE_ADAPTER_PUT, adapter_put(a2, models.model_id, owner=OTHER_OWNER.upper().replace("0X", "0x"))
    )

    async def names(**kw):
        reply = await call(ds, p.DATASTORE_ADAPTER_LIST, p.AdapterList(**kw))
        return [m.name for m in reply.adapters]

    assert await names() == ["demo-0", "demo-1", "demo-2"]
    assert await names(base_model_id=models.model_id) == ["demo-0", "demo-1", "demo-2"]
    assert await names(base_model_id=models.other_model_id) == []
    assert await names(owner_address=OWNER) == ["demo-0"]
    assert await names(owner_address=OTHER_OWNER) == ["demo-1", "demo-2"]  # addresses match case-insensitively
    assert await names(base_model_id=models.model_id, owner_address=OTHER_OWNER) == ["demo-1", "demo-2"]
    assert await names(base_model_id=models.other_model_id, owner_address=OTHER_OWNER) == []


async def test_adapter_refusals(datastore, models):
    ds = datastore
    a0, a1, _ = models.adapters
    # Base model not registered yet.
    await expect_error(
        ds, p.DATASTORE_ADAPTER_PUT, adapter_put(a0, models.model_id), "not_found", "manifest.base_model_id"
    )
    await register(ds, models, n=1)
    # Weights that do not hash to the claimed id.
    tampered = bytearray(a1.weights)
    tampered[-1] ^= 0x01
    bad = p.AdapterPut(manifest=adapter_manifest(a1, models.model_id), config=a1.config, weights=bytes(tampered))
    await expect_error(ds, p.DATASTORE_ADAPTER_PUT, bad, "hash_mismatch", "manifest.adapter_id")
    # The claimed id belongs to other blobs.
    swapped = p.AdapterPut(manifest=adapter_manifest(a1, models.model_id), config=a0.config, weights=a0.weights)
    await expect_error(ds, p.DATASTORE_ADAPTER_PUT, swapped, "hash_mismatch")
    # Not an adapter at all.
    junk = p.AdapterPut(manifest=adapter_manifest(a1, models.model_id), config=b"{}", weights=b"")
    await expect_error(ds, p.DATASTORE_ADAPTER_PUT, junk, "invalid", "config")
    # Name taken by another adapter.
    await expect_error(
        ds, p.DATASTORE_ADAPTER_PUT, adapter_put(a1, models.model_id, name=a0.name), "conflict", "manifest.name"
    )
    # Same id, different manifest.
    await expect_error(
        ds, p.DATASTORE_ADAPTER_PUT, adapter_put(a0, models.model_id, weights=(5000, 5000)), "conflict", "manifest"
    )
    # Manifest that misdescribes the config.
    wrong_rank = adapter_put(a1, models.model_id)
    wrong_rank = wrong_rank.model_copy(update={"manifest": wrong_rank.manifest.model_copy(update={"rank": 999})})
    await expect_error(ds, p.DATASTORE_ADAPTER_PUT, wrong_rank, "invalid", "manifest.rank")
    # Bound to the wrong base (the demo config names its base by model id).
    await call(ds, p.DATASTORE_MODEL_PUT, p.ModelPut(manifest=model_manifest(models.other_model_id, "other")))
    await expect_error(
        ds, p.DATASTORE_ADAPTER_PUT, adapter_put(a1, models.other_model_id), "invalid", "manifest.base_model_id"
    )
    # Contributor weights not summing to 10000: the schema refuses it on both ends.
    with pytest.raises(ValueError, match="sum to 10000"):
        adapter_manifest(a1, models.model_id, weights=(6000, 3000))
    wire = adapter_put(a1, models.model_id).to_wire()
    wire["manifest"]["contributors"][0]["weight_bps"] = 6001
    err = await raw_error(ds, p.DATASTORE_ADAPTER_PUT.pattern, msgpack.packb(wire, use_bin_type=True))
    assert err.code == "invalid" and "10000" in err.message and err.field == "manifest"
    # Nothing refused was registered.
    listed = await call(ds, p.DATASTORE_ADAPTER_LIST, p.AdapterList())
    assert [m.adapter_id for m in listed.adapters] == [a0.adapter_id]


async def test_corrupted_blob_is_never_served_and_reupload_heals(datastore, models):
    ds = datastore
    await register(ds, models)
    a2 = models.adapters[2]
    import hashlib

    sha = hashlib.sha256(a2.weights).hexdigest()
    chunk = bytearray(await ds.redis.get(domain.blob_chunk_key(sha, 1)))
    chunk[100] ^= 0xFF
    await ds.redis.set(domain.blob_chunk_key(sha, 1), bytes(chunk))
    err = await expect_error(ds, p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter=a2.name), "hash_mismatch")
    assert a2.adapter_id in err.message
    # A lost chunk too.
    await ds.redis.delete(domain.blob_chunk_key(sha, 0))
    await expect_error(ds, p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter=a2.adapter_id), "hash_mismatch")
    # Other adapters are unaffected; the manifest is still readable.
    blob = await call(ds, p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter=models.adapters[0].name))
    assert blob.weights == models.adapters[0].weights
    await call(ds, p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter=a2.name))
    # Uploading the same content again rewrites the content-addressed chunks.
    await call(ds, p.DATASTORE_ADAPTER_PUT, adapter_put(a2, models.model_id))
    blob = await call(ds, p.DATASTORE_ADAPTER_BLOB, p.AdapterGet(adapter=a2.name))
    assert blob.weights == a2.weights


@pytest.mark.parametrize(
    "declared", [s for s in p.SUBJECTS if s.pattern.startswith("datastore.")], ids=lambda s: s.pattern
)
async def test_bad_input_gets_invalid_and_service_keeps_serving(datastore, models, declared):
    ds = datastore
    subject = p.datastore_job_get("01" * 32) if declared is p.DATASTORE_JOB_GET else declared.pattern
    limit = declared.max_bytes
    cases = {
        "not msgpack": b"\xc1\xc1\xc1",
        "not a map": msgpack.packb([1, 2, 3]),
        "wrong types": msgpack.packb(
            {"v": 1, "model": 5, "adapter": 5, "job_id": 5, "manifest": "x", "client_address": 5, "base_model_id": 7}
        ),
        "unknown version": msgpack.packb({"v": 99}),
        "oversized": msgpack.packb({"v": 1, "pad": b"x" * (limit + 1)}),
        "unknown field": msgpack.packb({"v": 1, "surprise": True}),
    }
    for case, data in cases.items():
        err = await raw_error(ds, subject, data)
        assert err.code == "invalid", (case, err)
    assert "too_large" in (await raw_error(ds, subject, cases["oversized"])).message
    assert "unsupported_version" in (await raw_error(ds, subject, cases["unknown version"])).message
    # Still serving.
    reply = await call(ds, p.DATASTORE_MODEL_PUT, p.ModelPut(manifest=model_manifest(models.model_id)))
    assert reply.model_id == models.model_id


async def test_an_adapter_registers_with_its_attribution_index_and_serves_it_checked(datastore, models):
    from loranet.attribution import AttributionIndex, Record

    ds = datastore
    await call(ds, p.DATASTORE_MODEL_PUT, p.ModelPut(manifest=model_manifest(models.model_id)))
    a = models.adapters[-1]
    index = AttributionIndex.build([Record("r0", "0x" + "03" * 20, (1, 2, 3, 4)), Record("r1", OWNER, (5, 6))])
    data, index_id = index.to_bytes(), index.content_id()
    manifest = adapter_manifest(a, models.model_id).model_copy(update={"attribution_index": index_id})
    put = p.AdapterPut(manifest=manifest, config=a.config, weights=a.weights, attribution=data)
    # Refused: bytes that are not the index the manifest names, an index with no name, a name with no index.
    wrong = put.model_copy(update={"attribution": data[:-1] + b"\x07"})
    await expect_error(ds, p.DATASTORE_ADAPTER_PUT, wrong, "hash_mismatch", "attribution")
    unnamed = put.model_copy(update={"manifest": adapter_manifest(a, models.model_id)})
    await expect_error(ds, p.DATASTORE_ADAPTER_PUT, unnamed, "invalid", "attribution")
    await expect_error(
        ds, p.DATASTORE_ADAPTER_PUT, put.model_copy(update={"attribution": b""}), "invalid", "attribution"
    )
    await expect_error(ds, p.DATASTORE_ADAPTER_GET, p.AdapterGet(adapter=a.name), "not_found")  # nothing stored
    stored = await call(ds, p.DATASTORE_ADAPTER_PUT, put)
    assert stored.attribution_index == index_id
    blob = await call(ds, p.DATASTORE_ATTRIBUTION_GET, p.AttributionGet(index_id=index_id))
    assert blob.data == data and AttributionIndex.from_bytes(blob.data, index_id).records == index.records
    missing = p.AttributionGet(index_id="0" * 64)
    await expect_error(ds, p.DATASTORE_ATTRIBUTION_GET, missing, "not_found", "index_id")
