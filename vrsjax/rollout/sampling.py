"""Next-token sampling: temperature, top-k, top-p, greedy; and the log-prob the trainer will recompute.

The returned log-prob is `log_softmax(logits / temperature)[token]` over the whole vocabulary (top-k/top-p only
restrict which tokens can be drawn), which is what the GRPO trainer recomputes from the same logits. Greedy
(`temperature == 0`) reports `log_softmax(logits)[token]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def filter_logits(z: jax.Array, top_k: int, top_p: float) -> jax.Array:
    """float[N, V] -> float[N, V] with tokens outside the top-k / nucleus set to -inf (HF warper semantics)."""
    neg = jnp.finfo(jnp.float32).min
    if 0 < top_k < z.shape[-1]:
        kth = jax.lax.top_k(z, top_k)[0][:, -1:]
        z = jnp.where(z < kth, neg, z)
    if top_p < 1.0:
        order = jnp.argsort(z, axis=-1)  # ascending, as HF's TopPLogitsWarper
        sorted_z = jnp.take_along_axis(z, order, axis=-1)
        cumulative = jnp.cumsum(jax.nn.softmax(sorted_z, axis=-1), axis=-1)
        remove_sorted = cumulative <= 1 - top_p
        remove_sorted = remove_sorted.at[:, -1].set(False)  # always keep the most likely token
        remove = jnp.zeros_like(remove_sorted).at[jnp.arange(z.shape[0])[:, None], order].set(remove_sorted)
        z = jnp.where(remove, neg, z)
    return z


def sample(
    logits: jax.Array, key: jax.Array, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """float[N, V] -> (int32[N] tokens, float32[N] log-probs under logits / temperature)."""
    logits = logits.astype(jnp.float32)
    if temperature == 0:
        token = jnp.argmax(logits, axis=-1)
        logp = jax.nn.log_softmax(logits, axis=-1)
    else:
        z = logits / temperature
        logp = jax.nn.log_softmax(z, axis=-1)
        token = jax.random.categorical(key, filter_logits(z, top_k, top_p), axis=-1)
    token = token.astype(jnp.int32)
    return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]
