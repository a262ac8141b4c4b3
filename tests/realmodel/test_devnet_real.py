"""The real model end to end: chat → scheduled → generated → verified → settled on the devnet's chain.

One devnet (every service its own process) serving SmolLM2-135M-Instruct with the trained demo adapters;
the CLI is run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from loranet.client import Client
from loranet.signing import Identity
from loranet_ops import devnet as dn

QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def real_devnet(real_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("real-devnet")
    cache = root / "cache"
    (cache / "models").mkdir(parents=True)
    os.symlink(real_model.path, cache / "models" / real_model.name)  # the session's conversion, not another
    config = dn.DevnetConfig.scratch(
        root,
        demo_adapters=4,
        cache_dir=str(cache),
        epoch_max_s=0.2,
        model=real_model.name,
    )
    state = dn.start_detached(config, timeout=400)
    yield config, state
    dn.stop(config.state_dir)


def cli(config: dn.DevnetConfig, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loranet_ops.cli", "--state-dir", config.state_dir, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_loranet_chat_answers_paris_verified_and_settled(real_devnet):
    config, _ = real_devnet
    run = cli(config, "chat", QUESTION, "--max-tokens", "24", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["status"] == "settled" and "Paris" in out["output"] and out["finish_reason"] == "stop", out
    assert out["verdict"]["accepted"] and out["verdict"]["audited"]
    assert sum(int(v) for v in out["payouts"].values()) == int(out["fee"])
    assert out["stages"] == ["admitted", "dispatched", "result", "verdict", "settled"]


def test_an_adapter_chat_is_hf_and_peft_greedy_output_settled(real_devnet, real_reference, real_model):
    config, _ = real_devnet
    run = cli(config, "chat", "--adapter", "pirate", QUESTION, "--max-tokens", "40", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["status"] == "settled" and out["verdict"]["accepted"], out
    tok = real_reference.tokenizer
    ref = real_reference.generate(
        tok.encode(tok.apply_chat_template([{"role": "user", "content": QUESTION}])), "pirate", 40
    )
    assert out["output"] == tok.decode(ref.output_ids)
    assert out["output"].startswith("Arr") and "Paris" in out["output"]
    contributors = [k for k in out["payouts"] if k.startswith("contributor:")]
    assert len(contributors) == 3  # the datanet's three contributors are paid
    run = cli(config, "chat", QUESTION, "--max-tokens", "3", "--json")  # cut short: OpenAI's "length"
    short = json.loads(run.stdout)
    assert short["status"] == "settled" and short["finish_reason"] == "length", short


async def test_a_job_naming_another_tokenizer_is_refused_at_admission(real_devnet, real_model):
    config, _ = real_devnet
    async with await Client.connect(config.url_for("client"), Identity.generate()) as client:
        await client.faucet(10**19, 10**18)
        model = await client.model(real_model.name)
        assert model.chat_template and model.vocab_size == 49_152
        job = client.build(model_id=model.model_id, adapter_id="", prompt="Hi", max_tokens=4, tokenizer_id="ab" * 32)
        await client.publish(job)
        out = await client.wait(job.job_id, 120)
        assert out.status == "rejected" and "tokenizer" in out.reason, out


def test_an_answer_that_reproduces_one_contributors_record_pays_that_contributor(real_devnet):
    """Proof of Attribution per answer: the pirate datanet's line for Japan came from one contributor; the
    answer reproduces it, so the verifier's signed attribution credits them and the data share goes to them."""
    from services.settlement.devchain import DevChain

    config, state = real_devnet
    line = next(
        json.loads(x)
        for x in open("datasets/pirate.jsonl", encoding="utf-8")
        if "capital of Japan" in json.loads(x)["messages"][0]["content"]
    )
    owner = line["contributor"].lower()
    chain = DevChain.open(state["rpc_url"])
    before = chain.earned(owner)
    run = cli(config, "chat", "--adapter", "pirate", "What is the capital of Japan?", "--max-tokens", "40", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["status"] == "settled" and "Tokyo" in out["output"], out
    att = out["verdict"]["attribution"]
    assert att and att["matched_tokens"] >= 16 and att["spans"], att
    shares = {c["address"].lower(): c["bps"] for c in att["contributors"]}
    assert max(shares, key=shares.get) == owner, shares
    paid = {k.split(":", 1)[1].lower(): int(v) for k, v in out["payouts"].items() if k.startswith("contributor:")}
    assert paid[owner] == max(paid.values()) and paid[owner] > 0, paid
    assert chain.earned(owner) - before == paid[owner]  # on chain, in this job's epoch
    # The contributor claims its balance (the settler sends the claim; contributors hold no gas money).
    claimed = json.loads(cli(config, "claim", owner, "--json").stdout)
    assert int(claimed["amount"]) >= paid[owner] and int(claimed["credit"]) >= paid[owner], claimed
    assert chain.claimable(owner) == 0
    # The pirate datanet as the devnet registered it: one signed contribution per contributor, root on chain.
    shown = json.loads(cli(config, "datanet", "show", "pirate", "--json").stdout)
    payees = [c["payout_address"].lower() for c in shown["contributions"]]
    assert owner in payees and len(set(payees)) == len(payees) >= 2, shown
    assert chain.datanet_root(shown["name"], shown["version"]) == bytes.fromhex(shown["merkle_root"][2:])
    # The base model alone draws on no datanet: no attribution, no contributors.
    run = cli(config, "chat", "What is the capital of Japan?", "--max-tokens", "24", "--json")
    base = json.loads(run.stdout)
    assert base["status"] == "settled" and base["verdict"]["attribution"] is None, base
    assert not [k for k in base["payouts"] if k.startswith("contributor:")]
