"""What an outsider recovers of a job's output tokens from its result as it travels on results.*, plain vs confidential.

The fingerprint of a result (loranet.fingerprint) commits, per chunk of 32 output
positions, the top-k (128) entries of the flattened final-norm hidden states.  An
observer with the public base model can put the committed entries back in place
(zeros elsewhere), apply the LM head and take the argmax of each row: row P-1+j is
the state that produced output token j.  One-row chunks (output length = 1 mod 32,
where top-k covers the whole state) give their token exactly.

For each job the same generation is published twice, as the node builds it
(services.inference.domain.build_result, signed, encoded for the wire):

- plain: the fingerprint chunks are in the clear, as every plain job's are;
- confidential: sealed the way the node seals it (loranet.confidential.seal_result:
  prompt sealed to the node and a committee, output, token ids and fingerprint
  chunks sealed to the client and the committee).

The outsider decodes the wire bytes with no key of the job (not the client, the
node or a committee member), tries to open the sealed output, and runs the attack
on every chunk it finds in the clear.  It is also checked that no committed chunk
appears anywhere in the confidential wire bytes.

    python bench/fingerprint_leak.py [--jobs 12] [--max-tokens 33] [--json]
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

from loranet import codec, confidential, protocol as p
from loranet.fingerprint import CHUNK_TOKENS, chunk_spans, decode_chunk, fingerprint_chunks
from loranet.model import TOKENIZER_ID, ensure_default_model, tokenizer
from loranet.model.generate import ReferenceModel
from loranet.signing import Identity, devnet_address, sign
from services.inference.domain import build_result

CLIENT, NODE, VERIFIER, OUTSIDER = (Identity.generate() for _ in range(4))


def job_request(model_id: str, prompt: str, max_tokens: int, sealed: bool) -> p.JobRequest:
    now = time.time()
    job = p.JobRequest(job_id=p.new_job_id(), client_key=CLIENT.public, client_address=devnet_address("client"),
                       model_id=model_id, adapter_id="", prompt=prompt, max_tokens=max_tokens, max_fee=10**18,
                       created_at=now, expires_at=now + 600)
    if sealed:
        job = job.model_copy(update={"prompt": "", "node_id": "node-0", "sealed_prompt": confidential.seal_prompt(
            job.job_id, CLIENT.public, prompt, NODE.public, [VERIFIER.public])})
    return sign(p.JobRequest.model_validate(job.model_dump()), CLIENT, p.DOMAIN_JOB_REQUEST)


def on_the_wire(model_id: str, prompt: str, max_tokens: int, gen, chunks: list[bytes], sealed: bool) -> bytes:
    """The encoded, signed result as the node publishes it on results.<node_id>."""
    job = job_request(model_id, prompt, max_tokens, sealed)
    result = build_result(job=job, node_id="node-0", node_key=NODE.public, node_address=devnet_address("node-0"),
                          node_seq=1, model_id=model_id, tokenizer_id=TOKENIZER_ID, prompt_tokens=tokenizer.encode(prompt),
                          output_tokens=gen.output_ids, output_text=tokenizer.decode(gen.output_ids),
                          finish_reason="length", chunks=chunks, started_at=time.time(), finished_at=time.time())
    if sealed:
        result = confidential.seal_result(result)
    return codec.encode(sign(result, NODE, p.DOMAIN_RESULT))


def outsider_recovers(wire: bytes, head: torch.Tensor, truth: list[int]) -> tuple[int, list[bool], bool]:
    """(output tokens recovered, one-row chunks exact?, sealed output opened?) from the wire bytes alone."""
    result = codec.decode(p.InferenceResult, wire)
    opened = False
    if result.sealed_output is not None:
        try:
            confidential.open_output(result, OUTSIDER)
            opened = True
        except confidential.ConfidentialError:
            pass
    p_len, n = result.token_counts()  # the clear counts: all the outsider knows of the layout
    hidden_size = head.shape[1]
    hit, one_row = 0, []
    for (a, b), blob in list(zip(chunk_spans(p_len, n, CHUNK_TOKENS), result.fingerprint.chunks))[1:]:
        fp = decode_chunk(blob)
        rows = np.zeros(fp.numel)
        rows[fp.indices] = fp.values
        guess = (torch.tensor(rows.reshape(b - a, hidden_size), dtype=torch.float32) @ head.T).argmax(-1).tolist()
        want = [truth[r - (p_len - 1)] for r in range(a, b)]
        hit += sum(int(g == t) for g, t in zip(guess, want))
        if b - a == 1:
            one_row.append(guess[0] == want[0])
    return hit, one_row, opened


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=33, help="33 = one full chunk + a one-row chunk")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path, model_id = ensure_default_model(tempfile.mkdtemp())
    model = ReferenceModel.from_path(path, model_id)
    head = model.base.lm_head.weight.detach().float()  # [V, H]
    rng = random.Random(0)
    total = 0
    found = {"plain": [0, [], 0], "confidential": [0, [], 0]}  # hits, one-row exact, sealed outputs opened
    chunks_on_wire = {"plain": 0, "confidential": 0}
    committed = 0
    for _ in range(args.jobs):
        prompt = "".join(rng.choice(string.ascii_letters + string.digits + " ") for _ in range(rng.randint(8, 40)))
        ids = tokenizer.encode(prompt)
        gen = model.generate(ids, None, args.max_tokens, eos_id=None)
        chunks = fingerprint_chunks(gen.hidden, len(ids), n_generated=len(gen.output_ids))
        committed += len(chunks)
        total += len(gen.output_ids)
        for kind in ("plain", "confidential"):
            wire = on_the_wire(model_id, prompt, args.max_tokens, gen, chunks, sealed=kind == "confidential")
            chunks_on_wire[kind] += sum(chunk in wire for chunk in chunks)
            hit, one_row, opened = outsider_recovers(wire, head, gen.output_ids)
            found[kind][0] += hit
            found[kind][1] += one_row
            found[kind][2] += int(opened)
    print(f"model H={head.shape[1]}, vocab {head.shape[0]}, {args.jobs} jobs, {total} output tokens, "
          f"{committed} committed chunks (chance {1 / head.shape[0]:.1%} per token)")
    for kind, (hit, one_row, opened) in found.items():
        print(f"  {kind:12s}: {hit}/{total} output tokens ({hit / total:.0%}) recovered by an outsider; one-row "
              f"chunks exact {sum(one_row)}/{len(one_row)}; committed chunks found in the wire bytes "
              f"{chunks_on_wire[kind]}/{committed}; sealed outputs the outsider opened {opened}")
    if args.json:
        print(json.dumps({"jobs": args.jobs, "output_tokens": total, "committed_chunks": committed,
                          **{f"{k}_recovered": v[0] for k, v in found.items()},
                          **{f"{k}_recovered_share": round(v[0] / total, 4) for k, v in found.items()},
                          **{f"{k}_chunks_on_wire": v for k, v in chunks_on_wire.items()}}))


if __name__ == "__main__":
    main()
