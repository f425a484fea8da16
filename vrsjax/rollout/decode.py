"""One decode step of group sampling: a new token for each of the n members of every group, attending to the group's
shared prompt cache and to the member's own response cache.

The caches are kept in the layout the step's products read, so nothing is transposed or copied per token (on CPU
the per-step transposes of the response caches cost as much as a layer's matmuls): the prompt cache is
`[B, K, L, Dh]` (written once after the prefill), the response caches `[B, n, K, S, Dh]` (one `Dh` row written per
step). The attention is the one softmax of `vrsjax.layers.attention.shared_prefix_attention` over the prompt keys and
the member's own keys, written for a single query: the prompt part is a matmul of the group's n x heads-per-KV
queries against the prompt keys (one read of the prompt cache per group), the own part a multiply-and-sum over the
few response positions, and the two parts share one max and one normalizer instead of being concatenated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def prompt_cache(k: jax.Array, v: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """The prefill's keys and values float[B, L, K, Dh] -> the decode layout float[B, K, L, Dh] in `dtype`."""
    return k.astype(dtype).swapaxes(1, 2), v.astype(dtype).swapaxes(1, 2)


def response_cache(b: int, n: int, kv_heads: int, capacity: int, head_dim: int, dtype) -> tuple[jax.Array, jax.Array]:
    """Empty keys and values float[B, n, K, S, Dh] for `capacity` response tokens of every group member."""
    zeros = jnp.zeros((b, n, kv_heads, capacity, head_dim), dtype)
    return zeros, zeros


def decode_attention(
    q: jax.Array,
    prefix_k: jax.Array,
    prefix_v: jax.Array,
    prefix_mask: jax.Array,
    k: jax.Array,
    v: jax.Array,
    valid: jax.Array,
    *,
    scale: float,
) -> jax.Array:
    """q: float[B, n, N, Dh] (one query per member); prefix_k/v: float[B, K, L, Dh]; prefix_mask: bool[B, L];
    k, v: float[B, n, K, S, Dh]; valid: bool[S] (the response positions written so far) -> float[B, n, N, Dh].

    Masked scores use the same large negative number as the other attention paths (a fully masked prefix row gives
    a finite result, never NaN)."""
    b, n, heads, d = q.shape
    kv_heads = k.shape[2]
    neg = jnp.finfo(jnp.float32).min
    qg = q.reshape(b, n, kv_heads, heads // kv_heads, d)
    s_prefix = jnp.einsum("bnkgd,bkld->bnkgl", qg, prefix_k, preferred_element_type=jnp.float32) * scale
    s_prefix = jnp.where(prefix_mask[:, None, None, None, :], s_prefix, neg)
    s_own = jnp.sum(qg[:, :, :, :, None].astype(jnp.float32) * k[:, :, :, None].astype(jnp.float32), axis=-1) * scale
    s_own = jnp.where(valid, s_own, neg)
    top = jnp.maximum(s_prefix.max(axis=-1, keepdims=True), s_own.max(axis=-1, keepdims=True))
    e_prefix, e_own = jnp.exp(s_prefix - top), jnp.exp(s_own - top)
    total = e_prefix.sum(axis=-1, keepdims=True) + e_own.sum(axis=-1, keepdims=True)
    o = jnp.einsum("bnkgl,bkld->bnkgd", (e_prefix / total).astype(prefix_v.dtype), prefix_v)
    o = o + jnp.sum((e_own / total)[..., None].astype(v.dtype) * v[:, :, :, None], axis=-2)
    return o.reshape(b, n, heads, d).astype(q.dtype)


def decode_step(model, token, position, step, prompt_kv, prompt_mask, own, kv_dtype):
    """int32[B, n] tokens at int32[B, n] positions, written at response slot `step` -> (logits float[B, n, V], the
    updated response caches). prompt_kv: per layer float[B, K, L, Dh] pairs; own: per layer float[B, n, K, S, Dh]."""
    text = model.model.language_model
    b, n = token.shape
    x = text.embed_tokens(token.reshape(b * n, 1))
    cos, sin = text.rotary(jnp.broadcast_to(position.reshape(1, b * n, 1), (3, b * n, 1)))
    valid = jnp.arange(own[0][0].shape[3]) <= step
    new_own = []
    for layer, (pk, pv), (ok, ov) in zip(text.layers, prompt_kv, own, strict=True):
        attn = layer.self_attn
        q, k, v = attn.project(layer.input_layernorm(x), cos, sin)  # [B*n, 1, heads, Dh]
        kv_heads, head_dim = k.shape[2], k.shape[3]
        at = (0, 0, 0, step, 0)
        ok = jax.lax.dynamic_update_slice(ok, k.reshape(b, n, kv_heads, 1, head_dim).astype(kv_dtype), at)
        ov = jax.lax.dynamic_update_slice(ov, v.reshape(b, n, kv_heads, 1, head_dim).astype(kv_dtype), at)
        o = decode_attention(q.reshape(b, n, *q.shape[2:]), pk, pv, prompt_mask, ok, ov, valid, scale=head_dim**-0.5)
        x = x + attn.o_proj(o.reshape(b * n, 1, -1).astype(x.dtype))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
        new_own.append((ok, ov))
    logits = model.logits(text.norm(x))[:, 0]
    return logits.reshape(b, n, -1), new_own
