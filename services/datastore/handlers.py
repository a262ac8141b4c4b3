"""The datastore's routes: subject → typed handler."""

from __future__ import annotations

import asyncio
import time

from loranet import codec
from loranet import protocol as p
from loranet.errors import ServiceError
from loranet.model.adapters import adapter_id_of_blobs
from loranet.observability import EventLog
from loranet.runtime import Delivery, Endpoint, Pull

from . import domain
from .settings import DatastoreSettings
from .store import BlobCorrupted, RegistryStore


class DatastoreService:
    def __init__(
        self, store: RegistryStore, settings: DatastoreSettings, log: EventLog, stopping: asyncio.Event | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.log = log
        self.stopping = stopping or asyncio.Event()

    def routes(self) -> list[Endpoint | Pull]:
        return [
            Endpoint("model-put", p.DATASTORE_MODEL_PUT, self.put_model),
            Endpoint("model-get", p.DATASTORE_MODEL_GET, self.get_model),
            Endpoint("adapter-put", p.DATASTORE_ADAPTER_PUT, self.put_adapter),
            Endpoint("adapter-get", p.DATASTORE_ADAPTER_GET, self.get_adapter),
            Endpoint("adapter-list", p.DATASTORE_ADAPTER_LIST, self.list_adapters),
            Endpoint("adapter-blob", p.DATASTORE_ADAPTER_BLOB, self.adapter_blob),
            Endpoint("attribution-get", p.DATASTORE_ATTRIBUTION_GET, self.attribution_index),
            Endpoint("datanet-create", p.DATASTORE_DATANET_CREATE, self.create_datanet),
            Endpoint("datanet-contribute", p.DATASTORE_DATANET_CONTRIBUTE, self.contribute),
            Endpoint("datanet-get", p.DATASTORE_DATANET_GET, self.get_datanet),
            Endpoint("contribution-get", p.DATASTORE_CONTRIBUTION_GET, self.contribution_records),
            Endpoint("job-get", p.DATASTORE_JOB_GET, self.get_job, with_subject=True),
            Endpoint("job-list", p.DATASTORE_JOB_LIST, self.list_jobs, with_subject=True),
            Pull("job-events", p.DATASTORE_EVENTS, self.on_job_event, slots=32),
        ]

    # -- models ------------------------------------------------------------

    async def put_model(self, req: p.ModelPut) -> p.ModelManifest:
        domain.check_model_manifest(req.manifest)
        created, stored = await self.store.put_model(req.manifest)
        if created:
            self.log.info("model.registered", model_id=stored.model_id, name=stored.name)
        return stored

    async def get_model(self, req: p.ModelGet) -> p.ModelManifest:
        manifest = await self.store.get_model(req.model)
        if manifest is None:
            raise ServiceError("not_found", f"no model registered with id or name {req.model!r}", "model")
        return manifest

    # -- adapters ----------------------------------------------------------

    async def put_adapter(self, req: p.AdapterPut) -> p.AdapterManifest:
        manifest = req.manifest
        domain.check_adapter_upload(manifest, req.config, req.weights)
        domain.check_attribution_upload(manifest, req.attribution)
        if await self.store.get_model(manifest.base_model_id) is None:
            raise ServiceError(
                "not_found",
                f"base model {manifest.base_model_id} is not registered; register it first (datastore.model.put)",
                "manifest.base_model_id",
            )
        created, stored = await self.store.put_adapter(manifest, req.config, req.weights, req.attribution)
        if created:
            self.log.info(
                "adapter.registered", adapter_id=stored.adapter_id, name=stored.name, base_model_id=stored.base_model_id
            )
        return stored

    async def _resolve_adapter(self, adapter: str) -> str:
        adapter_id = await self.store.resolve_adapter(adapter)
        if not adapter_id:
            raise ServiceError("not_found", f"no adapter registered with id or name {adapter!r}", "adapter")
        return adapter_id

    async def get_adapter(self, req: p.AdapterGet) -> p.AdapterManifest:
        manifest = await self.store.get_adapter(await self._resolve_adapter(req.adapter))
        if manifest is None:  # removed between the two reads
            raise ServiceError("not_found", f"no adapter registered with id or name {req.adapter!r}", "adapter")
        return manifest

    async def list_adapters(self, req: p.AdapterList) -> p.AdapterListReply:
        return p.AdapterListReply(adapters=await self.store.list_adapters(req.base_model_id, req.owner_address))

    async def adapter_blob(self, req: p.AdapterGet) -> p.AdapterBlob:
        adapter_id = await self._resolve_adapter(req.adapter)
        try:
            blobs = await self.store.adapter_blobs(adapter_id)
            if blobs is None:
                raise ServiceError("not_found", f"adapter {adapter_id} has no stored blobs", "adapter")
            config, weights = blobs
            found = adapter_id_of_blobs(config, weights)
            if found != adapter_id:
                raise BlobCorrupted("-", f"blobs hash to adapter_id {found}")
        except (BlobCorrupted, ValueError) as exc:
            # Loud: stored bytes changed under us.  Re-uploading the adapter heals it.
            self.log.error("blob.hash_mismatch", adapter_id=adapter_id, detail=str(exc))
            raise ServiceError(
                "hash_mismatch",
                f"stored blobs of adapter {adapter_id} failed their hash check ({exc}); refusing to serve them",
                "adapter",
            ) from None
        return p.AdapterBlob(adapter_id=adapter_id, config=config, weights=weights)

    async def attribution_index(self, req: p.AttributionGet) -> p.AttributionIndexBlob:
        try:
            data = await self.store.blob(req.index_id)
        except BlobCorrupted as exc:
            self.log.error("blob.hash_mismatch", index_id=req.index_id, detail=str(exc))
            raise ServiceError(
                "hash_mismatch", f"stored attribution index {req.index_id} failed its hash check", "index_id"
            ) from None
        if data is None:
            raise ServiceError("not_found", f"no attribution index {req.index_id}", "index_id")
        return p.AttributionIndexBlob(index_id=req.index_id, data=data)

    # -- datanets ------------------------------------------------------------

    async def create_datanet(self, req: p.DatanetCreate) -> p.DatanetVersion:
        domain.check_name(req.name)
        created, version = await self.store.create_datanet(req)
        if created:
            self.log.info("datanet.created", datanet=req.name)
        return version

    async def contribute(self, req: p.Contribution) -> p.DatanetVersion:
        records = domain.check_contribution(req)
        added, version = await self.store.contribute(req, records)
        if added:
            self.log.info(
                "datanet.contributed",
                datanet=req.datanet,
                version=version.version,
                contribution_id=req.contribution_id(),
                records=records,
            )
        return version

    async def get_datanet(self, req: p.DatanetGet) -> p.DatanetVersion:
        version = await self.store.datanet_version(req.name, req.version)
        if version is None:
            at = "" if req.version < 0 else f"@{req.version}"
            raise ServiceError("not_found", f"no datanet {req.name}{at}", "name")
        return version

    async def contribution_records(self, req: p.ContributionGet) -> p.ContributionRecords:
        try:
            data = await self.store.contribution_records(req.contribution_id)
        except BlobCorrupted as exc:
            raise ServiceError(
                "hash_mismatch", f"contribution {req.contribution_id}: {exc}", "contribution_id"
            ) from None
        if data is None:
            raise ServiceError("not_found", f"no contribution {req.contribution_id}", "contribution_id")
        return p.ContributionRecords(contribution_id=req.contribution_id, records=data)

    # -- jobs --------------------------------------------------------------

    async def get_job(self, req: p.JobGet, subject: str) -> p.JobRecord:
        """A job's record, for its own client only: the subject's last token (datastore.job.get.<client_id>,
        the only one a client's NATS identity may publish) must be the key that signed the job."""
        fields = await self.store.job_fields(req.job_id)
        if not fields or domain.client_of(req.job_id, fields) != subject.rsplit(".", 1)[-1]:
            raise ServiceError(
                "not_found",
                f"no record of job {req.job_id} for this client (unknown, another "
                "client's, or older than the retention)",
                "job_id",
            )
        return domain.assemble_record(req.job_id, fields)

    async def list_jobs(self, req: p.JobList, subject: str) -> p.JobListReply:
        """The address's recent jobs that the subject's client signed (datastore.job.list.<client_id>, the
        only one a client's NATS identity may ask on): never another client's."""
        client = subject.rsplit(".", 1)[-1]
        jobs = await self.store.client_jobs(req.client_address, req.before, req.limit)
        return p.JobListReply(
            jobs=[
                domain.summary_of(domain.assemble_record(j, fields))
                for j, fields in jobs
                if domain.client_of(j, fields) == client
            ]
        )

    async def on_job_event(self, event: p.JobEvent, delivery: Delivery) -> None:
        body = domain.check_event(event, delivery.subject)
        client = p.parse_job_events(delivery.subject)[0]
        field = domain.event_field(event, body)
        encoded = codec.encode(event)
        request = p.request_of(body)
        deadline = time.monotonic() + self.settings.event_retry_s
        while True:
            try:
                new = await self.store.record_event(event.job_id, field, encoded, request, client)
                break
            except ServiceError as exc:
                # Redis is down: hold the event (the runtime keeps it in progress)
                # rather than burn its redeliveries; hand it back after event_retry_s.
                if exc.code != "unavailable" or time.monotonic() > deadline or self.stopping.is_set():
                    raise
                await asyncio.sleep(0.5)
        self.log.info("job.event", job_id=event.job_id, stage=event.stage, subject=delivery.subject, new=new)
