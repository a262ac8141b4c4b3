"""Session fixtures: the default model and demo adapters in a temp cache, PEFT reference, engines."""

from __future__ import annotations

import pytest

from loranet.model import ReferenceModel, build_demo_adapters, ensure_default_model
from loranet.model.adapters import adapter_to_blobs

N_ADAPTERS = 6


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny model runs much faster on one thread than on two contended cores; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def icache(tmp_path_factory):
    return tmp_path_factory.mktemp("inference-cache")


@pytest.fixture(scope="session")
def base(icache):
    return ensure_default_model(str(icache))


@pytest.fixture(scope="session")
def adapters(base, icache):
    """[(name, path, adapter_id)]"""
    path, model_id = base
    return build_demo_adapters(path, N_ADAPTERS, seed=0, out_dir=icache / "demo-adapters", expected_model_id=model_id)


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
        engine = Engine(str(base[0]), base[1], "cpu", str(tmp_path / f"cache{len(engines)}"),
                        config=EngineConfig(**config))
        for _, path, adapter_id in adapters:
            engine.install_adapter(adapter_id, *adapter_to_blobs(path))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()
