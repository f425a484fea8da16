"""Scaled dot-product attention: one reference einsum path and a backend switch.

`reference` computes scores and softmax in float32 and supports grouped-query attention by reshaping the
query heads into groups. `xla` and `cudnn` call `jax.nn.dot_product_attention`. Masked scores use the dtype's
minimum rather than -inf so a fully masked row (left padding) gives a finite uniform average, never NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *, scale: float, implementation: str = "reference"
) -> jax.Array:
    """q: float[B, T, N, D], k, v: float[B, S, K, D] (N % K == 0), mask: bool[B, T, S] -> float[B, T, N, D]."""
    if implementation == "reference":
        return _reference(q, k, v, mask, scale)
    bias_mask = None if mask is None else mask[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=bias_mask, scale=scale, implementation=implementation)


def _reference(q, k, v, mask, scale):
    b, t, n, d = q.shape
    kv_heads = k.shape[2]
    qg = q.reshape(b, t, kv_heads, n // kv_heads, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, n, d)
