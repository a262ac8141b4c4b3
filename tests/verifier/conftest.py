"""Session fixtures: the default model and demo adapters in a temp cache, an audit engine, an honest node."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest
from verifier_nodes import Client, HonestNode

from loranet.model import build_base_checkpoint
from loranet.model.generate import ReferenceModel
from services.verifier.engine import AuditEngine

N_ADAPTERS = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="session")
def vcache(model_cache):
    return model_cache


@pytest.fixture(scope="session")
def base(base_model):
    """(path, model_id) of the default model in the temp cache (what the verifier loads with model_path="")."""
    return base_model


@pytest.fixture(scope="session")
def adapters(demo_adapter_set):
    """[(name, path, adapter_id)] demo adapters for the default base."""
    return demo_adapter_set[:N_ADAPTERS]


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


@pytest.fixture(scope="session")
def other_base(vcache):
    path = vcache / "other-base"
    return path, build_base_checkpoint(path, seed=1)


@pytest.fixture(scope="session")
def kit(honest, client, base, adapters, other_base):
    from attacks import build_kit

    return build_kit(honest, client, base[1], adapters, str(other_base[0]), str(base[0]), seed=1234)
