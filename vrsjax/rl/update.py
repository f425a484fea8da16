"""The jitted training passes: response log-probs (old / reference) and the actor's micro-batch gradients.

`params` are what trains (the whole model, or only its `LoRAParam`s) and `frozen` the rest (an empty State in full
fine-tuning); gradients are taken with respect to `params` only.

Gradients are accumulated exactly: each micro-batch's loss is aggregated with the mini-batch's token and sequence
counts (`num_tokens`, `num_seqs`), so the sum of micro-batch gradients equals the gradient of the mini-batch loss
(token-mean over the whole mini-batch, as verl and EasyR1 define it), whatever the micro-batch split.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from vrsjax.models.qwen2_5_vl.text import causal_padding_mask
from vrsjax.rl import grpo, shared_prompt


def _hidden_states(model, inputs, remat: bool) -> jax.Array:
    """`model.hidden_states(inputs)`, with each decoder layer rematerialised in the backward pass when `remat`
    (worker.actor.model.enable_gradient_checkpointing): only the layer inputs are kept, the rest is recomputed."""
    if not remat:
        return model.hidden_states(inputs)
    text = model.model.language_model
    cos, sin = text.rotary(inputs.position_ids)
    mask = causal_padding_mask(inputs.attention_mask)
    layer_fn = nnx.remat(lambda layer, x, cos, sin, mask: layer(x, cos, sin, mask)[0])
    x = model.embed(inputs)
    for layer in text.layers:
        x = layer_fn(layer, x, cos, sin, mask)
    return text.norm(x)


def _response_logits(
    graphdef, params, frozen, inputs, prompt_len: int, temperature: float, remat: bool = False
) -> jax.Array:
    """float32[N, T, V] logits / temperature at the positions that predict each response token."""
    model = nnx.merge(graphdef, params, frozen)
    hidden = _hidden_states(model, inputs, remat)[:, prompt_len - 1 : -1]
    return model.logits(hidden).astype(jnp.float32) / temperature


@functools.partial(jax.jit, static_argnames=("graphdef", "prompt_len", "temperature"))
def log_probs(graphdef, params, frozen, inputs, tokens, *, prompt_len: int, temperature: float):
    """-> (float32[N, T] log-probs of `tokens`, float32[N, T] entropy), no gradient."""
    z = _response_logits(graphdef, params, frozen, inputs, prompt_len, temperature)
    return grpo.token_log_probs(z, tokens), grpo.entropy_from_logits(z)


@functools.partial(jax.jit, static_argnames=("graphdef", "prompt_len", "temperature", "loss_config", "remat"))
def micro_grads(
    graphdef,
    params,
    frozen,
    inputs,
    tokens,
    mask,
    old_logp,
    ref_logp,
    advantages,
    num_tokens,
    num_seqs,
    *,
    prompt_len: int,
    temperature: float,
    loss_config: grpo.LossConfig,
    remat: bool = False,
):
    """-> (grads like params, loss, metrics) of one micro-batch's share of the mini-batch loss."""

    def loss_fn(p):
        z = _response_logits(graphdef, p, frozen, inputs, prompt_len, temperature, remat)
        logp = grpo.token_log_probs(z, tokens)
        entropy = grpo.entropy_from_logits(z)
        return grpo.actor_loss(
            loss_config,
            logp,
            old_logp,
            advantages,
            mask,
            ref_logp=ref_logp,
            entropy=entropy,
            num_tokens=num_tokens,
            num_seqs=num_seqs,
        )

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, loss, metrics


@functools.partial(jax.jit, static_argnames=("graphdef", "temperature"))
def shared_log_probs(graphdef, params, frozen, prompts, tokens, mask, next_pos, *, temperature: float):
    """Shared-prompt pass: int[B, n, T] -> (float32[B, n, T] log-probs, entropy), no gradient."""
    z = shared_prompt.response_logits(nnx.merge(graphdef, params, frozen), prompts, tokens, mask, next_pos, temperature)
    return grpo.token_log_probs(z, tokens), grpo.entropy_from_logits(z)


@functools.partial(jax.jit, static_argnames=("graphdef", "temperature", "loss_config", "remat"))
def shared_micro_grads(
    graphdef,
    params,
    frozen,
    prompts,
    tokens,
    mask,
    next_pos,
    old_logp,
    ref_logp,
    advantages,
    num_tokens,
    num_seqs,
    *,
    temperature: float,
    loss_config: grpo.LossConfig,
    remat: bool = False,
):
    """`micro_grads` for whole groups ([B, n, T] responses of B prompts), each prompt run once."""
    b, n, t = tokens.shape

    def loss_fn(p):
        model = nnx.merge(graphdef, p, frozen)
        z = shared_prompt.response_logits(model, prompts, tokens, mask, next_pos, temperature, remat=remat)
        flat = lambda a: a.reshape(b * n, t)  # noqa: E731
        logp, entropy = flat(grpo.token_log_probs(z, tokens)), flat(grpo.entropy_from_logits(z))
        return grpo.actor_loss(
            loss_config,
            logp,
            old_logp,
            advantages,
            flat(mask),
            ref_logp=ref_logp,
            entropy=entropy,
            num_tokens=num_tokens,
            num_seqs=num_seqs,
        )

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, loss, metrics


def apply_grads(params, opt_state, grads, *, optimizer: optax.GradientTransformation):
    """One optimizer step, skipped (params and state unchanged) when the gradient is not finite.

    Parameters and optimizer state come back with exactly the shardings they went in with (explicit
    `out_shardings`): left to XLA, a spec such as P("fsdp", None) comes back as P("fsdp"), which is the same
    layout under another name and makes every jitted pass that takes the parameters compile a second time."""
    step, params, opt_state = optimizer_step(params, opt_state, optimizer=optimizer)
    return step(params, opt_state, grads)


def optimizer_step(params, opt_state, *, optimizer: optax.GradientTransformation):
    """The jitted step `apply_grads` runs, `(params, opt_state, grads) -> (params, opt_state, norm, finite)`, and
    params/opt_state placed for it (leaves on one device moved onto the mesh); for `.lower()` or timing loops."""
    leaves, treedef = jax.tree.flatten((params, opt_state))
    shardings = [getattr(leaf, "sharding", None) for leaf in leaves]
    meshes = [s.mesh for s in shardings if isinstance(s, NamedSharding)]
    # leaves on one device (e.g. AdamW's step count) are kept replicated over the mesh, so the next call matches
    on_one = lambda s: s is None or isinstance(s, SingleDeviceSharding)  # noqa: E731
    shardings = tuple(NamedSharding(meshes[0], P()) if on_one(s) else s for s in shardings) if meshes else None
    if shardings is not None:  # put one-device leaves on the mesh now, so every call has the same input shardings
        leaves = [
            jax.device_put(x, s) if on_one(getattr(x, "sharding", None)) else x
            for x, s in zip(leaves, shardings, strict=True)
        ]
        params, opt_state = jax.tree.unflatten(treedef, leaves)
    return _jitted_apply(optimizer, treedef, shardings), params, opt_state


@functools.cache
def _jitted_apply(optimizer: optax.GradientTransformation, treedef, shardings: tuple | None):
    """One compiled optimizer step per optimizer, state structure and input shardings."""
    out = None if shardings is None else (*jax.tree.unflatten(treedef, list(shardings)), None, None)
    return jax.jit(functools.partial(_apply_grads, optimizer=optimizer), donate_argnums=(0, 1), out_shardings=out)


def _apply_grads(params, opt_state, grads, *, optimizer: optax.GradientTransformation):
    norm = optax.tree.norm(grads)
    finite = jnp.isfinite(norm)
    grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, new_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
    return keep(new_params, params), keep(new_state, opt_state), norm, finite


def make_optimizer(optim, max_grad_norm: float, total_steps: int) -> optax.GradientTransformation:
    """EasyR1's AdamW: constant or cosine after linear warmup, decoupled weight decay, global-norm clipping."""
    warmup = int(optim.lr_warmup_steps_ratio * total_steps)
    if optim.warmup_style == "cosine":
        floor = (optim.min_lr_ratio or 0.0) * optim.lr
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, optim.lr, max(warmup, 1), max(total_steps, warmup + 1), end_value=floor
        )
    else:
        schedule = (
            optax.join_schedules(
                [optax.linear_schedule(0.0, optim.lr, max(warmup, 1)), optax.constant_schedule(optim.lr)],
                [max(warmup, 1)],
            )
            if warmup
            else optax.constant_schedule(optim.lr)
        )
    b1, b2 = optim.betas
    return optax.chain(
        optax.clip_by_global_norm(max_grad_norm), optax.adamw(schedule, b1=b1, b2=b2, weight_decay=optim.weight_decay)
    )
