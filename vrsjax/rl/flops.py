"""Model FLOPs of a GRPO step from the model config, and the model FLOPs utilisation (MFU) they imply.

Counted the usual way (Kaplan et al.; PaLM appendix B): a token through the matmul weights costs 2 FLOPs per weight
forward and 6 forward + backward; causal attention adds, per layer and token, 2 * 2 * (heads * head_dim) FLOPs per
key it attends to (scores and the weighted sum), tripled with the backward. The weights are the text decoder's
projections and MLP plus the output head (the embedding lookup is free); a vision patch costs 2 (or 6) times the
vision tower's per-patch weights (blocks and merger; the merger runs on 1/4 of the patches). Norms, rotary, softmax,
the vision tower's windowed attention and the sampling arithmetic are left out. MFU = counted FLOPs / (seconds *
devices * peak FLOP/s per device), with the peak from `PEAK_FLOPS` for the device kind and compute dtype, or given.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Dense peak FLOP/s per device from the vendors' data sheets (no sparsity): {device-kind substring: {dtype: peak}}.
# The first matching substring wins, so more specific names come first. float32 on NVIDIA GPUs is TF32 only when
# matmul precision allows it; the plain FP32 rate is listed.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
    "H100 PCIe": {"bfloat16": 756e12, "float16": 756e12, "float32": 51e12},
    "H100": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12},
    "L4": {"bfloat16": 121e12, "float16": 121e12, "float32": 30e12},
    "A10G": {"bfloat16": 70e12, "float16": 70e12, "float32": 31e12},
    "TPU v6": {"bfloat16": 918e12},  # v6e (Trillium)
    "TPU v5p": {"bfloat16": 459e12},
    "TPU v5": {"bfloat16": 197e12},  # v5e ("TPU v5 lite")
    "TPU v4": {"bfloat16": 275e12},
}


@dataclasses.dataclass(frozen=True)
class ModelFlops:
    """Per-token costs of one forward pass: `weights` = matmul weights a text token meets (decoder + head),
    `attn` = FLOPs per attended key (all layers), `patch` = FLOPs of one vision patch."""

    weights: int
    attn: int
    patch: float

    @classmethod
    def from_config(cls, config) -> ModelFlops:
        t, v = config.text, config.vision
        q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
        layer = t.hidden_size * (q + 2 * kv) + q * t.hidden_size + 3 * t.hidden_size * t.intermediate_size
        weights = t.num_hidden_layers * layer + t.hidden_size * t.vocab_size
        block = 4 * v.hidden_size**2 + 3 * v.hidden_size * v.intermediate_size
        merged = 4 * v.hidden_size
        merger = (merged * merged + merged * v.out_hidden_size) / 4
        patch = 2 * (v.patch_dim * v.hidden_size + v.depth * block + merger)
        return cls(weights, 2 * 2 * t.num_hidden_layers * q, patch)


def forward_flops(mf: ModelFlops, lengths: np.ndarray, context: np.ndarray | int = 0, patches: int = 0) -> float:
    """One forward pass over sequences of `lengths` new tokens, each after `context` cached keys: weights on every
    new token, causal attention (token i attends to context + i + 1 keys) and the vision patches."""
    lengths = np.asarray(lengths, np.float64)
    context = np.broadcast_to(np.asarray(context, np.float64), lengths.shape)
    keys = lengths * context + lengths * (lengths + 1) / 2
    return float(2 * mf.weights * lengths.sum() + mf.attn * keys.sum() + mf.patch * patches)


def step_flops(
    mf: ModelFlops,
    prompt_lens: np.ndarray,
    response_lens: np.ndarray,
    n: int,
    patches: int,
    *,
    shared_prompt: bool,
    forward_passes: int,
    update_passes: int,
) -> dict[str, float]:
    """FLOPs of a step's phases. prompt_lens int[B] (with vision tokens), response_lens int[B * n] (a group's rows
    adjacent), patches: vision patches of all B prompts. The rollout prefills each prompt once and decodes n
    responses after it; a training pass runs each prompt once per group (`shared_prompt`) or once per response;
    `forward_passes` log-prob passes (old, reference) cost 1x, `update_passes` (ppo_epochs) cost 3x (backward)."""
    prompts = np.asarray(prompt_lens, np.float64)
    responses = np.asarray(response_lens, np.float64)
    context = np.repeat(prompts, n)
    rollout = forward_flops(mf, prompts, 0, patches) + forward_flops(mf, responses, context)
    if shared_prompt:
        one = forward_flops(mf, prompts, 0, patches) + forward_flops(mf, responses, context)
    else:
        one = forward_flops(mf, context + responses, 0, patches * n)
    return {"rollout": rollout, "log_probs": forward_passes * one, "update": 3 * update_passes * one}


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of one device of `device_kind` (jax's `device.device_kind`) in `dtype`; None if unknown."""
    for name, table in PEAK_FLOPS.items():
        if name.lower() in device_kind.lower():
            return table.get(dtype, table.get("bfloat16"))
    return None


def mfu(flops: float, seconds: float, devices: int, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1] (None when the peak is unknown)."""
    if not peak or seconds <= 0:
        return None
    return flops / (seconds * devices * peak)
