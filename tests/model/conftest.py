"""Session fixtures: one default base model and a few demo adapters, built in temp dirs."""

from __future__ import annotations

import pytest

from loranet.model import build_base_checkpoint
from loranet.model.adapters import build_demo_adapters

N_DEMO = 4


@pytest.fixture(scope="session")
def base_ckpt(tmp_path_factory):
    """(path, model_id) of the seed-0 default model."""
    path = tmp_path_factory.mktemp("models") / "tiny"
    return path, build_base_checkpoint(path, seed=0)


@pytest.fixture(scope="session")
def other_base_ckpt(tmp_path_factory):
    """(path, model_id) of a different base: same shape, seed 1."""
    path = tmp_path_factory.mktemp("models") / "tiny-seed1"
    return path, build_base_checkpoint(path, seed=1)


@pytest.fixture(scope="session")
def demo_adapters(base_ckpt, tmp_path_factory):
    """[(name, path, adapter_id)] of N_DEMO demo adapters for the default base."""
    path, model_id = base_ckpt
    return build_demo_adapters(
        path, N_DEMO, seed=0, out_dir=tmp_path_factory.mktemp("adapters"), expected_model_id=model_id
    )
