"""The gateway on the embedded devnet, driven by the official `openai` package.

A devnet (real nats-server and redis-server, every service as a process: 1 node,
1 verifier, 2 demo adapters), the gateway in-process on a free port, and
`openai.OpenAI(base_url=..., api_key=...)` as a user would hold it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the openai package drives these tests: pip install 'openai>=1.40'")

from loranet import protocol as p
from loranet.model.checkpoint import TINY_MODEL_NAME as DEFAULT_MODEL_NAME
from loranet_ops.servers import free_port
from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import GatewayThread

ALICE = "sk-test-alice-0123456789"
CAROL = "sk-test-carol-0123456789"  # served by a gateway without the devnet faucet: no escrow
ADAPTER = f"{DEFAULT_MODEL_NAME}:demo-1"


@pytest.fixture(scope="module")
def gateway_devnet(devnet):
    """The session's shared devnet (tests/conftest.py): 1 node, 1 verifier, 2 adapters."""
    return devnet[0]


@pytest.fixture(scope="module")
def gateways(gateway_devnet):
    common = dict(
        nats_url=gateway_devnet.url_for("gateway"),
        gateway_client_nats_url=gateway_devnet.nats_url,
        gateway_host="127.0.0.1",
        gateway_port=0,
        log_level="WARNING",
        job_timeout_s=120,
    )
    funded = GatewayThread(GatewaySettings(gateway_keys={ALICE: "alice"}, **common)).start()
    unfunded = GatewayThread(GatewaySettings(gateway_keys={CAROL: "carol"}, gateway_faucet=False, **common)).start()
    yield funded, unfunded
    funded.close()
    unfunded.close()


def test_models_list_the_base_and_each_adapter(gateways):
    ids = [m.id for m in gateways[0].client(ALICE).models.list()]
    # The session's devnet may hold adapters other tests registered too.
    assert ids[0] == DEFAULT_MODEL_NAME
    assert {f"{DEFAULT_MODEL_NAME}:demo-0", f"{DEFAULT_MODEL_NAME}:demo-1"} <= set(ids)
    assert all(i.startswith(f"{DEFAULT_MODEL_NAME}:") for i in ids[1:])
    model = gateways[0].client(ALICE).models.retrieve(ADAPTER)
    assert model.id == ADAPTER and len(model.model_extra["loranet"]["adapter_id"]) == 64


def test_chat_completion_on_an_adapter_is_verified_and_settled(gateways):
    chat = (
        gateways[0]
        .client(ALICE)
        .chat.completions.create(
            model=ADAPTER,
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hello to loranet"},
            ],
            max_tokens=12,
            temperature=0.7,
            top_p=0.95,
            seed=7,
            stop=["\n\n"],
        )
    )
    text = chat.choices[0].message.content
    assert isinstance(text, str) and text
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert chat.model == ADAPTER and chat.usage.completion_tokens >= 1 and chat.usage.prompt_tokens > 1
    ext = chat.model_extra["loranet"]
    assert chat.id == f"chatcmpl-{ext['job_id']}"
    assert ext["status"] == "settled" and ext["verdict"]["accepted"] and ext["verdict"]["audited"]
    receipt = ext["receipt"]
    assert receipt["status"] == "settled" and receipt["tx_hash"].startswith("0x")
    assert int(receipt["fee"]) > 0 and sum(int(x["amount"]) for x in receipt["payouts"]) == int(receipt["fee"])
    assert {x["party"] for x in receipt["payouts"]} >= {"node", "developer", "contributor", "verifier", "treasury"}
    assert ext["stages"] == ["admitted", "dispatched", "result", "verdict", "settled"]


def test_streamed_completion_arrives_as_server_sent_events(gateways):
    stream = (
        gateways[0]
        .client(ALICE)
        .completions.create(
            model=DEFAULT_MODEL_NAME,
            prompt="Once upon a time",
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].model_extra["loranet"]["receipt"]["status"] == "settled"
    assert chunks[-1].usage.completion_tokens >= 1
    assert len({c.id for c in chunks}) == 1


def timed_chunks(stream) -> list[tuple[float, object]]:
    return [(time.monotonic(), chunk) for chunk in stream]


def test_tokens_stream_as_the_node_generates_them_then_the_verdict(gateways):
    client = gateways[0].client(ALICE)
    messages = [{"role": "user", "content": "Tell me a story"}]
    chunks = timed_chunks(
        client.chat.completions.create(model=ADAPTER, messages=messages, max_tokens=24, seed=3, stream=True)
    )
    marks = [(t, c.model_extra.get("loranet") or {}) for t, c in chunks]
    provisional = [t for t, m in marks if m.get("provisional")]
    (end,) = [t for t, m in marks if m.get("verified")]
    assert len(provisional) >= 2, "tokens arrive in several provisional chunks"
    assert provisional[0] < end and all(t <= end for t in provisional)
    last = chunks[-1][1].model_extra["loranet"]
    assert last["receipt"]["status"] == "settled" and last["verdict"]["accepted"]
    text = "".join(c.choices[0].delta.content or "" for _, c in chunks if c.choices)
    # The verified answer is exactly the text streamed: no note, nothing repeated.
    record_text = client.chat.completions.create(
        model=ADAPTER, messages=messages, max_tokens=24, seed=3, extra_body={"verified_only": True}
    )
    assert text == record_text.choices[0].message.content and "[loranet:" not in text


def test_verified_only_and_confidential_streams_send_no_provisional_text(gateways):
    client = gateways[0].client(ALICE)
    for extra in ({"verified_only": True}, {"confidential": True}):
        chunks = list(
            client.completions.create(
                model=DEFAULT_MODEL_NAME, prompt="Once upon a time", max_tokens=8, stream=True, extra_body=extra
            )
        )
        assert not any((c.model_extra.get("loranet") or {}).get("provisional") for c in chunks), extra
        assert "".join(c.choices[0].text for c in chunks if c.choices), extra
        assert chunks[-1].model_extra["loranet"]["receipt"]["status"] == "settled", extra


def test_errors_arrive_as_openai_exceptions(gateways):
    alice = gateways[0].client(ALICE)
    with pytest.raises(openai.NotFoundError) as err:
        alice.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        alice.completions.create(model=ADAPTER, prompt="hi", max_tokens=0)
    assert err.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        alice.chat.completions.create(model=ADAPTER, messages=[{"role": "user", "content": "hi"}], temperature=3)
    assert err.value.param == "temperature"
    with pytest.raises(openai.BadRequestError):
        alice.chat.completions.create(model=ADAPTER, messages=[])
    with pytest.raises(openai.AuthenticationError) as err:
        gateways[0].client("sk-not-a-key-at-all").models.list()
    assert err.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        gateways[0].client(CAROL).completions.create(model=ADAPTER, prompt="hi", max_tokens=2)  # another gateway's key
    with pytest.raises(openai.APIStatusError) as err:
        gateways[1].client(CAROL).completions.create(model=ADAPTER, prompt="hi", max_tokens=2)
    assert err.value.status_code == 402 and err.value.code == "insufficient_quota"


def test_python_m_services_gateway_serves_and_drains_on_sigterm(gateway_devnet, tmp_path):
    """The gateway as compose runs it: `python -m services.gateway`, settings from the environment."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({ALICE: "alice"}))
    port = free_port()
    env = dict(
        os.environ,
        LORANET_NATS_URL=gateway_devnet.url_for("gateway"),
        LORANET_GATEWAY_CLIENT_NATS_URL=gateway_devnet.nats_url,
        LORANET_GATEWAY_PORT=str(port),
        LORANET_GATEWAY_HOST="127.0.0.1",
        LORANET_GATEWAY_KEYS_FILE=str(keys),
        PYTHONUNBUFFERED="1",
    )
    root = Path(__file__).resolve().parents[2]
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.gateway"], env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while '"event":"service.started"' not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert json.loads(r.read()) == {"status": "ok"}
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=ALICE, max_retries=0)
        assert ADAPTER in [m.id for m in client.models.list()]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    assert '"event":"service.stopped"' in log.read_text()


def test_rate_limit_and_oversized_bodies(gateway_devnet):
    gateway = GatewayThread(
        GatewaySettings(
            nats_url=gateway_devnet.url_for("gateway"),
            gateway_client_nats_url=gateway_devnet.nats_url,
            gateway_host="127.0.0.1",
            gateway_port=0,
            log_level="WARNING",
            gateway_keys={ALICE: "alice"},
            rate_limit_per_s=0.01,
            rate_limit_burst=3,
        )
    ).start()
    try:
        client = gateway.client(ALICE)
        for _ in range(2):  # the burst: refused for their parameters, not their rate
            with pytest.raises(openai.BadRequestError):
                client.completions.create(model=ADAPTER, prompt="x", max_tokens=-5)
        huge = "x" * (10 * p.MAX_PROMPT_CHARS)  # over the body limit: refused before it is read whole
        with pytest.raises(openai.APIStatusError) as err:
            client.completions.create(model=ADAPTER, prompt=huge, max_tokens=4)
        assert err.value.status_code == 413
        with pytest.raises(openai.RateLimitError) as err:
            client.completions.create(model=ADAPTER, prompt="x", max_tokens=4)
        assert err.value.body["code"] == "rate_limit_exceeded"
    finally:
        gateway.close()
