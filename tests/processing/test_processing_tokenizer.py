"""The tiny tokenizer and `QwenTokenizer` against transformers' Qwen2Tokenizer, chat rendering and response masks."""

import json
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrsjax.processing import QWEN2_5_VL_CHAT_TEMPLATE, QwenTokenizer, render_chat
from vrsjax.processing.tokenizer import QWEN2_5_ADDED_TOKENS
from vrsjax.testing import TINY_IDS, TINY_SPECIAL_IDS

TEXTS = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "Größe café naïve 東京 🙂 — ✓ \u0301e\u0065\u0301",  # NFC changes the combining accents
    "   leading, trailing   \n\n\n\t\t  \r\n x  ",
    '<tool_call>{"name": 1}</tool_call><|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>',
    "(3s)<|vision_start|><|image_pad|><|image_pad|><|vision_end|>, (15s)<|vision_start|><|video_pad|><|vision_end|>",
    "I'm sure WE'LL win, don't you? 1234567890 3.14159",
    "<|im_start|><|im_start|>  <|endoftext|>",
    "",
]


@pytest.fixture(scope="module")
def tokenizers(proc_dir):
    from transformers import AutoTokenizer

    return QwenTokenizer.from_pretrained(proc_dir), AutoTokenizer.from_pretrained(proc_dir)


def test_special_token_ids(tokenizers):
    ours, hf = tokenizers
    assert len(ours) == len(hf) == 320
    for token, _ in QWEN2_5_ADDED_TOKENS:
        assert ours.token_to_id(token) == hf.convert_tokens_to_ids(token)
    assert {k: ours.token_to_id(k) for k in TINY_SPECIAL_IDS} == TINY_SPECIAL_IDS
    assert ours.token_to_id("<|image_pad|>") == TINY_IDS["image_token_id"]
    assert ours.token_to_id("<|vision_end|>") == TINY_IDS["vision_end_token_id"]
    assert (ours.pad_token_id, ours.eos_token_id) == (hf.pad_token_id, hf.eos_token_id) == (304, 305)
    assert sorted(set(range(298, 320)) - set(TINY_SPECIAL_IDS.values())) == sorted(
        ours.token_to_id(t) for t, _ in QWEN2_5_ADDED_TOKENS if t not in TINY_SPECIAL_IDS
    )


@pytest.mark.parametrize("text", TEXTS)
def test_ids_and_decoding_match(tokenizers, text):
    ours, hf = tokenizers
    ids = ours.encode(text)
    assert ids == hf(text)["input_ids"]
    for skip in (False, True):
        assert ours.decode(ids, skip) == hf.decode(ids, skip_special_tokens=skip)


_pieces = st.one_of(
    st.text(max_size=12),
    st.sampled_from([t for t, _ in QWEN2_5_ADDED_TOKENS]),
    st.sampled_from([" ", "  ", "\n", "\n\n", "\t", " \n ", "'s", "'LL", "123", "東京", "🙂"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_pieces, max_size=8))
def test_random_text_matches(tokenizers, pieces):
    ours, hf = tokenizers
    text = "".join(pieces)
    assert ours.encode(text) == hf(text)["input_ids"]


def test_vocab_and_merges_fallback(proc_dir, tmp_path, tokenizers):
    for f in proc_dir.iterdir():
        if f.name != "tokenizer.json":
            shutil.copy(f, tmp_path / f.name)
    fallback = QwenTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert fallback.encode(text) == tokenizers[0].encode(text)


def test_missing_tokenizer_files_name_the_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        QwenTokenizer.from_pretrained(tmp_path)


def test_tokenizer_config_template_is_qwen2_5_vl(proc_dir):
    config = json.loads((proc_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == QWEN2_5_VL_CHAT_TEMPLATE
    assert config["tokenizer_class"] == "Qwen2Tokenizer" and config["eos_token"] == "<|im_end|>"


def test_render_chat_defaults():
    assert render_chat([{"role": "user", "content": "hi"}], add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with pytest.raises(TypeError, match="messages"):
        render_chat("hi")


def test_sft_response_mask(proc):
    import numpy as np

    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find the dog."}]},
        {"role": "assistant", "content": "<think>left</think>\n<answer>[1, 2]</answer>"},
    ]
    image = np.full((56, 56, 3), 100, np.uint8)
    out = proc.sft(messages, images=[image])
    ids, mask = out["input_ids"][0], out["response_mask"][0]
    assert out["pixel_values"].shape == (16, 1176) and out["image_grid_thw"].tolist() == [[1, 4, 4]]
    answer = proc.tokenizer.decode(ids[mask == 1])
    assert answer == "<think>left</think>\n<answer>[1, 2]</answer><|im_end|>\n"
    assert proc.tokenizer.decode(ids[mask == 0]).endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="end with the assistant"):
        proc.sft(messages[:1])
