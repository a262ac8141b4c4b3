"""`loranet datanet` against the session's devnet: create, contribute (signed by the CLI's own key), show."""

from __future__ import annotations

import json

from loranet_ops import cli


def test_a_user_creates_contributes_to_and_reads_a_datanet(devnet, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LORANET_NATS_URL", raising=False)
    from services.settlement.devchain import DevChain

    config, state = devnet
    common = ["--state-dir", config.state_dir, "--key", str(tmp_path / "client.key")]
    data = tmp_path / "shanties.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "Sing"}, {"role": "assistant", "content": "Yo ho"}]})
        + "\n"
        + json.dumps({"text": "Heave ho, my hearties"})
        + "\n"
    )

    def run(*argv: str) -> dict:
        assert cli.main([*common, *argv, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    assert run("datanet", "create", "shanties", "--description", "songs")["version"] == 0
    v1 = run("datanet", "contribute", "shanties", str(data), "--license", "cc0-1.0")
    assert v1["version"] == 1 and v1["merkle_root"].startswith("0x")
    recorded = v1.pop("recorded")  # the version's root, on chain (write-once)
    chain = DevChain.open(state["rpc_url"])
    assert chain.datanet_root("shanties", 1) == bytes.fromhex(v1["merkle_root"][2:])
    assert chain.datanet_record_tx("shanties", 1).tx_hash == recorded["tx_hash"]
    (entry,) = v1["contributions"]
    assert entry["records"] == 2 and entry["license"] == "cc0-1.0" and len(entry["contributor_key"]) == 64
    assert run("datanet", "show", "shanties@1") == v1 == run("datanet", "show", "shanties")
    assert run("datanet", "show", "shanties@0")["contributions"] == []
    code = cli.main([*common, "datanet", "show", "shanties@9"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: not_found") and "\n" not in err


def test_an_adapter_trained_from_a_datanet_version_records_its_contributions(devnet, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LORANET_NATS_URL", raising=False)
    config, _ = devnet
    files = {}
    for who, n in (("ann", 6), ("ben", 3)):
        rows = [
            {
                "messages": [
                    {"role": "user", "content": f"{who} {i}?"},
                    {"role": "assistant", "content": f"{who} says {i}"},
                ]
            }
            for i in range(n)
        ]
        files[who] = tmp_path / f"{who}.jsonl"
        files[who].write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(who: str, *argv: str) -> dict:
        common = ["--state-dir", config.state_dir, "--key", str(tmp_path / f"{who}.key")]
        assert cli.main([*common, *argv, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    run("ann", "datanet", "create", "talk")
    run("ann", "datanet", "contribute", "talk", str(files["ann"]))
    v2 = run("ben", "datanet", "contribute", "talk", str(files["ben"]))
    out = tmp_path / "talk-adapter"
    run("ann", "adapter", "train", "--datanet", "talk@2", "--out", str(out), "--epochs", "1", "--rank", "2")
    draft = json.loads((out / "manifest.draft.json").read_text())
    trained = draft["training"]["datanet"]
    assert (trained["name"], trained["version"], trained["merkle_root"]) == ("talk", 2, v2["merkle_root"])
    ids = [c["contribution_id"] for c in v2["contributions"]]
    assert sorted(c["contribution_id"] for c in trained["contributions"]) == sorted(ids)
    tokens = {c["contribution_id"]: c["tokens"] for c in trained["contributions"]}
    weights = {c["address"]: c["weight_bps"] for c in draft["contributors"]}
    payout = {c["contribution_id"]: c["payout_address"].lower() for c in v2["contributions"]}
    assert sum(weights.values()) == 10_000
    total = sum(tokens.values())
    for cid, n in tokens.items():  # each contributor weighted by the tokens its contribution gave
        assert abs(weights[payout[cid]] - 10_000 * n / total) <= 1
    assert (out / "attribution.idx").is_file() and draft["attribution_index"]
    code = cli.main(
        ["--state-dir", config.state_dir, "adapter", "train", "--datanet", "talk", "--out", str(tmp_path / "x")]
    )
    assert code == 2 and "NAME@VERSION" in capsys.readouterr().err
