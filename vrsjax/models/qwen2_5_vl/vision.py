"""The Qwen2.5-VL vision tower (HF `Qwen2_5_VisionTransformerPretrainedModel`) and its host-side layout.

Window and full attention are computed on padded blocks: `vision_layout` (numpy, on the host) turns the grids
into static-shape index arrays — every window (4x4 merged tokens, at most 64 patches) and every frame becomes a
row of slot indices into the patch sequence, and an inverse index brings each patch back. The tower gathers
q/k/v into blocks, attends with a key mask and gathers the outputs back, so patches stay in the processor's
order, no token permutation is needed and the shapes depend only on bucket sizes, never on data.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vrsjax.layers.attention import attention
from vrsjax.layers.linear import Linear
from vrsjax.layers.norm import RMSNorm
from vrsjax.layers.rotary import apply_rotary, vision_cos_sin
from vrsjax.models.qwen2_5_vl.config import VisionConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class VisionLayout:
    """Static-shape description of a batch of images/videos for the tower (all int32).

    pos_hw: [Np, 2] rotary (h, w) position of each patch; window_slots: [NW, Sw] and frame_slots: [NF, Sf] patch
    index per block slot (Np marks an empty slot); window_inv, frame_inv: [Np] flat slot of each patch
    (NW*Sw resp. NF*Sf for padding patches).
    """

    pos_hw: np.ndarray
    window_slots: np.ndarray
    window_inv: np.ndarray
    frame_slots: np.ndarray
    frame_inv: np.ndarray


def bucket(n: int, minimum: int = 4) -> int:
    """Round n up to {1, 1.25, 1.5, 1.75} x 2^k so shapes repeat across batches (<= 25% padding)."""
    n = max(int(n), minimum)
    base = 1 << (n.bit_length() - 1)
    step = max(base // 4, 1)
    return -(-n // step) * step


def vision_layout(grid_thw: np.ndarray, cfg: VisionConfig, pad_to: int | None = None) -> VisionLayout:
    """int[G, 3] grids (t, h, w in patches) -> VisionLayout over sum(t*h*w) patches padded to `pad_to`."""
    grid_thw = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    m = cfg.spatial_merge_size
    unit = m * m
    ws = cfg.window_size // m // cfg.patch_size  # window side in merged tokens
    n = int(np.sum(np.prod(grid_thw, axis=1)))
    n_pad = pad_to or bucket(n, minimum=unit)
    pos, win_id, frame_id, win_rank, frame_rank = [], [], [], [], []
    n_windows = n_frames = 0
    for t, h, w in grid_thw:
        lh, lw = h // m, w // m
        # merged-token coordinates, in processor order (frame, merged row, merged col), patches 2x2 inside
        ft, fr, fc = np.meshgrid(np.arange(t), np.arange(lh), np.arange(lw), indexing="ij")
        ft, fr, fc = (a.reshape(-1) for a in (ft, fr, fc))
        nwh, nww = -(-lh // ws), -(-lw // ws)
        wid = (ft * nwh + fr // ws) * nww + fc // ws
        win_id.append(np.repeat(wid + n_windows, unit))
        win_rank.append(_rank_within(wid, unit))
        frame_id.append(np.repeat(ft + n_frames, unit))
        frame_rank.append(np.tile(np.arange(lh * lw * unit), t))
        dr, dc = np.divmod(np.arange(unit), m)
        pos.append(np.stack([(fr[:, None] * m + dr).reshape(-1), (fc[:, None] * m + dc).reshape(-1)], axis=-1))
        n_windows += int(t * nwh * nww)
        n_frames += int(t)
    max_frame = int(np.max(grid_thw[:, 1] * grid_thw[:, 2])) if len(grid_thw) else unit
    window_slots, window_inv = _blocks(
        np.concatenate(win_id), np.concatenate(win_rank), n_windows, ws * ws * unit, n_pad
    )
    frame_slots, frame_inv = _blocks(
        np.concatenate(frame_id), np.concatenate(frame_rank), n_frames, bucket(max_frame, unit), n_pad
    )
    pos_hw = np.zeros((n_pad, 2), np.int32)
    pos_hw[:n] = np.concatenate(pos)
    return VisionLayout(pos_hw, window_slots, window_inv, frame_slots, frame_inv)


def _rank_within(block_id: np.ndarray, unit: int) -> np.ndarray:
    """Slot of each patch inside its block: merged tokens ranked in order of appearance, `unit` patches each."""
    order = np.argsort(block_id, kind="stable")
    sorted_ids = block_id[order]
    first = np.searchsorted(sorted_ids, sorted_ids, side="left")
    rank = np.empty_like(block_id)
    rank[order] = np.arange(len(block_id)) - first
    return (rank[:, None] * unit + np.arange(unit)).reshape(-1)


def _blocks(block_id, rank, n_blocks, block_len, n_pad):
    n = len(block_id)
    rows = bucket(n_blocks, minimum=1)
    slots = np.full((rows, block_len), n_pad, np.int32)
    slots[block_id, rank] = np.arange(n)
    inv = np.full((n_pad,), rows * block_len, np.int32)
    inv[:n] = block_id * block_len + rank
    return slots, inv


class PatchEmbed(nnx.Module):
    """Conv3d with stride == kernel and no bias: a matmul over flattened [C * tp * p * p] patches, its weight the
    HF `[D, C, tp, p, p]` kernel reshaped to `[D, C*tp*p*p]`."""

    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        self.proj = Linear(
            cfg.patch_dim,
            cfg.hidden_size,
            use_bias=False,
            axes=("embed", "patch"),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, patches: jax.Array) -> jax.Array:
        return self.proj(patches)


class VisionMLP(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, axes=("mlp", "embed"), **kw)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, axes=("mlp", "embed"), **kw)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, axes=("embed", "mlp"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionAttention(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, implementation: str, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size, axes=("qkv", "embed"), **kw)
        self.proj = Linear(cfg.hidden_size, cfg.hidden_size, axes=("embed", "heads"), **kw)
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.implementation = implementation

    def __call__(self, x, cos, sin, slots, inv):
        """x: float[Np, D]; cos, sin: float32[Np, Dh]; slots: int[NB, S]; inv: int[Np] -> float[Np, D]."""
        n = x.shape[0]
        q, k, v = jnp.moveaxis(self.qkv(x).reshape(n, 3, self.num_heads, self.head_dim), 1, 0)
        cos, sin = cos[:, None], sin[:, None]
        # HF applies the vision rotary in float32 and casts back.
        q = apply_rotary(q.astype(jnp.float32), cos, sin).astype(x.dtype)
        k = apply_rotary(k.astype(jnp.float32), cos, sin).astype(x.dtype)
        q, k, v = (_gather_blocks(a, slots) for a in (q, k, v))  # [NB, S, H, Dh]
        valid = slots < n
        mask = jnp.broadcast_to(valid[:, None, :], (*slots.shape, slots.shape[1]))
        o = attention(q, k, v, mask, scale=self.head_dim**-0.5, implementation=self.implementation)
        o = o.reshape(-1, self.num_heads * self.head_dim)
        o = jnp.concatenate([o, jnp.zeros((1, o.shape[1]), o.dtype)])[inv]
        return self.proj(o)


def _gather_blocks(a: jax.Array, slots: jax.Array) -> jax.Array:
    """float[Np, ...] -> float[NB, S, ...]; the empty slot index Np reads a zero row."""
    padded = jnp.concatenate([a, jnp.zeros((1, *a.shape[1:]), a.dtype)])
    return padded[slots]


class VisionBlock(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, implementation: str, dtype, param_dtype, rngs: nnx.Rngs):
        self.norm1 = RMSNorm(cfg.hidden_size, eps=1e-6, param_dtype=param_dtype)
        self.norm2 = RMSNorm(cfg.hidden_size, eps=1e-6, param_dtype=param_dtype)
        self.attn = VisionAttention(cfg, implementation=implementation, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.mlp = VisionMLP(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, cos, sin, slots, inv):
        x = x + self.attn(self.norm1(x), cos, sin, slots, inv)
        return x + self.mlp(self.norm2(x))


class GELU(nnx.Module):
    """Exact (erf) GELU; a module only so the merger's `mlp.0 / mlp.2` indices match HF's nn.Sequential."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=False)


class PatchMerger(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        merged = cfg.hidden_size * cfg.spatial_merge_size**2
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.ln_q = RMSNorm(cfg.hidden_size, eps=1e-6, param_dtype=param_dtype)
        self.mlp = nnx.List(
            [
                Linear(merged, merged, axes=("mlp", "merged"), **kw),
                GELU(),
                Linear(merged, cfg.out_hidden_size, axes=("embed", "mlp"), **kw),
            ]
        )
        self.merged = merged

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.ln_q(x).reshape(-1, self.merged)
        for layer in self.mlp:
            x = layer(x)
        return x


class Qwen2_5_VisionTransformer(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, implementation: str, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.config = cfg
        self.patch_embed = PatchEmbed(cfg, **kw)
        self.blocks = nnx.List([VisionBlock(cfg, implementation=implementation, **kw) for _ in range(cfg.depth)])
        self.merger = PatchMerger(cfg, **kw)

    def __call__(self, patches: jax.Array, layout: VisionLayout) -> jax.Array:
        """patches: float[Np, C*tp*p*p] -> merged features float[Np / merge^2, out_hidden]."""
        cfg = self.config
        x = self.patch_embed(patches)
        cos, sin = vision_cos_sin(layout.pos_hw, cfg.head_dim, cfg.rope_theta)
        blocks = {"window": (layout.window_slots, layout.window_inv), "frame": (layout.frame_slots, layout.frame_inv)}
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, *blocks["frame" if i in cfg.fullatt_block_indexes else "window"])
        return self.merger(x)
