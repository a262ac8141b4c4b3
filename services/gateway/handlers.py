"""The gateway's HTTP routes (aiohttp): OpenAI's API over loranet jobs.

    GET  /v1/models              base models and "<base>:<adapter>" for each adapter
    GET  /v1/models/{model}
    POST /v1/completions         prompt → job → settled text (+ "loranet": verdict, receipt)
    POST /v1/chat/completions    messages → chat template → job → …
    GET  /healthz

An API key (Authorization: Bearer) names a client; each client has its own
Ed25519 key (derived from the gateway secret), address and escrow.  A request
is signed as that client, submitted with loranet.client.Client, and answered
once the job has been verified and settled.  `stream: true` answers with
server-sent events: the node's tokens as it generates them, marked provisional
(from jobs.tokens.<client_id>.<job_id>), progress as SSE comments, and a last
chunk with the verdict and receipt; `verified_only: true` streams only the
verified text, once settled.  `confidential: true` seals the prompt to one
node and the verifier committee (its tokens are never streamed in clear).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from loranet import confidential
from loranet import protocol as p
from loranet.client import Client, JobFailed, live_nodes
from loranet.codec import DecodeError
from loranet.errors import RemoteError
from loranet.observability import HANDLER_SECONDS, MESSAGES, EventLog
from loranet.ratelimit import RateLimiter
from loranet.runtime import request
from loranet.signing import Identity, sign

from . import domain
from .domain import ApiError
from .settings import GatewaySettings

KEEP_ALIVE_S = 10.0
HISTORY = 360  # points kept per chart
SAMPLE_S = 5.0  # the network's tokens/s, sampled this often
WEB_DIR = Path(__file__).resolve().parent / "web"


class GatewayService:
    def __init__(self, nc: NATS, settings: GatewaySettings, log: EventLog) -> None:
        self.nc = nc
        self.settings = settings
        self.log = log
        self.keys = settings.api_keys()
        self.clients: dict[str, Client] = {}
        self._connect_locks: dict[str, asyncio.Lock] = {}
        self.funded: set[str] = set()
        self._fund_locks: dict[str, asyncio.Lock] = {}
        self._catalogue: domain.Catalogue | None = None
        self._catalogue_at = 0.0
        self.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        # The web app's charts: each client's recent jobs (by address), the network's tokens/s over time.
        self.history: dict[str, deque[dict[str, Any]]] = {}
        self.network: deque[dict[str, Any]] = deque(maxlen=HISTORY)

    # -- identities ---------------------------------------------------------------

    async def authenticate(self, req: web.Request) -> tuple[str, Client]:
        """The client named by the request's API key (401 otherwise), on its own NATS connection."""
        presented = domain.bearer_key(req.headers.get("Authorization"))
        name = None
        for key, client_name in self.keys.items():  # constant-time comparison against every key
            if presented and hmac.compare_digest(key.encode(), presented.encode()):
                name = client_name
        if name is None:
            raise domain.bad_key()
        client = self.clients.get(name)
        if client is None:
            async with self._connect_locks.setdefault(name, asyncio.Lock()):
                client = self.clients.get(name) or await self._client_of(name)
                self.clients[name] = client
        return name, client

    async def _client_of(self, name: str) -> Client:
        """Key `name`'s client: its own NATS identity through the auth callout (gateway_client_nats_url), so
        its jobs, events and tokens are only ever read on its own connection; else the gateway's."""
        identity = Identity.from_seed(domain.client_seed(self.settings.gateway_secret, name))
        url = self.settings.gateway_client_nats_url
        if not url:
            return Client(self.nc, identity, timeout_s=self.settings.request_timeout_s)
        try:
            client = await Client.connect(
                url, identity, max_reconnect_attempts=-1, name=f"loranet-gateway-client-{name}"[:64]
            )
        except Exception as exc:
            raise ApiError(503, f"cannot connect as client {name!r}: {exc}", "server_error") from None
        client.timeout_s = self.settings.request_timeout_s
        return client

    async def close_clients(self) -> None:
        for client in list(self.clients.values()):
            if client.nc is not self.nc:
                await client.nc.drain()
        self.clients.clear()

    async def ensure_escrow(self, name: str, client: Client) -> None:
        """Refuse with 402 unless the client's escrow covers a job's max fee (devnet: faucet once first)."""
        needed = self.settings.max_fee
        balance = await self._call(client.balance())
        if balance.escrow >= needed:
            return
        if self.settings.gateway_faucet and name not in self.funded:
            async with self._fund_locks.setdefault(name, asyncio.Lock()):
                if name not in self.funded:
                    await self._call(client.faucet(self.settings.faucet_amount, self.settings.faucet_escrow))
                    self.funded.add(name)
                    self.log.info(
                        "client.funded", client=name, address=client.address, escrow=str(self.settings.faucet_escrow)
                    )
            balance = await self._call(client.balance())
        if balance.escrow < needed:
            raise domain.insufficient_escrow(balance.escrow, needed, client.address)

    # -- the catalogue --------------------------------------------------------------

    async def catalogue(self, refresh: bool = False) -> domain.Catalogue:
        now = time.monotonic()
        if self._catalogue is not None and not refresh and now - self._catalogue_at < self.settings.catalogue_refresh_s:
            return self._catalogue
        bases = []
        for name in self.settings.gateway_models:
            try:
                bases.append(
                    await self._call(
                        request(self.nc, p.DATASTORE_MODEL_GET, p.ModelGet(model=name), self.settings.request_timeout_s)
                    )
                )
            except ApiError as exc:
                if exc.code != "not_found":
                    raise
        reply = await self._call(
            request(self.nc, p.DATASTORE_ADAPTER_LIST, p.AdapterList(), self.settings.request_timeout_s)
        )
        self._catalogue, self._catalogue_at = domain.Catalogue.build(bases, reply.adapters), now
        return self._catalogue

    async def resolve_spec(self, body: Any, chat: bool) -> domain.JobSpec:
        def parse(catalogue: domain.Catalogue) -> domain.JobSpec:
            if chat:
                return domain.chat_request(body, catalogue, self.settings.chat_max_tokens)
            return domain.completion_request(body, catalogue)

        try:
            return parse(await self.catalogue())
        except ApiError as exc:
            if exc.openai_code != "model_not_found":
                raise
            return parse(await self.catalogue(refresh=True))  # registered since the last read?

    @staticmethod
    async def _call(awaitable: Awaitable[Any]) -> Any:
        """A request to the bus, its failures as OpenAI errors."""
        try:
            return await awaitable
        except RemoteError as exc:
            status = {"not_found": 404, "invalid": 400, "forbidden": 403, "unavailable": 503}.get(exc.code, 502)
            raise ApiError(
                status,
                f"{exc.code}: {exc.message}",
                "server_error" if status >= 500 else "invalid_request_error",
                exc.field or None,
                exc.code,
            ) from None
        except (TimeoutError, NoRespondersError, NatsTimeoutError) as exc:
            raise ApiError(
                503,
                f"the loranet network did not answer ({type(exc).__name__}); try again",
                "server_error",
                None,
                "unavailable",
            ) from None

    # -- jobs -------------------------------------------------------------------------

    async def build_job(self, client: Client, spec: domain.JobSpec) -> p.JobRequest:
        job = client.build(
            model_id=spec.entry.model_id,
            adapter_id=spec.entry.adapter_id,
            prompt=spec.prompt,
            tokenizer_id=spec.entry.tokenizer_id,
            max_tokens=spec.max_tokens,
            sampling=spec.sampling,
            max_fee=self.settings.max_fee,
            ttl_s=self.settings.job_ttl_s,
        )
        if spec.stream and not spec.verified_only and not spec.confidential:
            job = sign(job.model_copy(update={"stream": True, "signature": b""}), client.identity)
        if spec.confidential:
            try:
                job = await client.seal_for(job)
            except JobFailed as exc:
                raise ApiError(503, str(exc), "server_error", "confidential", "unavailable") from None
        return job

    async def run_job(
        self, client: Client, job: p.JobRequest, on_event: Callable[[p.JobEvent], None] | None = None
    ) -> p.JobRecord:
        try:
            await client.publish(job)
        except JobFailed as exc:
            raise ApiError(409, str(exc), "invalid_request_error", None, "duplicate_job") from None
        self.log.info("job.submitted", job_id=job.job_id, client=client.address, stream=job.stream)
        try:
            await client.wait(job.job_id, self.settings.job_timeout_s, on_event=on_event)
        except JobFailed as exc:
            raise ApiError(504, str(exc), "server_error", None, "job_timeout", {"job_id": job.job_id}) from None
        record = await self.record(client, job.job_id)
        self.history.setdefault(client.address, deque(maxlen=HISTORY)).append(
            {
                "at": time.time(),
                "latency_s": round(time.time() - job.created_at, 3),
                "status": str(record.status),
                "fee": str(record.receipt.fee if record.receipt else 0),
                "split": {k: str(v) for k, v in domain.split_by_party(record.receipt).items()},
            }
        )
        return record

    async def record(self, client: Client, job_id: str) -> p.JobRecord:
        """A job's record as its client sees it: a confidential job's output opened with the client's key."""
        record: p.JobRecord = await self._call(client.job(job_id))
        if record.result is None:
            return record
        try:
            return record.model_copy(update={"result": confidential.opened_result(record.result, client.identity)})
        except confidential.ConfidentialError as exc:
            raise ApiError(502, f"the sealed output does not open: {exc}", "server_error") from None

    # -- routes -----------------------------------------------------------------------

    async def healthz(self, req: web.Request) -> web.Response:
        ok = self.nc.is_connected
        return web.json_response({"status": "ok" if ok else "nats disconnected"}, status=200 if ok else 503)

    async def list_models(self, req: web.Request) -> web.Response:
        await self.authenticate(req)
        return web.json_response((await self.catalogue()).listing())

    async def get_model(self, req: web.Request) -> web.Response:
        await self.authenticate(req)
        name = req.match_info["model"]
        try:
            return web.json_response((await self.catalogue()).model_object(name))
        except ApiError as exc:
            if exc.openai_code != "model_not_found":
                raise
            return web.json_response((await self.catalogue(refresh=True)).model_object(name))

    async def completions(self, req: web.Request) -> web.StreamResponse:
        return await self._complete(req, chat=False)

    async def chat_completions(self, req: web.Request) -> web.StreamResponse:
        return await self._complete(req, chat=True)

    async def _complete(self, req: web.Request, chat: bool) -> web.StreamResponse:
        name, client = await self.authenticate(req)
        if not self.limiter.allow(name):
            raise domain.rate_limited(self.limiter.retry_after(name))
        try:
            body = json.loads(await req.text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise domain.invalid(f"the request body is not valid JSON: {exc}") from None
        spec = await self.resolve_spec(body, chat)
        await self.ensure_escrow(name, client)
        created = int(time.time())
        job = await self.build_job(client, spec)
        if not spec.stream:
            record = await self.run_job(client, job)
            error = domain.outcome_error(record)
            if error is not None:
                raise error
            return web.json_response(
                domain.chat_body(spec, record, created) if chat else domain.completion_body(spec, record, created)
            )
        return await self._stream(req, client, job, spec, chat, created)

    async def _stream(
        self, req: web.Request, client: Client, job: p.JobRequest, spec: domain.JobSpec, chat: bool, created: int
    ) -> web.StreamResponse:
        """Server-sent events: the node's provisional tokens as they come (unless `verified_only`, or the job
        is confidential), a note if a result is rejected, then the verified text's remainder and the verdict."""
        writer = domain.StreamWriter(spec, job.job_id, created, chat, self.settings.stream_chunk_chars)
        inbox: asyncio.Queue[p.TokenDelta | p.JobEvent] = asyncio.Queue()
        tokens = None
        if job.stream:  # listen before the job exists, so no token is missed

            async def on_tokens(msg: Any) -> None:
                try:
                    inbox.put_nowait(p.JOB_TOKENS_ALL.decode(msg.data))
                except DecodeError:
                    pass

            tokens = await client.nc.subscribe(p.job_tokens(client.identity.public, job.job_id), cb=on_tokens)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(req)
        running = asyncio.ensure_future(self.run_job(client, job, on_event=inbox.put_nowait))
        try:
            while not running.done():
                getter = asyncio.ensure_future(inbox.get())
                done, _ = await asyncio.wait(
                    {running, getter}, timeout=KEEP_ALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                if getter not in done:
                    getter.cancel()
                    if not done:
                        await response.write(b": waiting\n\n")
                    continue
                item = getter.result()
                if isinstance(item, p.TokenDelta):
                    chunks = writer.provisional(item)
                elif item.stage is p.Stage.RERUN:
                    chunks = writer.withdrawn(item.attempt, item.reason)
                else:
                    await response.write(f": {item.stage}\n\n".encode())  # an SSE comment: progress
                    continue
                for chunk in chunks:
                    await response.write(domain.sse(chunk))
            try:
                record = running.result()
                error = domain.outcome_error(record)
            except ApiError as exc:
                error = exc
            if error is not None:
                await response.write(domain.sse(error.body()))
            else:
                for chunk in writer.final(record):
                    await response.write(domain.sse(chunk))
            await response.write(domain.sse("[DONE]"))
        finally:
            if tokens is not None:
                await tokens.unsubscribe()
            if not running.done():  # the client went away: stop following (the job itself runs on)
                running.cancel()
        await response.write_eof()
        return response

    # -- the web app ------------------------------------------------------------------

    async def index(self, req: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    async def me(self, req: web.Request) -> web.Response:
        name, client = await self.authenticate(req)
        balance = await self._call(client.balance())
        return web.json_response({"name": name, "address": client.address, "balance": domain.balance_view(balance)})

    async def nodes(self, req: web.Request) -> web.Response:
        _, client = await self.authenticate(req)
        beats = await self._call(client.nodes())
        stakes = await asyncio.gather(
            *(
                self._call(request(self.nc, p.SETTLEMENT_STAKE, p.StakeGet(address=hb.payout_address), 5.0))
                for hb in beats
            ),
            return_exceptions=True,
        )
        now = time.time()
        rows = [
            domain.node_view(hb, s if isinstance(s, p.Stake) else None, now)
            for hb, s in sorted(zip(beats, stakes), key=lambda x: x[0].node_id)
        ]
        return web.json_response({"nodes": rows})

    async def adapters(self, req: web.Request) -> web.Response:
        await self.authenticate(req)
        catalogue = await self.catalogue()
        base_of = {e.model_id: e.name for e in catalogue.entries.values() if not e.adapter_id}
        reply = await self._call(
            request(self.nc, p.DATASTORE_ADAPTER_LIST, p.AdapterList(), self.settings.request_timeout_s)
        )
        return web.json_response(
            {"adapters": [domain.adapter_view(a, base_of.get(a.base_model_id, "")) for a in reply.adapters]}
        )

    async def jobs(self, req: web.Request) -> web.Response:
        """The signed-in key's own recent jobs: never another key's."""
        _, client = await self.authenticate(req)
        reply = await self._call(
            request(
                client.nc,
                p.DATASTORE_JOB_LIST,
                p.JobList(client_address=client.address, limit=50),
                self.settings.request_timeout_s,
                to=p.datastore_job_list(client.identity.public),
            )
        )
        return web.json_response(
            {
                "jobs": [
                    {
                        "job_id": j.job_id,
                        "status": str(j.status),
                        "adapter_id": j.adapter_id,
                        "created_at": j.created_at,
                        "updated_at": j.updated_at,
                    }
                    for j in reply.jobs
                ]
            }
        )

    async def job(self, req: web.Request) -> web.Response:
        _, client = await self.authenticate(req)
        job_id = req.match_info["job_id"]
        try:
            p.JobGet(job_id=job_id)
        except ValueError:
            raise domain.invalid(f"not a job id: {job_id[:40]!r} (32 hex digits)", "job_id") from None
        record = await self.record(client, job_id)  # the datastore answers only for this key's own jobs
        return web.json_response(domain.job_view(record))

    async def epochs(self, req: web.Request) -> web.Response:
        await self.authenticate(req)
        reply = await self._call(request(self.nc, p.SETTLEMENT_EPOCHS, p.EpochList(limit=20), 10.0))
        return web.json_response(
            {"epochs": [{**e.model_dump(exclude={"v"}), "total_fees": str(e.total_fees)} for e in reply.epochs]}
        )

    async def balance(self, req: web.Request) -> web.Response:
        await self.authenticate(req)
        address = req.match_info["address"]
        try:
            ask = p.BalanceGet(address=address)
        except ValueError:
            raise domain.invalid(f"not an address: {address[:60]!r} (0x and 40 hex digits)", "address") from None
        b = await self._call(request(self.nc, p.SETTLEMENT_BALANCE, ask, self.settings.request_timeout_s))
        return web.json_response(domain.balance_view(b))

    async def stats(self, req: web.Request) -> web.Response:
        _, client = await self.authenticate(req)
        if not self.network:
            await self.sample_network()
        return web.json_response({"network": list(self.network), "mine": list(self.history.get(client.address, []))})

    async def sample_network(self) -> None:
        try:
            beats = await live_nodes(self.nc.jetstream())
        except Exception as exc:  # the next sample tries again
            self.log.warning("stats.sample_failed", error=repr(exc)[:200])
            return
        self.network.append(
            {
                "at": time.time(),
                "tokens_per_s": round(sum(hb.tokens_per_s for hb in beats), 1),
                "nodes": len(beats),
                "queue_depth": sum(hb.queue_depth for hb in beats),
            }
        )

    async def sampler(self, app: web.Application) -> Any:
        async def loop() -> None:
            while True:
                await self.sample_network()
                await asyncio.sleep(SAMPLE_S)

        task = asyncio.ensure_future(loop())
        yield
        task.cancel()


def error_middleware(log: EventLog):
    @web.middleware
    async def middleware(req: web.Request, handler):
        started = time.perf_counter()
        route = req.match_info.route.resource.canonical if req.match_info.route.resource else "unmatched"
        status = 500
        try:
            response = await handler(req)
            status = response.status
            return response
        except ApiError as exc:
            status = exc.status
            return web.json_response(exc.body(), status=exc.status)
        except web.HTTPException as exc:
            status = exc.status
            kind = "invalid_request_error" if exc.status < 500 else "server_error"
            return web.json_response(
                ApiError(exc.status, f"{req.method} {req.path}: {exc.reason}", kind).body(), status=exc.status
            )
        except Exception as exc:
            log.error("request.crashed", path=req.path, error=repr(exc))
            return web.json_response(
                ApiError(500, f"internal error: {type(exc).__name__}", "server_error").body(), status=500
            )
        finally:
            MESSAGES.labels("gateway", route, str(status)).inc()
            HANDLER_SECONDS.labels("gateway", route).observe(time.perf_counter() - started)

    return middleware


def build_app(gateway: GatewayService) -> web.Application:
    app = web.Application(middlewares=[error_middleware(gateway.log)], client_max_size=4 * p.MAX_PROMPT_CHARS + 65_536)
    app.add_routes(
        [
            web.get("/healthz", gateway.healthz),
            web.get("/v1/models", gateway.list_models),
            web.get("/v1/models/{model}", gateway.get_model),
            web.post("/v1/completions", gateway.completions),
            web.post("/v1/chat/completions", gateway.chat_completions),
            # the web app (services/gateway/web) and its JSON
            web.get("/", gateway.index),
            web.static("/static", WEB_DIR),
            web.get("/v1/loranet/me", gateway.me),
            web.get("/v1/loranet/nodes", gateway.nodes),
            web.get("/v1/loranet/adapters", gateway.adapters),
            web.get("/v1/loranet/jobs", gateway.jobs),
            web.get("/v1/loranet/jobs/{job_id}", gateway.job),
            web.get("/v1/loranet/epochs", gateway.epochs),
            web.get("/v1/loranet/balance/{address}", gateway.balance),
            web.get("/v1/loranet/stats", gateway.stats),
        ]
    )
    app.cleanup_ctx.append(gateway.sampler)
    return app
