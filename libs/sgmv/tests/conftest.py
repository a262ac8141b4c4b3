import os

import pytest


@pytest.fixture
def triton_interpreted():
    """The Triton ops module, its kernels running in Triton's CPU interpreter.

    Triton must see TRITON_INTERPRET=1 before its first import in a process,
    so these tests live in ``triton_interp_cases.py`` and run in a subprocess
    started by ``test_triton_interpreted.py`` with the variable set; the rest
    of the pytest process never has it.
    """
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("interpreted Triton tests run in a subprocess (test_triton_interpreted.py)")
    pytest.importorskip("triton")
    from sgmv import triton_ops

    return triton_ops
