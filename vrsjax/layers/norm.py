"""RMSNorm with Hugging Face semantics: normalise in float32, cast back to the input dtype, then scale."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """float[..., D] -> float[..., D] in x's dtype (the weight multiply follows HF: after the cast back)."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype) * normed.astype(x.dtype)


class RMSNorm(nnx.Module):
    def __init__(self, features: int, *, eps: float, param_dtype):
        self.weight = nnx.Param(jnp.ones((features,), param_dtype), axes=("norm",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        return rms_norm(x, self.weight[...], self.eps)
