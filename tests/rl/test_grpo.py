"""vrsjax.rl.grpo against formulas written in numpy (float64) from verl's verl/trainer/ppo/core_algos.py and
verl/utils/torch_functional.py, with analytic gradients (torch semantics: clamp with number bounds gives 0 at its
bounds, max/min split it at ties), plus hand-derived edge cases: size-1 groups, equal scores, empty masks, dual clip,
clip fractions, log-ratio and k3 overflow clamps, the straight-through "+" KL variants and the Veason-fork preset.
"""

from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrsjax.rl import grpo

RTOL, ATOL = 1e-6, 1e-5
AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def assert_close(got, want, rtol=RTOL, atol=ATOL):
    got = np.asarray(got, np.float64)
    assert np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, np.asarray(want, np.float64), rtol=rtol, atol=atol)


def f32(x):
    """Inputs are rounded to float32 once, so the float64 references see exactly what JAX sees."""
    return np.asarray(x, np.float32).astype(np.float64)


# ------------------------------------------------------------------------------------ references (numpy, float64)


def ref_grpo(scores, index, eps=1e-6, norm_by_std=True):
    """compute_grpo_outcome_advantage: per uid, size 1 -> (0, 1), else (mean, torch.std unbiased)."""
    groups = defaultdict(list)
    for s, i in zip(scores, index, strict=True):
        groups[i].append(s)
    stats = {i: (0.0, 1.0) if len(v) == 1 else (np.mean(v), np.std(v, ddof=1)) for i, v in groups.items()}
    mean = np.array([stats[i][0] for i in index])
    std = np.array([stats[i][1] for i in index])
    return (scores - mean) / (std + eps) if norm_by_std else scores - mean


def ref_kl(logp, ref, kind, clip=20.0):
    """kl_penalty_forward and d value / d logp."""
    x = logp - ref
    if kind in ("k1", "kl"):
        return x, np.ones_like(x)
    if kind == "abs":
        return np.abs(x), np.sign(x)
    if kind in ("k2", "mse"):
        return 0.5 * x * x, x
    d = ref - logp
    inside = np.ones_like(d, bool) if clip is None else np.abs(d) < clip
    dc = d if clip is None else np.clip(d, -clip, clip)
    k = np.exp(dc) - dc - 1
    grad = np.where(inside & (k > -10) & (k < 10), 1 - np.exp(dc), 0.0)
    return np.clip(k, -10, 10), grad


def np_masked_mean(v, m):
    return (v * m).sum() / (m.sum() + 1e-8)


def ref_agg(loss, m, mode, horizon=None):
    """agg_loss (verl after PR #5417: sequence means skip fully masked rows) and d loss / d loss_mat."""
    n_tok = m.sum(-1)
    present = (n_tok > 0).astype(np.float64)
    n_seq = present.sum()
    seq_sum = (loss * m).sum(-1)
    if mode == "token-mean":
        value = (loss * m).sum() / m.sum() if m.sum() else 0.0
        weights = m / m.sum() if m.sum() else 0 * m
    elif mode == "token-sum":
        value, weights = (loss * m).sum(), m
    elif mode == "seq-mean-token-mean":
        value = (seq_sum / (n_tok + 1e-8) * present).sum() / n_seq if n_seq else 0.0
        weights = m / (n_tok[:, None] + 1e-8) / max(n_seq, 1)
    else:
        scale = 1.0 if mode == "seq-mean-token-sum" else (horizon or m.shape[-1])
        value = (seq_sum * present).sum() / n_seq / scale if n_seq else 0.0
        weights = m / max(n_seq, 1) / scale
    return value, weights


def ref_policy(logp, old, adv, m, clip_low=0.2, clip_high=0.2, clip_c=3.0, mode="token-mean", clip=20.0):
    """compute_policy_loss_vanilla: loss, metrics and d loss / d logp."""
    raw = logp - old
    lr = raw if clip is None else np.clip(raw, -clip, clip)
    dlr = np.ones_like(raw) if clip is None else (np.abs(raw) < clip).astype(np.float64)
    r = np.exp(lr)
    l1, l2 = -adv * r, -adv * np.clip(r, 1 - clip_low, 1 + clip_high)
    d1 = -adv * r * dlr
    d2 = np.where((r > 1 - clip_low) & (r < 1 + clip_high), d1, 0.0)
    lc = np.maximum(l1, l2)
    dc = np.where(l1 > l2, d1, np.where(l2 > l1, d2, 0.5 * (d1 + d2)))
    metrics = {"clipfrac": np_masked_mean(l2 > l1, m), "ppo_kl": np_masked_mean(-lr, m), "clipfrac_lower": 0.0}
    loss_mat, dmat = lc, dc
    if clip_c is not None:
        l3 = -adv * clip_c
        dd = np.where(lc < l3, dc, np.where(lc > l3, 0.0, 0.5 * dc))
        loss_mat = np.where(adv < 0, np.minimum(l3, lc), lc)
        dmat = np.where(adv < 0, dd, dc)
        metrics["clipfrac_lower"] = np_masked_mean((lc > l3) & (adv < 0), m)
    value, weights = ref_agg(loss_mat, m, mode)
    return value, metrics, weights * dmat


def value_and_grad(fn, x, has_aux=False):
    """One compiled program per check: eager autodiff would compile the forward and backward op by op."""
    return jax.jit(jax.value_and_grad(fn, has_aux=has_aux))(jnp.asarray(x, jnp.float32))


def random_batch(seed, b=6, t=9, spread=0.3, empty_row=True):
    rng = np.random.default_rng(seed)
    old = f32(rng.normal(-2.0, 1.0, (b, t)))
    logp = f32(old + rng.normal(0.0, spread, (b, t)))
    adv = f32(rng.normal(0.0, 1.0, (b, 1)) * np.ones((1, t)))
    lengths = rng.integers(1, t + 1, b)
    if empty_row:
        lengths[1] = 0
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float64)
    return logp, old, adv, mask


# ------------------------------------------------------------------------------------ advantages


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_group_advantages_matches_verl(norm_by_std):
    rng = np.random.default_rng(0)
    uids = np.array(["p0"] * 8 + ["p1"] * 5 + ["solo"] + ["p2"] * 2 + ["p3"] * 4)
    perm = rng.permutation(len(uids))
    scores, uids = f32(rng.normal(0.5, 1.0, len(uids))), uids[perm]
    scores[uids == "p3"] = 1.25  # all equal: std 0 -> A = 0
    got = grpo.group_advantages(scores, uids, norm_by_std=norm_by_std)
    assert_close(got, ref_grpo(scores, uids, norm_by_std=norm_by_std))
    assert got.dtype == jnp.float32


def test_group_advantages_hand_cases():
    eps = 1e-6
    got = grpo.group_advantages(np.array([3.0, 0.0, 1.0, 2.0, 2.0, 2.0]), np.array([9, 4, 4, 5, 5, 5]))
    half = 0.5 / (np.sqrt(0.5) + eps)  # {0, 1}: mean 0.5, unbiased std sqrt(0.5)
    assert_close(got, [3.0 / (1.0 + eps), -half, half, 0.0, 0.0, 0.0], rtol=1e-7, atol=1e-7)
    dr = grpo.group_advantages(np.array([3.0, 0.0, 1.0]), np.array([9, 4, 4]), norm_by_std=False)
    assert_close(dr, [3.0, -0.5, 0.5], rtol=0, atol=0)
    token_rewards = np.array([[0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.0]])  # verl sums them per response
    assert_close(grpo.group_advantages(token_rewards, [9, 4, 4], norm_by_std=False), [3.0, -0.5, 0.5], rtol=0, atol=0)


def test_group_advantages_device_arrays_and_arbitrary_int_ids():
    scores = np.array([1.0, 4.0, -2.0, 0.5, 7.0])
    ids = np.array([1000, -5, 1000, -5, 123456789])
    got = grpo.group_advantages(jnp.asarray(scores), jnp.asarray(ids))  # device arrays come to the host
    assert_close(got, ref_grpo(scores, ids))
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert grpo.get_advantage_estimator("grpo") is grpo.group_advantages
    assert grpo.get_advantage_estimator("rloo") is grpo.rloo_advantages


@pytest.mark.parametrize("value, n", [(1.6891074, 8), (1.6891074, 5), (123.456, 17), (-0.3, 2), (1e-3, 64)])
@pytest.mark.parametrize("estimator", ["grpo", "grpo-no-std", "rloo"])
def test_a_group_of_equal_scores_gets_exactly_zero(value, n, estimator):
    # float32 statistics give -0.19 for 8 x 1.6891074 (verl 0.9.1: -0.105 for 5, +0.861 for 17 x 123.456)
    scores = np.concatenate([np.full(n, value, np.float32), np.float32([0.0, 1.0])])
    ids = np.array([7] * n + [8, 8])
    if estimator == "rloo":
        got = grpo.rloo_advantages(scores, ids)
    else:
        got = grpo.group_advantages(scores, ids, norm_by_std=estimator == "grpo")
    np.testing.assert_array_equal(got[:n], 0.0)
    assert got[n] < 0 < got[n + 1]


def ref_rloo(scores, index):
    """compute_rloo_outcome_advantage: s * N / (N - 1) - mean * N / (N - 1); a size-1 group keeps s."""
    groups = defaultdict(list)
    for s, i in zip(scores, index, strict=True):
        groups[i].append(s)
    out = []
    for s, i in zip(scores, index, strict=True):
        n = len(groups[i])
        out.append(s if n == 1 else s * n / (n - 1) - np.mean(groups[i]) * n / (n - 1))
    return np.array(out)


def test_rloo_matches_verl():
    rng = np.random.default_rng(3)
    uids = rng.permutation(np.array(["p0"] * 8 + ["p1"] * 5 + ["solo"] + ["p2"] * 2))
    scores = f32(rng.normal(0.5, 1.0, len(uids)))
    assert_close(grpo.rloo_advantages(scores, uids), ref_rloo(scores, uids))
    token_rewards = np.array([[0.0, 3.0], [1.0, 0.0], [0.5, 0.5], [2.0, 0.0]])  # summed per response, as verl
    assert_close(grpo.rloo_advantages(token_rewards, [1, 1, 1, 2]), [3 - 1.0, 1 - 2.0, 1 - 2.0, 2.0], rtol=0)


def test_clamp_gradient_follows_installed_torch():
    torch = pytest.importorskip("torch")
    x = np.array([-30.0, -20.0, -19.5, 0.0, 0.8, 1.0, 1.2, 20.0, 25.0], np.float32)
    for lo, hi in [(-20.0, 20.0), (0.8, 1.2), (1.0, 1.0)]:
        t = torch.tensor(x, requires_grad=True)
        torch.clamp(t, lo, hi).sum().backward()  # Python-number bounds, as verl calls it
        value, grad = value_and_grad(lambda v, lo=lo, hi=hi: grpo._clamp(v, lo, hi).sum(), x)
        np.testing.assert_array_equal(np.asarray(grad), t.grad.numpy())
        np.testing.assert_array_equal(np.asarray(grpo._clamp(jnp.asarray(x), lo, hi)), np.clip(x, lo, hi))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(-80, 80)), min_size=16, max_size=16))
def test_group_advantages_property(pairs):
    # Rewards on a 1/8 grid, like rule rewards: distinct scores differ enough that float32 rounding in the mean
    # cannot be amplified by 1 / (std + 1e-6). One batch size, so every example reuses the compiled program.
    ids, scores = np.array([p[0] for p in pairs]), np.array([p[1] / 8 for p in pairs])
    assert_close(grpo.group_advantages(scores, ids), ref_grpo(scores, ids))


def test_token_advantages():
    mask = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert_close(grpo.token_advantages(np.array([2.0, -1.0]), mask), [[2, 2, 0], [-1, 0, 0]])


# ------------------------------------------------------------------------------------ KL


def kl_value_and_grad(logp, ref, kind, **kw):
    """The estimate is elementwise, so the gradient of its sum is the per-token derivative."""

    def value_and_derivative(x):
        value, vjp = jax.vjp(lambda x: grpo.kl_penalty(x, ref, kind, **kw), x)
        return value, vjp(jnp.ones_like(value))[0]

    return jax.jit(value_and_derivative)(jnp.asarray(logp, jnp.float32))


@pytest.mark.parametrize("kind", ["k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl"])
def test_kl_matches_verl(kind):
    rng = np.random.default_rng(1)
    ref = f32(rng.normal(-2.0, 1.0, 64))
    logp = f32(np.concatenate([ref[:40] + rng.normal(0, 0.5, 40), ref[40:] + rng.normal(0, 15, 24)]))
    value, grad = kl_value_and_grad(logp, np.float32(ref), kind)
    want_value, want_grad = ref_kl(logp, ref, kind)
    assert_close(value, want_value)
    assert_close(grad, want_grad)


@pytest.mark.parametrize("kind", ["k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl"])
def test_kl_straight_through_variants(kind):
    rng = np.random.default_rng(2)
    ref = np.float32(rng.normal(-2.0, 1.0, 32))
    logp = ref + np.float32(rng.normal(0, 3.0, 32))
    value, grad = kl_value_and_grad(logp, ref, kind + "+")
    np.testing.assert_array_equal(value, grpo.kl_penalty(logp, ref, kind))  # k2 - sg(k2) + sg(v) == v exactly
    assert_close(grad, np.asarray(logp - ref))  # d/dlogp of 0.5 (logp - ref)^2


@pytest.mark.parametrize("clip", [20.0, None])
def test_k3_overflow_clamps(clip):
    logp = jnp.array([-200.0, 0.0, -1e4, 0.0, -30.0, 0.0])
    ref = jnp.array([0.0, -200.0, 0.0, -1e4, 0.0, -30.0])
    for kind in ["k3", "k3+"]:
        value, grad = kl_value_and_grad(logp, ref, kind, log_ratio_clip=clip)
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad)), (kind, value, grad)
        np.testing.assert_array_equal(value, 10.0)
    np.testing.assert_array_equal(kl_value_and_grad(logp, ref, "k3", log_ratio_clip=clip)[1], 0.0)


def test_veason_k3_equals_verl_k3_where_finite():
    d = np.linspace(-60.0, 60.0, 2401, dtype=np.float32)  # ref - logp: the +-20 clamp edges, the +-10 saturation
    logp, ref = np.zeros_like(d), d
    verl = kl_value_and_grad(logp, ref, "k3")
    fork = kl_value_and_grad(logp, ref, "k3", log_ratio_clip=None)
    want = ref_kl(np.zeros(d.shape), f32(d), "k3", clip=None)
    for got in (verl, fork):
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])


def test_kl_gradient_at_equal_log_probs():
    # logp == ref is the first step of every run (actor == reference): torch's abs has gradient sign(0) = 0 there.
    x = np.array([-1.5, 0.0, -3.0], np.float32)
    for kind in ["k1", "abs", "k2", "k3", "abs+", "k3+"]:
        value, grad = kl_value_and_grad(x, x, kind)
        want_value, want_grad = ref_kl(f32(x), f32(x), kind.removesuffix("+"))
        assert_close(value, want_value, rtol=0, atol=0)
        assert_close(grad, 0.0 * want_grad if kind.endswith("+") else want_grad, rtol=0, atol=0)


def test_kl_unknown_kind():
    with pytest.raises(ValueError, match="full"):
        grpo.kl_penalty(jnp.zeros(2), jnp.zeros(2), "full")


# ------------------------------------------------------------------------------------ aggregation


@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregate_matches_verl(mode):
    rng = np.random.default_rng(3)
    _, _, _, mask = random_batch(3)
    loss = f32(rng.normal(0, 2.0, mask.shape))
    value, grad = value_and_grad(lambda x: grpo.aggregate_loss(x, mask, mode), loss)
    want_value, want_grad = ref_agg(loss, mask, mode)
    assert_close(value, want_value)
    assert_close(grad, want_grad)


def test_aggregate_horizon_and_masked_garbage():
    loss = np.array([[1.0, 2.0, np.nan], [3.0, np.inf, -np.inf]])
    mask = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert_close(grpo.aggregate_loss(loss, mask, "seq-mean-token-sum-norm", horizon=4.0), (3.0 + 3.0) / 2 / 4.0)
    assert_close(grpo.aggregate_loss(loss, mask, "seq-mean-token-sum-norm"), (3.0 + 3.0) / 2 / 3.0)
    assert_close(grpo.aggregate_loss(loss, mask, "seq-mean-token-mean"), (1.5 + 3.0) / 2)
    assert_close(grpo.aggregate_loss(loss, mask, "token-mean"), 2.0)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregate_empty_mask_is_zero(mode):
    value, grad = value_and_grad(lambda x: grpo.aggregate_loss(x, np.zeros((3, 4)), mode), np.ones((3, 4)))
    assert float(value) == 0.0 and np.all(np.asarray(grad) == 0.0)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_aggregate_micro_batches_sum_to_mini_batch(mode):
    rng = np.random.default_rng(4)
    _, _, _, mask = random_batch(4, b=8)
    loss = jnp.asarray(rng.normal(0, 1.0, mask.shape), jnp.float32)
    counts = {"num_tokens": mask.sum(), "num_seqs": (mask.sum(-1) > 0).sum()}
    parts = [grpo.aggregate_loss(loss[s], mask[s], mode, **counts) for s in (slice(0, 3), slice(3, 8))]
    assert_close(sum(parts), grpo.aggregate_loss(loss, mask, mode))


def test_aggregate_unknown_mode():
    with pytest.raises(ValueError, match="token-mean"):
        grpo.aggregate_loss(jnp.zeros((1, 2)), jnp.ones((1, 2)), "token-mean-unbiased")


# ------------------------------------------------------------------------------------ policy loss

CLIPS = {
    "verl": dict(clip_low=0.2, clip_high=0.2, clip_c=3.0),
    "dapo": dict(clip_low=0.2, clip_high=0.28, clip_c=3.0),
    "veason": dict(clip_low=0.2, clip_high=0.2, clip_c=None, clip=None),
}


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("variant", sorted(CLIPS))
def test_policy_loss_matches_verl(variant, mode):
    logp, old, adv, mask = random_batch(5, spread=0.6)
    kw = dict(CLIPS[variant])
    log_ratio_clip = kw.pop("clip", 20.0)

    def loss_fn(x):
        return grpo.policy_loss(x, old, adv, mask, **kw, agg_mode=mode, log_ratio_clip=log_ratio_clip)

    (value, metrics), grad = value_and_grad(loss_fn, logp, has_aux=True)
    want_value, want_metrics, want_grad = ref_policy(logp, old, adv, mask, **kw, mode=mode, clip=log_ratio_clip)
    assert_close(value, want_value)
    assert_close(grad, want_grad)
    for k, v in want_metrics.items():
        assert_close(metrics[k], v)
    assert 0 < float(metrics["clipfrac"]) < 1


def test_clip_fractions_and_dual_clip_hand_case():
    # tokens: A>0 r=1.5 (clipped), A>0 r=0.5, A<0 r=0.5 (clipped), A<0 r=1.1, A<0 r=5 (dual clip), A>0 r=5 (clipped)
    ratio = np.array([[1.5, 0.5, 0.5, 1.1, 5.0, 5.0]])
    adv = np.array([[1.0, 1.0, -1.0, -1.0, -1.0, 1.0]])
    logp, mask = np.log(ratio), np.ones((1, 6))
    loss_fn = lambda x: grpo.policy_loss(x, np.zeros((1, 6)), adv, mask)  # noqa: E731
    (value, metrics), grad = value_and_grad(loss_fn, logp, has_aux=True)
    per_token = [-1.2, -0.5, 0.8, 1.1, 3.0, -1.2]
    assert_close(value, np.mean(per_token))
    assert_close(metrics["clipfrac"], 3 / 6)
    assert_close(metrics["clipfrac_lower"], 1 / 6)  # only A < 0 can take the dual clip
    assert_close(grad, [[0.0, -0.5 / 6, 0.0, 1.1 / 6, 0.0, 0.0]])
    no_dual = grpo.policy_loss(logp, np.zeros((1, 6)), adv, mask, clip_c=None)
    assert_close(no_dual[0], np.mean(per_token[:4] + [5.0, -1.2]))
    assert float(no_dual[1]["clipfrac_lower"]) == 0.0


def test_extreme_log_ratio_is_clamped():
    logp = np.array([[50.0, -50.0, 50.0, 20.0]])
    adv, mask = np.array([[-1.0, 1.0, 1.0, -1.0]]), np.ones((1, 4))
    loss_fn = lambda x: grpo.policy_loss(x, np.zeros((1, 4)), adv, mask, clip_c=None)  # noqa: E731
    (value, metrics), grad = value_and_grad(loss_fn, logp, has_aux=True)
    e20 = np.exp(np.float32(20.0))
    assert_close(value, (e20 - np.exp(-20.0) - 1.2 + e20) / 4, rtol=1e-6, atol=0)
    assert_close(metrics["ppo_kl"], (-20 + 20 - 20 - 20) / 4)
    assert_close(grad, [[0.0, 0.0, 0.0, 0.0]], rtol=0, atol=0)  # torch.clamp(x, -20.0, 20.0): 0 at the bound too


def test_policy_loss_empty_mask_and_masked_garbage():
    logp, old, adv, mask = random_batch(6)
    for mode in AGG_MODES:
        fn = lambda x, m=mask * 0, mode=mode: grpo.policy_loss(x, old, adv, m, agg_mode=mode)  # noqa: E731
        (value, metrics), grad = value_and_grad(fn, logp, has_aux=True)
        assert float(value) == 0.0 and all(float(v) == 0.0 for v in metrics.values())
        assert np.all(np.asarray(grad) == 0.0)
    dirty_logp = np.where(mask > 0, logp, np.inf)
    dirty_old = np.where(mask > 0, old, np.nan)
    dirty_adv = np.where(mask > 0, adv, -np.inf)
    for mode in AGG_MODES:
        v1, g1 = value_and_grad(lambda x, mode=mode: grpo.policy_loss(x, old, adv, mask, agg_mode=mode)[0], logp)
        v2, g2 = value_and_grad(
            lambda x, mode=mode: grpo.policy_loss(x, dirty_old, dirty_adv, mask, agg_mode=mode)[0], dirty_logp
        )
        assert_close(v2, v1)
        assert_close(g2, g1)


def test_policy_loss_dtype_broadcast_and_jit():
    logp, old, adv, mask = random_batch(7)
    want = grpo.policy_loss(logp, old, adv, mask)
    got_1d = grpo.policy_loss(logp, old, adv[:, 0], mask)  # float[B] advantages broadcast over tokens
    jitted = jax.jit(grpo.policy_loss, static_argnames=("clip_c", "agg_mode"))(logp, old, adv, mask)
    for got in (got_1d, jitted):
        assert_close(got[0], want[0])
    bf16 = grpo.policy_loss(*(jnp.asarray(x, jnp.bfloat16) for x in (logp, old, adv)), mask)
    assert bf16[0].dtype == jnp.float32 and bf16[1]["ppo_kl"].dtype == jnp.float32
    with pytest.raises(ValueError, match="clip_c"):
        grpo.policy_loss(logp, old, adv, mask, clip_c=1.0)


# ------------------------------------------------------------------------------------ logits


def test_entropy_log_probs_and_temperature():
    rng = np.random.default_rng(8)
    logits = f32(rng.normal(0, 3.0, (2, 5, 11)))
    tokens = rng.integers(0, 11, (2, 5))
    scaled = grpo.scale_logits(logits, 0.7)
    z = logits / 0.7
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    p = np.exp(z - lse[..., None])
    assert_close(scaled, z)
    assert_close(grpo.token_log_probs(scaled, tokens), np.take_along_axis(z, tokens[..., None], -1)[..., 0] - lse)
    entropy = lse - (p * z).sum(-1)
    assert_close(grpo.entropy_from_logits(scaled), entropy)
    _, grad = value_and_grad(lambda x: grpo.entropy_from_logits(x).sum(), z)
    assert_close(grad, -p * (z - (p * z).sum(-1, keepdims=True)))  # dH/dz_i = -p_i (z_i - E_p[z])
    with pytest.raises(ValueError, match="temperature"):
        grpo.scale_logits(logits, 0.0)


# ------------------------------------------------------------------------------------ configs and actor loss


def test_presets_and_validation():
    veason = grpo.get_loss_config("veason")
    assert (veason.clip_low, veason.clip_high, veason.clip_c, veason.log_ratio_clip) == (0.2, 0.2, None, None)
    assert (veason.entropy_coeff, veason.kl_kind, veason.kl_log_ratio_clip) == (1e-3, "low_var_kl", None)
    assert grpo.get_loss_config("verl", clip_high=0.28).clip_high == 0.28
    for bad in (dict(clip_c=0.5), dict(agg_mode="mean"), dict(kl_kind="full"), dict(clip_low=1.0)):
        with pytest.raises(ValueError):
            grpo.LossConfig(**bad)
    with pytest.raises(ValueError, match="loss preset"):
        grpo.get_loss_config("trl")


def test_actor_loss_veason_matches_fork_formula():
    logp, old, adv, mask = random_batch(9, spread=0.6)
    rng = np.random.default_rng(9)
    ref, entropy = f32(logp + rng.normal(0, 0.3, logp.shape)), f32(rng.uniform(0, 3, logp.shape))
    config = grpo.get_loss_config("veason")
    loss_fn = lambda x: grpo.actor_loss(config, x, old, adv, mask, ref_logp=ref, entropy=entropy)  # noqa: E731
    (value, metrics), grad = value_and_grad(loss_fn, logp, has_aux=True)
    # The fork: masked_mean(max(-A r, -A clip(r, 0.8, 1.2))) - 1e-3 masked_mean(H) + 5e-3 masked_mean(k3).
    pg, _, pg_grad = ref_policy(logp, old, adv, mask, clip_c=None, clip=None)
    kl, kl_grad = ref_kl(logp, ref, "k3", clip=None)
    n = mask.sum()
    assert_close(value, pg - 1e-3 * (entropy * mask).sum() / n + 5e-3 * (kl * mask).sum() / n)
    assert_close(grad, pg_grad + 5e-3 * kl_grad * mask / n)
    assert_close(metrics["pg_loss"], pg)
    with pytest.raises(ValueError, match="entropy"):
        grpo.actor_loss(config, logp, old, adv, mask, ref_logp=ref)


def test_actor_loss_verl_with_kl_plus():
    logp, old, adv, mask = random_batch(10)
    ref = f32(logp + 0.5)
    config = grpo.get_loss_config("verl", kl_coef=1e-2, kl_kind="k3+", agg_mode="seq-mean-token-mean")
    loss_fn = lambda x: grpo.actor_loss(config, x, old, adv, mask, ref_logp=ref)[0]  # noqa: E731
    value, grad = value_and_grad(loss_fn, logp)
    pg, _, pg_grad = ref_policy(logp, old, adv, mask, mode="seq-mean-token-mean")
    kl_value, kl_weights = ref_agg(ref_kl(logp, ref, "k3")[0], mask, "seq-mean-token-mean")
    assert_close(value, pg + 1e-2 * kl_value)
    assert_close(grad, pg_grad + 1e-2 * kl_weights * (logp - ref))  # k3+ differentiates as k2


def test_config_names_only_implemented_estimators():
    from vrsjax.config import ConfigError, load_config

    for name in ("grpo", "rloo"):
        assert load_config("configs/base.yaml", [f"algorithm.adv_estimator={name}"]).algorithm.adv_estimator == name
        grpo.get_advantage_estimator(name)  # what the trainer calls
    with pytest.raises(ConfigError, match="remax is not implemented in vrsjax; use grpo or rloo"):
        load_config("configs/base.yaml", ["algorithm.adv_estimator=remax"])
