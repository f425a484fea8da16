"""Qwen2.5-VL for conditional generation (HF `Qwen2_5_VLForConditionalGeneration`) in Flax NNX.

Module paths mirror HF's transformers-v5 names (`model.visual.blocks.0.attn.qkv`, `model.language_model.layers.0
.self_attn.q_proj`, `lm_head`), so conversion is a name table (`params.py`). `__call__` takes the HF arguments,
prepares positions and the vision layout on the host (`inputs.py`) and runs the jitted `forward`; code that jits
its own step (rollout, trainer) calls `prepare_inputs` and `forward` itself.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from vrsjax.layers.linear import Linear
from vrsjax.models.qwen2_5_vl.config import Qwen2_5_VLConfig
from vrsjax.models.qwen2_5_vl.inputs import ModelInputs, prepare_inputs
from vrsjax.models.qwen2_5_vl.text import Qwen2_5_VLTextModel
from vrsjax.models.qwen2_5_vl.vision import Qwen2_5_VisionTransformer


class Qwen2_5_VLModel(nnx.Module):
    def __init__(self, config: Qwen2_5_VLConfig, *, rngs: nnx.Rngs):
        kw = dict(
            implementation=config.attention,
            dtype=jnp.dtype(config.dtype),
            param_dtype=jnp.dtype(config.param_dtype),
            rngs=rngs,
        )
        self.visual = Qwen2_5_VisionTransformer(config.vision, **kw)
        self.language_model = Qwen2_5_VLTextModel(config.text, **kw)


class Qwen2_5_VLForConditionalGeneration(nnx.Module):
    def __init__(self, config: Qwen2_5_VLConfig, *, rngs: nnx.Rngs | None = None):
        rngs = rngs or nnx.Rngs(0)
        self.config = config
        self.model = Qwen2_5_VLModel(config, rngs=rngs)
        t = config.text
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else Linear(
                t.hidden_size,
                t.vocab_size,
                use_bias=False,
                axes=("vocab", "embed"),
                dtype=jnp.dtype(config.dtype),
                param_dtype=jnp.dtype(config.param_dtype),
                rngs=rngs,
            )
        )

    def embed(self, inputs: ModelInputs) -> jax.Array:
        """Token embeddings with the vision features in place of the pad tokens: float[B, L, D]."""
        x = self.model.language_model.embed_tokens(inputs.input_ids)
        if inputs.patches is None:
            return x
        src = inputs.vision_src
        if inputs.patches.ndim == 3:  # vision per row (`rows.py`): each row's tower runs where the row is placed
            features = jax.vmap(self.model.visual)(inputs.patches, inputs.layout).astype(x.dtype)
            picked = jnp.take_along_axis(features, jnp.maximum(src, 0)[..., None], axis=1)
            return jnp.where((src >= 0)[..., None], picked, x)
        features = self.model.visual(inputs.patches, inputs.layout).astype(x.dtype)
        return jnp.where((src >= 0)[..., None], features[jnp.maximum(src, 0)], x)

    def hidden_states(self, inputs: ModelInputs) -> jax.Array:
        """Final-norm hidden states float[B, L, D]."""
        return self.model.language_model(self.embed(inputs), inputs.position_ids, inputs.attention_mask)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """float[..., D] -> float[..., V] through the (possibly tied) output head."""
        if self.lm_head is None:
            return self.model.language_model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)

    def forward(self, inputs: ModelInputs) -> jax.Array:
        """Traceable forward: ModelInputs -> logits float[B, L, V]."""
        return self.logits(self.hidden_states(inputs))

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        pixel_values=None,
        image_grid_thw=None,
        pixel_values_videos=None,
        video_grid_thw=None,
        second_per_grid_ts=None,
        position_ids=None,
    ):
        """HF-style call (numpy or JAX arrays) -> logits float[B, L, V]; jitted per input bucket."""
        inputs = prepare_inputs(
            self.config,
            input_ids,
            attention_mask,
            pixel_values,
            image_grid_thw,
            pixel_values_videos,
            video_grid_thw,
            second_per_grid_ts,
            position_ids,
        )
        return _jitted_forward(self, inputs)

    def save_pretrained(self, out_dir: str | Path, **kwargs) -> Path:
        """Write HF safetensors + config.json that transformers loads; see `params.save_pretrained`."""
        from vrsjax.models.qwen2_5_vl import params

        return params.save_pretrained(self, out_dir, **kwargs)


@nnx.jit
def _jitted_forward(model: Qwen2_5_VLForConditionalGeneration, inputs: ModelInputs) -> jax.Array:
    return model.forward(inputs)
