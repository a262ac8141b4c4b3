"""Attribution per answer: the suffix array, maximal spans, the scoring rule, the stored index."""

from __future__ import annotations

import random

import numpy as np
import pytest

from loranet.attribution import AttributionIndex, IndexCorrupt, Record, attribute, suffix_array, to_bps

A, B, C = ("0x" + c * 40 for c in "abc")


def naive_sa(t: list[int]) -> list[int]:
    return sorted(range(len(t)), key=lambda i: t[i:])


@pytest.mark.parametrize("seed", range(6))
def test_suffix_array_is_the_sorted_suffixes(seed):
    rng = random.Random(seed)
    t = [rng.choice([-1, 0, 1, 2, 3]) for _ in range(rng.randint(1, 300))]
    assert suffix_array(np.asarray(t, dtype=np.int32)).tolist() == naive_sa(t)


def index(*records: tuple[str, list[int]]) -> AttributionIndex:
    return AttributionIndex.build(Record(f"r{i}", who, tuple(toks)) for i, (who, toks) in enumerate(records))


def test_longest_match_agrees_with_a_scan():
    rng = random.Random(7)
    recs = [(A, [rng.randrange(6) for _ in range(80)]) for _ in range(5)]
    idx = index(*recs)
    for _ in range(200):
        out = [rng.randrange(6) for _ in range(20)]
        length, _, _ = idx.longest_match(out, 0)
        best = max(
            (
                k
                for _, toks in recs
                for s in range(len(toks))
                for k in range(len(out) + 1)
                if toks[s : s + k] == out[:k]
            ),
            default=0,
        )
        assert length == best


def test_a_passage_only_one_contributor_supplied_credits_that_contributor():
    common = list(range(100, 110))
    passage = list(range(500, 530))
    idx = index((A, common + [1, 2, 3]), (B, [9, 9] + passage + [8]), (C, common + [4, 5]))
    out = [7, 7] + passage[:25] + [6, 6]
    att = attribute(idx, out, min_tokens=8)
    assert [(s.start, s.length, s.records) for s in att.spans] == [(2, 25, (1,))]
    assert att.contributor_bps == {B: 10_000} and att.matched_tokens == 25


def test_a_phrase_everyone_supplied_is_shared_and_short_matches_do_not_count():
    common = list(range(100, 112))
    idx = index((A, common + [1]), (B, [2] + common), (C, common + [3]))
    att = attribute(idx, [0, *common, 0], min_tokens=8)
    assert att.contributor_bps == {A: 3334, B: 3333, C: 3333}
    assert attribute(idx, [0, *common[:7], 0], min_tokens=8).empty  # 7 < 8 tokens: no credit


def test_spans_are_maximal_and_each_token_counts_once():
    passage = list(range(200, 240))
    idx = index((A, passage), (B, passage[10:30]))
    att = attribute(idx, passage, min_tokens=8)
    assert [(s.start, s.length) for s in att.spans] == [(0, 40)]  # B's part lies inside A's longer match
    assert att.contributor_bps == {A: 10_000} and att.matched_tokens == 40


def test_what_the_base_model_says_on_its_own_earns_nothing():
    phrase = list(range(300, 316))
    idx = index((A, phrase), (B, list(range(400, 420))))
    background = index((C, [1, *phrase, 2]))
    assert attribute(idx, phrase, 8, background=background).empty
    assert attribute(idx, list(range(400, 420)), 8, background=background).contributor_bps == {B: 10_000}


def test_to_bps_sums_to_ten_thousand():
    for scores in ({A: 1, B: 1, C: 1}, {A: 0.1, B: 7.3}, {A: 5}):
        assert sum(to_bps(scores).values()) == 10_000
    assert to_bps({A: 0.0}) == {}


def test_the_stored_index_round_trips_and_refuses_other_bytes():
    idx = index((A, [1, 2, 3, 4]), (B, [5, 6, 7]))
    data = idx.to_bytes()
    back = AttributionIndex.from_bytes(data, idx.content_id())
    assert back.records == idx.records and back.sa.tolist() == idx.sa.tolist()
    with pytest.raises(IndexCorrupt, match="does not hash"):
        AttributionIndex.from_bytes(data[:-1] + b"\x01", idx.content_id())
    for bad in (b"", b"garbage", data[:-4], data + b"\x00"):
        with pytest.raises(IndexCorrupt):
            AttributionIndex.from_bytes(bad)
