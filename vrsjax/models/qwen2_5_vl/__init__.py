"""Qwen2.5-VL in Flax NNX: `from_pretrained(dir)` reads an HF checkpoint (either key layout, optional LoRA
adapter merged) or a directory written by `converters/hf_to_vrsjax.py`; `model.save_pretrained(dir)` writes HF."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from vrsjax.models.qwen2_5_vl.config import Qwen2_5_VLConfig, TextConfig, VisionConfig
from vrsjax.models.qwen2_5_vl.inputs import ModelInputs, prepare_inputs
from vrsjax.models.qwen2_5_vl.model import Qwen2_5_VLForConditionalGeneration
from vrsjax.models.qwen2_5_vl.positions import get_rope_index

__all__ = [
    "Qwen2_5_VLConfig",
    "TextConfig",
    "VisionConfig",
    "ModelInputs",
    "Qwen2_5_VLForConditionalGeneration",
    "from_pretrained",
    "from_config",
    "get_rope_index",
    "prepare_inputs",
    "PARAMS_DIR",
]

PARAMS_DIR = "params"  # a converted checkpoint: config.json + params/ (orbax)


def from_config(config: Qwen2_5_VLConfig, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    """A randomly initialised model (HF's N(0, 0.02) init); for tests and from-scratch experiments."""
    return Qwen2_5_VLForConditionalGeneration(config, rngs=nnx.Rngs(seed))


def from_pretrained(
    path: str | Path,
    dtype: str = "float32",
    *,
    param_dtype: str | None = None,
    attention: str = "reference",
    mesh: Mesh | None = None,
    adapter_dir: str | Path | None = None,
) -> Qwen2_5_VLForConditionalGeneration:
    """Load an HF Qwen2.5-VL directory (or a converted one), placing parameters on `mesh` when given."""
    from vrsjax.checkpoint import restore_params
    from vrsjax.models.qwen2_5_vl.params import load_hf_params
    from vrsjax.parallel.rules import param_shardings

    path = Path(path)
    config = Qwen2_5_VLConfig.from_pretrained(path, dtype=dtype, param_dtype=param_dtype or dtype, attention=attention)
    abstract = nnx.eval_shape(lambda: Qwen2_5_VLForConditionalGeneration(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    shardings = param_shardings(state, mesh) if mesh is not None else None
    if (path / PARAMS_DIR).is_dir():
        if adapter_dir is not None:
            raise ValueError("adapter_dir applies to HF checkpoints; merge it when converting (converters/)")
        flat_sh = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
        target = {
            _dotted(p): jax.ShapeDtypeStruct(v.shape, jnp.dtype(config.param_dtype), sharding=flat_sh.get(p))
            for p, v in nnx.to_flat_state(state)
        }
        values = restore_params(path / PARAMS_DIR, target)
    else:
        values = load_hf_params(state, path, config, shardings=shardings, adapter_dir=adapter_dir)
    flat = [(p, v.replace(values[_dotted(p)])) for p, v in nnx.to_flat_state(state)]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)
