"""Rotary position embeddings: the vision tower's 2D (h, w) rotary and the language model's M-RoPE.

Both produce `cos, sin` of the full head dim with the HF layout (frequencies duplicated, `rotate_half`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def inverse_frequencies(dim: int, theta: float) -> jax.Array:
    """float[dim // 2]: theta ** (-2i / dim), computed in float32 as HF does."""
    return 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))


def rotate_half(x: jax.Array) -> jax.Array:
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: float[..., H, D]; cos, sin broadcastable to float[..., 1, D]."""
    return x * cos + rotate_half(x) * sin


def vision_cos_sin(pos_hw: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """int[N, 2] (h, w) patch positions -> float32 cos, sin [N, head_dim]: [h-freqs, w-freqs] duplicated."""
    inv = inverse_frequencies(head_dim // 2, theta)  # head_dim/4 frequencies per spatial axis
    freqs = pos_hw.astype(jnp.float32)[:, :, None] * inv  # [N, 2, head_dim/4]
    freqs = freqs.reshape(freqs.shape[0], -1)  # [N, head_dim/2] = [h | w]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def mrope_cos_sin(
    position_ids: jax.Array, head_dim: int, theta: float, mrope_section: tuple[int, ...], dtype
) -> tuple[jax.Array, jax.Array]:
    """int[3, B, L] (t, h, w rows) -> cos, sin float[B, L, head_dim] in `dtype`.

    Frequency chunk i (sizes `mrope_section`) takes its angle from position row i % 3.
    """
    inv = inverse_frequencies(head_dim, theta)  # [head_dim/2]
    freqs = position_ids.astype(jnp.float32)[..., None] * inv  # [3, B, L, head_dim/2]
    bounds, chunks, start = list(mrope_section), [], 0
    for i, size in enumerate(bounds):
        chunks.append(freqs[i % 3, ..., start : start + size])
        start += size
    freqs = jnp.concatenate(chunks, axis=-1)  # [B, L, head_dim/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)
