"""Pallas splash attention (TPU) behind the dense-mask interface of `vrsjax.layers.attention`.

The splash kernel takes a mask it turns into block-sparsity tables; here that mask is the caller's dense
bool[B, T, S] (a *dynamic* splash mask, built per sequence under `vmap`), so any mask the reference accepts works,
and fully masked blocks are skipped. Grouped-query attention runs the multi-query kernel once per key/value head.
Lengths are padded to the 128-wide blocks. Two behaviours are made to match the reference exactly: the softmax
scale is applied to q (the kernel has none), and a fully masked query row, which the kernel cannot represent,
returns the uniform average of the values as the reference's large-negative masking does. Off TPU the kernel runs
in Pallas interpret mode, which is how it is tested on CPU, unless the caller lowers for a TPU from another host
(`interpret=False`, as `auto:tpu` attention does for `vrsjax lower`): then it is the Mosaic kernel a TPU runs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

BLOCK = 128  # the kernel's default block sizes; lengths are padded to a multiple


def splash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *, scale: float, interpret: bool | None = None
) -> jax.Array:
    """q: float[B, T, N, D], k, v: float[B, S, K, D] (N % K == 0), mask: bool[B, T, S] -> float[B, T, N, D].

    Under a context mesh (`jax.set_mesh`) the kernel runs per shard (`shard_map`): sequences over the `batch` axes,
    heads over `tensor`, as the rules place them; a Pallas kernel cannot be partitioned by XLA itself."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and math.prod(mesh.shape.values()) > 1:
        return _sharded(q, k, v, mask, scale, interpret, mesh)
    return _splash(q, k, v, mask, scale, interpret)


def _sharded(q, k, v, mask, scale, interpret, mesh):
    from vrsjax.parallel.rules import spec

    b, t, n, _ = q.shape
    kv_heads = k.shape[2]
    batch = spec(("batch",), (b,), mesh)[0]
    heads = spec(("act_heads",), (kv_heads,), mesh)[0]  # split the kv heads, and the query groups with them
    heads = heads if heads is not None and n % kv_heads == 0 else None
    qkv_spec = P(batch, None, heads, None)
    mask = jnp.ones((b, t, k.shape[1]), bool) if mask is None else mask
    fn = functools.partial(_splash, scale=scale, interpret=interpret)
    return jax.shard_map(
        fn, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, P(batch)), out_specs=qkv_spec, check_vma=False
    )(q, k, v, mask)


def _splash(q, k, v, mask, scale, interpret):
    b, t, n, d = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    interpret = jax.default_backend() != "tpu" if interpret is None else interpret
    mask = jnp.ones((b, t, s), bool) if mask is None else mask
    empty = ~jnp.any(mask, axis=-1)  # [B, T]
    tp, sp = _round_up(t), _round_up(s)
    # Every kernel row needs a visible key: empty and padded query rows see key 0 and are replaced or cut below.
    kernel_mask = jnp.pad(mask | empty[..., None], ((0, 0), (0, tp - t), (0, sp - s)))
    kernel_mask = kernel_mask.at[:, t:, 0].set(True)
    qp = jnp.pad(q * jnp.asarray(scale, q.dtype), ((0, 0), (0, tp - t), (0, 0), (0, 0)))
    kp, vp = (jnp.pad(a, ((0, 0), (0, sp - s), (0, 0), (0, 0))) for a in (k, v))
    out = jax.vmap(lambda *a: _one_sequence(*a, kv_heads=kv_heads, interpret=interpret))(qp, kp, vp, kernel_mask)
    out = out[:, :t]
    uniform = jnp.mean(v.astype(jnp.float32), axis=1).astype(out.dtype)  # [B, K, D]
    uniform = jnp.repeat(uniform, n // kv_heads, axis=1)[:, None]  # [B, 1, N, D]
    return jnp.where(empty[:, :, None, None], uniform, out)


def _one_sequence(q, k, v, mask, *, kv_heads: int, interpret: bool):
    """q: float[T, N, D], k, v: float[S, K, D], mask: bool[T, S] -> float[T, N, D]."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

    t, n, d = q.shape
    groups = n // kv_heads
    kernel = sk.make_splash_mqa(
        mask=jnp.broadcast_to(mask, (groups, *mask.shape)), head_shards=1, q_seq_shards=1, interpret=interpret
    )
    _mark_dynamic(kernel)
    qg = q.reshape(t, kv_heads, groups, d).transpose(1, 2, 0, 3)  # [K, G, T, D]
    out = jax.vmap(kernel)(qg, jnp.swapaxes(k, 0, 1), jnp.swapaxes(v, 0, 1))  # [K, G, T, D]
    return out.transpose(2, 0, 1, 3).reshape(t, n, d)


def _mark_dynamic(kernel) -> None:
    """Keep the kernel's dynamic-mask flag a Python bool: JAX (<= 0.10) turns every MaskInfo field, this flag too,
    into an array, which a traced call cannot branch on."""
    for name in ("fwd_mask_info", "dq_mask_info", "dkv_mask_info"):
        info = getattr(kernel, name, None)
        if info is not None and hasattr(info, "is_dynamic_mask"):
            setattr(kernel, name, info._replace(is_dynamic_mask=True))


def _round_up(length: int) -> int:
    return max(BLOCK, -(-length // BLOCK) * BLOCK)
