"""The gateway's pure logic: validation, model names, chat template, error shapes, response bodies."""

from __future__ import annotations

import json

import pytest

from loranet import protocol as p
from loranet.model.tokenizer import CHAT_TEMPLATE, apply_chat_template
from loranet.settings import SettingsError
from services.gateway import domain
from services.gateway.domain import ApiError
from services.gateway.settings import GatewaySettings

BASE = p.ModelManifest(
    model_id="aa" * 32,
    name="loranet-tiny-llama",
    architecture="LlamaForCausalLM",
    tokenizer_id="bb" * 32,
    registered_at=100.0,
    chat_template=CHAT_TEMPLATE,
)


def adapter(name: str, adapter_id: str, base: str = BASE.model_id) -> p.AdapterManifest:
    return p.AdapterManifest(
        adapter_id=adapter_id,
        name=name,
        base_model_id=base,
        owner_address="0x" + "1" * 40,
        contributors=[p.Contributor(contributor_id="c", address="0x" + "2" * 40, weight_bps=10_000)],
        rank=8,
        target_modules=["q_proj"],
        registered_at=200.0,
    )


CATALOGUE = domain.Catalogue.build(
    [BASE],
    [adapter("demo-0", "c0" * 32), adapter("demo-1", "c1" * 32), adapter("other-base", "c2" * 32, base="dd" * 32)],
)


def test_models_are_the_base_and_base_colon_adapter():
    assert CATALOGUE.names() == ["loranet-tiny-llama", "loranet-tiny-llama:demo-0", "loranet-tiny-llama:demo-1"]
    listing = CATALOGUE.listing()
    assert listing["object"] == "list"
    by_id = {m["id"]: m for m in listing["data"]}
    assert by_id["loranet-tiny-llama:demo-1"]["loranet"] == {"model_id": "aa" * 32, "adapter_id": "c1" * 32}
    assert by_id["loranet-tiny-llama:demo-1"]["parent"] == "loranet-tiny-llama"
    assert by_id["loranet-tiny-llama"]["loranet"]["adapter_id"] == ""
    entry = CATALOGUE.resolve("loranet-tiny-llama:demo-0")
    assert (entry.model_id, entry.adapter_id) == ("aa" * 32, "c0" * 32)


def test_unknown_model_is_404_in_openais_shape():
    with pytest.raises(ApiError) as err:
        CATALOGUE.resolve("gpt-4")
    assert err.value.status == 404
    body = err.value.body()["error"]
    assert (
        body["code"] == "model_not_found"
        and body["param"] == "model"
        and "loranet-tiny-llama:demo-0" in body["message"]
    )
    assert set(body) == {"message", "type", "param", "code"}


def test_completion_request_maps_to_a_job():
    spec = domain.completion_request(
        {
            "model": "loranet-tiny-llama:demo-1",
            "prompt": ["Hello"],
            "max_tokens": 7,
            "temperature": 0.5,
            "top_p": 0.9,
            "seed": 42,
            "stop": "\n",
        },
        CATALOGUE,
    )
    assert spec.prompt == "Hello" and spec.max_tokens == 7 and spec.entry.adapter_id == "c1" * 32
    assert spec.sampling == p.SamplingParams(temperature=0.5, top_p=0.9, seed=42, stop=["\n"])
    assert domain.completion_request({"model": "loranet-tiny-llama", "prompt": "x"}, CATALOGUE).max_tokens == 16


def test_chat_request_applies_loranets_chat_template():
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
    ]
    spec = domain.chat_request(
        {"model": "loranet-tiny-llama:demo-0", "messages": messages, "stream": True}, CATALOGUE, 99
    )
    assert spec.prompt == apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    )
    assert spec.stream and spec.max_tokens == 99
    assert spec.entry.tokenizer_id == "bb" * 32  # the job names the model's tokenizer


def test_chat_request_uses_the_models_own_template_and_refuses_a_model_without_one():
    chatml = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    other = p.ModelManifest(
        model_id="ee" * 32, name="chatml", architecture="LlamaForCausalLM", tokenizer_id="ff" * 32, chat_template=chatml
    )
    bare = p.ModelManifest(model_id="12" * 32, name="bare", architecture="LlamaForCausalLM", tokenizer_id="ff" * 32)
    catalogue = domain.Catalogue.build([other, bare], [])
    spec = domain.chat_request({"model": "chatml", "messages": [{"role": "user", "content": "Hi"}]}, catalogue)
    assert spec.prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    with pytest.raises(ApiError) as err:
        domain.chat_request({"model": "bare", "messages": [{"role": "user", "content": "Hi"}]}, catalogue)
    assert err.value.status == 400 and "no chat template" in err.value.body()["error"]["message"]


@pytest.mark.parametrize(
    "change,param",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"seed": -1}, "seed"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"n": 2}, "n"),
        ({"logprobs": 3}, "logprobs"),
        ({"stream": "yes"}, "stream"),
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": None}, "prompt"),
        ({"model": ""}, "model"),
    ],
)
def test_invalid_parameters_are_400_naming_the_field(change, param):
    body = {"model": "loranet-tiny-llama", "prompt": "x", **change}
    with pytest.raises(ApiError) as err:
        domain.completion_request(body, CATALOGUE)
    assert err.value.status == 400 and err.value.param == param, err.value.body()


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "tool", "content": "x"}],
        [{"role": "user", "content": 3}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
        "hi",
    ],
)
def test_invalid_chat_messages_are_400(messages):
    with pytest.raises(ApiError) as err:
        domain.chat_request({"model": "loranet-tiny-llama", "messages": messages}, CATALOGUE)
    assert err.value.status == 400 and err.value.param.startswith("messages")


def test_prompt_longer_than_a_job_allows_is_400():
    with pytest.raises(ApiError) as err:
        domain.completion_request({"model": "loranet-tiny-llama", "prompt": "x" * (p.MAX_PROMPT_CHARS + 1)}, CATALOGUE)
    assert err.value.param == "prompt"


def test_api_keys_and_client_identities():
    assert domain.bearer_key("Bearer sk-123456789") == "sk-123456789"
    assert domain.bearer_key("Basic abc") == "" and domain.bearer_key(None) == ""
    assert domain.client_seed("s", "alice") == domain.client_seed("s", "alice") != domain.client_seed("s", "bob")
    assert domain.client_seed("s", "alice") != domain.client_seed("t", "alice")
    settings = GatewaySettings.from_env({"LORANET_GATEWAY_KEYS": json.dumps({"sk-alice-123": "alice"})})
    assert settings.api_keys() == {"sk-alice-123": "alice"}
    with pytest.raises(SettingsError):
        GatewaySettings().api_keys()
    with pytest.raises(SettingsError):
        GatewaySettings(gateway_keys_file="/nonexistent/keys.json").api_keys()
    with pytest.raises(ValueError):
        domain.parse_keys({"short": "alice"}, "test")


def record(status: str = "settled", reason: str = "", finish: str = "eos") -> p.JobRecord:
    request = p.JobRequest(
        job_id="ef" * 16,
        client_key=b"k" * 32,
        client_address="0x" + "3" * 40,
        model_id="aa" * 32,
        adapter_id="",
        prompt="hi",
        max_tokens=4,
        max_fee=10,
        created_at=1.0,
        expires_at=2.0,
    )
    result = p.InferenceResult(
        job_id="ef" * 16,
        node_id="node-0",
        node_key=b"n" * 32,
        node_address="0x" + "4" * 40,
        node_seq=0,
        request=request,
        request_hash="ab" * 32,
        model_id="aa" * 32,
        adapter_id="",
        tokenizer_id="bb" * 32,
        prompt_tokens=[1, 2, 3],
        output_tokens=[4, 5],
        output_text="Hello there, loranet",
        finish_reason=finish,
        fingerprint=p.Fingerprint(),
        started_at=1.0,
        finished_at=2.0,
    )
    receipt = p.Receipt(
        job_id="ef" * 16,
        status="settled",
        fee=100,
        epoch=3,
        tx_hash="0x" + "ab" * 32,
        block=9,
        settled_at=3.0,
        payouts=[
            p.Payout(party="node", address="0x" + "4" * 40, amount=50),
            p.Payout(party="treasury", address="0x" + "5" * 40, amount=50),
        ],
    )
    return p.JobRecord(
        job_id="ef" * 16,
        status=status,
        reason=reason,
        request=request,
        node_id="node-0",
        result=result,
        receipt=receipt if status == "settled" else None,
        stages=["admitted", status],
    )


def test_response_bodies_carry_usage_and_the_loranet_extension():
    spec = domain.chat_request(
        {"model": "loranet-tiny-llama:demo-0", "messages": [{"role": "user", "content": "hi"}]}, CATALOGUE
    )
    body = domain.chat_body(spec, record(), 123)
    assert body["id"] == "chatcmpl-" + "ef" * 16 and body["model"] == "loranet-tiny-llama:demo-0"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello there, loranet"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    ext = body["loranet"]
    assert ext["job_id"] == "ef" * 16 and ext["receipt"]["status"] == "settled" and ext["receipt"]["fee"] == "100"
    assert sum(int(x["amount"]) for x in ext["receipt"]["payouts"]) == 100
    assert domain.completion_body(spec, record(finish="deadline"), 1)["choices"][0]["finish_reason"] == "length"


def test_streamed_chunks_rebuild_the_text_and_end_with_the_extension():
    spec = domain.completion_request(
        {"model": "loranet-tiny-llama", "prompt": "x", "stream": True, "stream_options": {"include_usage": True}},
        CATALOGUE,
    )
    chunks = domain.StreamWriter(spec, "ef" * 16, 1, chat=False, chunk_chars=4).final(record())
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "Hello there, loranet"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["loranet"]["status"] == "settled"
    assert chunks[-2]["loranet"]["verified"] is True and chunks[-1]["usage"]["total_tokens"] == 5
    chat = domain.StreamWriter(spec, "ef" * 16, 1, chat=True, chunk_chars=100).final(record())
    assert chat[0]["choices"][0]["delta"]["role"] == "assistant"
    assert domain.sse({"a": 1}) == b'data: {"a":1}\n\n' and domain.sse("[DONE]") == b"data: [DONE]\n\n"


def delta(text: str, seq: int, attempt: int = 0, done: bool = False, node: str = "node-0") -> p.TokenDelta:
    return p.TokenDelta(
        job_id="ef" * 16, node_id=node, attempt=attempt, seq=seq, text=text, tokens=seq + 1, done=done, at=1.0
    )


def content(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_provisional_tokens_stream_as_they_come_and_the_verdict_ends_them():
    spec = domain.chat_request(
        {"model": "loranet-tiny-llama", "messages": [{"role": "user", "content": "hi"}], "stream": True}, CATALOGUE
    )
    w = domain.StreamWriter(spec, "ef" * 16, 1, chat=True, chunk_chars=100)
    first = w.provisional(delta("Hello", 0))
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hello"}
    assert first[0]["loranet"] == {"provisional": True, "node_id": "node-0", "attempt": 0}
    rest = w.provisional(delta(" there, loranet", 1, done=True))
    end = w.final(record())
    assert content(first + rest + end) == "Hello there, loranet"  # nothing sent twice
    assert end[-1]["choices"][0]["finish_reason"] == "stop" and end[-1]["loranet"]["verified"] is True
    assert end[-1]["loranet"]["receipt"]["status"] == "settled"


def test_a_stop_sequence_is_never_shown_even_split_across_deltas():
    spec = domain.completion_request(
        {"model": "loranet-tiny-llama", "prompt": "x", "stream": True, "stop": ["END"]}, CATALOGUE
    )
    w = domain.StreamWriter(spec, "ef" * 16, 1, chat=False, chunk_chars=100)
    texts = [
        c["choices"][0]["text"]
        for d in [delta("abc E", 0), delta("N", 1), delta("D tail", 2)]
        for c in w.provisional(d)
    ]
    assert "".join(texts) == "abc " and all("E" not in t for t in texts)
    assert domain.provisional_visible("abc EN", ["END"], done=False) == "abc "
    assert domain.provisional_visible("abc EN", ["END"], done=True) == "abc EN"
    assert domain.provisional_visible("abc EX", ["END"], done=False) == "abc EX"


def test_a_rejected_result_is_withdrawn_in_the_stream_and_the_rerun_follows():
    spec = domain.chat_request(
        {"model": "loranet-tiny-llama", "messages": [{"role": "user", "content": "hi"}], "stream": True}, CATALOGUE
    )
    w = domain.StreamWriter(spec, "ef" * 16, 1, chat=True, chunk_chars=100)
    cheat = w.provisional(delta("Goodbye", 0, node="cheater"))
    gone = w.withdrawn(1, "fingerprint")
    assert gone[0]["loranet"]["event"] == "withdrawn" and "failed verification" in content(gone)
    assert w.provisional(delta(" late straggler", 1, attempt=0, node="cheater")) == []  # the old attempt is over
    rerun = w.provisional(delta("Hello there, loranet", 0, attempt=1, node="node-1", done=True))
    assert rerun[0]["loranet"]["attempt"] == 1
    end = w.final(record())
    assert content(cheat + gone + rerun + end).endswith("Hello there, loranet")
    assert content(end) == ""  # the verified text is what the re-run streamed


def test_verified_text_that_differs_from_the_streamed_text_follows_with_a_note():
    spec = domain.completion_request({"model": "loranet-tiny-llama", "prompt": "x", "stream": True}, CATALOGUE)
    w = domain.StreamWriter(spec, "ef" * 16, 1, chat=False, chunk_chars=100)
    w.provisional(delta("Hellx", 0))
    end = w.final(record())
    assert end[0]["loranet"] == {"event": "replaced"}
    assert "".join(c["choices"][0]["text"] for c in end if c["choices"]).endswith(
        domain.REPLACED + "Hello there, loranet"
    )


def test_streaming_flags_are_booleans():
    body = {"model": "loranet-tiny-llama", "prompt": "x", "stream": True, "verified_only": True}
    assert domain.completion_request(body, CATALOGUE).verified_only is True
    with pytest.raises(domain.ApiError, match="verified_only"):
        domain.completion_request({**body, "verified_only": "yes"}, CATALOGUE)
    with pytest.raises(domain.ApiError, match="confidential"):
        domain.completion_request({**body, "confidential": 1}, CATALOGUE)


def test_outcomes_that_did_not_settle_are_errors():
    assert domain.outcome_error(record()) is None
    broke = domain.outcome_error(record("rejected", "escrow 0 of 0x… does not cover max_fee 10: deposit more OPEN"))
    assert broke.status == 402 and broke.body()["error"]["loranet"]["status"] == "rejected"
    assert domain.outcome_error(record("rejected", "unknown adapter")).status == 400
    assert domain.outcome_error(record("refunded", "failed: fingerprint")).status == 502
