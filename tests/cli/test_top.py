"""`loranet top` against the session's devnet: one reading has the jobs, nodes, queues, verdicts and epochs."""

from __future__ import annotations

import json
import time

from loranet_ops import cli


def test_top_reads_the_running_devnet(devnet, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LORANET_NATS_URL", raising=False)
    config, _ = devnet
    common = ["--state-dir", config.state_dir, "--key", str(tmp_path / "client.key")]
    assert cli.main([*common, "submit", "--prompt", "top", "--max-tokens", "4", "--wait", "--json"]) == 0
    capsys.readouterr()
    for _ in range(20):  # verifiers publish their per-node statistics every few seconds
        assert cli.main([*common, "top", "--once", "--json", "--interval", "0.2"]) == 0
        reading = json.loads(capsys.readouterr().out)
        if "node-0" in reading["verifiers"]:
            break
        time.sleep(1)
    assert reading["problems"] == []
    assert reading["jobs_submitted"] >= 1 and reading["receipts"] >= 1
    assert [n["node_id"] for n in reading["nodes"]] == ["node-0"]
    assert {"JOBS/scheduler", "RESULTS/verifier", "VERDICTS/settlement"} <= set(reading["queues"])
    assert any(q.startswith("WORK/") for q in reading["queues"])
    assert reading["verifiers"]["node-0"]["accepted"] >= 1 and reading["verifier_rejections"] >= 0
    assert reading["epochs"] and reading["epochs"][0]["tx_hash"].startswith("0x")
    assert cli.main([*common, "top", "--once"]) == 0
    screen = capsys.readouterr().out
    assert "loranet top" in screen and "node-0" in screen and "tokens/s" in screen
