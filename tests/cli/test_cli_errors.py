"""Every `loranet` subcommand answers hostile arguments with one line and a non-zero exit, never a traceback.

No devnet runs here (NATS is pointed at a closed port), so each command either refuses its arguments before
connecting (`error: <field>: <rule>`, exit 2) or says the network is unreachable and how to start a devnet
(exit 1). Empty prompts and chat messages are refused before anything is reserved or billed.
"""

from __future__ import annotations

import json

import pytest

from loranet_ops import cli

CLOSED = "nats://127.0.0.1:1"
J = "0" * 32

# (arguments after the global options, expected exit code, a phrase the one line must contain)
CASES: list[tuple[list[str], int, str]] = [
    ([], 2, "command"),
    (["frobnicate"], 2, "invalid choice"),
    (["job", "deadbeef"], 2, "job_id"),
    (["job"], 2, "job_id"),
    (["job", J], 1, "devnet up"),
    (["balance", "0x123"], 2, "address"),
    (["balance", "not an address at all"], 2, "address"),
    (["stake", "0xZZ"], 2, "address"),
    (["submit", "--prompt", ""], 2, "prompt: must not be empty"),
    (["submit", "--prompt", "   "], 2, "prompt: must not be empty"),
    (["submit", "--prompt", "hi", "--max-tokens", "100000"], 2, "max_tokens"),
    (["submit", "--prompt", "hi", "--max-tokens", "0"], 2, "max_tokens"),
    (["submit", "--prompt", "hi", "--max-tokens", "x"], 2, "--max-tokens"),
    (["submit", "--prompt", "hi", "--temperature", "-1"], 2, "temperature"),
    (["submit", "--prompt", "hi", "--top-p", "7"], 2, "top_p"),
    (["submit", "--prompt", "hi", "--stop", ""], 2, "stop"),
    (["submit", "--prompt", "hi", "--max-fee", "0"], 2, "max_fee"),
    (["submit", "--prompt", "hi"], 1, "devnet up"),
    (["chat", ""], 2, "message: must not be empty"),
    (["chat", "hello", "--max-tokens", "-5"], 2, "max_tokens"),
    (["chat", "hello"], 1, "devnet up"),
    (["adapters", "--json"], 1, "devnet up"),
    (["models", "--json"], 1, "devnet up"),
    (["nodes"], 1, "devnet up"),
    (["adapter"], 2, "adapter_command"),
    (["adapter", "register", "/nonexistent/adapter"], 2, "--manifest"),
    (["adapter", "register", "/nonexistent/adapter", "--manifest", "/nonexistent.json"], 2, "manifest"),
    (["adapter", "train", "--data", "/nonexistent.jsonl", "--out", "{tmp}/out"], 2, "no such dataset"),
    (["adapter", "train", "--data", "{tmp}/bad.jsonl", "--out", "{tmp}/out", "--rank", "0"], 2, "rank"),
    (["model", "register", "/nonexistent/model", "--offline"], 2, ""),
    (["devnet", "bogus"], 2, "invalid choice"),
    (["datanet"], 2, "datanet_command"),
    (["datanet", "create", "Bad Name!"], 2, "name"),
    (["datanet", "show", "pirate@x"], 2, "whole number"),
    (["datanet", "show", "pirate@1"], 1, "devnet up"),
    (["datanet", "contribute", "pirate", "/nonexistent.jsonl"], 2, "no such file"),
    (["datanet", "contribute", "pirate@2", "{tmp}/bad.jsonl"], 2, "NAME@VERSION"),
    (["datanet", "contribute", "pirate", "{tmp}/bad.jsonl", "--payout", "0x12"], 2, "address"),
    (["top", "--interval", "0"], 2, "interval"),
    (["top", "--interval", "soon"], 2, "interval"),
    (["top", "--json"], 2, "--json"),
    (["top", "--once"], 1, "devnet up"),
    (["devnet", "status", "--json"], 1, ""),
]


@pytest.mark.parametrize("argv,code,phrase", CASES, ids=[" ".join(c[0]) or "(none)" for c in CASES])
def test_hostile_arguments_get_one_line(argv, code, phrase, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LORANET_NATS_URL", raising=False)
    (tmp_path / "bad.jsonl").write_text('{"messages": [}\n')
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    full = ["--nats", CLOSED, "--state-dir", str(tmp_path / "state"), "--key", str(tmp_path / "client.key"), *argv]
    try:
        got = cli.main(full)
    except SystemExit as exc:
        got = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in out + err
    if argv[:2] == ["devnet", "status"]:  # prints the (stopped) state as JSON, exit 1: nothing runs
        assert got == code and json.loads(out)["running"] is False
        return
    assert got == code, (got, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert phrase in lines[0], lines[0]


def test_the_gateway_refuses_bad_keys_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LORANET_GATEWAY_KEYS", json.dumps({"short": "alice"}))
    code = cli.main(["--nats", CLOSED, "--state-dir", str(tmp_path), "gateway"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip() == "error: LORANET_GATEWAY_KEYS: API keys are strings of 8 characters or more"
