"""What an outsider recovers of a job's output tokens from its result as it travels on results.*, plain vs confidential.

The fingerprint of a result (loranet.fingerprint, version 2) commits, per chunk of 32
output positions, the top-k (128) entries of the flattened final-norm hidden states as
one polynomial P over GF(65521): P(x(i)) encodes the value at flat index i, and the
indices themselves are not stored. An outsider holding P and the public base model
does its best:

- blind (the chunks and the clear token counts only, as a confidential job's chunks
  would be seen if they were left in the clear): a chunk of numel <= 128 entries
  (a one-row chunk at width 128, i.e. an output whose length is 1 mod 32) commits
  every entry, so its indices are known: P gives the whole state exactly, the LM
  head its greedy token. For bigger chunks the committed indices are unknown;
  the outsider evaluates P at the hidden dimensions that the public model most
  often puts in a chunk's top-k (learned on its own random text), zeros
  elsewhere, and takes each row's argmax;
- prompt known (the plain job's clear prompt; never its output ids or text): the
  outsider walks the output left to right; for output token j it computes, with
  the public model, the hidden state each candidate token (the whole vocabulary)
  would give at the next row, and evaluates P at that state's would-be top-k
  entries (|value| >= the chunk's committed lo). The true token's state makes P
  agree at them (to fp32 noise); another token's makes P give garbage. A
  candidate with at least one agreement is "confirmed"; with none (the row holds
  no top-k entry), the outsider guesses the model's argmax and goes on. The
  baseline beside it is the public model's argmax on the true prefix with no
  fingerprint at all: for a greedy job that is every token already (run with
  --temperature > 0 to see what the fingerprint itself adds).

For each job the same generation is published twice, as the node builds it
(services.inference.domain.build_result, signed, encoded for the wire):

- plain: the fingerprint chunks are in the clear, as every plain job's are;
- confidential: sealed the way the node seals it (loranet.confidential.seal_result:
  prompt sealed to the node and a committee, output, token ids and fingerprint
  chunks sealed to the client and the committee).

The outsider decodes the wire bytes with no key of the job (not the client, the
node or a committee member), tries to open the sealed output, and runs the attacks
on every chunk it finds in the clear. It is also checked that no committed chunk
appears anywhere in the confidential wire bytes. The plain rows are the control:
they show the measurement finds a leak where there is one.

    python bench/fingerprint_leak.py [--jobs 12] [--max-tokens 33] [--temperature 0] [--json]
    python bench/fingerprint_leak.py --model smollm2 --jobs 6    # the real model (hidden 576, vocab 49,152)

On SmolLM2 the prompt-known attacker tests the public model's --candidates most likely tokens at each
step (default 64) rather than the whole vocabulary (49,152 forwards per output token do not fit a CPU):
a weaker attacker than on the tiny model, stated in the output.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import tempfile
import time

import numpy as np
import torch

from loranet import codec, confidential
from loranet import protocol as p
from loranet.fingerprint import CHUNK_TOKENS, TOP_K, chunk_spans, decode_chunk, fingerprint_chunks
from loranet.model import ensure_tiny_model
from loranet.model.generate import ReferenceModel
from loranet.sampling import SamplerParams
from loranet.signing import Identity, devnet_address, sign
from services.inference.domain import build_result

CLIENT, NODE, VERIFIER, OUTSIDER = (Identity.generate() for _ in range(4))


def job_request(
    model_id: str, prompt: str, max_tokens: int, sealed: bool, temperature: float, seed: int
) -> p.JobRequest:
    now = time.time()
    job = p.JobRequest(
        job_id=p.new_job_id(),
        client_key=CLIENT.public,
        client_address=devnet_address("client"),
        model_id=model_id,
        adapter_id="",
        prompt=prompt,
        max_tokens=max_tokens,
        max_fee=10**18,
        sampling=p.SamplingParams(temperature=temperature, seed=seed),
        created_at=now,
        expires_at=now + 600,
    )
    if sealed:
        job = job.model_copy(
            update={
                "prompt": "",
                "node_id": "node-0",
                "sealed_prompt": confidential.seal_prompt(
                    job.job_id, CLIENT.public, prompt, NODE.public, [VERIFIER.public]
                ),
            }
        )
    return sign(p.JobRequest.model_validate(job.model_dump()), CLIENT)


def on_the_wire(
    model: ReferenceModel,
    prompt: str,
    max_tokens: int,
    gen,
    chunks: list[bytes],
    sealed: bool,
    temperature: float,
    seed: int,
) -> bytes:
    """The encoded, signed result as the node publishes it on results.<node_id>."""
    tok, model_id = model.tokenizer, model.model_id
    job = job_request(model_id, prompt, max_tokens, sealed, temperature, seed)
    result = build_result(
        job=job,
        node_id="node-0",
        node_key=NODE.public,
        node_address=devnet_address("node-0"),
        node_seq=1,
        model_id=model_id,
        tokenizer_id=tok.tokenizer_id,
        prompt_tokens=tok.encode(prompt),
        output_tokens=gen.output_ids,
        output_text=tok.decode(gen.output_ids),
        finish_reason="length",
        chunks=chunks,
        started_at=time.time(),
        finished_at=time.time(),
    )
    if sealed:
        result = confidential.seal_result(result)
    return codec.encode(sign(result, NODE))


class Outsider:
    """The public base model and what the outsider learns from it on its own text."""

    def __init__(self, model: ReferenceModel, rng: random.Random, candidates: int = 0) -> None:
        self.model = model
        self.candidates = candidates  # 0: the whole vocabulary
        self.head = model.base.lm_head.weight.detach().float()  # [V, H]
        self.width = self.head.shape[1]
        counts = np.zeros(self.width)
        for _ in range(16):  # which hidden dimensions a 32-row chunk's top-k tends to hold
            text = "".join(rng.choice(string.ascii_letters + string.digits + " ") for _ in range(rng.randint(40, 80)))
            h = model.prefill_hidden(model.tokenizer.encode(text))[0][-32:].reshape(-1).numpy()
            top = np.argsort(-np.abs(h))[:TOP_K]
            np.add.at(counts, top % self.width, 1)
        self.likely_dims = np.argsort(-counts)

    @torch.no_grad()
    def last_states(self, prefix: list[int], candidates: list[int]) -> torch.Tensor:
        """[len(candidates), H]: the final-norm state after reading prefix + [t], for each candidate t."""
        ids = torch.tensor([[*prefix, t] for t in candidates])
        return (
            self.model.base(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states[-1][:, -1].float()
        )

    def blind(self, p_len: int, n: int, chunks: list[bytes]) -> dict[int, int]:
        """{output position: guessed token} from the chunks alone."""
        guesses: dict[int, int] = {}
        for (a, b), blob in list(zip(chunk_spans(p_len, n, CHUNK_TOKENS), chunks))[1:]:
            fp = decode_chunk(blob)
            rows = b - a
            if fp.numel <= TOP_K:  # every entry committed: the indices are 0..numel-1
                state = fp.values_at(np.arange(fp.numel))
            else:
                per_row = -(-fp.k // rows)
                dims = self.likely_dims[:per_row]
                idx = (np.arange(rows)[:, None] * self.width + dims[None, :]).reshape(-1)
                state = np.zeros(fp.numel)
                state[idx] = fp.values_at(idx)
            logits = torch.tensor(state.reshape(rows, self.width), dtype=torch.float32) @ self.head.T
            for r, g in zip(range(a, b), logits.argmax(-1).tolist()):
                guesses[r - (p_len - 1)] = g
        return guesses

    def with_prompt(self, prompt: list[int], n: int, chunks: list[bytes]) -> tuple[list[int], list[bool]]:
        """Output tokens named left to right by testing every candidate against P; and which were confirmed."""
        p_len = len(prompt)
        spans = chunk_spans(p_len, n, CHUNK_TOKENS)
        fps = [decode_chunk(c) for c in chunks]
        vocab = self.head.shape[0]
        named: list[int] = []
        confirmed: list[bool] = []
        for j in range(n):
            prefix = [*prompt, *named]
            if j == n - 1:  # the last token is never read back: only the model's guess
                logits = self.model.prefill_hidden(prefix)[1][-1]
                named.append(int(logits.argmax()))
                confirmed.append(False)
                break
            row = p_len + j  # the row whose state reads output token j
            c = next(i for i, (a, b) in enumerate(spans) if i > 0 and a <= row < b)
            a, fp = spans[c][0], fps[c]
            if self.candidates:  # the public model's most likely next tokens
                top = self.model.prefill_hidden(prefix)[1][-1].topk(self.candidates).indices.tolist()
            else:
                top = list(range(vocab))
            states = self.last_states(prefix, top).numpy().astype(np.float64)
            tol = fp.quant_step / 2 + 1e-4 * fp.hi
            cand, dims = np.nonzero(np.abs(states) >= fp.lo)  # each candidate's would-be top-k entries
            agree = np.abs(fp.values_at((row - a) * self.width + dims) - states[cand, dims]) <= tol
            score = np.bincount(cand[agree], minlength=len(top))
            if score.max() > 0:
                named.append(top[int(score.argmax())])
                confirmed.append(True)
            else:
                logits = self.model.prefill_hidden(prefix)[1][-1]
                named.append(int(logits.argmax()))
                confirmed.append(False)
        return named, confirmed


def outsider_recovers(wire: bytes, out: Outsider, truth: list[int]) -> dict:
    """What the outsider gets from the wire bytes alone (never the output ids or text)."""
    result = codec.decode(p.InferenceResult, wire)
    opened = False
    if result.sealed_output is not None:
        try:
            confidential.open_output(result, OUTSIDER)
            opened = True
        except confidential.ConfidentialError:
            pass
    p_len, n = result.token_counts()  # the clear counts: all the outsider knows of the layout
    chunks = list(result.fingerprint.chunks)
    got = {"blind": 0, "one_row": [], "prompt_named": 0, "confirmed": 0, "confirmed_right": 0, "opened": opened}
    if not chunks:
        return got
    spans = chunk_spans(p_len, n, CHUNK_TOKENS)
    one_row = {a - (p_len - 1) for a, b in spans[1:] if b - a == 1}
    for j, g in out.blind(p_len, n, chunks).items():
        if j < n:
            got["blind"] += int(g == truth[j])
            if j in one_row:
                got["one_row"].append(g == truth[j])
    if result.prompt_tokens:  # a plain job: its prompt is in the clear
        named, conf = out.with_prompt(list(result.prompt_tokens), n, chunks)
        right = [g == t for g, t in zip(named, truth)]
        got["prompt_named"] = sum(right)
        got["confirmed"] = sum(conf)
        got["confirmed_right"] = sum(r for r, c in zip(right, conf) if c)
    return got


@torch.no_grad()
def argmax_baseline(model: ReferenceModel, prompt: list[int], output: list[int]) -> int:
    """Output tokens equal to the public model's argmax on the true prefix: no fingerprint needed for those."""
    logits = model.prefill_hidden([*prompt, *output])[1]
    return sum(int(logits[len(prompt) - 1 + j].argmax()) == t for j, t in enumerate(output))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=33, help="33 = one full chunk + a one-row chunk")
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy jobs; > 0: sampled (seeded)")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument(
        "--candidates",
        type=int,
        default=-1,
        help="tokens the prompt-known attacker tests per step (0 = all; default all on tiny, 64 on smollm2)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1 if args.model == "tiny" else torch.get_num_threads())
    t0 = time.perf_counter()
    if args.model == "smollm2":
        from loranet.model.catalog import resolve_model

        m = resolve_model("smollm2-135m-instruct")
        path, model_id = m.path, m.model_id
    else:
        path, model_id = ensure_tiny_model(tempfile.mkdtemp())
    model = ReferenceModel.from_path(path, model_id)
    rng = random.Random(0)
    candidates = args.candidates if args.candidates >= 0 else (64 if args.model == "smollm2" else 0)
    outsider = Outsider(model, random.Random(1), candidates)
    params = SamplerParams(temperature=args.temperature)
    total = committed = baseline = 0
    keys = ("blind", "prompt_named", "confirmed", "confirmed_right", "opened")
    found = {kind: {**{k: 0 for k in keys}, "one_row": []} for kind in ("plain", "confidential")}
    chunks_on_wire = {"plain": 0, "confidential": 0}
    for _ in range(args.jobs):
        prompt = "".join(rng.choice(string.ascii_letters + string.digits + " ") for _ in range(rng.randint(8, 40)))
        ids = model.tokenizer.encode(prompt)
        seed = rng.randrange(2**32)
        gen = model.generate(ids, None, args.max_tokens, params, seed, stop_ids=())
        chunks = fingerprint_chunks(gen.hidden, len(ids), n_generated=len(gen.output_ids))
        committed += len(chunks)
        total += len(gen.output_ids)
        baseline += argmax_baseline(model, ids, gen.output_ids)
        for kind in ("plain", "confidential"):
            wire = on_the_wire(
                model, prompt, args.max_tokens, gen, chunks, kind == "confidential", args.temperature, seed
            )
            chunks_on_wire[kind] += sum(chunk in wire for chunk in chunks)
            got = outsider_recovers(wire, outsider, gen.output_ids)
            for k in keys:
                found[kind][k] += int(got[k])
            found[kind]["one_row"] += got["one_row"]
    width, vocab = outsider.width, outsider.head.shape[0]
    print(
        f"model {args.model} H={width}, vocab {vocab} (prompt-known attacker tests "
        f"{candidates or vocab} candidates per step), {args.jobs} jobs at temperature {args.temperature:g}, "
        f"{total} output tokens, "
        f"{committed} committed chunks (chance {1 / vocab:.1%} per token); public model's argmax on the true "
        f"prefix, no fingerprint: {baseline}/{total} ({baseline / total:.0%})"
    )
    for kind, f in found.items():
        print(
            f"  {kind:12s}: chunks only: {f['blind']}/{total} output tokens ({f['blind'] / total:.0%}) recovered "
            f"(one-row chunks, every entry committed, exact {sum(f['one_row'])}/{len(f['one_row'])}); "
            f"with the clear prompt: {f['prompt_named']}/{total} ({f['prompt_named'] / total:.0%}), "
            f"{f['confirmed']} confirmed by P ({f['confirmed_right']} right); committed chunks found in the wire "
            f"bytes {chunks_on_wire[kind]}/{committed}; sealed outputs the outsider opened {f['opened']}"
        )
    print(f"({time.perf_counter() - t0:.0f}s)")
    if args.json:
        print(
            json.dumps(
                {
                    "jobs": args.jobs,
                    "temperature": args.temperature,
                    "output_tokens": total,
                    "committed_chunks": committed,
                    "argmax_baseline": baseline,
                    **{f"{k}_recovered": v["blind"] for k, v in found.items()},
                    **{f"{k}_recovered_share": round(v["blind"] / total, 4) for k, v in found.items()},
                    **{f"{k}_prompt_known_recovered": v["prompt_named"] for k, v in found.items()},
                    **{f"{k}_confirmed_by_p": v["confirmed"] for k, v in found.items()},
                    **{f"{k}_chunks_on_wire": v for k, v in chunks_on_wire.items()},
                }
            )
        )


if __name__ == "__main__":
    main()
