"""Byte-level tokenizer of the embedded default model: needs no files.

Ids 0..255 are the bytes of the UTF-8 text; then three specials:
BOS=256, EOS=257, PAD=258 (vocabulary 259). Any text round-trips exactly
through `encode` / `decode`, and a model of vocabulary 259 can emit any byte
sequence (invalid UTF-8 decodes with U+FFFD replacement characters).

`tokenizer_id` is the sha256 of a canonical description of the tokenizer
(name, version, specials), so a job can name the tokenizer it was encoded with
the same way it names the model and adapter by content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence

NAME = "loranet-bytes"
VERSION = 1

BOS_ID = 256
EOS_ID = 257
PAD_ID = 258
VOCAB_SIZE = 259
SPECIAL_IDS = {"bos": BOS_ID, "eos": EOS_ID, "pad": PAD_ID}

# Chat template markers: plain ASCII, so they are ordinary byte tokens.
_TURN_OPEN = "<|{role}|>\n"
_TURN_CLOSE = "\n<|end|>\n"


def _canonical_description() -> bytes:
    desc = {
        "name": NAME,
        "version": VERSION,
        "kind": "utf-8 bytes, ids 0..255",
        "specials": SPECIAL_IDS,
        "vocab_size": VOCAB_SIZE,
        "chat_template": {"open": _TURN_OPEN, "close": _TURN_CLOSE, "roles": ["system", "user", "assistant"]},
    }
    return json.dumps(desc, sort_keys=True, separators=(",", ":")).encode()


def _tokenizer_id() -> str:
    return hashlib.sha256(b"loranet/tokenizer/v1\x00" + _canonical_description()).hexdigest()


TOKENIZER_ID = _tokenizer_id()


def encode(text: str, add_bos: bool = True) -> list[int]:
    """UTF-8 bytes of `text` as ids, preceded by BOS when `add_bos`."""
    ids = list(text.encode("utf-8"))
    return [BOS_ID, *ids] if add_bos else ids


def decode(ids: Iterable[int]) -> str:
    """Text of `ids`: special ids are skipped, bytes decoded as UTF-8 with
    errors="replace". Raises ValueError for an id outside the vocabulary."""
    out = bytearray()
    for i in ids:
        i = int(i)
        if 0 <= i < 256:
            out.append(i)
        elif i >= VOCAB_SIZE or i < 0:
            raise ValueError(f"token id {i} is outside the vocabulary 0..{VOCAB_SIZE - 1}")
    return out.decode("utf-8", errors="replace")


# The same template as Jinja, for code that renders any model's template (loranet.model.tokenizers.render_chat).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def apply_chat_template(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
    """Render chat messages as one prompt string.

    Each message `{"role": r, "content": c}` (r in system/user/assistant)
    becomes ``<|r|>\\n{c}\\n<|end|>\\n``, in order; with
    `add_generation_prompt` the text ends with ``<|assistant|>\\n`` so the
    model continues as the assistant. Deterministic: the same messages give
    the same string on every machine. Encode the result with `encode`
    (which adds BOS).
    """
    from .tokenizers import render_chat

    return render_chat(CHAT_TEMPLATE, list(messages), add_generation_prompt)


class ByteTokenizer:
    """The tiny test model's tokenizer as an object (the `loranet.model.tokenizers.Tokenizer` protocol)."""

    name = NAME
    tokenizer_id = TOKENIZER_ID
    bos_token_id = BOS_ID
    eos_token_id = EOS_ID
    pad_token_id = PAD_ID
    vocab_size = VOCAB_SIZE
    stop_ids = frozenset({EOS_ID})
    chat_template = CHAT_TEMPLATE

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return encode(text, add_bos)

    def decode(self, ids: Iterable[int]) -> str:
        return decode(ids)

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        return apply_chat_template(messages, add_generation_prompt)
