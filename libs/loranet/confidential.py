"""Confidential jobs: prompts sealed to one node and a verifier committee, outputs sealed back to the client.

Pure functions, no I/O.  Every party already has an Ed25519 identity (clients
sign requests, nodes sign results and heartbeats, verifiers sign verdicts and
their announcements in KV ``verifiers``); the X25519 keys used here are derived
from them (``SigningKey.to_curve25519_private_key``,
``VerifyKey.to_curve25519_public_key``), so there is no second key registry and
a recipient is named by its Ed25519 public key.

Hybrid encryption (``seal`` / ``open_sealed``):

- a fresh random 32-byte data key encrypts the payload with
  ``nacl.secret.SecretBox`` (XSalsa20-Poly1305, random nonce): tampering with
  the ciphertext is detected by its MAC;
- the data key is sealed to each recipient in the sealed-box format
  (``nacl.public.SealedBox`` opens it: ephemeral X25519 key || box of the
  key).  The ephemeral secret is derived from the data key and the recipient
  (keyed BLAKE2b) instead of drawn at random, so a recipient who has opened the
  data key can rebuild every other recipient's slot byte for byte
  (``slot_matches``): a verifier can check that the client's slot really holds
  the key of the output it verified.  Without the data key the ephemeral
  secret is as unpredictable as the data key itself.

Protocol helpers bind the plaintext to its job: a sealed prompt carries the job
id and the client's key (a copied ``sealed_prompt`` in another client's request
does not open as that job), a sealed output carries the job id.  A sealed output
holds everything of a result that is derived from the prompt or the output: the
token ids, the text and the activation fingerprint's chunks (the proof: top-k
final hidden-state entries, from which an observer holding the public model
recovers output tokens: whole states of one-row chunks, and any candidate
token's state can be tested against a chunk by whoever knows the prompt, see
bench/fingerprint_leak.py).  What stays in the
clear is listed in docs/ARCHITECTURE.md ("Confidential jobs").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import nacl.bindings
import nacl.exceptions
import nacl.hash
import nacl.utils
from nacl.encoding import RawEncoder
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import SecretBox
from nacl.signing import VerifyKey

from . import protocol as p
from .errors import Invalid
from .signing import Identity

DATA_KEY_BYTES = SecretBox.KEY_SIZE  # 32
SLOT_BYTES = 32 + 16 + DATA_KEY_BYTES  # ephemeral public key + MAC + sealed data key
_EPHEMERAL_PERSON = b"loranet-seal-eph"  # BLAKE2b personalisation (16 bytes)
DOMAIN_SEALED_PROMPT = "loranet/sealed-prompt/v1"
DOMAIN_SEALED_OUTPUT = "loranet/sealed-output/v2"  # v2: the fingerprint chunks are inside too


class ConfidentialError(Invalid):
    """A sealed payload could not be opened or is not bound to its job."""


class NotARecipient(ConfidentialError):
    """The identity is not among the sealed payload's recipients."""


class Tampered(ConfidentialError):
    """A slot or the ciphertext failed authentication, or the payload does not match its context."""


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


def x25519_public(ed25519_public: bytes) -> PublicKey:
    """The X25519 public key of an Ed25519 public key (raises ConfidentialError for a bad point)."""
    try:
        return VerifyKey(ed25519_public).to_curve25519_public_key()
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise ConfidentialError(f"not a usable Ed25519 public key: {exc}") from None


def x25519_private(identity: Identity) -> PrivateKey:
    """The X25519 private key of an Ed25519 identity."""
    return identity.signing_key.to_curve25519_private_key()


# ---------------------------------------------------------------------------
# Hybrid sealing
# ---------------------------------------------------------------------------


def _slot(data_key: bytes, recipient: bytes) -> bytes:
    """The sealed-box slot of `data_key` for the Ed25519 key `recipient` (deterministic given both)."""
    pk = bytes(x25519_public(recipient))
    esk = nacl.hash.blake2b(pk, key=data_key, person=_EPHEMERAL_PERSON, digest_size=32, encoder=RawEncoder)
    epk = nacl.bindings.crypto_scalarmult_base(esk)
    nonce = nacl.hash.blake2b(epk + pk, digest_size=24, encoder=RawEncoder)  # libsodium's crypto_box_seal nonce
    return epk + nacl.bindings.crypto_box(data_key, nonce, pk, esk)


def seal(plaintext: bytes, recipients: Iterable[bytes]) -> p.Sealed:
    """Encrypt `plaintext` once and seal its data key to each recipient (Ed25519 public keys, de-duplicated)."""
    keys = list(dict.fromkeys(bytes(r) for r in recipients))
    if not keys:
        raise ConfidentialError("a sealed payload needs at least one recipient")
    data_key = nacl.utils.random(DATA_KEY_BYTES)
    ciphertext = bytes(SecretBox(data_key).encrypt(plaintext))
    return p.Sealed(keys=[p.SealedKey(recipient=r, box=_slot(data_key, r)) for r in keys], ciphertext=ciphertext)


def recipients(sealed: p.Sealed) -> list[bytes]:
    """The recipients' Ed25519 public keys, in slot order."""
    return [k.recipient for k in sealed.keys]


def data_key(sealed: p.Sealed, identity: Identity) -> bytes:
    """Open this identity's slot: the payload's data key."""
    for k in sealed.keys:
        if k.recipient == identity.public:
            try:
                key = SealedBox(x25519_private(identity)).decrypt(k.box)
            except nacl.exceptions.CryptoError:
                raise Tampered("the key slot for this identity does not open") from None
            if len(key) != DATA_KEY_BYTES:
                raise Tampered(f"the key slot holds {len(key)} bytes, not a {DATA_KEY_BYTES}-byte key")
            return key
    raise NotARecipient(f"key {identity.public.hex()[:16]} is not among the {len(sealed.keys)} recipients")


def open_with_key(sealed: p.Sealed, key: bytes) -> bytes:
    """Decrypt the payload with its data key (raises Tampered if the ciphertext was altered)."""
    try:
        return bytes(SecretBox(key).decrypt(sealed.ciphertext))
    except nacl.exceptions.CryptoError:
        raise Tampered("the ciphertext does not authenticate under its data key") from None


def open_sealed(sealed: p.Sealed, identity: Identity) -> bytes:
    """Decrypt a payload sealed to `identity` (NotARecipient, Tampered)."""
    return open_with_key(sealed, data_key(sealed, identity))


def slot_matches(sealed: p.Sealed, key: bytes, recipient: bytes) -> bool:
    """Whether `recipient` has a slot and it holds exactly `key` (checked by rebuilding it; needs the key)."""
    try:
        return any(k.recipient == recipient and k.box == _slot(key, recipient) for k in sealed.keys)
    except ConfidentialError:
        return False


# ---------------------------------------------------------------------------
# Prompts and outputs of jobs
# ---------------------------------------------------------------------------


def _pack(*fields: object) -> bytes:
    packed: bytes = msgpack.packb(list(fields), use_bin_type=True)
    return packed


def _unpack(data: bytes, domain: str, n: int) -> list[Any]:
    try:
        fields = msgpack.unpackb(data, raw=False)
    except Exception:
        raise Tampered("the sealed payload is not MessagePack") from None
    if not isinstance(fields, list) or len(fields) != n or fields[0] != domain:
        raise Tampered(f"the sealed payload is not a {domain} record")
    return fields


def seal_prompt(job_id: str, client_key: bytes, prompt: str, node_key: bytes, committee: Sequence[bytes]) -> p.Sealed:
    """A client's prompt sealed to the node it names and the verifier committee, bound to job and client."""
    return seal(_pack(DOMAIN_SEALED_PROMPT, job_id, client_key, prompt), [node_key, *committee])


def open_prompt(job: p.JobRequest, identity: Identity) -> str:
    """The plaintext prompt of a confidential job, for its node or a committee member.

    Every recipient's slot must hold the same data key (rebuilt and compared), so the
    node and the committee provably read the same prompt: a client cannot show the node
    one prompt and the verifiers another, and have an honest node's result rejected."""
    if job.sealed_prompt is None:
        return job.prompt
    key = data_key(job.sealed_prompt, identity)
    if not all(slot_matches(job.sealed_prompt, key, r) for r in recipients(job.sealed_prompt)):
        raise Tampered("the sealed prompt's key slots differ: its recipients would not read the same prompt")
    _, job_id, client_key, prompt = _unpack(open_with_key(job.sealed_prompt, key), DOMAIN_SEALED_PROMPT, 4)
    if job_id != job.job_id or client_key != job.client_key or not isinstance(prompt, str):
        raise Tampered("the sealed prompt belongs to another job or client")
    return prompt


def committee(job: p.JobRequest, node_key: bytes) -> list[bytes]:
    """The verifier committee of a confidential job: its prompt's recipients other than the node."""
    if job.sealed_prompt is None:
        return []
    return [r for r in recipients(job.sealed_prompt) if r != node_key]


def output_recipients(result: p.InferenceResult) -> list[bytes]:
    """Who a confidential result's output is sealed to: the client, then the committee."""
    return [result.request.client_key, *committee(result.request, result.node_key)]


def seal_result(result: p.InferenceResult) -> p.InferenceResult:
    """The confidential form of an (unsigned) result: token ids, text and fingerprint chunks only inside
    `sealed_output`, one envelope to the client and the committee, bound to the job id.

    The counts stay in the clear for the fee (`prompt_token_count`, `output_token_count`), and the
    fingerprint's public parameters (`chunk_tokens`, `top_k`) with an empty chunk list."""
    payload = _pack(
        DOMAIN_SEALED_OUTPUT,
        result.job_id,
        list(result.prompt_tokens),
        list(result.output_tokens),
        result.output_text,
        [bytes(c) for c in result.fingerprint.chunks],
    )
    return result.model_copy(
        update={
            "sealed_output": seal(payload, output_recipients(result)),
            "prompt_token_count": len(result.prompt_tokens),
            "output_token_count": len(result.output_tokens),
            "prompt_tokens": [],
            "output_tokens": [],
            "output_text": "",
            "fingerprint": result.fingerprint.model_copy(update={"chunks": []}),
        }
    )


@dataclass(frozen=True)
class Output:
    """A confidential result's output as its client or a committee member reads it."""

    prompt_tokens: list[int]
    output_tokens: list[int]
    output_text: str
    key: bytes  # the output's data key (to check other recipients' slots)
    fingerprint_chunks: list[bytes]  # the activation fingerprint's chunks (loranet.fingerprint encoding)


def opened_result(result: p.InferenceResult, identity: Identity) -> p.InferenceResult:
    """The result with its sealed output opened into the clear fields (as is when nothing is sealed);
    NotARecipient or Tampered when `identity` cannot open it."""
    if result.sealed_output is None:
        return result
    out = open_output(result, identity)
    return result.model_copy(
        update={"output_text": out.output_text, "output_tokens": out.output_tokens, "prompt_tokens": out.prompt_tokens}
    )


def open_output(result: p.InferenceResult, identity: Identity) -> Output:
    """Open `sealed_output` (NotARecipient, Tampered)."""
    if result.sealed_output is None:
        return Output(
            list(result.prompt_tokens),
            list(result.output_tokens),
            result.output_text,
            b"",
            list(result.fingerprint.chunks),
        )
    key = data_key(result.sealed_output, identity)
    _, job_id, prompt_tokens, output_tokens, text, chunks = _unpack(
        open_with_key(result.sealed_output, key), DOMAIN_SEALED_OUTPUT, 6
    )
    ok = (
        job_id == result.job_id
        and isinstance(text, str)
        and isinstance(prompt_tokens, list)
        and isinstance(output_tokens, list)
        and all(type(t) is int for t in [*prompt_tokens, *output_tokens])
        and isinstance(chunks, list)
        and all(type(c) is bytes for c in chunks)
    )
    if not ok:
        raise Tampered("the sealed output belongs to another job or is malformed")
    try:  # the schema's bounds on what the clear fields would have held
        fingerprint = p.Fingerprint.model_validate({**result.fingerprint.model_dump(), "chunks": chunks})
    except ValueError:
        raise Tampered("the sealed fingerprint is outside the protocol's bounds") from None
    return Output(prompt_tokens, output_tokens, text, key, list(fingerprint.chunks))


def view_of(result: p.InferenceResult, out: Output) -> p.InferenceResult:
    """`result` with the opened token ids, text and fingerprint chunks put back in their clear fields.

    For checking only (a committee member runs the cheap checks and the audit on it); never published."""
    return result.model_copy(
        update={
            "prompt_tokens": out.prompt_tokens,
            "output_tokens": out.output_tokens,
            "output_text": out.output_text,
            "fingerprint": result.fingerprint.model_copy(update={"chunks": out.fingerprint_chunks}),
        }
    )


def plaintext_view(result: p.InferenceResult, identity: Identity) -> tuple[p.InferenceResult, str, Output]:
    """For a committee member: a copy of `result` with its token ids, text and fingerprint in the clear, the prompt,
    the output.

    The copy keeps the request exactly as signed (sealed), so signatures and the
    request hash still check; it is for checking only and is never published."""
    prompt = open_prompt(result.request, identity)
    out = open_output(result, identity)
    return view_of(result, out), prompt, out


def sealing_problems(result: p.InferenceResult, out: Output) -> list[str]:
    """What is wrong with how a confidential result was sealed (empty: nothing), given its opened output.

    Plaintext fields (token ids, text, fingerprint chunks) must be empty, the counts
    must match the sealed token ids, and the output must be sealed to exactly the
    client and the committee, each slot holding the output's key (so the client
    can read what was verified)."""
    problems = []
    if result.sealed_output is None:
        return ["a confidential job's result has no sealed_output"]
    if result.prompt_tokens or result.output_tokens or result.output_text:
        problems.append("plaintext token ids or text beside the sealed output")
    if result.fingerprint.chunks:
        problems.append(f"{len(result.fingerprint.chunks)} fingerprint chunks in the clear beside the sealed output")
    if (result.prompt_token_count, result.output_token_count) != (len(out.prompt_tokens), len(out.output_tokens)):
        problems.append(
            f"counts {result.prompt_token_count}/{result.output_token_count} != sealed "
            f"{len(out.prompt_tokens)}/{len(out.output_tokens)}"
        )
    want = output_recipients(result)
    got = recipients(result.sealed_output)
    if sorted(got) != sorted(set(want)):
        problems.append(f"sealed to {len(got)} keys, not to the client and the {len(want) - 1}-member committee")
    bad = [r.hex()[:16] for r in set(want) if not slot_matches(result.sealed_output, out.key, r)]
    if bad:
        problems.append(f"key slots that do not hold the output's key: {sorted(bad)}")
    return problems
