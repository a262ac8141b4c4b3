"""Shared fixtures: real nats-server and redis-server processes on free ports.

Each test that asks for a server gets a fresh one in a temporary directory
(they start in well under a second), so a test may kill and restart it.  When
a Docker engine is reachable and LORANET_TEST_DOCKER=1, the same fixtures run
the servers through testcontainers instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from loranet_ops.servers import NatsServer, RedisServer, docker_reachable, free_port

# Tests run on the seeded tiny model (byte tokenizer, 4 layers) unless they ask for the real one
# (the `real_model` fixture, tests/realmodel): every service, devnet and client started here reads this.
# LORANET_TEST_MODEL runs the session's devnet on another (the web app's screenshots with real answers:
# LORANET_TEST_MODEL=smollm2-135m-instruct pytest tests/gateway/test_web_app.py).
os.environ["LORANET_MODEL"] = os.environ.get("LORANET_TEST_MODEL", "loranet-tiny-llama")


class _ContainerServer:
    """A testcontainers-backed server with the same url/kill/start surface."""

    def __init__(self, image: str, port: int, command: str, scheme: str) -> None:
        from testcontainers.core.container import DockerContainer

        self.port = free_port()
        self.scheme = scheme
        self.container = DockerContainer(image).with_command(command).with_bind_ports(port, self.port)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}" + ("/0" if self.scheme == "redis" else "")

    def start(self) -> None:
        from loranet_ops.servers import wait_for_port

        self.container.start()
        wait_for_port(self.port, 30)

    def stop(self) -> None:
        self.container.stop()

    kill = stop

    def restart(self) -> None:
        self.container.get_wrapped_container().restart()


def _use_docker() -> bool:
    return os.environ.get("LORANET_TEST_DOCKER") == "1" and docker_reachable()


@pytest.fixture
def nats_server(tmp_path) -> Iterator[NatsServer]:
    if _use_docker():
        server = _ContainerServer("nats:2.10-alpine", 4222, "-js", "nats")
    else:
        server = NatsServer(free_port(), tmp_path / "nats")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    if _use_docker():
        server = _ContainerServer("redis:7.2-alpine", 6379, "redis-server --appendonly yes", "redis")
    else:
        server = RedisServer(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def devnet(tmp_path_factory):
    """One embedded devnet (every service a real process) shared by the end-to-end tests."""
    from loranet_ops import devnet as dn

    root = tmp_path_factory.mktemp("devnet")
    config = dn.DevnetConfig.scratch(
        root,
        demo_adapters=2,
        cache_dir=str(root / "cache"),
        epoch_max_s=0.2,
        verifiers=2,  # a committee of both decides every audited run (issue 18)
    )
    state = dn.start_detached(config, timeout=400)
    yield config, state
    dn.stop(config.state_dir)


# -- the model layer, built once per session for every test folder that needs it ------------


@pytest.fixture(scope="module")
def one_torch_thread():
    """The tiny model runs far faster on one thread than on two contended cores; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def base_model(model_cache):
    """(path, model_id) of the default seeded model in the session's cache."""
    from loranet.model import ensure_tiny_model

    return ensure_tiny_model(str(model_cache))


@pytest.fixture(scope="session")
def demo_adapter_set(base_model, model_cache):
    """[(name, path, adapter_id)]: six demo adapters for the default model (ranks 4/8/16, one rsLoRA)."""
    from loranet.model import build_demo_adapters

    path, model_id = base_model
    return build_demo_adapters(path, 6, seed=0, out_dir=model_cache / "demo-adapters", expected_model_id=model_id)
