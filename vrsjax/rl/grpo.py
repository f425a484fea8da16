"""GRPO math as small pure functions, registered by name: group-normalised advantages, the k1/k2/k3 KL
estimators and their straight-through "+" variants, the clipped (dual-clip) PPO policy loss and its metrics, the
loss aggregation modes, token log-probs and entropy, and `actor_loss`, which combines them as verl's actor does.
Values and gradients follow verl's `verl/trainer/ppo/core_algos.py` (clamps, epsilons, masking, empty masks);
the Veason-R1 fork (symmetric clip, no dual clip, no log-ratio clamps, entropy bonus) is the "veason" preset of
`LossConfig`. Advantages are numpy on the host with float64 group statistics (equal scores give exactly 0); the
loss math runs in float32 whatever the input dtype, jitted with kinds, modes and clip bounds static, so it runs
compiled on its own and traces inline inside a caller's jit.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
MASK_EPS = 1e-8  # verl_F.masked_mean adds it to the count: an empty mask averages to 0, not NaN
_EXP_SAFE = 80.0  # exp(80) is finite in float32


def _f32(x: Any) -> Array:
    return jnp.asarray(x, jnp.float32)


def _lookup(table: dict[str, Any], name: str, what: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of {sorted(table)}")
    return table[name]


def _clamp(x: Array, lo: float, hi: float) -> Array:
    """torch.clamp with Python-number bounds (as verl calls it), including its gradient: 1 strictly inside (lo, hi),
    0 outside and at the bounds themselves (jnp.clip would give 1/2 at a bound, as torch does for tensor bounds)."""
    inside = (x > lo) & (x < hi)
    return jnp.where(inside, x, jax.lax.stop_gradient(jnp.clip(x, lo, hi)))


def _safe_div(num: Array, den: Array | float) -> Array:
    """num / den, and 0 where den == 0 (an empty mask), with finite gradients."""
    den = _f32(den)
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def masked_sum(values: Array, mask: Array, axis: int | None = None) -> Array:
    """float[...] -> sum(values * mask) over mask > 0; values outside the mask (even NaN or inf) never leak in."""
    mask = _f32(mask)
    return jnp.sum(jnp.where(mask > 0, _f32(values), 0.0) * mask, axis=axis)


def masked_mean(values: Array, mask: Array, axis: int | None = None) -> Array:
    """float[...] -> masked_sum / (count + 1e-8), as verl_F.masked_mean: an empty mask gives 0."""
    return masked_sum(values, mask, axis) / (jnp.sum(_f32(mask), axis=axis) + MASK_EPS)


# ---------------------------------------------------------------------------------------------------- advantages

ADVANTAGE_ESTIMATORS: dict[str, Callable[..., Array]] = {}


def register_advantage_estimator(name: str) -> Callable[[Callable[..., Array]], Callable[..., Array]]:
    """Decorator: makes `fn` available as `get_advantage_estimator(name)`."""

    def register(fn: Callable[..., Array]) -> Callable[..., Array]:
        if ADVANTAGE_ESTIMATORS.get(name, fn) is not fn:
            raise ValueError(f"advantage estimator {name!r} is already registered to {ADVANTAGE_ESTIMATORS[name]}")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return register


def get_advantage_estimator(name: str) -> Callable[..., Array]:
    return _lookup(ADVANTAGE_ESTIMATORS, name, "advantage estimator")


# Advantages are host functions in float64: scores are host data, and a group of equal scores must give exactly 0.
# In float32 the mean and std of equal non-round scores (8 x 1.6891074) are off by a rounding, and dividing that by
# std + 1e-6 turns it into advantages of -0.19 (verl 0.9.1 does so too, from 5 equal scores on): a group without
# signal would push the policy at random. float64 sums of float32 scores are exact, so equal scores give mean == s.


@register_advantage_estimator("grpo")
def group_advantages(scores: Any, group_ids: Any, eps: float = 1e-6, norm_by_std: bool = True) -> np.ndarray:
    """float[B] scores (or float[B, T] token rewards, summed over T as verl does), any[B] group ids -> float32[B]:
    (s - mean_g) / (std_g + eps) with the unbiased (N - 1) std, as verl's compute_grpo_outcome_advantage.

    A size-1 group uses mean 0 and std 1 (A = s / (1 + eps)). Statistics are float64, so a group of equal scores
    gets exactly A = 0 (verl's float32 does not from 5 equal scores on). norm_by_std=False is Dr.GRPO:
    A = s - mean_g. No gradient: a host function (verl runs it under no_grad). Broadcast with `token_advantages`.
    """
    s, gid = _host_scores(scores, group_ids, "group_advantages")
    count, mean, var = _group_stats(s, gid)
    mean = np.where(count == 1, 0.0, mean)
    if not norm_by_std:
        return (s - mean).astype(np.float32)
    std = np.where(count == 1, 1.0, np.sqrt(var))
    return ((s - mean) / (std + eps)).astype(np.float32)


@register_advantage_estimator("rloo")
def rloo_advantages(scores: Any, group_ids: Any, **_ignored: Any) -> np.ndarray:
    """float[B] (or float[B, T]) scores, any[B] group ids -> float32[B]: RLOO (arXiv 2402.14740) as verl's
    compute_rloo_outcome_advantage: s minus the mean of the other N - 1 scores of its group, i.e.
    (s - mean_g) * N / (N - 1); a size-1 group keeps its score. float64 statistics: equal scores give exactly 0.
    Takes (and ignores) norm_by_std, so the trainer calls every estimator alike."""
    s, gid = _host_scores(scores, group_ids, "rloo_advantages")
    count, mean, _ = _group_stats(s, gid)
    loo = (s - mean) * count / np.maximum(count - 1.0, 1.0)
    return np.where(count > 1, loo, s).astype(np.float32)


def _host_scores(scores: Any, group_ids: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """float64[B] scores (token rewards summed) and int[B] dense group ids, checked to have one id per score."""
    s = np.asarray(jax.device_get(scores), np.float64)
    s = s.sum(axis=-1) if s.ndim == 2 else s.reshape(-1)
    gid = np.unique(np.asarray(jax.device_get(group_ids)).reshape(-1), return_inverse=True)[1].reshape(-1)
    if gid.shape != s.shape:
        raise ValueError(f"{name}: {s.shape[0]} scores but {gid.shape[0]} group ids")
    return s, gid


def _group_stats(s: np.ndarray, gid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64[B] -> each row's group size, mean and unbiased variance (torch.std's N - 1; 0 for size 1)."""
    count = np.bincount(gid)[gid].astype(np.float64)
    mean = np.bincount(gid, weights=s)[gid] / count
    var = np.bincount(gid, weights=np.square(s - mean))[gid] / np.maximum(count - 1.0, 1.0)
    return count, mean, var


def token_advantages(advantages: Array, mask: Array) -> Array:
    """float[B], float[B, T] -> float[B, T]: each response's advantage on its tokens (verl: A[:, None] * mask)."""
    return _f32(advantages)[:, None] * _f32(mask)


# ---------------------------------------------------------------------------------------------------- KL


def _k1(logp: Array, ref: Array, log_ratio_clip: float | None) -> Array:
    return logp - ref


def _abs(logp: Array, ref: Array, log_ratio_clip: float | None) -> Array:
    x = logp - ref
    return jnp.sign(x) * x  # |x| with torch's gradient sign(x), 0 at x == 0 (jnp.abs gives 1 there)


def _k2(logp: Array, ref: Array, log_ratio_clip: float | None) -> Array:
    return 0.5 * jnp.square(logp - ref)


def _k3(logp: Array, ref: Array, log_ratio_clip: float | None) -> Array:
    d = ref - logp
    if log_ratio_clip is None:
        # The Veason fork has no clamp on d. This guard only keeps exp finite (no NaN gradient): kld passes the
        # +-10 clamp once |d| > ~12, so value and gradient are unchanged for every input the fork keeps finite.
        d = jnp.minimum(d, _EXP_SAFE)
    else:
        d = _clamp(d, -log_ratio_clip, log_ratio_clip)
    return _clamp(jnp.exp(d) - d - 1.0, -10.0, 10.0)


KL_ESTIMATORS: dict[str, Callable[[Array, Array, float | None], Array]] = {
    "k1": _k1,
    "kl": _k1,
    "abs": _abs,
    "k2": _k2,
    "mse": _k2,
    "k3": _k3,
    "low_var_kl": _k3,
}


@functools.partial(jax.jit, static_argnames=("kind", "log_ratio_clip"))
def kl_penalty(logp: Array, ref_logp: Array, kind: str = "low_var_kl", *, log_ratio_clip: float | None = 20.0) -> Array:
    """float[B, T], float[B, T] -> float[B, T]: per-token estimate of KL(pi || pi_ref).

    k1/kl: logp - ref; abs: |logp - ref|; k2/mse: 0.5 (logp - ref)^2; k3/low_var_kl: d = clamp(ref - logp, -20, 20),
    clamp(exp(d) - d - 1, -10, 10). A trailing "+" (k3+, k1+, abs+, ...) keeps the value and takes k2's gradient
    (straight-through, verl PR #2953). log_ratio_clip=None drops the +-20 clamp on d, as the Veason fork does.
    """
    base = kind[:-1] if kind.endswith("+") else kind
    estimator = _lookup(KL_ESTIMATORS, base, "KL estimator")
    logp, ref = _f32(logp), _f32(ref_logp)
    value = estimator(logp, ref, log_ratio_clip)
    if base == kind:
        return value
    k2 = _k2(logp, ref, None)
    return k2 - jax.lax.stop_gradient(k2) + jax.lax.stop_gradient(value)


# ---------------------------------------------------------------------------------------------------- aggregation


def _seq_mean(seq_losses: Array, mask: Array, num_seqs: Array | float | None) -> Array:
    """float[B] -> mean over sequences with at least one token (or over `num_seqs`, the global count)."""
    present = (jnp.sum(mask, axis=-1) > 0).astype(jnp.float32)
    return _safe_div(masked_sum(seq_losses, present), jnp.sum(present) if num_seqs is None else num_seqs)


def _token_mean(loss_mat: Array, mask: Array, num_tokens: Any, num_seqs: Any, horizon: Any) -> Array:
    return _safe_div(masked_sum(loss_mat, mask), jnp.sum(mask) if num_tokens is None else num_tokens)


def _token_sum(loss_mat: Array, mask: Array, num_tokens: Any, num_seqs: Any, horizon: Any) -> Array:
    return masked_sum(loss_mat, mask)


def _seq_mean_token_sum(loss_mat: Array, mask: Array, num_tokens: Any, num_seqs: Any, horizon: Any) -> Array:
    return _seq_mean(masked_sum(loss_mat, mask, axis=-1), mask, num_seqs)


def _seq_mean_token_mean(loss_mat: Array, mask: Array, num_tokens: Any, num_seqs: Any, horizon: Any) -> Array:
    per_seq = masked_sum(loss_mat, mask, axis=-1) / (jnp.sum(mask, axis=-1) + MASK_EPS)
    return _seq_mean(per_seq, mask, num_seqs)


def _seq_mean_token_sum_norm(loss_mat: Array, mask: Array, num_tokens: Any, num_seqs: Any, horizon: Any) -> Array:
    seq_mean = _seq_mean_token_sum(loss_mat, mask, num_tokens, num_seqs, horizon)
    return seq_mean / (mask.shape[-1] if horizon is None else horizon)


AGG_MODES: dict[str, Callable[..., Array]] = {
    "token-mean": _token_mean,
    "token-sum": _token_sum,
    "seq-mean-token-sum": _seq_mean_token_sum,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
}


@functools.partial(jax.jit, static_argnames="mode")
def aggregate_loss(
    loss_mat: Array,
    mask: Array,
    mode: str = "token-mean",
    *,
    num_tokens: Array | float | None = None,
    num_seqs: Array | float | None = None,
    horizon: float | None = None,
) -> Array:
    """float[B, T] losses, float[B, T] mask -> float[]: verl's agg_loss.

    token-mean: sum(L m) / num_tokens; token-sum: sum(L m); seq-mean-token-sum: mean over non-empty sequences of
    sum_t(L m); seq-mean-token-mean: the same mean of sum_t(L m) / (n_t + 1e-8); seq-mean-token-sum-norm:
    seq-mean-token-sum / horizon (verl's loss_scale_factor, default T). num_tokens and num_seqs default to this
    batch's counts; pass the mini-batch totals to make micro-batch losses sum exactly to the mini-batch loss.
    An empty mask gives 0.
    """
    aggregate = _lookup(AGG_MODES, mode, "loss aggregation mode")
    return aggregate(_f32(loss_mat), _f32(mask), num_tokens, num_seqs, horizon)


# ---------------------------------------------------------------------------------------------------- policy loss


@functools.partial(jax.jit, static_argnames=("clip_low", "clip_high", "clip_c", "agg_mode", "log_ratio_clip"))
def policy_loss(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = 3.0,
    agg_mode: str = "token-mean",
    *,
    log_ratio_clip: float | None = 20.0,
    num_tokens: Array | float | None = None,
    num_seqs: Array | float | None = None,
    horizon: float | None = None,
) -> tuple[Array, dict[str, Array]]:
    """float[B, T] x3 (advantages may be float[B]), float[B, T] mask -> (float[], metrics): verl's vanilla loss.

    r = exp(clamp(logp - old, -20, 20)); Lc = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)); for A < 0 the
    dual clip takes min(Lc, -A clip_c). clip_c=None: no dual clip; log_ratio_clip=None: no clamp (Veason fork).
    Metrics (masked means): clipfrac (clipped loss > unclipped), ppo_kl (mean of -log r), clipfrac_lower (dual
    clip active). Masked-out tokens get no loss and no gradient, even when their inputs are inf or NaN.
    """
    if clip_c is not None and not clip_c > 1.0:
        raise ValueError(f"policy_loss: dual-clip bound clip_c must be > 1 (or None to disable), got {clip_c}")
    mask = _f32(mask)
    valid = mask > 0
    adv = _f32(advantages)
    adv = jnp.where(valid, adv[:, None] if adv.ndim == mask.ndim - 1 else adv, 0.0)
    log_ratio = jnp.where(valid, _f32(logp) - _f32(old_logp), 0.0)
    if log_ratio_clip is not None:
        log_ratio = _clamp(log_ratio, -log_ratio_clip, log_ratio_clip)
    ratio = jnp.exp(log_ratio)
    loss1 = -adv * ratio
    loss2 = -adv * _clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = jnp.maximum(loss1, loss2)
    metrics = {"clipfrac": masked_mean(loss2 > loss1, mask), "ppo_kl": masked_mean(-log_ratio, mask)}
    if clip_c is None:
        loss_mat, metrics["clipfrac_lower"] = clipped, jnp.zeros((), jnp.float32)
    else:
        loss3 = -adv * clip_c
        negative = adv < 0
        loss_mat = jnp.where(negative, jnp.minimum(loss3, clipped), clipped)
        metrics["clipfrac_lower"] = masked_mean((clipped > loss3) & negative, mask)
    loss = aggregate_loss(loss_mat, mask, agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, horizon=horizon)
    return loss, jax.lax.stop_gradient(metrics)


# ---------------------------------------------------------------------------------------------------- logits


def scale_logits(logits: Array, temperature: float) -> Array:
    """float[..., V] -> float32[..., V]: logits / temperature, applied (as in verl) before log-softmax and entropy."""
    if isinstance(temperature, int | float) and temperature <= 0:
        raise ValueError(f"scale_logits: temperature must be > 0 (greedy decoding has no log-probs), got {temperature}")
    return _f32(logits) / temperature


@jax.jit
def token_log_probs(logits: Array, tokens: Array) -> Array:
    """float[..., V], int[...] -> float32[...]: log_softmax(logits) at each token = z[token] - logsumexp(z)."""
    z = _f32(logits)
    picked = jnp.take_along_axis(z, jnp.asarray(tokens)[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(z, axis=-1)


@jax.jit
def entropy_from_logits(logits: Array) -> Array:
    """float[..., V] -> float32[...]: H = logsumexp(z) - sum(softmax(z) z)."""
    z = _f32(logits)
    return jax.nn.logsumexp(z, axis=-1) - jnp.sum(jax.nn.softmax(z, axis=-1) * z, axis=-1)


# ---------------------------------------------------------------------------------------------------- actor loss


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The actor loss of one framework; `LOSS_PRESETS` holds verl's defaults and the Veason-R1 fork's."""

    clip_low: float = 0.2
    clip_high: float = 0.2
    clip_c: float | None = 3.0  # dual-clip bound for A < 0; None: no dual clip
    log_ratio_clip: float | None = 20.0  # clamp on log(pi / pi_old) before exp; None: unclamped
    agg_mode: str = "token-mean"  # for the policy, entropy and KL terms alike
    entropy_coeff: float = 0.0  # loss -= entropy_coeff * agg(H)
    kl_coef: float = 0.0  # loss += kl_coef * agg(KL(pi || ref)); 0: no KL term
    kl_kind: str = "low_var_kl"
    kl_log_ratio_clip: float | None = 20.0  # the +-20 clamp inside k3; None: the fork's +-10-only k3

    def __post_init__(self) -> None:
        if not (0.0 <= self.clip_low < 1.0 and self.clip_high >= 0.0):
            raise ValueError(
                f"LossConfig: need 0 <= clip_low < 1 and clip_high >= 0, got {self.clip_low}, {self.clip_high}"
            )
        if self.clip_c is not None and not self.clip_c > 1.0:
            raise ValueError(f"LossConfig: clip_c must be > 1 or None, got {self.clip_c}")
        _lookup(AGG_MODES, self.agg_mode, "loss aggregation mode")
        _lookup(KL_ESTIMATORS, self.kl_kind.removesuffix("+"), "KL estimator")


LOSS_PRESETS: dict[str, LossConfig] = {
    # verl ActorConfig defaults: clip 0.2/0.2, dual clip 3.0, no entropy bonus, KL loss off.
    "verl": LossConfig(),
    # Veason-R1 (a fork of early-2025 EasyR1, whose entropy_coeff default was 1e-3): symmetric clip, no dual clip,
    # no log-ratio clamps, token-mean; its training scripts use the k3 KL loss with coefficient 5e-3.
    "veason": LossConfig(clip_c=None, log_ratio_clip=None, entropy_coeff=1e-3, kl_coef=5e-3, kl_log_ratio_clip=None),
}


def get_loss_config(name: str, **overrides: Any) -> LossConfig:
    """A preset from `LOSS_PRESETS` with fields replaced by `overrides`."""
    return dataclasses.replace(_lookup(LOSS_PRESETS, name, "loss preset"), **overrides)


def actor_loss(
    config: LossConfig,
    logp: Array,
    old_logp: Array,
    advantages: Array,
    mask: Array,
    *,
    ref_logp: Array | None = None,
    entropy: Array | None = None,
    num_tokens: Array | float | None = None,
    num_seqs: Array | float | None = None,
    horizon: float | None = None,
) -> tuple[Array, dict[str, Array]]:
    """float[B, T] inputs -> (float[], metrics): policy loss - entropy_coeff * agg(H) + kl_coef * agg(KL), as the
    actor update of verl and of the Veason fork. `entropy` is float[B, T] from `entropy_from_logits`."""
    agg = functools.partial(
        aggregate_loss, mask=mask, mode=config.agg_mode, num_tokens=num_tokens, num_seqs=num_seqs, horizon=horizon
    )
    loss, metrics = policy_loss(
        logp,
        old_logp,
        advantages,
        mask,
        config.clip_low,
        config.clip_high,
        config.clip_c,
        config.agg_mode,
        log_ratio_clip=config.log_ratio_clip,
        num_tokens=num_tokens,
        num_seqs=num_seqs,
        horizon=horizon,
    )
    metrics["pg_loss"] = loss
    if config.entropy_coeff and entropy is None:
        raise ValueError(f"actor_loss: entropy_coeff={config.entropy_coeff} needs entropy=float[B, T]")
    if entropy is not None:
        metrics["entropy"] = agg(entropy)
        if config.entropy_coeff:
            loss = loss - metrics["entropy"] * config.entropy_coeff
    if config.kl_coef:
        if ref_logp is None:
            raise ValueError(f"actor_loss: kl_coef={config.kl_coef} needs ref_logp=float[B, T]")
        kld = kl_penalty(logp, ref_logp, config.kl_kind, log_ratio_clip=config.kl_log_ratio_clip)
        metrics["kl_loss"] = agg(kld)
        loss = loss + metrics["kl_loss"] * config.kl_coef
    return loss, jax.lax.stop_gradient(metrics)
