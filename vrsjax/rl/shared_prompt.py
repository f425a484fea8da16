"""Shared-prompt training passes: a group's prompt is run once, its n responses attend to its keys and values.

A Veason-R1 prompt is thousands of vision tokens and a response about a hundred, so running prompt+response per
sequence spends most training FLOPs recomputing the same prompt n times. Here the prompt goes through the decoder
once per group (`[B, L]`), the responses (`[B, n, T]`) go through with `shared_prefix_attention` over the prompt's
per-layer keys/values plus their own causal keys, and the first response token is predicted from the prompt's last
hidden state. The math is the per-sequence forward's, so log-probs, losses and gradients (which flow from all n
responses into the shared prompt activations) are equal to the naive path.

Nothing here knows about devices: rows are split by how the trainer lays them out. With fewer groups than batch
shards it passes each prompt k times with n / k responses per row (`GRPOTrainer._groups`), the rows sharded over
data x fsdp, so every device runs its own copy of the prompt for its own responses and the parameter gradients of
the copies add up to the single prompt's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vrsjax.layers.attention import shared_prefix_attention
from vrsjax.models.qwen2_5_vl.inputs import ModelInputs
from vrsjax.models.qwen2_5_vl.text import causal_padding_mask


def response_logits(
    model,
    prompts: ModelInputs,
    tokens: jax.Array,
    mask: jax.Array,
    next_pos: jax.Array,
    temperature: float,
    *,
    remat: bool = False,
) -> jax.Array:
    """prompts: ModelInputs [B, L]; tokens, mask: int[B, n, T]; next_pos: int[B] -> float32[B, n, T, V] logits /
    temperature at the positions that predict each response token. `remat` recomputes each layer in the backward
    pass (gradient checkpointing), keeping only layer inputs and the prompt's keys and values."""
    text = model.model.language_model
    b, n, t = tokens.shape
    x = model.embed(prompts)
    cos, sin = text.rotary(prompts.position_ids)
    prompt_mask = prompts.attention_mask > 0
    causal = causal_padding_mask(prompts.attention_mask)
    prompt_layer = nnx.remat(lambda layer, *a: layer(*a)) if remat else (lambda layer, *a: layer(*a))
    response_layer = nnx.remat(_response_layer) if remat else _response_layer
    kvs = []
    for layer in text.layers:
        x, kv = prompt_layer(layer, x, cos, sin, causal)
        kvs.append(kv)
    first = text.norm(x)[:, -1]  # [B, D]: predicts response token 0 (the prompt is left-padded)

    r = text.embed_tokens(tokens[:, :, : t - 1].reshape(b * n, t - 1))
    pos = jnp.broadcast_to(next_pos[:, None, None] + jnp.arange(t - 1), (b, n, t - 1)).reshape(1, b * n, t - 1)
    cos_r, sin_r = text.rotary(jnp.broadcast_to(pos, (3, b * n, t - 1)))
    own_mask = jnp.tril(jnp.ones((t - 1, t - 1), bool)) & (mask[:, :, None, : t - 1] > 0)
    for layer, (pk, pv) in zip(text.layers, kvs, strict=True):
        r = response_layer(layer, r, cos_r, sin_r, pk, pv, prompt_mask, own_mask)
    rest = text.norm(r).reshape(b, n, t - 1, -1)
    hidden = jnp.concatenate([jnp.broadcast_to(first[:, None, None], (b, n, 1, first.shape[-1])), rest], axis=2)
    return model.logits(hidden).astype(jnp.float32) / temperature


def _response_layer(layer, r, cos_r, sin_r, pk, pv, prompt_mask, own_mask):
    """One decoder layer over the responses [B * n, T - 1, D] of B groups, attending to their prompt's keys."""
    b, n = own_mask.shape[:2]
    attn = layer.self_attn
    q, k, v = attn.project(layer.input_layernorm(r), cos_r, sin_r)
    split = lambda a: a.reshape(b, n, *a.shape[1:])  # noqa: E731
    o = shared_prefix_attention(split(q), pk, pv, prompt_mask, split(k), split(v), own_mask, scale=attn.head_dim**-0.5)
    r = r + attn.o_proj(o.reshape(*r.shape[:2], -1).astype(r.dtype))
    return r + layer.mlp(layer.post_attention_layernorm(r))
