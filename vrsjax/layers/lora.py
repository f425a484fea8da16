"""LoRA on the model's linear layers, as PEFT / LLaMA-Factory define it: y = W x + (alpha / r) * B A x.

`add_lora` attaches `lora_a` (`[r, in]`, PEFT's Kaiming-uniform init) and `lora_b` (`[out, r]`, zeros) as
`LoRAParam`s — a Param subtype, so `nnx.split(model, LoRAParam, ...)` separates what trains from what stays
frozen — to the linear layers named by `targets` (LLaMA-Factory's `lora_target`: module names such as `q_proj`,
or `all`). `merge_lora` folds them into the weights (W += s B A) and removes them, for export.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vrsjax.layers.linear import Linear


class LoRAParam(nnx.Param):
    """A trainable LoRA factor (the rest of the model stays frozen in LoRA training)."""


def lora_layers(model: nnx.Module, targets: str | list[str], include_vision: bool = False) -> list[tuple[str, Linear]]:
    """(dotted path, Linear) of the layers LLaMA-Factory's `lora_target` names; `all` = every linear layer of the
    language model (and of the vision tower with `include_vision`), never the output head."""
    names = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else list(targets)
    found = []
    for path, module in nnx.iter_graph(model):
        if not isinstance(module, Linear):
            continue
        dotted = ".".join(str(p) for p in path)
        if dotted.startswith("lm_head") or (".visual." in f".{dotted}" and not include_vision):
            continue
        if "all" in names or path[-1] in names or any(dotted.endswith(n) for n in names):
            found.append((dotted, module))
    if not found:
        raise ValueError(f"lora targets {names} match no linear layer; use module names such as q_proj, v_proj, or all")
    return found


def add_lora(
    model: nnx.Module,
    rank: int,
    alpha: float,
    targets: str | list[str] = "all",
    *,
    seed: int = 0,
    use_rslora: bool = False,
    include_vision: bool = False,
) -> nnx.Module:
    """Attach LoRA factors in place; returns the model."""
    if rank < 1:
        raise ValueError(f"lora rank must be >= 1, got {rank}")
    key = jax.random.key(seed)
    for i, (_, layer) in enumerate(lora_layers(model, targets, include_vision)):
        out_features, in_features = layer.weight.shape
        dtype = layer.weight.get_value().dtype
        bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform(a=sqrt(5)), PEFT's lora_A init
        a = jax.random.uniform(jax.random.fold_in(key, i), (rank, in_features), dtype, -bound, bound)
        # nnx.data: the attributes started as None (static) and now hold parameters
        layer.lora_a = nnx.data(LoRAParam(a, axes=(None, layer.weight.get_metadata()["axes"][1])))
        zeros = jnp.zeros((out_features, rank), dtype)
        layer.lora_b = nnx.data(LoRAParam(zeros, axes=(layer.weight.get_metadata()["axes"][0], None)))
        layer.lora_scale = alpha / math.sqrt(rank) if use_rslora else alpha / rank
    return model


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Fold every LoRA into its weight (float32 math) and drop the factors; returns the model."""
    for _, layer in nnx.iter_graph(model):
        if isinstance(layer, Linear) and layer.lora_a is not None:
            w = layer.weight.get_value()
            delta = layer.lora_b.get_value().astype(jnp.float32) @ layer.lora_a.get_value().astype(jnp.float32)
            layer.weight.set_value((w.astype(jnp.float32) + layer.lora_scale * delta).astype(w.dtype))
            layer.lora_a = layer.lora_b = None
            layer.lora_scale = 0.0
    return model
