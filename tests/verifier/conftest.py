"""Session fixtures: the default model and demo adapters in a temp cache, an audit engine, an honest node."""

from __future__ import annotations

import pytest

from loranet.model import build_base_checkpoint, ensure_default_model
from loranet.model.adapters import build_demo_adapters
from loranet.model.generate import ReferenceModel
from services.verifier.engine import AuditEngine

from verifier_nodes import Client, HonestNode

N_ADAPTERS = 3


@pytest.fixture(scope="session")
def vcache(tmp_path_factory):
    return tmp_path_factory.mktemp("verifier-cache")


@pytest.fixture(scope="session")
def base(vcache):
    """(path, model_id) of the default model in the temp cache (what the verifier loads with model_path="")."""
    return ensure_default_model(str(vcache))


@pytest.fixture(scope="session")
def adapters(base, vcache):
    """[(name, path, adapter_id)] demo adapters for the default base."""
    path, model_id = base
    return build_demo_adapters(path, N_ADAPTERS, seed=0, out_dir=vcache / "demo-adapters", expected_model_id=model_id)


@pytest.fixture(scope="session")
def engine(base, adapters, vcache):
    """The verifier's audit engine with the demo adapters loaded (as if fetched from the datastore)."""
    eng = AuditEngine("", base[1], "cpu", str(vcache), adapter_slots=8)
    for _, path, adapter_id in adapters:
        eng.load_adapter_dir(adapter_id, path)
    return eng


@pytest.fixture(scope="session")
def node_model(base, adapters):
    model = ReferenceModel.from_path(base[0], base[1])
    for name, path, adapter_id in adapters:
        model.add_adapter(name, path, adapter_id)
    return model


@pytest.fixture(scope="session")
def honest(node_model, adapters):
    return HonestNode("node-honest", node_model, {aid: name for name, _, aid in adapters})


@pytest.fixture(scope="session")
def client():
    return Client()
