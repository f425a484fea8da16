"""Qwen2.5-VL configuration: frozen dataclasses read from (and written back to) an HF `config.json`.

Accepts both the flat layout of the hub files (text fields at the top level, `rope_scaling`) and the nested
layout transformers v5 writes (`text_config`, `rope_parameters`). The values always come from the file: the
transformers class defaults differ from the released checkpoints (`tokens_per_second`, `rms_norm_eps`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

MODEL_TYPES = ("qwen2_5_vl",)
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLEMENTATIONS = ("reference", "xla", "cudnn", "splash", "auto")  # vrsjax.layers.attention


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    tokens_per_second: int = 2
    window_size: int = 112
    out_hidden_size: int = 2048
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    rope_theta: float = 10000.0
    hidden_act: str = "silu"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 151936
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: tuple[int, ...] = (16, 24, 24)
    max_position_embeddings: int = 128000
    hidden_act: str = "silu"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class Qwen2_5_VLConfig:
    """The whole model. `dtype` is the compute dtype, `param_dtype` the stored one; `attention` picks the backend:
    `reference` (einsum, float32 softmax), `xla` (`jax.nn.dot_product_attention`) or `cudnn` (GPU, bf16/fp16)."""

    text: TextConfig = TextConfig()
    vision: VisionConfig = VisionConfig()
    tie_word_embeddings: bool = True
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention: str = "reference"
    # The original config.json, kept so an export writes back every field we do not model.
    hf_config: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected one of {DTYPES}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention={self.attention!r}: expected one of {ATTENTION_IMPLEMENTATIONS}")
        t, v = self.text, self.vision
        if t.hidden_size % t.num_attention_heads or t.num_attention_heads % t.num_key_value_heads:
            raise ValueError(
                f"text: hidden_size {t.hidden_size}, heads {t.num_attention_heads}, kv heads "
                f"{t.num_key_value_heads} must divide evenly"
            )
        if 2 * sum(t.mrope_section) != t.head_dim:
            raise ValueError(f"text: mrope_section {t.mrope_section} must sum to head_dim/2 = {t.head_dim // 2}")
        if v.hidden_size % v.num_heads or v.head_dim % 4:
            raise ValueError(f"vision: hidden_size {v.hidden_size} / num_heads {v.num_heads} must be a multiple of 4")
        if v.out_hidden_size != t.hidden_size:
            raise ValueError(f"vision.out_hidden_size {v.out_hidden_size} != text.hidden_size {t.hidden_size}")

    def replace(self, **changes: Any) -> Qwen2_5_VLConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_dict(cls, d: dict, source: str = "config.json", **overrides: Any) -> Qwen2_5_VLConfig:
        model_type = d.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ValueError(
                f"{source}: model_type={model_type!r} is not a Qwen2.5-VL checkpoint (expected one of "
                f"{MODEL_TYPES}); point vrsjax at a Qwen2.5-VL directory"
            )
        text_d = {
            **{k: v for k, v in d.items() if k not in ("text_config", "vision_config")},
            **d.get("text_config", {}),
        }
        vision_d = d.get("vision_config") or {}
        if text_d.get("use_sliding_window"):
            raise ValueError(f"{source}: use_sliding_window=true is not supported (no released Qwen2.5-VL uses it)")
        return cls(
            text=_text_config(text_d, source),
            vision=_vision_config(vision_d, text_d, source),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", text_d.get("tie_word_embeddings", False))),
            image_token_id=d.get("image_token_id", 151655),
            video_token_id=d.get("video_token_id", 151656),
            vision_start_token_id=d.get("vision_start_token_id", 151652),
            vision_end_token_id=d.get("vision_end_token_id", 151653),
            hf_config=d,
            **overrides,
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> Qwen2_5_VLConfig:
        file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
        if not file.exists():
            raise FileNotFoundError(f"{file}: no config.json; is {path} a Hugging Face checkpoint directory?")
        try:
            d = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}: not valid JSON ({e}); the checkpoint directory is corrupt") from e
        return cls.from_hf_dict(d, source=str(file), **overrides)

    def to_hf_dict(self) -> dict:
        """The nested transformers-v5 layout; fields we do not model are copied from the original file."""
        t, v = self.text, self.vision
        base = {k: val for k, val in self.hf_config.items() if k not in _FLAT_TEXT_KEYS}
        text = {**base.get("text_config", {}), **dataclasses.asdict(t)}
        text.pop("rope_theta"), text.pop("mrope_section")
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": t.rope_theta,
            "mrope_section": list(t.mrope_section),
        }
        text["tie_word_embeddings"] = self.tie_word_embeddings
        text.setdefault("model_type", "qwen2_5_vl_text")
        vision = {**base.get("vision_config", {}), **dataclasses.asdict(v)}
        vision["fullatt_block_indexes"] = list(v.fullatt_block_indexes)
        vision.pop("rope_theta")
        vision.setdefault("model_type", "qwen2_5_vl_vision")
        vision.pop("rope_parameters", None)
        return {
            **base,
            "model_type": "qwen2_5_vl",
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "text_config": text,
            "vision_config": vision,
            "tie_word_embeddings": self.tie_word_embeddings,
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "dtype": self.param_dtype,
        }


_TEXT_FIELDS = {f.name for f in dataclasses.fields(TextConfig)}
_FLAT_TEXT_KEYS = _TEXT_FIELDS | {"rope_scaling", "rope_parameters", "torch_dtype", "dtype", "use_sliding_window"}


def _rope(d: dict) -> dict:
    return d.get("rope_parameters") or d.get("rope_scaling") or {}


def _text_config(d: dict, source: str) -> TextConfig:
    rope = _rope(d)
    kwargs = {k: d[k] for k in _TEXT_FIELDS - {"rope_theta", "mrope_section"} if k in d and d[k] is not None}
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads") if k not in kwargs]
    if missing:
        raise ValueError(f"{source}: text config lacks {missing}; the config.json is incomplete")
    kwargs.setdefault("num_key_value_heads", kwargs["num_attention_heads"])
    theta = rope.get("rope_theta", d.get("rope_theta", 1000000.0))
    section = tuple(rope.get("mrope_section", (16, 24, 24)))
    return TextConfig(**kwargs, rope_theta=float(theta), mrope_section=section)


def _vision_config(d: dict, text_d: dict, source: str) -> VisionConfig:
    names = {f.name for f in dataclasses.fields(VisionConfig)} - {"rope_theta"}
    kwargs = {k: d[k] for k in names if k in d and d[k] is not None}
    if "embed_dim" in d and "hidden_size" not in kwargs:  # Qwen2-VL-style name
        kwargs["hidden_size"] = d["embed_dim"]
    kwargs.setdefault("out_hidden_size", text_d.get("hidden_size"))
    if "fullatt_block_indexes" in kwargs:
        kwargs["fullatt_block_indexes"] = tuple(kwargs["fullatt_block_indexes"])
    theta = _rope(d).get("rope_theta", 10000.0)
    return VisionConfig(**kwargs, rope_theta=float(theta))
