"""What a confidential job's clear fingerprint gives away: output tokens recovered from it with the public model.

The fingerprint of a result (loranet.fingerprint) commits, per chunk of 32 output
positions, the top-k (128) entries of the flattened final-norm hidden states.
Confidential jobs (docs/ARCHITECTURE.md) keep it in the clear.  An observer with
the public base model can put the committed entries back in place (zeros
elsewhere), apply the LM head and take the argmax of each row: row P-1+j is the
state that produced output token j.  This prints how many output tokens that
recovers, and whether one-row chunks (output length = 1 mod 32, where top-k
covers the whole state) give the token exactly.

    python bench/fingerprint_leak.py [--jobs 12] [--max-tokens 33]
"""

from __future__ import annotations

import argparse
import random
import string
import tempfile

import numpy as np
import torch

from loranet.fingerprint import CHUNK_TOKENS, chunk_spans, decode_chunk, fingerprint_chunks
from loranet.model import ensure_default_model, tokenizer
from loranet.model.generate import ReferenceModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=33, help="33 = one full chunk + a one-row chunk")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path, model_id = ensure_default_model(tempfile.mkdtemp())
    model = ReferenceModel.from_path(path, model_id)
    head = model.base.lm_head.weight.detach().float()  # [V, H]
    hidden_size = head.shape[1]
    rng = random.Random(0)
    full = hit = 0
    one_row: list[bool] = []
    for _ in range(args.jobs):
        prompt = "".join(rng.choice(string.ascii_letters + string.digits + " ") for _ in range(rng.randint(8, 40)))
        ids = tokenizer.encode(prompt)
        gen = model.generate(ids, None, args.max_tokens, eos_id=None)
        p_len, n = len(ids), len(gen.output_ids)
        spans = chunk_spans(p_len, n, CHUNK_TOKENS)
        for (a, b), blob in list(zip(spans, fingerprint_chunks(gen.hidden, p_len, n_generated=n)))[1:]:
            fp = decode_chunk(blob)
            rows = np.zeros(fp.numel)
            rows[fp.indices] = fp.values
            guess = (torch.tensor(rows.reshape(b - a, hidden_size), dtype=torch.float32) @ head.T).argmax(-1).tolist()
            truth = [gen.output_ids[r - (p_len - 1)] for r in range(a, b)]
            hit += sum(int(g == t) for g, t in zip(guess, truth))
            full += b - a
            if b - a == 1:
                one_row.append(guess[0] == truth[0])
    print(f"model H={hidden_size}, vocab {head.shape[0]}: {hit}/{full} output tokens ({hit / full:.0%}) recovered "
          f"from clear fingerprints (chance {1 / head.shape[0]:.1%}); one-row chunks exact: {sum(one_row)}/{len(one_row)}")


if __name__ == "__main__":
    main()
