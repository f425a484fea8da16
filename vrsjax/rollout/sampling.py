"""Next-token sampling: temperature, top-k, top-p, greedy; and the log-prob the trainer will recompute.

The returned log-prob is `log_softmax(logits / temperature)[token]` over the whole vocabulary (top-k/top-p only
restrict which tokens can be drawn), which is what the GRPO trainer recomputes from the same logits. Greedy
(`temperature == 0`) reports `log_softmax(logits)[token]`.

A token is drawn by inverting the cumulative distribution with two uniforms per row: one picks a block of
`BLOCK` vocabulary entries in proportion to its mass, the other a token inside that block in proportion to its
probability — the same distribution as a categorical draw, but two random numbers per row instead of one Gumbel
number per vocabulary entry (on a 2-core CPU, 16 x 8000 Gumbel numbers and their arg-max took 5-8 ms per step, about
as long as the rest of a small model's decode step; this draw 0.2-0.6 ms), and only sums and comparisons over the
vocabulary, which vectorize.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

BLOCK = 128  # vocabulary entries per block of the two-stage draw: ~sqrt(V) for Qwen's 151,936


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


def draw(weights: jax.Array, key: jax.Array) -> jax.Array:
    """float[N, V] non-negative weights (not all 0 in a row) -> int32[N], index i drawn with probability
    weights[i] / sum(weights); an index of weight 0 is never drawn."""
    n, vocab = weights.shape
    blocks = -(-vocab // BLOCK)
    w = jnp.pad(weights, ((0, 0), (0, blocks * BLOCK - vocab))).reshape(n, blocks, BLOCK)
    u = jax.random.uniform(key, (n, 2), jnp.float32)
    block = _invert(w.sum(axis=-1), u[:, 0])
    inside = jnp.take_along_axis(w, block[:, None, None], axis=1)[:, 0]
    return block * BLOCK + _invert(inside, u[:, 1])


def _invert(w: jax.Array, u: jax.Array) -> jax.Array:
    """float[N, M] weights, float[N] uniforms in [0, 1) -> int32[N]: the first i with cumsum(w)[i] > u * sum(w).
    Rounding can put u * sum(w) at or past the last cumulative value; the index is then clamped to the last entry
    of positive weight, so a weight-0 entry is never returned."""
    cumulative = jnp.cumsum(w, axis=-1)
    target = u * cumulative[:, -1]
    index = jnp.sum(cumulative <= target[:, None], axis=-1)
    last = jnp.max(jnp.where(w > 0, jnp.arange(w.shape[-1]), 0), axis=-1)
    return jnp.minimum(index, last).astype(jnp.int32)


def sample(
    logits: jax.Array, key: jax.Array, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """float[N, V] -> (int32[N] tokens, float32[N] log-probs under logits / temperature)."""
    z = logits.astype(jnp.float32)
    if temperature == 0:
        token = jnp.argmax(z, axis=-1)
    else:
        z = z / temperature
    # log_softmax(z)[token] as jax.nn.log_softmax computes it, without writing the [N, V] log-probs out
    shifted = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    log_total = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1))
    if temperature != 0:
        if top_k or top_p < 1.0:
            kept = filter_logits(shifted, top_k, top_p)
            weights = jnp.exp(kept)  # filtered entries underflow to exactly 0
        else:
            weights = jnp.exp(shifted)
        token = draw(weights, key)
    token = token.astype(jnp.int32)
    return token, jnp.take_along_axis(shifted, token[:, None], axis=-1)[:, 0] - log_total
