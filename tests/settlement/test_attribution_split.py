"""The data share of a job follows its answer's attribution (the verifier's signed claim), else the manifest."""

from __future__ import annotations

from loranet import protocol as p
from loranet.signing import sign
from services.settlement import domain
from tests import factories

A, B = "0x" + "a" * 40, "0x" + "b" * 40
INDEX = "f" * 64


def attributed(shares: dict[str, int], index_id: str = INDEX, accepted: bool = True) -> p.Verdict:
    v = factories.verdict()
    att = p.Attribution(
        index_id=index_id,
        min_tokens=8,
        output_tokens=20,
        matched_tokens=12,
        spans=[p.AttributedSpan(start=2, length=12, records=["x:3"])],
        contributors=[p.ContributorShare(address=a, bps=b) for a, b in shares.items()],
    )
    return sign(v.model_copy(update={"attribution": att, "accepted": accepted, "signature": b""}), factories.VERIFIER)


def manifest(index_id: str = INDEX) -> p.AdapterManifest:
    return factories.manifest().model_copy(update={"attribution_index": index_id})


def test_an_attributed_answer_pays_the_contributors_it_drew_on():
    assert domain.data_shares([attributed({A: 7000, B: 3000})], manifest()) == ((A, 7000), (B, 3000))


def test_no_match_a_foreign_index_or_no_index_falls_back_to_the_manifest():
    fallback = tuple((c.address, c.weight_bps) for c in factories.manifest().contributors)
    assert domain.data_shares([factories.verdict()], manifest()) == fallback  # no attribution
    assert domain.data_shares([attributed({})], manifest()) == fallback  # nothing matched
    assert domain.data_shares([attributed({A: 10_000}, index_id="e" * 64)], manifest()) == fallback  # not its index
    assert domain.data_shares([attributed({A: 10_000})], manifest(index_id="")) == fallback  # adapter has none


def test_the_attribution_survives_the_wire_and_the_verdicts_signature():
    v = attributed({A: 5000, B: 5000})
    back = p.VERDICTS_ALL.decode(p.VERDICTS_ALL.encode(v))
    assert back.attribution == v.attribution
    back.verify()  # raises if the signature does not cover it
    plain = factories.verdict()  # without one, a verdict is byte for byte what it was before the field existed
    assert b"attribution" not in p.VERDICTS_ALL.encode(plain)


def test_an_attribution_whose_shares_do_not_sum_is_refused():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="10000"):
        p.Attribution(
            index_id=INDEX,
            min_tokens=8,
            output_tokens=1,
            matched_tokens=1,
            contributors=[p.ContributorShare(address=A, bps=10)],
        )
