"""Fine-tune a PEFT LoRA adapter on the CPU from a chat dataset (`loranet adapter train`).

The dataset is JSON Lines, one example a line:

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "contributor": "0x<40 hex>"}

(`{"prompt": ..., "completion": ...}` is read as one user and one assistant turn.) Each example is
rendered through the base model's own chat template; the loss covers the last assistant turn's tokens
only (the turn's end-of-turn token included, so the adapter learns to stop). Training is seeded
(torch's generator and the shuffle), so the same base, data, options and library versions give the
same adapter. The output directory is an ordinary PEFT adapter (adapter_config.json +
adapter_model.safetensors) plus `manifest.draft.json`: the contributors weighted by the tokens they gave
(basis points summing to 10000), for `loranet adapter register --manifest`; trained from a datanet, the
draft also names its version and each contribution's tokens. `attribution.idx` indexes the records.

Every problem is found before training starts and reported with the file and line; the output is
written to a temporary sibling and moved into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..attribution import INDEX_FILE, index_of_chat_jsonl
from ..errors import Invalid
from .tokenizers import Tokenizer, chat_messages

ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
MIN_EXAMPLES = 8
MAX_EXAMPLE_TOKENS = 512


class TrainingRefused(Invalid):
    """The dataset or options cannot train an adapter; the message names the file and line."""


@dataclass(frozen=True)
class TrainOptions:
    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    epochs: int = 6
    lr: float = 2e-3
    batch_size: int = 8
    seed: int = 0


@dataclass
class Example:
    ids: list[int]
    labels: list[int]
    contributor: str
    contribution: str = ""  # the datanet contribution the line came from ("" for a plain file)


@dataclass
class TrainReport:
    out_dir: Path
    adapter_id: str
    examples: int
    steps: int
    first_loss: float
    last_loss: float
    losses: list[float] = field(default_factory=list)


def read_dataset(path: str | os.PathLike[str], tok: Tokenizer) -> list[Example]:
    """Parse and tokenize a chat JSONL file; TrainingRefused on the first bad line (file:line: problem)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingRefused(f"{path}: cannot read the dataset: {exc}") from None
    if not tok.chat_template:
        raise TrainingRefused(f"{path}: the base model has no chat template to render examples with")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TrainingRefused(f"{where}: not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise TrainingRefused(f"{where}: expected an object with messages (or prompt and completion)")
        if "messages" in row:
            messages = row["messages"]
        elif isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
            messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
        else:
            raise TrainingRefused(f"{where}: expected 'messages', or 'prompt' and 'completion' strings")
        try:
            messages = chat_messages(messages)
        except ValueError as exc:
            raise TrainingRefused(f"{where}: {exc}") from None
        if messages[-1]["role"] != "assistant" or not messages[-1]["content"]:
            raise TrainingRefused(f"{where}: the last message must be a non-empty assistant turn")
        contributor = row.get("contributor", "")
        if not isinstance(contributor, str) or not ADDRESS_RE.match(contributor):
            raise TrainingRefused(f"{where}: 'contributor' must be an address 0x + 40 hex digits")
        prefix = tok.encode(tok.apply_chat_template(messages[:-1], add_generation_prompt=True))
        full = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=False))
        if full[: len(prefix)] != prefix or len(full) <= len(prefix):
            raise TrainingRefused(f"{where}: the chat template does not render the reply after the prompt")
        if len(full) > MAX_EXAMPLE_TOKENS:
            raise TrainingRefused(f"{where}: {len(full)} tokens; at most {MAX_EXAMPLE_TOKENS} per example")
        # Loss on the reply and its end-of-turn token; the template's trailing newline after it is not learned.
        end = next((i + 1 for i in range(len(prefix), len(full)) if full[i] in tok.stop_ids), len(full))
        labels = [-100] * len(prefix) + full[len(prefix) : end] + [-100] * (len(full) - end)
        contribution = row.get("contribution", "")
        out.append(Example(full, labels, contributor.lower(), contribution if isinstance(contribution, str) else ""))
    if len(out) < MIN_EXAMPLES:
        raise TrainingRefused(f"{path}: {len(out)} examples; at least {MIN_EXAMPLES} are needed to train on")
    return out


def contributor_weights(examples: list[Example]) -> list[tuple[str, int]]:
    """(address, basis points) by the tokens each gave; the rounding remainder goes to the largest."""
    counts: Counter[str] = Counter()
    for e in examples:
        counts[e.contributor] += len(e.ids)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:64]
    total = sum(c for _, c in ranked)
    bps = [(a, c * 10_000 // total) for a, c in ranked]
    bps[0] = (bps[0][0], bps[0][1] + 10_000 - sum(b for _, b in bps))
    return [(a, b) for a, b in bps if b > 0]


def train_adapter(
    base_dir: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: TrainOptions = TrainOptions(),
    name: str = "",
    progress: Callable[[int, int, float], None] | None = None,
    datanet: dict[str, Any] | None = None,
) -> TrainReport:
    """Train a LoRA on `data` over the checkpoint at `base_dir`; write it (and a manifest draft) to `out_dir`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from .adapters import canonical_adapter_config, check_adapter_targets
    from .catalog import check_checkpoint
    from .content import adapter_content_id, model_content_id

    if options.rank < 1 or options.alpha < 1 or options.epochs < 1 or options.batch_size < 1 or options.lr <= 0:
        raise TrainingRefused("rank, alpha, epochs and batch size must be >= 1 and the learning rate > 0")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise TrainingRefused(f"{out}: exists and is not empty; choose a new --out directory")
    cfg, tok = check_checkpoint(base_dir)
    check_adapter_targets(cfg, options.targets, str(base_dir))
    examples = read_dataset(data, tok)
    base_id = model_content_id(base_dir)

    from transformers import LlamaForCausalLM

    torch.manual_seed(options.seed)
    model: Any = LlamaForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32, local_files_only=True)
    lora = LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        target_modules=list(options.targets),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model: Any = get_peft_model(model, lora)
    model = peft_model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=options.lr, weight_decay=0.0)
    rng = random.Random(options.seed)
    per_epoch = math.ceil(len(examples) / options.batch_size)
    total = per_epoch * options.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4) * (1 - s / (total + 1)))
    losses: list[float] = []
    pad = tok.pad_token_id
    for _epoch in range(options.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for b in range(per_epoch):
            batch = [examples[i] for i in order[b * options.batch_size : (b + 1) * options.batch_size]]
            width = max(len(e.ids) for e in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, e in enumerate(batch):
                ids[i, : len(e.ids)] = torch.tensor(e.ids)
                labels[i, : len(e.labels)] = torch.tensor(e.labels)
                mask[i, : len(e.ids)] = 1
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress:
                progress(len(losses), total, losses[-1])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        for extra in tmp.iterdir():  # PEFT writes a README model card; the adapter is the two files
            if extra.name not in ("adapter_config.json", "adapter_model.safetensors"):
                extra.unlink() if extra.is_file() else shutil.rmtree(extra)
        # The base is named by its content id, not by where it sat on this machine.
        conf = json.loads((tmp / "adapter_config.json").read_text())
        (tmp / "adapter_config.json").write_bytes(canonical_adapter_config(conf, base_id))
        adapter_id = adapter_content_id(tmp)
        # Proof of Attribution: the index over the training records, for the verifiers (libs/loranet/attribution.py).
        index = index_of_chat_jsonl(Path(data), tok).to_bytes()
        (tmp / INDEX_FILE).write_bytes(index)
        draft: dict[str, Any] = {
            "name": name or out.name,
            "base_model": base_id,
            "license": "apache-2.0",
            "attribution_index": hashlib.sha256(index).hexdigest(),
            "contributors": [
                {"contributor_id": f"{name or out.name}-data-{i}", "address": a, "weight_bps": w}
                for i, (a, w) in enumerate(contributor_weights(examples))
            ],
            "training": {
                "data": Path(data).name,
                "examples": len(examples),
                "rank": options.rank,
                "alpha": options.alpha,
                "targets": list(options.targets),
                "epochs": options.epochs,
                "lr": options.lr,
                "batch_size": options.batch_size,
                "seed": options.seed,
                "first_loss": round(losses[0], 4),
                "last_loss": round(losses[-1], 4),
            },
        }
        if datanet is not None:  # exactly which contributions trained it, and the tokens each gave
            tokens: Counter[str] = Counter()
            for e in examples:
                tokens[e.contribution] += len(e.ids)
            draft["training"]["datanet"] = {
                **datanet,
                "contributions": [{"contribution_id": c, "tokens": n} for c, n in sorted(tokens.items()) if c],
            }
        (tmp / "manifest.draft.json").write_text(json.dumps(draft, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TrainReport(out, adapter_id, len(examples), len(losses), losses[0], losses[-1], losses)
