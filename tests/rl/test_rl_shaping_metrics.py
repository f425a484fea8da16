"""Pure pieces of the GRPO step: the in-reward KL penalty and its controllers against EasyR1's formulas (written
here in torch from `verl/trainer/ray_trainer.py` apply_kl_penalty and `core_algos.py`), online-filtering group
selection, the FLOPs model against the real parameter counts, the TensorBoard event writer, and gradient
checkpointing giving the same gradients."""

import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vrsjax.models import qwen2_5_vl
from vrsjax.rl import flops, grpo
from vrsjax.rl.reward_shaping import KLController, filter_values, kept_groups, kl_penalised_scores
from vrsjax.rl.tensorboard import SummaryWriter, event_bytes, masked_crc32c, read_scalars
from vrsjax.testing import write_tiny_checkpoint


def easyr1_kl_in_reward(scores, logp, ref, mask, coef, kind):
    """EasyR1: the score sits on the last response token, every token loses coef * kl, GRPO sums the tokens."""
    torch = pytest.importorskip("torch")
    logp, ref, mask = torch.tensor(logp), torch.tensor(ref), torch.tensor(mask, dtype=torch.float32)
    token_scores = torch.zeros_like(logp)
    last = mask.sum(-1).long() - 1
    token_scores[torch.arange(len(scores)), last] = torch.tensor(scores)
    if kind == "kl":
        kld = logp - ref
    else:  # low_var_kl
        kl = (ref - logp).clamp(-20.0, 20.0)
        kld = torch.clamp(kl.exp() - kl - 1, min=-10.0, max=10.0)
    kld = kld * mask
    rewards = token_scores - coef * kld
    current = torch.mean((kld * mask).sum(-1) / (mask.sum(-1) + 1e-8)).item()
    return rewards.sum(-1).numpy(), current


@pytest.mark.parametrize("kind", ["kl", "low_var_kl"])
def test_kl_in_reward_equals_easyr1(kind):
    rng = np.random.default_rng(0)
    logp = rng.normal(-2, 1, (6, 9)).astype(np.float32)
    ref = (logp + rng.normal(0, 0.5, (6, 9))).astype(np.float32)
    mask = (np.arange(9)[None] < rng.integers(1, 10, (6, 1))).astype(np.int32)
    scores = rng.random(6).astype(np.float32) * 3
    want, want_kl = easyr1_kl_in_reward(scores, logp, ref, mask, 0.05, kind)
    got, metrics = kl_penalised_scores(scores, logp, ref, mask, KLController(0.05), kind)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert metrics["actor/kl_penalty"] == pytest.approx(want_kl, abs=1e-6) and metrics["actor/kl_coef"] == 0.05


def test_kl_controllers_follow_easyr1():
    fixed = KLController(0.1)
    fixed.update(5.0, 64)
    assert fixed.kl_coef == 0.1
    adaptive, coef = KLController(0.1, "adaptive", target=0.02, horizon=1000.0), 0.1
    for current in (0.05, 0.021, 0.0, 0.019):
        adaptive.update(current, 32)
        coef *= 1 + float(np.clip(current / 0.02 - 1, -0.2, 0.2)) * 32 / 1000.0
        assert adaptive.kl_coef == pytest.approx(coef, rel=1e-12)


def test_online_filtering_keeps_groups_strictly_inside_the_range():
    values = np.array([0, 0, 0, 1, 1, 1, 0, 1, 1, 0.01, 0.01, 0.01])  # means 0, 1, 2/3, 0.01
    np.testing.assert_array_equal(kept_groups(values, 3, 0.01, 0.99), [False, False, True, False])
    parts = [{"format": 1.0, "keyframe": 0.5}, {"format": 0.0, "keyframe": 0.25}]
    np.testing.assert_allclose(filter_values(parts, "overall"), [1.5, 0.25])
    np.testing.assert_allclose(filter_values(parts, "keyframe"), [0.5, 0.25])
    with pytest.raises(KeyError, match="algorithm.filter_key='accuracy'.*format"):
        filter_values(parts, "accuracy")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("shaping") / "tiny", tokenizer=False)
    return qwen2_5_vl.from_pretrained(path)


def test_flops_count_the_model_weights(tiny_model):
    params = {".".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(tiny_model, nnx.Param))}
    cfg = tiny_model.config
    text = sum(v.size for k, v in params.items() if ".layers." in k and k.endswith("proj.weight"))
    head = cfg.text.vocab_size * cfg.text.hidden_size  # tied: the embedding matrix is the head
    mf = flops.ModelFlops.from_config(cfg)
    assert mf.weights == text + head
    per_patch = sum(v.size for k, v in params.items() if "visual.blocks" in k and v.ndim == 2)
    per_patch += params["model.visual.patch_embed.proj.weight"].size
    per_patch += sum(v.size for k, v in params.items() if "merger.mlp" in k and v.ndim == 2) / 4
    assert mf.patch == pytest.approx(2 * per_patch)
    # a sequence of 5 tokens after 3 cached ones: 2 * weights per token + attention over 4, 5, 6, 7, 8 keys
    assert flops.forward_flops(mf, np.array([5]), 3) == 2 * mf.weights * 5 + mf.attn * (4 + 5 + 6 + 7 + 8)
    shared = flops.step_flops(mf, [10], [4, 6], 2, 8, shared_prompt=True, forward_passes=2, update_passes=1)
    naive = flops.step_flops(mf, [10], [4, 6], 2, 8, shared_prompt=False, forward_passes=2, update_passes=1)
    assert shared["rollout"] == naive["rollout"] and naive["update"] > shared["update"] == 1.5 * shared["log_probs"]
    assert flops.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert flops.peak_flops("TPU v5 lite", "bfloat16") == 197e12 and flops.peak_flops("cpu", "float32") is None
    assert flops.mfu(1e12, 2.0, 4, 1e12) == 0.125


def test_tensorboard_events_are_valid_records(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.add_scalars({"reward/score_mean": 1.5, "actor/kl_loss": 0.25, "note": "text", "flag": True}, step=3)
    writer.add_scalars({"reward/score_mean": 2.0}, step=4)
    writer.close()
    assert read_scalars(writer.path) == [
        (3, {"reward/score_mean": 1.5, "actor/kl_loss": 0.25}),
        (4, {"reward/score_mean": 2.0}),
    ]
    # against an independent implementation: tensorboardX's CRC and protobuf classes
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c as tbx_crc

    assert masked_crc32c(b"vrsjax") == tbx_crc(b"vrsjax")

    data = writer.path.read_bytes()
    events, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        body = data[pos + 12 : pos + 12 + length]
        assert struct.unpack_from("<I", data, pos + 12 + length)[0] == tbx_crc(body)
        events.append(event_pb2.Event.FromString(body))
        pos += 16 + length
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 3 and {v.tag: v.simple_value for v in events[1].summary.value} == {
        "reward/score_mean": 1.5,
        "actor/kl_loss": 0.25,
    }
    assert (
        event_bytes(1.0, 7, scalars={"a": 1.0})
        == event_pb2.Event(
            wall_time=1.0, step=7, summary={"value": [{"tag": "a", "simple_value": 1.0}]}
        ).SerializeToString()
    )


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model):
    from vrsjax.models.qwen2_5_vl.inputs import ModelInputs
    from vrsjax.rl.update import micro_grads, shared_micro_grads

    graphdef, params, frozen = nnx.split(tiny_model, nnx.Param, ...)
    rng = np.random.default_rng(3)
    b, n, t, length = 2, 2, 5, 6
    prompt_ids = rng.integers(0, 290, (b, length)).astype(np.int32)
    pos = np.broadcast_to(np.arange(length), (3, b, length)).astype(np.int32)
    prompts = ModelInputs(prompt_ids, np.ones((b, length), np.int32), pos, np.full((b, length), -1, np.int32))
    tokens = rng.integers(0, 290, (b, n, t)).astype(np.int32)
    mask = (np.arange(t) < rng.integers(1, t + 1, (b, n, 1))).astype(np.int32)
    flat_tokens, flat_mask = tokens.reshape(b * n, t), mask.reshape(b * n, t)
    ids = np.concatenate([np.repeat(prompt_ids, n, 0), flat_tokens * flat_mask], 1)
    att = np.concatenate([np.ones((b * n, length), np.int32), flat_mask], 1)
    full_pos = np.broadcast_to(np.arange(length + t), (3, b * n, length + t)).astype(np.int32)
    inputs = ModelInputs(ids, att, full_pos, np.full(ids.shape, -1, np.int32))
    old = jnp.asarray(rng.normal(-5, 0.3, (b * n, t)), jnp.float32)
    adv = jnp.asarray(rng.normal(size=b * n), jnp.float32)
    cfg = grpo.LossConfig(entropy_coeff=1e-3, kl_coef=5e-3)
    common = dict(temperature=0.9, loss_config=cfg)
    n_tok = float(mask.sum())

    def naive(remat):
        g, loss, _ = micro_grads(
            graphdef, params, frozen, inputs, flat_tokens, flat_mask, old, old - 0.1, adv, n_tok, 4.0,
            prompt_len=length, remat=remat, **common,
        )  # fmt: skip
        return g, loss

    def shared(remat):
        g, loss, _ = shared_micro_grads(
            graphdef, params, frozen, prompts, tokens, mask, np.full(b, length, np.int32), old, old - 0.1, adv,
            n_tok, 4.0, remat=remat, **common,
        )  # fmt: skip
        return g, loss

    for fn in (naive, shared):
        (g0, l0), (g1, l1) = fn(False), fn(True)
        assert float(l0) == pytest.approx(float(l1), abs=1e-7)
        for a, c in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
            np.testing.assert_allclose(np.asarray(c), np.asarray(a), rtol=0, atol=1e-7)
