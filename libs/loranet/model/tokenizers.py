"""Tokenizers belong to models: each checkpoint directory carries its own.

`load_tokenizer(model_dir)` returns the tokenizer of a checkpoint:

- a directory with `tokenizer.json` (any Hugging Face fast tokenizer) gives an
  `HFTokenizer`: ids, special tokens and the chat template come from the
  directory's tokenizer files; the ids that end generation (`stop_ids`) come
  from the model's `config.json` and `generation_config.json` (`eos_token_id`,
  an int or a list);
- a directory without tokenizer files whose vocabulary is the byte tokenizer's
  (the seeded test model) gives the `ByteTokenizer` (loranet.model.tokenizer).

`tokenizer_id` is the sha256 of the tokenizer's files (name, length and bytes
of each, in name order), so two nodes agree on a job's token ids exactly when
they hold the same files. Nothing outside this module and `tokenizer.py`
knows a vocabulary size, a special id or an encoding: services take a
`Tokenizer` and ask it.

Chat templates are Jinja (as in Hugging Face tokenizers) and rendered by one
function, `render_chat`, in a sandbox: the CLI and the gateway render a model's
template from its registry record (`ModelManifest.chat_template`) without
holding the model's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import Invalid
from . import tokenizer as byte_tokenizer

# The files that make a tokenizer; the id hashes the ones present.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
TOKENIZER_DOMAIN = b"loranet/tokenizer-files/v1\x00"
CHAT_ROLES = ("system", "user", "assistant")
MAX_CHAT_TEMPLATE_CHARS = 16_384


class TokenizerError(Invalid):
    """A checkpoint's tokenizer is missing, corrupt or does not fit its model (the message names the file)."""


class Tokenizer(Protocol):
    """What the engine, the verifier and the gateway ask of a model's tokenizer (read-only attributes)."""

    @property
    def name(self) -> str: ...
    @property
    def tokenizer_id(self) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def bos_token_id(self) -> int | None: ...
    @property
    def pad_token_id(self) -> int: ...
    @property
    def stop_ids(self) -> frozenset[int]: ...
    @property
    def chat_template(self) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str: ...


# ---------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------


def chat_messages(messages: Any) -> list[dict[str, str]]:
    """Validate chat messages: a non-empty list of {"role": system|user|assistant, "content": str}."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    out = []
    for n, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ValueError(f"message {n}: must be an object with role and content")
        role, content = msg.get("role"), msg.get("content")
        if role not in CHAT_ROLES:
            raise ValueError(f"message {n}: role {role!r} is not one of {', '.join(CHAT_ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"message {n}: content must be a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


_ENV_LOCK = threading.Lock()
_ENV: Any = None


def _jinja_env() -> Any:
    global _ENV
    with _ENV_LOCK:
        if _ENV is None:
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message: str) -> None:
                raise ValueError(f"chat template: {message}")

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
            env.globals["raise_exception"] = raise_exception
            _ENV = env
        return _ENV


def render_chat(
    template: str, messages: Any, add_generation_prompt: bool = True, special_tokens: Mapping[str, str] | None = None
) -> str:
    """Render `messages` through a Jinja chat template (sandboxed); ValueError on bad messages or template."""
    from jinja2 import TemplateError

    msgs = chat_messages(messages)
    if not template:
        raise ValueError("this model has no chat template")
    if len(template) > MAX_CHAT_TEMPLATE_CHARS:
        raise ValueError(f"chat template of {len(template)} characters exceeds {MAX_CHAT_TEMPLATE_CHARS}")
    try:
        compiled = _jinja_env().from_string(template)
        return str(
            compiled.render(messages=msgs, add_generation_prompt=add_generation_prompt, **dict(special_tokens or {}))
        )
    except TemplateError as exc:
        raise ValueError(f"chat template: {exc}") from None


# ---------------------------------------------------------------------------
# Hugging Face tokenizers
# ---------------------------------------------------------------------------


def tokenizer_content_id(model_dir: str | os.PathLike[str]) -> str:
    """sha256 of the tokenizer files present in `model_dir` (TOKENIZER_FILES), each as name, length, bytes."""
    d = Path(model_dir)
    h = hashlib.sha256(TOKENIZER_DOMAIN)
    found = 0
    for name in TOKENIZER_FILES:
        f = d / name
        if f.is_file():
            data = f.read_bytes()
            h.update(struct.pack("<Q", len(name)) + name.encode() + struct.pack("<Q", len(data)))
            h.update(data)
            found += 1
    if not found:
        raise TokenizerError(f"{d}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    return h.hexdigest()


def _ids(value: Any) -> set[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, int) and not isinstance(v, bool)}
    return set()


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"{path}: not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{path}: expected a JSON object")
    return data


class HFTokenizer:
    """A checkpoint's Hugging Face fast tokenizer, with the model's stop ids and chat template."""

    def __init__(
        self, model_dir: str | os.PathLike[str], model_vocab_size: int | None = None, tokenizer_id: str = ""
    ) -> None:
        from transformers import PreTrainedTokenizerFast

        d = Path(model_dir)
        self.path = d
        try:
            self._tok = PreTrainedTokenizerFast.from_pretrained(str(d), local_files_only=True)
        except Exception as exc:  # tokenizers raises its own exception types for corrupt files
            raise TokenizerError(f"{d / 'tokenizer.json'}: cannot load the tokenizer: {exc}") from None
        self.name = d.name
        self.tokenizer_id = tokenizer_id or tokenizer_content_id(d)
        self.vocab_size = len(self._tok)
        config, gen = _json(d / "config.json"), _json(d / "generation_config.json")
        model_vocab = model_vocab_size or config.get("vocab_size")
        if isinstance(model_vocab, int) and self.vocab_size > model_vocab:
            raise TokenizerError(
                f"{d / 'tokenizer.json'}: {self.vocab_size} tokens do not fit the model's "
                f"vocabulary of {model_vocab} (config.json)"
            )
        stops = _ids(config.get("eos_token_id")) | _ids(gen.get("eos_token_id"))
        if self._tok.eos_token_id is not None:
            stops.add(int(self._tok.eos_token_id))
        if not stops:
            raise TokenizerError(f"{d}: no end-of-sequence id in config.json, generation_config.json or the tokenizer")
        self.stop_ids = frozenset(stops)
        self.bos_token_id = self._tok.bos_token_id
        pad = self._tok.pad_token_id
        self.pad_token_id = int(pad if pad is not None else min(self.stop_ids))
        template = self._tok.chat_template
        self.chat_template = template if isinstance(template, str) else ""
        self._specials = {
            k: v
            for k, v in (("bos_token", self._tok.bos_token), ("eos_token", self._tok.eos_token))
            if isinstance(v, str)
        }

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; special tokens written in the text (a rendered chat template's) are their own ids."""
        return list(self._tok.encode(text, add_special_tokens=True))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids` without special tokens; a character cut between tokens decodes as U+FFFD.
        Raises ValueError for an id outside the vocabulary."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside the vocabulary 0..{self.vocab_size - 1}")
        return str(self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
        return render_chat(self.chat_template, list(messages), add_generation_prompt, self._specials)


_CACHE: dict[tuple[str, str], Tokenizer] = {}
_CACHE_LOCK = threading.Lock()


def load_tokenizer(model_dir: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer of checkpoint `model_dir` (cached per directory and tokenizer id)."""
    d = Path(model_dir)
    config = _json(d / "config.json")
    if not (d / "tokenizer.json").is_file():
        if config.get("vocab_size") == byte_tokenizer.VOCAB_SIZE:
            return byte_tokenizer.ByteTokenizer()
        raise TokenizerError(f"{d}: no tokenizer.json (a model directory must carry its tokenizer)")
    key = (str(d.resolve()), tokenizer_content_id(d))
    with _CACHE_LOCK:
        tok = _CACHE.get(key)
    if tok is None:
        tok = HFTokenizer(d, config.get("vocab_size"), key[1])
        with _CACHE_LOCK:
            _CACHE[key] = tok
    return tok


def visible_text(text: str, stops: Sequence[str]) -> str:
    """What an OpenAI client sees of a stopped output: the text before the first stop string."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]
