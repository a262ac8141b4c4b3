"""Admission rules with no server: an empty prompt is refused before anything is reserved or billed."""

from __future__ import annotations

import pytest

from services.scheduler import domain
from tests import factories


def test_an_empty_prompt_is_refused_at_admission():
    for prompt in ("", "  \n\t"):
        with pytest.raises(domain.AdmissionRefused, match="prompt: must not be empty"):
            domain.check_prompt(factories.job(prompt=prompt))
    domain.check_prompt(factories.job(prompt="hello"))
