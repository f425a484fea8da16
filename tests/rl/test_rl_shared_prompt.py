"""The shared-prompt training pass gives the per-sequence path's log-probs, loss and gradients (float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vrsjax.models import qwen2_5_vl
from vrsjax.processing import Processor
from vrsjax.rl import grpo
from vrsjax.rl.sequences import prompt_data, sequence_inputs
from vrsjax.rl.update import log_probs, micro_grads, shared_log_probs, shared_micro_grads
from vrsjax.testing import write_tiny_checkpoint

B, N, T = 2, 3, 7


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("shared") / "tiny", seed=2, tie_word_embeddings=False)
    proc = Processor.from_pretrained(path)
    model = qwen2_5_vl.from_pretrained(path)
    rng = np.random.default_rng(0)
    prompts = []
    for i, count in enumerate((2, 3)):  # prompts of different lengths (left padding in the shared pass)
        frames = [rng.integers(0, 255, (56, 84), np.uint8)[..., None].repeat(3, -1) for _ in range(count)]
        text = "<|im_start|>user\n" + "<|vision_start|><|image_pad|><|vision_end|>" * count + "a" * (i + 1)
        prompts.append(prompt_data(model.config, proc(text=[text + "<|im_end|>\n"], images=frames)))
    tokens = rng.integers(0, 290, (B * N, T)).astype(np.int32)
    mask = (np.arange(T)[None] < rng.integers(1, T + 1, (B * N, 1))).astype(np.int32)
    return model, prompts, tokens, mask


def both_paths(setup):
    model, prompts, tokens, mask = setup
    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    rows = np.repeat(np.arange(B), N)
    naive = sequence_inputs(model.config, prompts, rows, tokens, mask)
    shared = sequence_inputs(model.config, prompts, np.arange(B), np.zeros((B, 0), np.int32), np.zeros((B, 0)))
    next_pos = np.array([p.next_pos for p in prompts], np.int32)
    return graphdef, params, frozen, naive, shared, next_pos


def test_log_probs_equal(setup):
    model, prompts, tokens, mask = setup
    graphdef, params, frozen, naive, shared, next_pos = both_paths(setup)
    want, want_h = log_probs(
        graphdef, params, frozen, naive, tokens, prompt_len=naive.input_ids.shape[1] - T, temperature=0.8
    )
    got, got_h = shared_log_probs(
        graphdef, params, frozen, shared, tokens.reshape(B, N, T), mask.reshape(B, N, T), next_pos, temperature=0.8
    )
    valid = mask > 0
    assert np.abs(np.asarray(got).reshape(B * N, T) - np.asarray(want))[valid].max() <= 1e-5
    assert np.abs(np.asarray(got_h).reshape(B * N, T) - np.asarray(want_h))[valid].max() <= 1e-5


def test_loss_and_gradients_equal(setup):
    model, prompts, tokens, mask = setup
    graphdef, params, frozen, naive, shared, next_pos = both_paths(setup)
    rng = np.random.default_rng(3)
    old = jnp.asarray(rng.normal(-5, 0.3, (B * N, T)), jnp.float32)
    adv = jnp.asarray(rng.normal(size=B * N), jnp.float32)
    cfg = grpo.LossConfig(entropy_coeff=1e-3, kl_coef=5e-3)
    counts = float(mask.sum()), float(B * N)
    g1, l1, _ = micro_grads(
        graphdef,
        params,
        frozen,
        naive,
        tokens,
        mask,
        old,
        old - 0.2,
        adv,
        *counts,
        prompt_len=naive.input_ids.shape[1] - T,
        temperature=1.0,
        loss_config=cfg,
    )
    g2, l2, _ = shared_micro_grads(
        graphdef,
        params,
        frozen,
        shared,
        tokens.reshape(B, N, T),
        mask.reshape(B, N, T),
        next_pos,
        old,
        old - 0.2,
        adv,
        *counts,
        temperature=1.0,
        loss_config=cfg,
    )
    assert abs(float(l1) - float(l2)) <= 1e-5
    diffs = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), g1, g2)
    assert max(jax.tree.leaves(diffs)) <= 1e-5
    assert max(jax.tree.leaves(jax.tree.map(lambda a: float(jnp.abs(a).max()), g1))) > 1e-4  # not trivially zero
