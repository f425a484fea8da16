"""Converters: HF -> vrsjax (orbax) -> HF, sharded safetensors, dtype casts, and PEFT LoRA adapters merged."""

import json

import numpy as np
import pytest
import torch
from qwen_cases import IMG, hf_logits, hf_model, make_batch, text, vision_block

from vrsjax.cli import main
from vrsjax.models import qwen2_5_vl


def batch():
    return make_batch([text(3, 0) + vision_block(IMG, (1, 6, 10)) + text(4, 1), text(5, 2)], images=[(1, 6, 10)])


def max_diff(a, b, mask):
    return np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))[mask.astype(bool)].max()


def test_cli_round_trip_with_shards(tiny_dirs, tmp_path):
    src = tiny_dirs["untied"]
    assert main(["convert", "hf-to-vrsjax", str(src), str(tmp_path / "vj")]) == 0
    assert (tmp_path / "vj" / "params").is_dir()
    assert (
        main(
            [
                "convert",
                "vrsjax-to-hf",
                str(tmp_path / "vj"),
                str(tmp_path / "hf"),
                "--layout",
                "legacy",
                "--max-shard-gb",
                str(50_000 / 2**30),
            ]
        )
        == 0
    )
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and "visual.patch_embed.proj.weight" in index["weight_map"]
    b = batch()
    want = hf_logits(hf_model(src), b)
    assert max_diff(hf_logits(hf_model(tmp_path / "hf"), b), want, b["attention_mask"]) <= 1e-5
    assert max_diff(qwen2_5_vl.from_pretrained(tmp_path / "vj")(**b), want, b["attention_mask"]) <= 1e-4
    # a sharded HF checkpoint loads directly too
    assert max_diff(qwen2_5_vl.from_pretrained(tmp_path / "hf")(**b), want, b["attention_mask"]) <= 1e-4


def test_bfloat16_conversion(tiny_dirs, tmp_path):
    assert main(["convert", "hf-to-vrsjax", str(tiny_dirs["legacy"]), str(tmp_path / "vj"), "--dtype", "bfloat16"]) == 0
    model = qwen2_5_vl.from_pretrained(tmp_path / "vj", dtype="bfloat16")
    assert model.model.visual.blocks[0].attn.qkv.weight.get_value().dtype == np.dtype("bfloat16")
    main(["convert", "vrsjax-to-hf", str(tmp_path / "vj"), str(tmp_path / "hf"), "--dtype", "bfloat16"])
    ref = hf_model(tmp_path / "hf")
    assert ref.model.visual.blocks[0].attn.qkv.weight.dtype == torch.bfloat16


def test_existing_output_is_refused(tiny_dirs, tmp_path):
    main(["convert", "hf-to-vrsjax", str(tiny_dirs["legacy"]), str(tmp_path / "vj")])
    with pytest.raises(SystemExit, match="vrsjax convert: .*params exists; choose an empty output directory"):
        main(["convert", "hf-to-vrsjax", str(tiny_dirs["legacy"]), str(tmp_path / "vj")])


@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_adapter_merged_like_peft(tiny_dirs, tmp_path, use_rslora):
    from peft import LoraConfig, get_peft_model

    base = hf_model(tiny_dirs["legacy"])
    cfg = LoraConfig(
        r=4,
        lora_alpha=8,
        use_rslora=use_rslora,
        init_lora_weights=False,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
            "qkv",
            "attn.proj",
        ],
    )
    torch.manual_seed(0)
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload().eval()
    b = batch()
    want = hf_logits(merged, b)
    main(
        [
            "convert",
            "hf-to-vrsjax",
            str(tiny_dirs["legacy"]),
            str(tmp_path / "vj"),
            "--adapter",
            str(tmp_path / "adapter"),
        ]
    )
    assert max_diff(qwen2_5_vl.from_pretrained(tmp_path / "vj")(**b), want, b["attention_mask"]) <= 1e-4
    direct = qwen2_5_vl.from_pretrained(tiny_dirs["legacy"], adapter_dir=tmp_path / "adapter")
    assert max_diff(direct(**b), want, b["attention_mask"]) <= 1e-4
    base_only = np.asarray(qwen2_5_vl.from_pretrained(tiny_dirs["legacy"])(**b))
    assert max_diff(base_only, want, b["attention_mask"]) > 1e-3  # the adapter really changed something


def test_adapter_for_another_model_is_rejected(tiny_dirs, tmp_path):
    from safetensors.numpy import save_file

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 4}))
    save_file(
        {
            "base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight": np.zeros((2, 64), np.float32),
            "base_model.model.model.layers.9.self_attn.q_proj.lora_B.weight": np.zeros((64, 2), np.float32),
        },
        str(tmp_path / "adapter" / "adapter_model.safetensors"),
    )
    with pytest.raises(ValueError, match="have no base weight"):
        qwen2_5_vl.from_pretrained(tiny_dirs["legacy"], adapter_dir=tmp_path / "adapter")
