"""One parity check at real Qwen2.5-VL-3B widths (hidden 2048, vision 1280, vocab 151936), 2 layers per tower."""

import json

import numpy as np
import pytest
import torch
from qwen_cases import make_batch

from vrsjax.models import qwen2_5_vl

IMG, VID, VSTART, VEND = 151655, 151656, 151652, 151653


@pytest.mark.slow
def test_3b_widths_match_transformers(tmp_path):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=2,
            num_attention_heads=16,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            max_position_embeddings=128000,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        ),
        vision_config=dict(
            depth=2,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=2048,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
            window_size=112,
        ),
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(tmp_path)
    del cfg
    ref = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    grid = (2, 12, 16)  # a 4-frame video
    rows = [[151644, 100, 200] + [VSTART] + [VID] * 96 + [VEND] + [300, 151645]]
    batch = make_batch(rows, videos=[grid], second_per_grid_ts=[1.0])
    ids = batch["input_ids"]
    with torch.no_grad():
        kwargs = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
        kwargs["mm_token_type_ids"] = torch.from_numpy(np.where(ids == VID, 2, 0))
        want = ref(**kwargs).logits.numpy()
    del ref
    got = np.asarray(qwen2_5_vl.from_pretrained(tmp_path)(**batch))
    assert json.loads((tmp_path / "config.json").read_text())["text_config"]["vocab_size"] == 151936
    assert np.abs(got - want).max() <= 1e-4
