"""The Qwen2.5-VL language model (HF `Qwen2_5_VLTextModel`): a Qwen2 decoder with M-RoPE.

GQA with q/k/v biases, no o_proj or MLP bias, RMSNorm before attention and MLP, a final RMSNorm. Positions come
in as `int[3, B, L]` (t, h, w rows) from `positions.get_rope_index`; the causal mask is combined with the padding
mask so left-padded rows never attend to padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vrsjax.layers.attention import attention
from vrsjax.layers.linear import Embed, Linear
from vrsjax.layers.norm import RMSNorm
from vrsjax.layers.rotary import apply_rotary, mrope_cos_sin
from vrsjax.models.qwen2_5_vl.config import TextConfig


class Qwen2_5_VLAttention(nnx.Module):
    def __init__(self, cfg: TextConfig, *, implementation: str, dtype, param_dtype, rngs: nnx.Rngs):
        hd, kv = cfg.head_dim, cfg.num_key_value_heads
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = Linear(
            cfg.hidden_size, cfg.num_attention_heads * hd, use_bias=True, axes=("heads", "embed"), **kw
        )
        self.k_proj = Linear(cfg.hidden_size, kv * hd, use_bias=True, axes=("kv_heads", "embed"), **kw)
        self.v_proj = Linear(cfg.hidden_size, kv * hd, use_bias=True, axes=("kv_heads", "embed"), **kw)
        self.o_proj = Linear(
            cfg.num_attention_heads * hd, cfg.hidden_size, use_bias=False, axes=("embed", "heads"), **kw
        )
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, kv, hd
        self.implementation = implementation

    def project(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x: float[B, L, D] -> rotated q float[B, L, H, Dh], rotated k and v float[B, L, K, Dh]."""
        b, length, _ = x.shape
        q = self.q_proj(x).reshape(b, length, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, length, self.num_kv_heads, self.head_dim)
        cos, sin = cos[:, :, None], sin[:, :, None]
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array):
        """x: float[B, L, D]; cos, sin: float[B, L, Dh]; mask: bool[B, L, L] -> (float[B, L, D], (k, v))."""
        q, k, v = self.project(x, cos, sin)
        o = attention(q, k, v, mask, scale=self.head_dim**-0.5, implementation=self.implementation)
        return self.o_proj(o.reshape(*x.shape[:2], -1)), (k, v)


class Qwen2MLP(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, axes=("mlp", "embed"), **kw)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, axes=("mlp", "embed"), **kw)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, axes=("embed", "mlp"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2_5_VLDecoderLayer(nnx.Module):
    def __init__(self, cfg: TextConfig, *, implementation: str, dtype, param_dtype, rngs: nnx.Rngs):
        self.self_attn = Qwen2_5_VLAttention(
            cfg, implementation=implementation, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.mlp = Qwen2MLP(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)

    def __call__(self, x, cos, sin, mask):
        """-> (float[B, L, D], this layer's rotated keys and values, for a KV cache)."""
        attn, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), kv


def causal_padding_mask(attention_mask: jax.Array) -> jax.Array:
    """int[B, L] (1 = token, 0 = padding) -> bool[B, L, L]: causal and only over real keys."""
    length = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((length, length), bool))
    return causal[None] & (attention_mask[:, None, :] > 0)


class Qwen2_5_VLTextModel(nnx.Module):
    def __init__(self, cfg: TextConfig, *, implementation: str, dtype, param_dtype, rngs: nnx.Rngs):
        self.config = cfg
        self.dtype = dtype
        self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List(
            [
                Qwen2_5_VLDecoderLayer(
                    cfg, implementation=implementation, dtype=dtype, param_dtype=param_dtype, rngs=rngs
                )
                for _ in range(cfg.num_hidden_layers)
            ]
        )
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=param_dtype)

    def __call__(
        self, inputs_embeds: jax.Array, position_ids: jax.Array, attention_mask: jax.Array, return_kv: bool = False
    ):
        """float[B, L, D], int[3, B, L], int[B, L] -> final hidden states float[B, L, D] (and the per-layer
        rotated (k, v) when `return_kv`, which prefill keeps as the prompt's KV cache)."""
        cos, sin = self.rotary(position_ids)
        mask = causal_padding_mask(attention_mask)
        x, kvs = inputs_embeds, []
        for layer in self.layers:
            x, kv = layer(x, cos, sin, mask)
            kvs.append(kv)
        return (self.norm(x), kvs) if return_kv else self.norm(x)

    def rotary(self, position_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        """int[3, B, L] -> M-RoPE cos, sin float[B, L, head_dim] in the compute dtype."""
        cfg = self.config
        return mrope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta, cfg.mrope_section, self.dtype)
