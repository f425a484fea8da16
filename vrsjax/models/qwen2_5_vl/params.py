"""HF <-> vrsjax parameter conversion for Qwen2.5-VL: a regex name table, streaming load, export, LoRA merge.

Both HF key layouts load: the older `model.*` / `visual.*` and the transformers >= 4.52 `model.language_model.*`
/ `model.visual.*`. Tensors stream one at a time from (sharded) safetensors, are transformed, checked against the
model's shapes, cast and placed on the mesh; every missing, unexpected or mis-shaped key is collected and reported
together. A PEFT LoRA adapter directory (LLaMA-Factory's SFT output) is merged into the base weights on the fly.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file


class T(enum.Enum):
    NONE = "none"
    LINEAR = "linear"  # HF [out, in] <-> kernel [in, out]
    PATCH = "patch"  # Conv3d [D, C, tp, p, p] <-> kernel [C*tp*p*p, D]


_V = r"(?:model\.)?visual\."
_L = r"model\.(?:language_model\.)?"
_RULES = [
    (_V + r"patch_embed\.proj\.weight", "model.visual.patch_embed.kernel", T.PATCH),
    (
        _V + r"(blocks\.\d+\.(?:attn\.(?:qkv|proj)|mlp\.(?:gate|up|down)_proj))\.weight",
        r"model.visual.\1.kernel",
        T.LINEAR,
    ),
    (_V + r"(blocks\.\d+\.(?:attn\.(?:qkv|proj)|mlp\.(?:gate|up|down)_proj))\.bias", r"model.visual.\1.bias", T.NONE),
    (_V + r"(blocks\.\d+\.norm[12])\.weight", r"model.visual.\1.weight", T.NONE),
    (_V + r"merger\.ln_q\.weight", "model.visual.merger.ln_q.weight", T.NONE),
    (_V + r"merger\.mlp\.([02])\.weight", r"model.visual.merger.mlp.\1.kernel", T.LINEAR),
    (_V + r"merger\.mlp\.([02])\.bias", r"model.visual.merger.mlp.\1.bias", T.NONE),
    (_L + r"embed_tokens\.weight", "model.language_model.embed_tokens.embedding", T.NONE),
    (
        _L + r"(layers\.\d+\.(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj))\.weight",
        r"model.language_model.\1.kernel",
        T.LINEAR,
    ),
    (_L + r"(layers\.\d+\.self_attn\.[qkv]_proj)\.bias", r"model.language_model.\1.bias", T.NONE),
    (_L + r"(layers\.\d+\.(?:input|post_attention)_layernorm)\.weight", r"model.language_model.\1.weight", T.NONE),
    (_L + r"norm\.weight", "model.language_model.norm.weight", T.NONE),
    (r"lm_head\.weight", "lm_head.kernel", T.LINEAR),
]
_COMPILED = [(re.compile(p + r"$"), target, t) for p, target, t in _RULES]


def hf_to_path(key: str) -> tuple[str, T] | None:
    """HF tensor name -> (dotted vrsjax parameter path, transform), or None if the name is not a model weight."""
    for pattern, target, transform in _COMPILED:
        if pattern.match(key):
            return pattern.sub(target, key), transform
    return None


def path_to_hf(path: str, layout: str = "v5") -> tuple[str, T]:
    """Dotted vrsjax path -> (HF name in `layout` 'v5' or 'legacy', transform)."""
    key, transform = path, T.NONE
    if path.endswith(".kernel"):
        key, transform = path[: -len(".kernel")] + ".weight", T.LINEAR
    elif path.endswith(".embedding"):
        key = path[: -len(".embedding")] + ".weight"
    if path == "model.visual.patch_embed.kernel":
        key, transform = "model.visual.patch_embed.proj.weight", T.PATCH
    if layout == "legacy":
        key = key.replace("model.visual.", "visual.", 1).replace("model.language_model.", "model.", 1)
    elif layout != "v5":
        raise ValueError(f"layout={layout!r}: expected 'v5' (model.language_model.*) or 'legacy' (model.*, visual.*)")
    return key, transform


def to_vrsjax(x: np.ndarray, transform: T) -> np.ndarray:
    if transform is T.LINEAR:
        return x.T
    if transform is T.PATCH:
        return x.reshape(x.shape[0], -1).T
    return x


def to_hf(x: np.ndarray, transform: T, config) -> np.ndarray:
    if transform is T.LINEAR:
        return x.T
    if transform is T.PATCH:
        v = config.vision
        return x.T.reshape(v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
    return x


# ---------------------------------------------------------------------------------------------------- reading


def safetensors_files(ckpt_dir: Path) -> list[Path]:
    """The checkpoint's safetensors files, from the index when sharded; errors name what is missing."""
    index = ckpt_dir / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{index}: unreadable index ({e!r}); re-download or re-save the checkpoint") from e
        files = [ckpt_dir / name for name in dict.fromkeys(weight_map.values())]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"{index} lists shards that are missing: {missing}")
        return files
    files = sorted(ckpt_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{ckpt_dir}: no *.safetensors files (and no model.safetensors.index.json); "
            f"vrsjax reads safetensors checkpoints only — re-save with save_pretrained"
        )
    return files


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, numpy array) one tensor at a time, so peak memory stays one tensor above the model."""
    for file in files:
        try:
            with safe_open(str(file), framework="numpy") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
        except SafetensorError as e:
            raise ValueError(f"{file}: corrupt or truncated safetensors file ({e}); re-download it") from e


def load_hf_params(
    abstract_state: nnx.State, ckpt_dir: str | Path, config, *, shardings=None, adapter_dir: str | Path | None = None
) -> dict[str, jax.Array]:
    """Stream an HF checkpoint into {dotted path: array} for `abstract_state`; all mismatches raise together."""
    ckpt_dir = Path(ckpt_dir)
    expected = {_dotted(p): v for p, v in nnx.to_flat_state(abstract_state)}
    sharding_of = {_dotted(p): s for p, s in nnx.to_flat_state(shardings)} if shardings is not None else {}
    lora = LoraAdapter(adapter_dir) if adapter_dir else None
    dtype = jnp.dtype(config.param_dtype)
    loaded, unexpected, wrong_shape = {}, [], []
    for key, tensor in iter_tensors(safetensors_files(ckpt_dir)):
        mapped = hf_to_path(key)
        if mapped is None or mapped[0] not in expected:
            if not (key == "lm_head.weight" and config.tie_word_embeddings):  # tied: HF ignores it too
                unexpected.append(key)
            continue
        path, transform = mapped
        if lora is not None:
            tensor = lora.merge(path, tensor)
        value = to_vrsjax(tensor, transform)
        want = tuple(expected[path].shape)
        if value.shape != want:
            wrong_shape.append(f"{key}: checkpoint {tuple(tensor.shape)} -> {value.shape}, model expects {want}")
            continue
        value = np.asarray(value).astype(dtype)
        loaded[path] = jax.device_put(value, sharding_of.get(path)) if sharding_of else jnp.asarray(value)
    missing = sorted(set(expected) - set(loaded))
    if lora is not None:
        lora.check_all_used()
    _raise_mismatches(ckpt_dir, missing, unexpected, wrong_shape)
    return loaded


def _raise_mismatches(ckpt_dir, missing, unexpected, wrong_shape):
    if not (missing or unexpected or wrong_shape):
        return
    lines = [f"{ckpt_dir}: checkpoint does not match the model config"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
        if items:
            lines.append(f"  {title} ({len(items)}): " + "; ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
    lines.append("  Check that config.json belongs to these weights (layers, hidden sizes, tie_word_embeddings).")
    raise ValueError("\n".join(lines))


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


class LoraAdapter:
    """A PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`) merged as W += s * B @ A."""

    def __init__(self, adapter_dir: str | Path):
        adapter_dir = Path(adapter_dir)
        cfg_file, weights = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
        for f in (cfg_file, weights):
            if not f.exists():
                raise FileNotFoundError(
                    f"{f}: missing; a LoRA adapter dir needs adapter_config.json and "
                    f"adapter_model.safetensors (as PEFT / LLaMA-Factory write them)"
                )
        cfg = json.loads(cfg_file.read_text())
        if cfg.get("use_dora"):
            raise ValueError(f"{cfg_file}: use_dora=true is not supported; merge DoRA adapters with PEFT first")
        r, alpha = cfg["r"], cfg.get("lora_alpha", cfg["r"])
        self.scale = alpha / (r**0.5) if cfg.get("use_rslora") else alpha / r
        self.source = adapter_dir
        self.pairs: dict[str, dict[str, np.ndarray]] = {}
        unknown = []
        for key, tensor in iter_tensors([weights]):
            m = re.match(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
            target = hf_to_path(m.group(1) + ".weight") if m else None
            if target is None or target[1] is not T.LINEAR:
                unknown.append(key)
                continue
            self.pairs.setdefault(target[0], {})[m.group(2)] = tensor
        bad = [p for p, ab in self.pairs.items() if set(ab) != {"A", "B"}]
        if unknown or bad:
            raise ValueError(
                f"{weights}: cannot merge keys {unknown + bad}; only lora_A/lora_B pairs on linear "
                f"layers are supported (no modules_to_save, embeddings or biases)"
            )
        self.used: set[str] = set()

    def merge(self, path: str, weight: np.ndarray) -> np.ndarray:
        """HF-layout weight [out, in] -> merged weight (float32 math, original dtype)."""
        pair = self.pairs.get(path)
        if pair is None:
            return weight
        self.used.add(path)
        delta = pair["B"].astype(np.float32) @ pair["A"].astype(np.float32)
        return (weight.astype(np.float32) + self.scale * delta).astype(weight.dtype)

    def check_all_used(self) -> None:
        unused = sorted(set(self.pairs) - self.used)
        if unused:
            raise ValueError(f"{self.source}: LoRA weights for {unused} have no base weight; wrong base model?")


# ---------------------------------------------------------------------------------------------------- writing


def export_tensors(model: nnx.Module, layout: str = "v5", dtype: str | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, numpy array) for every parameter, gathered to the host one at a time."""
    config = model.config
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key, transform = path_to_hf(_dotted(path), layout)
        value = np.asarray(jax.device_get(variable.get_value()))
        if dtype is not None:
            value = value.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype))
        yield key, np.ascontiguousarray(to_hf(value, transform, config))


def save_pretrained(
    model: nnx.Module,
    out_dir: str | Path,
    *,
    layout: str = "v5",
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Write `config.json` + `model.safetensors` (or shards + index when larger than `max_shard_bytes`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards, current, size = [], {}, 0
    for key, value in export_tensors(model, layout, dtype):
        if current and size + value.nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = value
        size += value.nbytes
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out_dir / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
            total += sum(v.nbytes for v in shard.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    hf = model.config.to_hf_dict()
    if dtype is not None:
        hf["dtype"] = dtype
    (out_dir / "config.json").write_text(json.dumps(hf, indent=2))
    return out_dir


# ------------------------------------------------------------------------------------------------ converting

# Files that travel with the weights so a converted directory is still a complete checkpoint.
SIDE_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "generation_config.json",
    "processor_config.json",
)


def copy_side_files(src: Path, dst: Path) -> list[str]:
    import shutil

    copied = []
    for name in SIDE_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def convert_hf_to_vrsjax(
    src: str | Path, dst: str | Path, *, dtype: str = "float32", adapter_dir: str | Path | None = None
) -> Path:
    """HF directory (+ optional LoRA adapter, merged) -> `dst/config.json` + `dst/params/` (orbax)."""
    from vrsjax.checkpoint import save_params
    from vrsjax.models.qwen2_5_vl import PARAMS_DIR, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    src, dst = Path(src), Path(dst)
    if (dst / PARAMS_DIR).exists():
        raise FileExistsError(f"{dst / PARAMS_DIR} exists; choose an empty output directory")
    config = Qwen2_5_VLConfig.from_pretrained(src, dtype=dtype, param_dtype=dtype)
    abstract = nnx.eval_shape(lambda: Qwen2_5_VLForConditionalGeneration(config, rngs=nnx.Rngs(0)))
    params = load_hf_params(nnx.state(abstract), src, config, adapter_dir=adapter_dir)
    dst.mkdir(parents=True, exist_ok=True)
    save_params(params, dst / PARAMS_DIR)
    hf = config.to_hf_dict()
    (dst / "config.json").write_text(json.dumps(hf, indent=2))
    copy_side_files(src, dst)
    return dst


def convert_vrsjax_to_hf(
    src: str | Path, dst: str | Path, *, layout: str = "v5", dtype: str | None = None, max_shard_bytes: int = 5 * 2**30
) -> Path:
    """A converted directory (or any HF one) -> HF safetensors + config.json that transformers loads."""
    from vrsjax.models.qwen2_5_vl import from_pretrained

    src, dst = Path(src), Path(dst)
    model = from_pretrained(src, dtype=dtype or "float32")
    save_pretrained(model, dst, layout=layout, dtype=dtype, max_shard_bytes=max_shard_bytes)
    copy_side_files(src, dst)
    return dst
