"""Linear and embedding layers whose parameters carry logical axis names (`axes` metadata).

The names are mapped to mesh axes by `vrsjax.parallel.rules`; the layers themselves know nothing of meshes.
Weights are stored as HF stores them, `[out, in]` (so conversion never transposes or copies), in `param_dtype`,
and cast to `dtype` for the matmul; `axes` names the weight's dimensions in that order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

INIT_STD = 0.02  # HF initializer_range; only matters for models built without a checkpoint


class Linear(nnx.Module):
    def __init__(
        self, in_features: int, out_features: int, *, use_bias: bool, axes: tuple, dtype, param_dtype, rngs: nnx.Rngs
    ):
        init = jax.random.normal(rngs.params(), (out_features, in_features), param_dtype) * INIT_STD
        self.weight = nnx.Param(init, axes=axes)
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype), axes=axes[:1]) if use_bias else None
        self.dtype = dtype
        self.lora_a = self.lora_b = None  # LoRAParam [r, in] and [out, r] once `vrsjax.layers.lora.add_lora` ran
        self.lora_scale = 0.0
        self.lora_dropout = 0.0  # dropout rate on the LoRA input (PEFT's lora_dropout), applied only with a key
        self.lora_dropout_key = None  # a PRNG key set on a training copy of the model (vrsjax.sft); None = off

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = jnp.dot(x, self.weight[...].astype(self.dtype).T)
        if self.lora_a is not None:
            xa = x
            if self.lora_dropout > 0.0 and self.lora_dropout_key is not None:
                keep = jax.random.bernoulli(self.lora_dropout_key, 1.0 - self.lora_dropout, x.shape)
                xa = jnp.where(keep, x / (1.0 - self.lora_dropout), 0.0).astype(x.dtype)
            down = jnp.dot(xa, self.lora_a[...].astype(self.dtype).T)
            y = y + jnp.dot(down, self.lora_b[...].astype(self.dtype).T) * self.lora_scale
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class Embed(nnx.Module):
    def __init__(self, num_embeddings: int, features: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        init = jax.random.normal(rngs.params(), (num_embeddings, features), param_dtype) * INIT_STD
        self.weight = nnx.Param(init, axes=("vocab", "embed"))
        self.dtype = dtype

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.weight[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        """Tied output head: float[..., D] -> float[..., V]."""
        return jnp.dot(x.astype(self.dtype), self.weight[...].astype(self.dtype).T)
