"""`loranet datanet` against the session's devnet: create, contribute (signed by the CLI's own key), show."""

from __future__ import annotations

import json

from loranet_ops import cli


def test_a_user_creates_contributes_to_and_reads_a_datanet(devnet, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LORANET_NATS_URL", raising=False)
    config, _ = devnet
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
    (entry,) = v1["contributions"]
    assert entry["records"] == 2 and entry["license"] == "cc0-1.0" and len(entry["contributor_key"]) == 64
    assert run("datanet", "show", "shanties@1") == v1 == run("datanet", "show", "shanties")
    assert run("datanet", "show", "shanties@0")["contributions"] == []
    code = cli.main([*common, "datanet", "show", "shanties@9"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: not_found") and "\n" not in err
