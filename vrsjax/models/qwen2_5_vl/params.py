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
import struct
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from vrsjax.parallel.data import put_global


class T(enum.Enum):
    NONE = "none"
    PATCH = "patch"  # Conv3d [D, C, tp, p, p] <-> weight [D, C*tp*p*p] (a reshape, never a copy)


# vrsjax parameter paths are the transformers-v5 names, so the table only folds the legacy prefixes in.
_RULES = [
    (r"(?:model\.)?visual\.(.+)", r"model.visual.\1"),
    (r"model\.(?:language_model\.)?(.+)", r"model.language_model.\1"),
    (r"lm_head\.weight", "lm_head.weight"),
]
_COMPILED = [re.compile(p + r"$") for p, _ in _RULES]
_PATCH = "model.visual.patch_embed.proj.weight"
# Linear layers (the only ones a LoRA adapter may target).
_LINEAR = re.compile(r".*(?:_proj|\.qkv|\.proj|merger\.mlp\.[02]|lm_head)\.weight$")


def hf_to_path(key: str) -> tuple[str, T] | None:
    """HF tensor name (either layout) -> (dotted vrsjax parameter path, transform), None if not a model name."""
    for pattern, (_, target) in zip(_COMPILED, _RULES, strict=True):
        if pattern.match(key):
            path = pattern.sub(target, key)
            return path, T.PATCH if path == _PATCH else T.NONE
    return None


def path_to_hf(path: str, layout: str = "v5") -> tuple[str, T]:
    """Dotted vrsjax path -> (HF name in `layout` 'v5' or 'legacy', transform)."""
    transform = T.PATCH if path == _PATCH else T.NONE
    if layout == "v5":
        return path, transform
    if layout == "legacy":
        return path.replace("model.visual.", "visual.", 1).replace("model.language_model.", "model.", 1), transform
    raise ValueError(f"layout={layout!r}: expected 'v5' (model.language_model.*) or 'legacy' (model.*, visual.*)")


def to_vrsjax(x: np.ndarray, transform: T) -> np.ndarray:
    return x.reshape(x.shape[0], -1) if transform is T.PATCH else x


def to_hf(x: np.ndarray, transform: T, config) -> np.ndarray:
    if transform is T.PATCH:
        v = config.vision
        return x.reshape(v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)
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


_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, numpy array) one tensor at a time, read with plain file reads (no mmap, so the process never holds
    the file's pages) into 64-byte-aligned buffers that JAX can adopt without a copy."""
    for file in files:
        with open(file, "rb") as f:
            header, start = _read_header(f, file)
            for key, meta in header.items():
                if key == "__metadata__":
                    continue
                begin, end = meta["data_offsets"]
                f.seek(start + begin)
                buf = _aligned_empty(end - begin)
                if f.readinto(memoryview(buf)) != end - begin:
                    raise ValueError(f"{file}: corrupt or truncated (data ends inside tensor {key}); re-download")
                dtype = _ST_DTYPES.get(meta["dtype"])
                if dtype is None:
                    raise ValueError(f"{file}: tensor {key} has unsupported dtype {meta['dtype']}")
                yield key, buf.view(dtype).reshape(meta["shape"])


def _read_header(f, file: Path) -> tuple[dict, int]:
    try:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        assert isinstance(header, dict)
    except (struct.error, json.JSONDecodeError, UnicodeDecodeError, AssertionError) as e:
        raise ValueError(f"{file}: corrupt or truncated safetensors file (bad header: {e!r}); re-download it") from e
    return header, 8 + length


def _aligned_empty(nbytes: int, alignment: int = 64) -> np.ndarray:
    raw = np.empty(nbytes + alignment, np.uint8)
    offset = (-raw.ctypes.data) % alignment
    return raw[offset : offset + nbytes]


def load_hf_params(
    abstract_state: nnx.State,
    ckpt_dir: str | Path,
    config,
    *,
    shardings=None,
    adapter_dir: str | Path | None = None,
    on_device: bool = True,
) -> dict[str, jax.Array]:
    """Stream an HF checkpoint into {dotted path: array} for `abstract_state`; all mismatches raise together.

    With `on_device=False` values stay host numpy arrays (the converters: no second copy of each tensor)."""
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
        value = value.astype(dtype, copy=False)
        if on_device:
            value = put_global(value, sharding_of.get(path)) if sharding_of else jnp.asarray(value)
        loaded[path] = value
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
            if target is None or not _LINEAR.match(target[0]):
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


_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


def _export_plan(model: nnx.Module, layout: str, dtype: str | None) -> list[tuple[str, tuple, np.dtype, object]]:
    """(HF name, HF shape, dtype, variable) per parameter, without touching any values."""
    from vrsjax.layers.lora import LoRAParam

    if nnx.state(model, LoRAParam):
        raise ValueError("the model has unmerged LoRA adapters; call vrsjax.layers.lora.merge_lora(model) first")
    config, plan = model.config, []
    out_dtype = None if dtype is None else np.dtype(jnp.dtype(dtype))
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        key, transform = path_to_hf(_dotted(path), layout)
        shape = to_hf(np.empty(variable.shape, np.uint8), transform, config).shape  # shape only, no data
        plan.append((key, shape, out_dtype or np.dtype(variable.get_value().dtype), (variable, transform)))
    return plan


def _write_safetensors(file: Path, entries: list, config) -> None:
    """Stream one safetensors file: header from shapes, then each tensor gathered to the host and written."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for key, shape, dtype, _ in entries:
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[key] = {"dtype": _ST_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the data section to 8 bytes
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for _, _, dtype, (variable, transform) in entries:
            value = np.asarray(jax.device_get(variable.get_value())).astype(dtype, copy=False)
            f.write(np.ascontiguousarray(to_hf(value, transform, config)).view(np.uint8).data)


def save_pretrained(
    model: nnx.Module,
    out_dir: str | Path,
    *,
    layout: str = "v5",
    dtype: str | None = None,
    max_shard_bytes: int = 5 * 2**30,
) -> Path:
    """Write `config.json` + `model.safetensors` (or shards + index when larger than `max_shard_bytes`), streaming
    one tensor at a time so export needs no second copy of the model."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards, size = [[]], 0
    for entry in _export_plan(model, layout, dtype):
        nbytes = int(np.prod(entry[1], dtype=np.int64)) * entry[2].itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    for name, shard in zip(names, shards, strict=True):
        _write_safetensors(out_dir / name, shard, model.config)
    if len(shards) > 1:
        weight_map = {key: name for name, shard in zip(names, shards, strict=True) for key, *_ in shard}
        total = sum(int(np.prod(s, dtype=np.int64)) * d.itemsize for shard in shards for _, s, d, _ in shard)
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
    params = load_hf_params(nnx.state(abstract), src, config, adapter_dir=adapter_dir, on_device=False)
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
