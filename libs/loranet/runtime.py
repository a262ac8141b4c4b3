"""The service runtime: every loranet service starts, serves and drains here.

A service is a table of routes — `Pull` (a JetStream durable consumer feeding
a typed handler) and `Endpoint` (a nats.micro request-reply endpoint), each
taking the subject's declaration from loranet.protocol (schema, size limit,
reply type) — plus any background tasks.  The runtime owns the connection, the topology, the
pull loops with slot-limited fetching and `in_progress()` heartbeats, the
dead-letter path, metrics and JSON logs, and a graceful drain on SIGTERM.

    async with Runtime("scheduler", settings) as rt:
        await rt.mount(routes)
        await rt.serve_forever()

Services that are NATS clients rather than stream consumers (auth, the gateway) use it
connect-only (`topology=False`), with plain subscriptions (`subscribe`) and their own
shutdown steps (`on_close`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import nats.micro
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext
from nats.js.errors import FetchTimeoutError
from nats.micro.request import Request as MicroRequest

from . import codec, protocol
from .codec import DecodeError, Wire
from .errors import STATUS, LoranetError, Refused, RemoteError, ServiceError, Unavailable, code_of
from .observability import DEAD_LETTERS, HANDLER_SECONDS, MESSAGES, EventLog, serve_metrics
from .protocol import Consumer, Request, Subject
from .settings import CommonSettings
from .topology import consumer_config, ensure_topology

M = TypeVar("M", bound=Wire)
R = TypeVar("R", bound=Wire)

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
DEAD_LETTER_KEEP_BYTES = 1024 * 1024
HAND_BACK_DELAY_S = 2.0  # > the pull loop's 1 s fetch timeout


@dataclass
class Delivery:
    """What a pull handler knows about the message beyond its body."""

    subject: str
    deliveries: int
    msg: Msg

    async def in_progress(self) -> None:
        await self.msg.in_progress()


@dataclass(frozen=True)
class Pull:
    """Route: a durable consumer whose messages decode as its subject's schema into `handler`."""

    name: str
    consumer: Consumer
    handler: Callable[[Any, Delivery], Awaitable[None]]
    slots: int = 16

    @property
    def subject(self) -> Subject[Any]:
        return self.consumer.subject


@dataclass(frozen=True)
class Endpoint:
    """Route: a request-reply endpoint; `handler` returns the subject's reply message."""

    name: str
    subject: Request[Any, Any]
    handler: Callable[..., Awaitable[Wire]]
    # The handler also gets the request's subject (a wildcard endpoint whose last token names the caller).
    with_subject: bool = False
    # Requests handled at once (nats-py hands an endpoint's requests over one at a time: each is run as a
    # task of its own, up to this many; past it the next waits, queued by NATS).
    concurrency: int = 64


@dataclass
class _Stats:
    inflight: int = 0
    handled: int = 0
    dead_lettered: int = 0
    slot_free: asyncio.Event = field(default_factory=asyncio.Event)


class Runtime:
    """Connection, topology, routes and shutdown for one service process."""

    def __init__(
        self,
        service: str,
        settings: CommonSettings,
        version: str = "0.1.0",
        topology: bool = True,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        """`topology`: create the streams at start (False: connect only, for a service without JetStream
        rights, like auth and the gateway); `connect_options`: extra nats.connect arguments (an NKEY seed,
        an inbox prefix)."""
        self.service = service
        self.topology = topology
        self.connect_options = connect_options or {}
        self.settings = settings
        self.version = version
        self.instance = settings.instance or f"{service}-{os.getpid()}"
        self.log = EventLog(service, self.instance, settings.log_level)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self.stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._subs: list[Any] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._micro: nats.micro.Service | None = None
        self._on_close: list[Callable[[], Awaitable[Any]]] = []
        self.stats: dict[str, _Stats] = {}

    @property
    def nc(self) -> NATS:
        """The NATS connection (RuntimeError before start or after close)."""
        if self._nc is None:
            raise RuntimeError(f"{self.service}: not connected (start the runtime first)")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context of the connection."""
        if self._js is None:
            raise RuntimeError(f"{self.service}: not connected (start the runtime first)")
        return self._js

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        async def on_error(e: Exception) -> None:
            self.log.warning("nats.error", error=repr(e))

        async def on_disconnected() -> None:
            self.log.warning("nats.disconnected")

        async def on_reconnected() -> None:
            self.log.info(
                "nats.reconnected",
                server=str(self._nc.connected_url.netloc if self._nc and self._nc.connected_url else ""),
            )

        self._nc = await nats.connect(
            self.settings.nats_url,
            name=self.instance,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            **self.connect_options,
        )
        self._js = self._nc.jetstream()
        if self.topology:
            await ensure_topology(self.js, self.settings.js_replicas, self.settings.node_ttl_s)
        serve_metrics(self.settings.metrics_port)
        self.log.info(
            "service.started", nats=self.settings.nats_url.split("@")[-1], metrics_port=self.settings.metrics_port
        )

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT set `stopping` (in the main thread only: a service run by a test in a thread is
        stopped through its event)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)

    async def serve_forever(self, stop: asyncio.Event | None = None) -> None:
        """Run until SIGTERM/SIGINT, `stopping` or `stop` is set, then drain."""
        self.install_signal_handlers()
        if stop is not None:
            self.spawn(_relay(stop, self.stopping), name="stop")
        await self.stopping.wait()
        await self.close()

    def on_close(self, step: Callable[[], Awaitable[Any]]) -> None:
        """Run `step` when the service stops, before the runtime drains its connection (an HTTP server's
        shutdown, say); steps run in the order given."""
        self._on_close.append(step)

    async def subscribe(self, subject: str, cb: Callable[[Msg], Awaitable[None]], queue: str = "") -> None:
        """A plain core-NATS subscription for the service's lifetime (unsubscribed when it stops)."""
        self._subs.append(await self.nc.subscribe(subject, queue=queue, cb=cb))

    async def close(self) -> None:
        """Stop fetching, let in-flight handlers finish (or hand them back), drain."""
        if self._nc is None:
            return
        self.stopping.set()
        for step in self._on_close:
            try:
                await step()
            except Exception as exc:
                self.log.warning("service.close_step_failed", error=repr(exc))
        for loop_task in self._loops:
            loop_task.cancel()
        if self._handlers:
            done, pending = await asyncio.wait(self._handlers, timeout=self.settings.drain_timeout_s)
            for t in pending:
                t.cancel()  # the handler's finally-clause naks the message back
            if pending:
                await asyncio.wait(pending, timeout=5)
        for t in list(self._tasks):
            t.cancel()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:
                pass
        if self._micro is not None:
            try:
                await self._micro.stop()
            except Exception:
                pass
        nc, self._nc = self._nc, None
        try:
            await asyncio.wait_for(nc.drain(), timeout=5)
        except Exception:
            await nc.close()
        self.log.info("service.stopped")

    def spawn(self, coro: Awaitable[Any], name: str = "") -> asyncio.Task[Any]:
        """Run a background task for the service's lifetime; its crash is logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def _done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.log.error("task.crashed", task=name, error=repr(t.exception()))

        task.add_done_callback(_done)
        return task

    # -- routes ------------------------------------------------------------

    async def mount(self, routes: Sequence[Pull | Endpoint]) -> None:
        endpoints = [r for r in routes if isinstance(r, Endpoint)]
        if endpoints:
            self._micro = await nats.micro.add_service(self.nc, name=self.service, version=self.version)
            for ep in endpoints:
                await self._micro.add_endpoint(
                    name=ep.name,
                    subject=ep.subject.pattern,
                    handler=self._endpoint_handler(ep),
                    queue_group=self.service,
                )
        for route in routes:
            if isinstance(route, Pull):
                stats = self.stats.setdefault(route.name, _Stats())
                sub = await self.js.pull_subscribe(
                    route.consumer.filter_subject,
                    durable=route.consumer.durable,
                    stream=route.consumer.stream,
                    config=consumer_config(route.consumer),
                )
                self._subs.append(sub)
                self._loops.append(asyncio.ensure_future(self._pull_loop(route, sub, stats)))

    def _endpoint_handler(self, ep: Endpoint) -> Callable[[MicroRequest], Awaitable[None]]:
        slots = asyncio.Semaphore(ep.concurrency)
        serve = self._serve_request(ep)

        async def dispatch(req: MicroRequest) -> None:
            await slots.acquire()  # backpressure: NATS keeps the rest until a slot frees
            task = asyncio.ensure_future(serve(req))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
            task.add_done_callback(lambda _: slots.release())

        return dispatch

    def _serve_request(self, ep: Endpoint) -> Callable[[MicroRequest], Awaitable[None]]:
        async def handle(req: MicroRequest) -> None:
            started = time.perf_counter()
            outcome = "ok"
            try:
                message = ep.subject.decode(req.data)
                reply = await (ep.handler(message, req.subject) if ep.with_subject else ep.handler(message))
                if not isinstance(reply, ep.subject.reply):
                    raise TypeError(f"{ep.name} answered {type(reply).__name__}, not {ep.subject.reply.__name__}")
                await req.respond(codec.encode(reply))
            except DecodeError as exc:
                outcome = "invalid"
                await self._respond_error(req, ServiceError("invalid", str(exc), exc.field))
            except LoranetError as exc:  # a loranet error carries its wire code (loranet.errors)
                outcome = code_of(exc)
                await self._respond_error(req, ServiceError(outcome, exc.message or str(exc), exc.field))
            except Exception as exc:  # never let one request take the service down
                outcome = "internal"
                self.log.error("endpoint.crashed", route=ep.name, error=repr(exc))
                await self._respond_error(req, ServiceError("internal", f"{type(exc).__name__}: {exc}"))
            finally:
                MESSAGES.labels(self.service, ep.name, outcome).inc()
                HANDLER_SECONDS.labels(self.service, ep.name).observe(time.perf_counter() - started)

        return handle

    async def _respond_error(self, req: MicroRequest, err: ServiceError) -> None:
        reply = protocol.ErrorReply.model_validate(
            {"code": err.code, "message": err.message[:1024], "field": err.field[:128]}
        )
        body = codec.encode(reply)
        try:
            await req.respond_error(
                STATUS.get(err.code, "500"), err.message[:200].replace("\r", " ").replace("\n", " "), data=body
            )
        except Exception as exc:
            self.log.warning("endpoint.reply_failed", error=repr(exc))

    async def _pull_loop(self, route: Pull, sub: JetStreamContext.PullSubscription, stats: _Stats) -> None:
        while not self.stopping.is_set():
            free = route.slots - stats.inflight
            if free <= 0:
                stats.slot_free.clear()
                try:
                    await asyncio.wait_for(stats.slot_free.wait(), timeout=1.0)
                except TimeoutError:
                    pass
                continue
            try:
                msgs = await sub.fetch(batch=free, timeout=1.0)
            except (TimeoutError, FetchTimeoutError, NatsTimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.stopping.is_set():
                    return
                self.log.warning("pull.fetch_failed", route=route.name, error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                stats.inflight += 1
                task = asyncio.ensure_future(self._handle(route, msg, stats))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)

    async def _handle(self, route: Pull, msg: Msg, stats: _Stats) -> None:
        started = time.perf_counter()
        deliveries = msg.metadata.num_delivered if msg.metadata else 1
        outcome = "ok"
        settled = False
        heartbeat = asyncio.ensure_future(self._keep_alive(msg, route.consumer.ack_wait_s))
        try:
            try:
                message = route.subject.decode(msg.data)
            except DecodeError as exc:
                outcome = "invalid"
                await self.dead_letter(route.name, msg, str(exc), deliveries)
                settled = True
                return
            try:
                await route.handler(message, Delivery(msg.subject, deliveries, msg))
                await msg.ack()
                settled = True
            except Refused as exc:
                outcome = "rejected"
                await self.dead_letter(route.name, msg, exc.reason, deliveries)
                settled = True
            except asyncio.CancelledError:
                outcome = "handed_back"
                raise
            except Exception as exc:
                outcome = "error"
                transient = is_transient(exc)
                outcome = "retry" if transient else "error"
                self.log.error(
                    "handler.failed",
                    route=route.name,
                    subject=msg.subject,
                    deliveries=deliveries,
                    transient=transient,
                    error=repr(exc),
                )
                limit = route.consumer.max_deliver_transient - 1 if transient else route.consumer.max_deliver
                if deliveries >= limit:
                    kind = "transient failures" if transient else "failures"
                    await self.dead_letter(
                        route.name, msg, f"gave up after {deliveries} {kind}; last error: {exc!r}", deliveries
                    )
                else:
                    await msg.nak(delay=min(2.0 * deliveries, 30.0))
                settled = True
        finally:
            heartbeat.cancel()
            if not settled and not msg.is_acked:
                # Shutdown mid-handler: hand the message back for another replica.  The delay
                # outlasts this replica's last open fetch, which could otherwise take it straight
                # back and strand it until ack_wait.
                try:
                    await asyncio.shield(msg.nak(delay=HAND_BACK_DELAY_S))
                except Exception:
                    pass
            stats.inflight -= 1
            stats.handled += 1
            stats.slot_free.set()
            MESSAGES.labels(self.service, route.name, outcome).inc()
            HANDLER_SECONDS.labels(self.service, route.name).observe(time.perf_counter() - started)

    async def _keep_alive(self, msg: Msg, ack_wait_s: float) -> None:
        while True:
            await asyncio.sleep(max(ack_wait_s / 3.0, 0.2))
            try:
                await msg.in_progress()
            except Exception:
                return

    async def dead_letter(self, route: str, msg: Msg, reason: str, deliveries: int = 0) -> None:
        """Park `msg` on dlq.<subject> with its reason, then terminate it.

        The original bytes are kept up to DEAD_LETTER_KEEP_BYTES (the reason says
        when more were dropped, with the sha256 of the whole message).  The
        publish is retried: if it still fails, the message is left un-acked and
        comes back, rather than being lost."""
        data = msg.data
        if len(data) > DEAD_LETTER_KEEP_BYTES:
            digest = hashlib.sha256(data).hexdigest()
            reason = f"{reason} [message of {len(data)} bytes, sha256 {digest}, first {DEAD_LETTER_KEEP_BYTES} kept]"
            data = data[:DEAD_LETTER_KEEP_BYTES]
        record = protocol.DeadLetter(
            subject=msg.subject[:256],
            service=self.service,
            reason=reason[:1024],
            data=data,
            deliveries=deliveries,
            at=time.time(),
        )
        for attempt in range(4):
            try:
                await self.js.publish(protocol.dead_letter(msg.subject), codec.encode(record), timeout=10)
                break
            except Exception:
                if attempt == 3:
                    raise
                await asyncio.sleep(0.5 * (attempt + 1))
        DEAD_LETTERS.labels(self.service, route).inc()
        self.stats.setdefault(route, _Stats()).dead_lettered += 1
        self.log.warning("message.dead_lettered", route=route, subject=msg.subject, reason=reason[:300])
        try:
            await msg.term()
        except Exception:
            pass

    # -- publishing and requests ------------------------------------------

    async def publish(self, subject: str, message: Wire, msg_id: str | None = None) -> None:
        """Publish durably to JetStream; `msg_id` de-duplicates retries."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        await self.js.publish(subject, codec.encode(message), headers=headers)

    async def emit(
        self,
        job_id: str,
        stage: protocol.Stage,
        body: Wire | None = None,
        reason: str = "",
        node_id: str = "",
        dedup: str = "",
        client_key: bytes | None = None,
        attempt: int = 0,
    ) -> None:
        """Record a job transition on jobs.events.<client_id>.<job_id> (de-duplicated per job, stage, `dedup`
        and, for a re-run, `attempt`).

        The client is `client_key`, else the one whose signed request `body` carries (a request,
        a result, a verdict); a receipt carries none, so its emitter passes the key."""
        if client_key is None:
            request = protocol.request_of(body)
            if request is None:
                raise ValueError(f"job {job_id} {stage}: no client key for its events subject")
            client_key = request.client_key
        event = protocol.JobEvent(
            job_id=job_id,
            stage=stage,
            service=self.service,
            reason=reason[:1024],
            node_id=node_id,
            body=codec.encode(body) if body is not None else b"",
            at=time.time(),
            attempt=attempt,
        )
        msg_id = f"{job_id}:{stage}:{dedup}" + (f":{attempt}" if attempt else "")
        await self.publish(protocol.job_events(client_key, job_id), event, msg_id=msg_id)
        self.log.info(f"job.{stage}", job_id=job_id, node_id=node_id, reason=reason[:200])

    async def request(self, subject: Request[M, R], message: M, timeout: float | None = None, to: str = "") -> R:
        """Ask `subject`'s responders (at the concrete subject `to` for a wildcard one); typed reply or RemoteError."""
        return await request(self.nc, subject, message, timeout or self.settings.request_timeout_s, to=to)


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """`python -m services.<name>`: run `main()`; a setting that fails its rule stops the service with one
    line (`error: LORANET_X: rule`, exit 2), not a traceback."""
    from .settings import SettingsError

    try:
        asyncio.run(main())
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


def is_transient(exc: BaseException) -> bool:
    """Errors that are about a peer or the network, not the message being handled."""
    if isinstance(exc, Unavailable):
        return True
    if isinstance(exc, RemoteError):
        return exc.code == "unavailable"
    return isinstance(
        exc,
        (
            NatsTimeoutError,
            NoRespondersError,
            ConnectionClosedError,
            asyncio.TimeoutError,
            TimeoutError,
            ConnectionError,
        ),
    )


async def request(nc: NATS, subject: Request[M, R], message: M, timeout: float = 10.0, to: str = "") -> R:
    """Request-reply with typed errors: the reply `subject` declares, or RemoteError for an error reply.

    `to` is the concrete subject of a wildcard declaration (datastore.job.get.<client_id>)."""
    if "*" in subject.pattern and not to:
        raise ValueError(f"{subject.pattern} is a pattern: name the concrete subject (to=...)")
    msg = await nc.request(to or subject.pattern, subject.encode(message), timeout=timeout)
    headers = msg.headers or {}
    if ERROR_CODE_HEADER in headers:
        try:
            err = codec.decode(protocol.ErrorReply, msg.data)
            raise RemoteError(err.code, err.message, err.field)
        except DecodeError:
            raise RemoteError("internal", headers.get("Nats-Service-Error", "unknown error")) from None
    return codec.decode(subject.reply, msg.data)
