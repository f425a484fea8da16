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


def shared_prefix_attention(
    q: jax.Array,
    prefix_k: jax.Array,
    prefix_v: jax.Array,
    prefix_mask: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    scale: float,
) -> jax.Array:
    """Attention of n sequences per group to their group's shared prefix and to themselves.

    q: float[B, n, T, N, D]; prefix_k/v: float[B, L, K, D] (one copy per group, never repeated n times);
    prefix_mask: bool[B, L]; k, v: float[B, n, S, K, D]; mask: bool[B, n, T, S] -> float[B, n, T, N, D].
    One softmax (float32) over the concatenated prefix and own keys, as if the prefix were in every sequence.
    """
    b, n, t, heads, d = q.shape
    kv_heads = prefix_k.shape[2]
    qg = q.reshape(b, n, t, kv_heads, heads // kv_heads, d)
    neg = jnp.finfo(jnp.float32).min
    s_prefix = jnp.einsum("bntkgd,blkd->bnkgtl", qg, prefix_k, preferred_element_type=jnp.float32) * scale
    s_prefix = jnp.where(prefix_mask[:, None, None, None, None, :], s_prefix, neg)
    s_own = jnp.einsum("bntkgd,bnskd->bnkgts", qg, k, preferred_element_type=jnp.float32) * scale
    s_own = jnp.where(mask[:, :, None, None], s_own, neg)
    probs = jax.nn.softmax(jnp.concatenate([s_prefix, s_own], axis=-1), axis=-1)
    length = prefix_k.shape[1]
    o = jnp.einsum("bnkgtl,blkd->bntkgd", probs[..., :length].astype(prefix_v.dtype), prefix_v)
    o = o + jnp.einsum("bnkgts,bnskd->bntkgd", probs[..., length:].astype(v.dtype), v)
    return o.reshape(b, n, t, heads, d)
