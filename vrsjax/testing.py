"""Tiny but complete Qwen2.5-VL checkpoints in the Hugging Face on-disk format, for tests, notebooks and the demo.

No torch and no downloads: weights are drawn with numpy and written by vrsjax's own exporter, in either key
layout; transformers loads them like any hub checkpoint (the test suite checks that).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

# Token ids of the tiny vocabulary (320 entries); the real Qwen2.5 ids are 151643.. (REFERENCE.md §2).
TINY_IDS = {"image_token_id": 300, "video_token_id": 301, "vision_start_token_id": 302, "vision_end_token_id": 303}


def tiny_config_dict(
    *,
    tie_word_embeddings: bool = True,
    text_layers: int = 2,
    vision_depth: int = 2,
    hidden_size: int = 64,
    vocab_size: int = 320,
    vision_hidden: int = 32,
    **ids,
) -> dict:
    """An HF config.json dict (transformers-v5 nested layout) of a tiny Qwen2.5-VL."""
    half = hidden_size // 4 // 2  # 4 heads; M-RoPE splits head_dim/2 frequencies as 1:1.5:1.5 like [16, 24, 24]
    hw = (half - half // 4) // 2
    section = [half - 2 * hw, hw, hw]
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "dtype": "float32",
        "tie_word_embeddings": tie_word_embeddings,
        **{**TINY_IDS, **ids},
        "text_config": {
            "model_type": "qwen2_5_vl_text",
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": text_layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 4096,
            "hidden_act": "silu",
            "use_sliding_window": False,
            "tie_word_embeddings": tie_word_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": section},
            "bos_token_id": 304,
            "eos_token_id": 305,
        },
        "vision_config": {
            "model_type": "qwen2_5_vl_vision",
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": 2 * vision_hidden,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "window_size": 112,
            "out_hidden_size": hidden_size,
            "fullatt_block_indexes": [vision_depth - 1],
            "hidden_act": "silu",
        },
    }


def write_tiny_checkpoint(out_dir: str | Path, *, layout: str = "legacy", seed: int = 0, **config_kwargs) -> Path:
    """Write config.json + model.safetensors of a random tiny model (std 0.02, norms near 1) and return the dir."""
    from vrsjax.models.qwen2_5_vl import Qwen2_5_VLConfig, from_config

    hf = tiny_config_dict(**config_kwargs)
    model = from_config(Qwen2_5_VLConfig.from_hf_dict(hf), seed=seed)
    _jitter_norms(model, seed)
    return model.save_pretrained(out_dir, layout=layout)


def _jitter_norms(model, seed: int) -> None:
    """Norm weights of exactly 1 would hide a missing or swapped norm in parity tests."""
    from flax import nnx

    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if "norm" in str(path[-2]) or path[-2] == "ln_q":  # RMSNorm weights
            var.set_value(var.get_value() + rng.normal(0, 0.1, var.shape).astype(np.float32))


def relayout(src_dir: str | Path, dst_dir: str | Path, layout: str) -> Path:
    """Copy an HF checkpoint, renaming its keys to the `v5` (model.language_model.*) or `legacy` layout."""
    from vrsjax.models.qwen2_5_vl.params import hf_to_path, path_to_hf

    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    tensors = {}
    with safe_open(str(src_dir / "model.safetensors"), framework="numpy") as f:
        for key in f.keys():
            mapped = hf_to_path(key)
            tensors[path_to_hf(mapped[0], layout)[0] if mapped else key] = f.get_tensor(key)
    save_file(tensors, str(dst_dir / "model.safetensors"), metadata={"format": "pt"})
    (dst_dir / "config.json").write_text(json.dumps(json.loads((src_dir / "config.json").read_text()), indent=2))
    return dst_dir
