"""The node's pure rules (services/inference/domain.py): when a sequence stops, which jobs it refuses."""

from __future__ import annotations

import pytest

from loranet.errors import Refused
from services.inference import domain


def _reason(token: int, n: int, text: str = "", **kw: object) -> str | None:
    args: dict[str, object] = dict(
        stop_ids={2}, stop=(), max_tokens=4, ignore_eos=False, deadline=None, now=100.0, decoded=lambda: text
    )
    args.update(kw)
    return domain.finish_reason(token=token, n_output=n, **args)  # type: ignore[arg-type]


def test_stop_rules_in_order():
    assert _reason(2, 1) == "eos"
    assert _reason(2, 1, ignore_eos=True) is None
    assert _reason(7, 1, "the answer. Paris", stop=("Paris",)) == "stop"
    assert _reason(7, 4) == "length"
    assert _reason(2, 4) == "eos"  # end of turn wins over the length it also reached
    assert _reason(7, 1, deadline=99.0) == "deadline"
    assert _reason(7, 1) is None


def test_decoding_is_asked_only_for_stop_strings():
    def explode() -> str:
        raise AssertionError("decoded without stop strings")

    assert (
        domain.finish_reason(
            token=7,
            n_output=1,
            decoded=explode,
            stop_ids={2},
            stop=(),
            max_tokens=4,
            ignore_eos=False,
            deadline=None,
            now=0.0,
        )
        is None
    )


def test_refusals_are_refused():
    with pytest.raises(Refused):
        domain.check_prompt([1] * 10, 5)


def test_stream_delta_sends_new_text_and_holds_back_a_split_character():
    assert domain.stream_delta("Hello", "") == "Hello"
    assert domain.stream_delta("Hello wor", "Hello") == " wor"
    assert domain.stream_delta("caf\ufffd", "ca") == "f"  # the rest of "é" is still to come
    assert domain.stream_delta("caf\ufffd", "ca", final=True) == "f\ufffd"
    assert domain.stream_delta("Hallo", "Hello") == ""  # would rewrite what was sent: left to the verified answer
