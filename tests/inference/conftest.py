"""Session fixtures: the default model and demo adapters in a temp cache, PEFT reference, engines."""

from __future__ import annotations

import pytest

from loranet.model import ReferenceModel
from loranet.model.adapters import adapter_to_blobs

N_ADAPTERS = 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="session")
def icache(model_cache):
    return model_cache


@pytest.fixture(scope="session")
def base(base_model):
    return base_model


@pytest.fixture(scope="session")
def adapters(demo_adapter_set):
    """[(name, path, adapter_id)]"""
    return demo_adapter_set[:N_ADAPTERS]


@pytest.fixture(scope="session")
def reference(base, adapters):
    model = ReferenceModel.from_path(base[0], base[1])
    for name, path, adapter_id in adapters:
        model.add_adapter(name, path, adapter_id)
    return model


@pytest.fixture
def make_engine(base, adapters, tmp_path):
    """An engine over the session's base with every demo adapter installed (from blobs, hash-checked)."""
    from services.inference.engine import Engine, EngineConfig

    engines = []

    def make(**config):
        engine = Engine(
            str(base[0]), base[1], "cpu", str(tmp_path / f"cache{len(engines)}"), config=EngineConfig(**config)
        )
        for _, path, adapter_id in adapters:
            engine.install_adapter(adapter_id, *adapter_to_blobs(path))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()
