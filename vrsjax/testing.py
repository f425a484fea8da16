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
# Where the 22 Qwen2.5 added tokens sit in the tiny vocabulary: the four vision ids above, <|endoftext|> and <|im_end|>
# at the text_config bos/eos ids (304, 305), the other 16 at 298-299 and 306-319; byte-level BPE fills 0-297.
TINY_BPE_SIZE = 298
TINY_SPECIAL_IDS = {"<|image_pad|>": 300, "<|video_pad|>": 301, "<|vision_start|>": 302, "<|vision_end|>": 303}
TINY_SPECIAL_IDS |= {"<|endoftext|>": 304, "<|im_end|>": 305}


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


def write_tiny_checkpoint(
    out_dir: str | Path, *, layout: str = "legacy", seed: int = 0, tokenizer: bool = True, **config_kwargs
) -> Path:
    """Write config.json + model.safetensors of a random tiny model (std 0.02, norms near 1) and return the dir.

    With `tokenizer=True` the dir also gets the tiny tokenizer and processor files (`write_tiny_tokenizer`), so
    `AutoProcessor.from_pretrained` and `vrsjax.processing.Processor.from_pretrained` load it offline.
    """
    from vrsjax.models.qwen2_5_vl import Qwen2_5_VLConfig, from_config

    hf = tiny_config_dict(**config_kwargs)
    model = from_config(Qwen2_5_VLConfig.from_hf_dict(hf), seed=seed)
    _jitter_norms(model, seed)
    out = model.save_pretrained(out_dir, layout=layout)
    if tokenizer:
        write_tiny_tokenizer(out)
    return out


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


def tiny_special_ids(bpe_size: int = TINY_BPE_SIZE) -> dict[str, int]:
    """Where the vision tokens, <|endoftext|> and <|im_end|> sit in a tiny vocabulary of bpe_size BPE entries."""
    return {tok: i + bpe_size - TINY_BPE_SIZE for tok, i in TINY_SPECIAL_IDS.items()}


def _tiny_corpus() -> list[str]:
    """Synthetic text the tiny BPE is trained on: prompt words, JSON answers, digits, unicode, whitespace runs."""
    words = (
        "the a an is are you given frames uniformly sampled from video each image preceded by its timestamp "
        "expression identify where target best represented locate that frame predicting bounding box boxes "
        "first output thinking process think answer tags result following format within please find with "
        "bboxs points compare difference between objects closely matched json keyframe bbox_2d point_2d system "
        "user assistant helpful person dog cat car red blue left right moving standing video interval percentage"
    ).split()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=12)) for _ in range(300)]
    lines += [
        '{{"keyframe_timestamp": {}, "bbox_2d_list": [[{},{},{},{}]]}}'.format(*rng.integers(0, 560, 5))
        for _ in range(100)
    ]
    lines += ["<think> reasoning </think>\n<answer>[1, 2]</answer>", "Größe café naïve 東京 🙂 — ✓", "\n\n  \t  x"] * 20
    return lines


def write_tiny_tokenizer(out_dir: str | Path, corpus: list[str] | None = None, bpe_size: int = TINY_BPE_SIZE) -> Path:
    """Write a byte-level BPE tokenizer (trained with `tokenizers` on synthetic text) with all 22 Qwen2.5 added
    tokens at `TINY_SPECIAL_IDS` + the rest of 298-319, and Qwen2.5-VL's tokenizer_config.json, chat template,
    preprocessor_config.json (images) and video_preprocessor_config.json; returns the dir.

    `corpus` / `bpe_size`: train on this text with this many BPE entries instead (the demo's tokenizer); the added
    tokens then follow at `tiny_special_ids(bpe_size)` (the same layout shifted by bpe_size - 298)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from vrsjax.processing.chat import QWEN2_5_VL_CHAT_TEMPLATE
    from vrsjax.processing.patchify import CLIP_MEAN, CLIP_STD
    from vrsjax.processing.tokenizer import QWEN2_5_ADDED_TOKENS, qwen2_pipeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe = qwen2_pipeline(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=bpe_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_tiny_corpus() if corpus is None else corpus, trainer)
    spec = json.loads(bpe.to_str())
    shift = bpe_size - TINY_BPE_SIZE
    free = iter([298 + shift, 299 + shift, *range(306 + shift, 320 + shift)])
    placed = tiny_special_ids(bpe_size)
    ids = {tok: placed.get(tok) or next(free) for tok, _ in QWEN2_5_ADDED_TOKENS}
    flags = dict(single_word=False, lstrip=False, rstrip=False, normalized=False)
    added = [{"id": ids[tok], "content": tok, **flags, "special": special} for tok, special in QWEN2_5_ADDED_TOKENS]
    spec["added_tokens"] = sorted(added, key=lambda t: t["id"])
    (out / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False, indent=2), encoding="utf-8")
    (out / "vocab.json").write_text(json.dumps(spec["model"]["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in spec["added_tokens"]},
        "additional_special_tokens": [tok for tok, special in QWEN2_5_ADDED_TOKENS[1:14] if special],
        "bos_token": None,
        "chat_template": QWEN2_5_VL_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": QWEN2_5_VL_CHAT_TEMPLATE}, indent=2))
    vision = {
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": list(CLIP_MEAN),
        "image_std": list(CLIP_STD),
        "processor_class": "Qwen2_5_VLProcessor",
    }
    image = {"min_pixels": 3136, "max_pixels": 12845056, **vision, "image_processor_type": "Qwen2VLImageProcessor"}
    video = {
        "min_pixels": 128 * 28 * 28,
        "max_pixels": 768 * 28 * 28,
        **vision,
        "video_processor_type": "Qwen2VLVideoProcessor",
    }
    (out / "preprocessor_config.json").write_text(json.dumps(image, indent=2))
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    return out
