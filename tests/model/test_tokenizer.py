from hypothesis import given
from hypothesis import strategies as st

from loranet.model import tokenizer as T


@given(st.text())
def test_round_trip(text):
    ids = T.encode(text)
    assert ids[0] == T.BOS_ID and all(0 <= i < 256 for i in ids[1:])
    assert T.decode(ids) == text
    assert T.decode(T.encode(text, add_bos=False) + [T.EOS_ID, T.PAD_ID]) == text


def test_invalid_utf8_is_replaced_not_raised():
    assert T.decode([0xFF, ord("a")]) == "\ufffda"


def test_out_of_vocab_id_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="outside the vocabulary"):
        T.decode([T.VOCAB_SIZE])


def test_chat_template_is_deterministic_and_documented_shape():
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    text = T.apply_chat_template(msgs)
    assert text == "<|system|>\nbe brief\n<|end|>\n<|user|>\nhi\n<|end|>\n<|assistant|>\n"
    assert T.apply_chat_template(msgs, add_generation_prompt=False).endswith("<|end|>\n")


def test_chat_template_rejects_unknown_role():
    import pytest

    with pytest.raises(ValueError, match="role 'robot'"):
        T.apply_chat_template([{"role": "robot", "content": "x"}])


def test_tokenizer_id_is_stable_sha256():
    assert len(T.TOKENIZER_ID) == 64 and T.TOKENIZER_ID == T._tokenizer_id()
    assert T.ByteTokenizer().tokenizer_id == T.TOKENIZER_ID
