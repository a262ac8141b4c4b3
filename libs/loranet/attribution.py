"""Proof of Attribution per answer: which training contributions an output reproduces, and who gets credit.

An adapter's training contributions (records of a datanet, each with its contributor's payout address) are
tokenized with the base model's tokenizer and concatenated, records separated by -1, into one int32 array;
its suffix array (prefix doubling in numpy) is the index, stored content-addressed (`to_bytes`, `content_id`,
`from_bytes` checks the hash). For an output, every position that starts a verbatim match of at least
`min_tokens` tokens is extended to its longest match by binary search over the suffix array; the maximal
spans are kept (a span inside an earlier, longer one is dropped) and each output token is counted once.

The score (documented in docs/ARCHITECTURE.md, "Attribution"): a span of `t` newly covered tokens found in
`d` records gives each of those records `t / d` (a phrase everyone supplied earns each of them little); a
span also found verbatim in the `background` index (what the base model says on its own) earns nothing.
Contributors' shares are their records' scores normalised to basis points (10,000); no span → no
attribution, and the job falls back to the adapter manifest's weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import protocol as p

MAGIC = b"LNATTR1\n"
INDEX_FILE = "attribution.idx"  # beside an adapter's PEFT files: the index over its training records
SEPARATOR = -1
DEFAULT_MIN_TOKENS = 8  # bench/attribution_bench.py: recall and false credit for 4..16 on SmolLM2
MAX_SPANS = 64


class IndexCorrupt(ValueError):
    """An index whose bytes do not hash to its content id, or do not parse."""


@dataclass(frozen=True)
class Record:
    """One training contribution record: its id (content hash or datanet position) and its contributor."""

    record_id: str
    contributor: str  # payout address, 0x + 40 hex
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Span:
    start: int  # in the output's tokens
    length: int
    credited: int  # tokens not already covered by an earlier span
    records: tuple[int, ...]  # indexes into the index's records


@dataclass
class Attribution:
    """What one answer draws on: its spans, each record's and each contributor's share."""

    spans: list[Span] = field(default_factory=list)
    record_scores: dict[int, float] = field(default_factory=dict)
    contributor_bps: dict[str, int] = field(default_factory=dict)  # sums to 10,000 when not empty
    matched_tokens: int = 0
    output_tokens: int = 0

    @property
    def empty(self) -> bool:
        return not self.contributor_bps


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """The suffix array of `tokens` (int32/int64, separators < 0 allowed) by prefix doubling."""
    n = len(tokens)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    _, rank = np.unique(tokens, return_inverse=True)
    rank = rank.astype(np.int64)
    k = 1
    sa = np.argsort(rank, kind="stable")
    while k < n:
        second = np.full(n, -1, dtype=np.int64)
        second[: n - k] = rank[k:]
        sa = np.lexsort((second, rank))
        key_r, key_s = rank[sa], second[sa]
        changed = np.empty(n, dtype=bool)
        changed[0] = False
        changed[1:] = (key_r[1:] != key_r[:-1]) | (key_s[1:] != key_s[:-1])
        new = np.empty(n, dtype=np.int64)
        new[sa] = np.cumsum(changed)
        rank = new
        if rank[sa[-1]] == n - 1:  # every suffix has its own rank
            break
        k *= 2
    return sa.astype(np.int32)


class AttributionIndex:
    """A suffix array over an adapter's training records (see the module's docstring)."""

    def __init__(self, records: Sequence[Record], tokens: np.ndarray, sa: np.ndarray, starts: np.ndarray) -> None:
        self.records = list(records)
        self.tokens = tokens
        self.sa = sa
        self.starts = starts  # where each record begins in `tokens`
        self._ngrams: dict[int, set[bytes]] = {}

    @classmethod
    def build(cls, records: Iterable[Record]) -> AttributionIndex:
        recs = [r for r in records if r.tokens]
        parts: list[np.ndarray] = []
        starts = []
        at = 0
        for r in recs:
            starts.append(at)
            parts.append(np.asarray(r.tokens, dtype=np.int32))
            parts.append(np.asarray([SEPARATOR], dtype=np.int32))
            at += len(r.tokens) + 1
        tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return cls(recs, tokens, suffix_array(tokens), np.asarray(starts, dtype=np.int64))

    @property
    def n_tokens(self) -> int:
        return int(len(self.tokens))

    # -- storage ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        header = json.dumps(
            {"records": [[r.record_id, r.contributor, len(r.tokens)] for r in self.records], "n": self.n_tokens},
            separators=(",", ":"),
        ).encode()
        return b"".join(
            [
                MAGIC,
                len(header).to_bytes(8, "little"),
                header,
                self.tokens.astype("<i4").tobytes(),
                self.sa.astype("<i4").tobytes(),
            ]
        )

    def content_id(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, expected_id: str = "") -> AttributionIndex:
        """Parse an index; with `expected_id`, refuse bytes that do not hash to it (IndexCorrupt)."""
        if expected_id and hashlib.sha256(data).hexdigest() != expected_id:
            raise IndexCorrupt(f"attribution index does not hash to {expected_id[:12]}…")
        try:
            if not data.startswith(MAGIC):
                raise ValueError("not an attribution index")
            size = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
            body = len(MAGIC) + 8
            header = json.loads(data[body : body + size])
            n = int(header["n"])
            off = body + size
            tokens = np.frombuffer(data, dtype="<i4", count=n, offset=off).astype(np.int32)
            sa = np.frombuffer(data, dtype="<i4", count=n, offset=off + 4 * n).astype(np.int32)
            if off + 8 * n != len(data):
                raise ValueError("trailing or missing bytes")
            recs, starts, at = [], [], 0
            for record_id, contributor, length in header["records"]:
                starts.append(at)
                recs.append(Record(str(record_id), str(contributor), tuple(tokens[at : at + int(length)].tolist())))
                at += int(length) + 1
            if at != n:
                raise ValueError("records do not cover the tokens")
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise IndexCorrupt(f"attribution index does not parse: {exc}") from None
        return cls(recs, tokens, sa, np.asarray(starts, dtype=np.int64))

    # -- matching ----------------------------------------------------------------------------

    def _ngram_set(self, n: int) -> set[bytes]:
        """Every n-gram of the records (no separator inside) as bytes: the cheap filter before the search."""
        if n not in self._ngrams:
            t = self.tokens
            out: set[bytes] = set()
            if len(t) >= n:
                windows = np.lib.stride_tricks.sliding_window_view(t, n)
                ok = (windows >= 0).all(axis=1)
                out = {w.tobytes() for w in windows[ok]}
            self._ngrams[n] = out
        return self._ngrams[n]

    def _narrow(self, lo: int, hi: int, depth: int, token: int) -> tuple[int, int]:
        """The sub-range of sa[lo:hi] (suffixes agreeing on `depth` tokens) whose next token is `token`."""
        t, sa, n = self.tokens, self.sa, len(self.tokens)

        def at(i: int) -> int:
            j = int(sa[i]) + depth
            return int(t[j]) if j < n else -2

        a, b = lo, hi
        while a < b:  # first with next token >= token
            m = (a + b) // 2
            if at(m) < token:
                a = m + 1
            else:
                b = m
        first = a
        b = hi
        while a < b:  # first with next token > token
            m = (a + b) // 2
            if at(m) <= token:
                a = m + 1
            else:
                b = m
        return first, a

    def longest_match(self, output: Sequence[int], start: int) -> tuple[int, int, int]:
        """(length, lo, hi): the longest prefix of output[start:] found in the records, and its sa range."""
        lo, hi, length = 0, len(self.sa), 0
        for token in output[start:]:
            if token < 0:
                break
            nlo, nhi = self._narrow(lo, hi, length, int(token))
            if nlo >= nhi:
                break
            lo, hi, length = nlo, nhi, length + 1
        return length, lo, hi

    def records_of(self, lo: int, hi: int) -> tuple[int, ...]:
        return tuple(sorted({int(i) for i in np.searchsorted(self.starts, self.sa[lo:hi], side="right") - 1}))

    def contains(self, tokens: Sequence[int]) -> bool:
        length, _, _ = self.longest_match(tokens, 0)
        return length == len(tokens)

    def spans(self, output: Sequence[int], min_tokens: int = DEFAULT_MIN_TOKENS) -> list[Span]:
        """The maximal verbatim matches of at least `min_tokens` tokens, left to right."""
        out: list[Span] = []
        if len(output) < min_tokens or not len(self.tokens):
            return out
        grams = self._ngram_set(min_tokens)
        arr = np.asarray(output, dtype=np.int32)
        covered = 0  # output tokens before this position are counted
        reach = 0  # the furthest end of a kept span
        for i in range(len(arr) - min_tokens + 1):
            if arr[i : i + min_tokens].tobytes() not in grams:
                continue
            length, lo, hi = self.longest_match(output, i)
            end = i + length
            if length < min_tokens or end <= reach:
                continue  # inside an earlier, longer match
            credited = end - max(i, covered)
            out.append(Span(i, length, credited, self.records_of(lo, hi)))
            covered = reach = end
            if len(out) >= MAX_SPANS:
                break
        return out


def attribute(
    index: AttributionIndex,
    output: Sequence[int],
    min_tokens: int = DEFAULT_MIN_TOKENS,
    background: AttributionIndex | None = None,
) -> Attribution:
    """The attribution of one output (see the module's docstring for the rule)."""
    result = Attribution(output_tokens=len(output))
    for span in index.spans(output, min_tokens):
        if background is not None and background.contains(output[span.start : span.start + span.length]):
            continue  # the base model says this on its own
        result.spans.append(span)
        result.matched_tokens += span.credited
        for r in span.records:
            result.record_scores[r] = result.record_scores.get(r, 0.0) + span.credited / len(span.records)
    by_contributor: dict[str, float] = {}
    for r, score in result.record_scores.items():
        who = index.records[r].contributor
        by_contributor[who] = by_contributor.get(who, 0.0) + score
    result.contributor_bps = to_bps(by_contributor)
    return result


def to_bps(scores: Mapping[str, float]) -> dict[str, int]:
    """Scores as basis points summing to exactly 10,000 (largest remainders), zero scores dropped."""
    scores = {k: v for k, v in scores.items() if v > 0}
    total = sum(scores.values())
    if total <= 0:
        return {}
    raw = {k: v * 10_000 / total for k, v in scores.items()}
    bps = {k: int(v) for k, v in raw.items()}
    short = 10_000 - sum(bps.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - bps[k]), k))[:short]:
        bps[k] += 1
    return {k: v for k, v in sorted(bps.items()) if v > 0}


# -- the network's side: an adapter's index from its training data, a verdict's signed claim -------------


def index_of_chat_jsonl(path: str | Path, tokenizer: Any) -> AttributionIndex:
    """The index of a chat JSONL datanet (`records_of_chat_jsonl`)."""
    return AttributionIndex.build(records_of_chat_jsonl(path, tokenizer))


def records_of_chat_jsonl(path: str | Path, tokenizer: Any) -> list[Record]:
    """The records of a chat JSONL datanet (one per line: `messages` and the line's `contributor`); a
    record is its turns' tokens, -1 between turns. Record ids are `<contribution or file sha256>:<line>`."""
    raw = Path(path).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    records = []
    for i, line in enumerate(raw.decode().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        tokens: list[int] = []
        for message in row.get("messages", []):
            tokens += [*tokenizer.encode(str(message.get("content", ""))), SEPARATOR]
        source = str(row.get("contribution") or digest)[:16]  # a datanet line names its contribution
        records.append(Record(f"{source}:{i}", str(row.get("contributor", "")).lower(), tuple(tokens[:-1])))
    return records


def claim(
    index: AttributionIndex,
    index_id: str,
    output: Sequence[int],
    min_tokens: int = DEFAULT_MIN_TOKENS,
    background: AttributionIndex | None = None,
) -> p.Attribution:
    """The signed-verdict form of `attribute`: spans by record id, at most MAX_ATTRIBUTED contributors."""
    att = attribute(index, output, min_tokens, background)
    shares = dict(sorted(att.contributor_bps.items(), key=lambda kv: (-kv[1], kv[0]))[: p.MAX_ATTRIBUTED])
    return p.Attribution(
        index_id=index_id,
        min_tokens=min_tokens,
        output_tokens=len(output),
        matched_tokens=att.matched_tokens,
        spans=[
            p.AttributedSpan(
                start=s.start, length=s.length, records=[index.records[r].record_id for r in s.records[:16]]
            )
            for s in att.spans
        ],
        contributors=[p.ContributorShare(address=a, bps=b) for a, b in to_bps(shares).items()],
    )


def read_index_file(adapter_dir: str | Path) -> tuple[str, bytes]:
    """(sha256, bytes) of the attribution index stored beside an adapter, or ("", b"") when it has none."""
    path = Path(adapter_dir) / INDEX_FILE
    if not path.is_file():
        return "", b""
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), data
