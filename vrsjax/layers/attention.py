"""Scaled dot-product attention: one reference einsum path and a backend switch.

`reference` computes scores and softmax in float32 and supports grouped-query attention by reshaping the
query heads into groups. `xla` and `cudnn` call `jax.nn.dot_product_attention`; `splash` runs the Pallas TPU splash
kernel (`vrsjax.layers.splash`, interpreted off TPU); `auto` picks per platform when the function is traced:
cuDNN flash attention on an NVIDIA GPU for bf16/fp16 shapes it supports, splash on TPU when Pallas imports, XLA
elsewhere. `auto:<platform>` (`for_platform`) makes that choice for another platform than the host's — what
`vrsjax lower` exports for TPU or CUDA from a CPU machine: the splash kernel compiled for TPU, not interpreted,
and cuDNN only where this JAX can lower it. Nothing GPU- or TPU-specific is imported before a backend is used.
Masked scores use a large negative number rather than -inf, so a fully masked row (left padding) gives a finite
uniform average, never NaN, in every backend.
"""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("reference", "xla", "cudnn", "splash", "auto")
PLATFORMS = ("tpu", "cuda", "rocm", "cpu")  # targets of `auto:<platform>`, named as jax.export names them
CUDNN_CALLS = tuple(f"__cudnn$fmha{kind}Softmax{bwd}" for kind in ("", "ScaleBias") for bwd in ("", "Backward"))


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *, scale: float, implementation: str = "reference"
) -> jax.Array:
    """q: float[B, T, N, D], k, v: float[B, S, K, D] (N % K == 0), mask: bool[B, T, S] -> float[B, T, N, D]."""
    target = None
    if implementation.startswith("auto"):
        target = _target(implementation)
        implementation = resolve_implementation(q.dtype, q.shape[-1], q.shape[1], k.shape[1], platform=target)
    if implementation == "reference":
        return _reference(q, k, v, mask, scale)
    if implementation == "splash":
        from vrsjax.layers.splash import splash_attention

        # lowered for a TPU the kernel is compiled (Mosaic), whatever the host; else interpreted off TPU
        return splash_attention(q, k, v, mask, scale=scale, interpret=False if target == "tpu" else None)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}: expected one of {IMPLEMENTATIONS}")
    bias_mask = None if mask is None else mask[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=bias_mask, scale=scale, implementation=implementation)


def resolve_implementation(
    dtype, head_dim: int, q_len: int, kv_len: int, platform: str | None = None, platform_version: str | None = None
) -> str:
    """The backend `auto` means for these shapes on `platform` (default: JAX's default backend).

    cuDNN flash attention needs an NVIDIA GPU, bf16/fp16, a head dim that is a multiple of 8 and <= 128, and even
    lengths (its training kernels with a mask); splash needs TPU, the Pallas TPU kernels, a 128-multiple head dim
    (the TPU lane width; the 80-wide vision heads stay on XLA) and, on several chips, a context mesh
    (`jax.set_mesh(mesh)`) to run per shard; everything else runs XLA's fused attention. `platform` may also be a
    `jax.export` platform: "cuda" (an NVIDIA target, cuDNN only where `cudnn_lowering_error()` is None), "rocm".
    """
    platform = platform or jax.default_backend()
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    cudnn_shapes = half and head_dim % 8 == 0 and head_dim <= 128 and q_len % 2 == 0 and kv_len % 2 == 0
    if platform == "gpu":
        version = platform_version if platform_version is not None else _platform_version()
        if "cuda" in version.lower() and cudnn_shapes:
            return "cudnn"
    if platform == "cuda" and cudnn_shapes and cudnn_lowering_error() is None:
        return "cudnn"
    if platform == "tpu" and head_dim % 128 == 0 and _splash_can_shard() and splash_available():
        return "splash"
    return "xla"


def for_platform(implementation: str, platform: str) -> str:
    """`auto` chosen for `platform` (a `jax.export` platform: tpu, cuda, rocm, cpu) instead of the host; other
    implementations are explicit choices and stay as they are."""
    if platform not in PLATFORMS:
        raise ValueError(f"platform {platform!r}: expected one of {PLATFORMS}")
    return f"auto:{platform}" if implementation == "auto" else implementation


def _target(implementation: str) -> str | None:
    """'auto' -> None (the host), 'auto:tpu' -> 'tpu'."""
    target = implementation.partition(":")[2]
    if implementation != "auto" and (not implementation.startswith("auto:") or target not in PLATFORMS):
        raise ValueError(f"attention implementation {implementation!r}: expected auto or auto:<one of {PLATFORMS}>")
    return target or None


@functools.cache
def cudnn_lowering_error() -> str | None:
    """None when this JAX lowers cuDNN flash attention for CUDA here, else why not. JAX picks the cuDNN kernel
    from the cuDNN library and GPU it finds at trace time, so a host without them (a laptop, a TPU VM) cannot
    emit it; a tiny `jax.export` for "cuda" is the test."""
    q = jax.ShapeDtypeStruct((1, 8, 1, 8), jnp.bfloat16)
    fn = jax.jit(functools.partial(jax.nn.dot_product_attention, implementation="cudnn"))
    try:
        jax.export.export(fn, platforms=["cuda"], disabled_checks=cudnn_export_checks())(q, q, q)
    except Exception as err:  # noqa: BLE001 - any failure means: not from this host; the reason is reported
        return f"{type(err).__name__}: {err}".splitlines()[0]
    return None


def cudnn_export_checks() -> list:
    """`jax.export` refuses custom calls without a cross-version compatibility guarantee, and cuDNN's fused
    attention (forward and backward, with or without a bias/mask) is one: allowing it ties an artifact to the
    JAX version that wrote it."""
    return [jax.export.DisabledSafetyCheck.custom_call(name) for name in CUDNN_CALLS]


def splash_available() -> bool:
    """Whether this JAX ships the Pallas TPU splash-attention kernel (imported only when asked, i.e. on TPU)."""
    try:
        importlib.import_module("jax.experimental.pallas.ops.tpu.splash_attention.splash_attention_kernel")
    except ImportError:
        return False
    return True


def _splash_can_shard() -> bool:
    """A Pallas kernel runs per shard only under a context mesh (`jax.set_mesh`); without one, only on one chip."""
    return jax.device_count() == 1 or not jax.sharding.get_abstract_mesh().empty


def _platform_version() -> str:
    # "PJRT C API\ncuda 12090" on NVIDIA, "rocm ..." on AMD: only the former has cuDNN.
    return str(getattr(jax.devices()[0].client, "platform_version", ""))


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
