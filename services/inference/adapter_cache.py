"""Two-tier adapter cache: device slots of the sgmv bank, and a larger host-memory LRU.

Tiers, fastest first:
  1. a bank slot (device memory): tokens of the adapter can run now;
  2. host memory: the adapter packed for the bank (`sgmv.PackedAdapter`: checked, scale folded in,
     in the bank's dtype, pinned on CUDA), one asynchronous copy into a slot away;
  3. the node's disk (<cache>/node-adapters/<adapter_id>): written from the
     datastore's blobs after their content hash checked; re-checked on every
     read back into host memory.
A slot is evicted only when no running sequence holds it (reference counts),
least recently released first; `bank.load` rewrites every projection of the
slot, so no weight of the previous adapter stays.

Reading an adapter back from disk (file read, content hash, parse) happens on
a loader thread (`prefetch`), never on the engine thread while a batch runs:
the engine asks for the adapters of the jobs at the head of its queue and
admits a job once its adapter is in host memory. Only the copy into a slot
(`acquire`) is on the engine thread.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path

from loranet.errors import Refused
from loranet.model.adapters import adapter_from_blobs, load_adapter
from sgmv import AdapterBank, PackedAdapter, adapter_from_peft_state

from . import metrics

BAD_ADAPTER_TTL_S = 60.0


class AdapterRefused(Refused):
    """An adapter that cannot be served (bad hash, unsupported shape); the reason names it."""


class AdapterCache:
    def __init__(self, bank: AdapterBank, adapter_dir: Path, host_capacity: int) -> None:
        self.bank = bank
        self.adapter_dir = adapter_dir
        self.host_capacity = max(host_capacity, 1)
        self._host: OrderedDict[str, PackedAdapter] = OrderedDict()
        self._slot_of: dict[str, int] = {}
        self._refs = [0] * bank.num_slots
        self._idle: OrderedDict[int, None] = OrderedDict()  # slots with refs == 0, least recently released first
        self._never_used = list(range(bank.num_slots - 1, -1, -1))
        self._bad: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()  # host tier and bad list: written from the service's threads too
        self._loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="adapter-load")
        self._loading: dict[str, concurrent.futures.Future] = {}  # guarded by _lock

    # -- queries -------------------------------------------------------------

    @property
    def on_device(self) -> list[str]:
        return list(self._slot_of)

    @property
    def in_host(self) -> list[str]:
        with self._lock:
            return list(self._host)

    def hot(self) -> list[str]:
        """Adapters by readiness: in a slot first, then in host memory."""
        dev = self.on_device
        return dev + [a for a in self.in_host if a not in self._slot_of]

    def is_local(self, adapter_id: str) -> bool:
        with self._lock:
            if adapter_id in self._host:
                return True
        return self._on_disk(adapter_id)

    def _on_disk(self, adapter_id: str) -> bool:
        return (self.adapter_dir / adapter_id / "adapter_config.json").exists()

    def state(self, adapter_id: str) -> str:
        """Where the adapter can be had from: "memory" (a slot or host memory: admitting its job costs at most
        a copy into a slot), "loading" (a read on the loader thread is in flight), "failed" (the last read
        failed: `acquire` repeats it and reports why), "disk", or "absent"."""
        with self._lock:
            if adapter_id in self._slot_of or adapter_id in self._host:
                return "memory"
            fut = self._loading.get(adapter_id)
        if fut is not None:
            return "loading" if not fut.done() else "failed"
        return "disk" if self._on_disk(adapter_id) else "absent"

    def prefetch(self, adapter_id: str) -> bool:
        """Read the adapter from disk into host memory (hash re-checked) on the loader thread; a no-op unless
        its state is "disk". True when a read was started."""
        if self.state(adapter_id) != "disk":
            return False
        with self._lock:
            if adapter_id in self._loading:
                return False
            try:
                fut = self._loader.submit(self._host_get, adapter_id)
            except RuntimeError:  # closed: acquire reads it on the engine thread
                return False
            self._loading[adapter_id] = fut
        fut.add_done_callback(lambda f: self._loaded(adapter_id, f))
        return True

    def _loaded(self, adapter_id: str, fut: concurrent.futures.Future) -> None:
        if fut.cancelled() or fut.exception() is None:
            with self._lock:
                if self._loading.get(adapter_id) is fut:
                    del self._loading[adapter_id]
            if not fut.cancelled():
                metrics.ADAPTER_CACHE.labels("host", "prefetch").inc()
        # A failed read stays as "failed" until acquire has reported it (mark_bad) or reads it fine.

    def close(self) -> None:
        """Finish the read in flight, drop queued ones; a restarted engine gets a fresh loader (threads start
        only when it is used)."""
        old, self._loader = (
            self._loader,
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="adapter-load"),
        )
        old.shutdown(wait=True, cancel_futures=True)

    def bad_reason(self, adapter_id: str) -> str | None:
        with self._lock:
            entry = self._bad.get(adapter_id)
            if entry is None:
                return None
            if time.monotonic() - entry[0] > BAD_ADAPTER_TTL_S:
                del self._bad[adapter_id]
                return None
            return entry[1]

    def mark_bad(self, adapter_id: str, reason: str) -> None:
        with self._lock:
            self._bad[adapter_id] = (time.monotonic(), reason)
            self._host.pop(adapter_id, None)
            self._loading.pop(adapter_id, None)
        shutil.rmtree(self.adapter_dir / adapter_id, ignore_errors=True)

    # -- filling the lower tiers ---------------------------------------------

    def install(self, adapter_id: str, config: bytes, weights: bytes) -> None:
        """Write the adapter from its datastore blobs (hash checked before anything is written), parse it."""
        if not self._on_disk(adapter_id):
            adapter_from_blobs(config, weights, self.adapter_dir / adapter_id, expected_adapter_id=adapter_id)
        self._host_get(adapter_id)

    def _host_get(self, adapter_id: str) -> PackedAdapter:
        with self._lock:
            adapter = self._host.get(adapter_id)
            if adapter is not None:
                self._host.move_to_end(adapter_id)
                metrics.ADAPTER_CACHE.labels("host", "hit").inc()
                return adapter
        metrics.ADAPTER_CACHE.labels("host", "miss").inc()
        loaded = load_adapter(self.adapter_dir / adapter_id, expected_adapter_id=adapter_id)  # re-checks the hash
        try:
            adapter = self.bank.pack(adapter_from_peft_state(loaded.tensors, loaded.config, name=adapter_id))
        except ValueError as exc:
            raise AdapterRefused(str(exc)) from None
        with self._lock:
            self._host[adapter_id] = adapter
            self._host.move_to_end(adapter_id)
            fut = self._loading.get(adapter_id)
            if fut is not None and fut.done():  # a failed earlier read, now superseded
                del self._loading[adapter_id]
            while len(self._host) > self.host_capacity:
                self._host.popitem(last=False)
                metrics.ADAPTER_CACHE.labels("host", "eviction").inc()
        return adapter

    # -- device slots (engine thread only) -----------------------------------

    def acquire(self, adapter_id: str) -> int | None:
        """A slot holding the adapter, with a reference taken; None when every slot is in use.

        Raises AdapterRefused / ContentHashMismatch / FileNotFoundError when it cannot be loaded."""
        slot = self._slot_of.get(adapter_id)
        if slot is not None:
            metrics.ADAPTER_CACHE.labels("device", "hit").inc()
        else:
            if self._never_used:
                slot = self._never_used[-1]
            elif self._idle:
                slot = next(iter(self._idle))
            else:
                return None
            adapter = self._host_get(adapter_id)
            try:
                self.bank.load(slot, adapter, name=adapter_id)
            except ValueError as exc:
                self._slot_of = {a: s for a, s in self._slot_of.items() if s != slot}
                self.bank.clear(slot)  # half-written: nothing of it may be used
                raise AdapterRefused(str(exc)) from None
            metrics.ADAPTER_CACHE.labels("device", "miss").inc()
            if self._never_used and self._never_used[-1] == slot:
                self._never_used.pop()
            else:
                self._idle.pop(slot)
                old = next((a for a, s in self._slot_of.items() if s == slot), None)
                if old is not None:
                    del self._slot_of[old]
                metrics.ADAPTER_CACHE.labels("device", "eviction").inc()
            self._slot_of[adapter_id] = slot
        self._refs[slot] += 1
        self._idle.pop(slot, None)
        return slot

    def release(self, slot: int) -> None:
        self._refs[slot] -= 1
        if self._refs[slot] == 0:
            self._idle[slot] = None
            self._idle.move_to_end(slot)

    def can_acquire(self, adapter_id: str) -> bool:
        return adapter_id in self._slot_of or bool(self._never_used) or bool(self._idle)
