"""`python -m services.datastore` starts (even with Redis down), answers, and drains on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import nats

from loranet import protocol as p
from loranet.errors import RemoteError
from loranet.runtime import request
from loranet_ops.servers import free_port


async def test_module_runs_and_stops_cleanly(nats_server):
    env = dict(
        os.environ,
        LORANET_NATS_URL=nats_server.url,
        LORANET_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        LORANET_REDIS_TIMEOUT_S="0.5",
    )
    proc = subprocess.Popen([sys.executable, "-m", "services.datastore"], env=env, stderr=subprocess.PIPE)
    try:
        nc = await nats.connect(nats_server.url)
        deadline = time.monotonic() + 30
        code = None
        while code is None and time.monotonic() < deadline:
            try:
                await request(
                    nc,
                    p.DATASTORE_JOB_GET,
                    p.JobGet(job_id=p.new_job_id()),
                    timeout=1,
                    to=p.datastore_job_get("01" * 32),
                )
            except RemoteError as exc:
                code = exc.code
            except Exception:  # no responders yet
                await asyncio.sleep(0.2)
        await nc.close()
        assert code == "unavailable"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b'"event":"redis.unreachable"' in err and b'"event":"service.stopped"' in err
