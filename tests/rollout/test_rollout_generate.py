"""Rollout against transformers `generate`, teacher forcing, sampling statistics, meshes and bad input."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from qwen_cases import IMG, VID, make_batch, text, vision_block  # noqa: E402

from vrsjax import rollout  # noqa: E402
from vrsjax.models import qwen2_5_vl  # noqa: E402
from vrsjax.parallel.mesh import make_mesh  # noqa: E402
from vrsjax.rl import grpo  # noqa: E402
from vrsjax.rollout.sampling import filter_logits, sample  # noqa: E402
from vrsjax.testing import write_tiny_checkpoint  # noqa: E402

NEW = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("rollout") / "tiny", seed=3, tie_word_embeddings=False)
    return path, qwen2_5_vl.from_pretrained(path)


def batches():
    return {
        "text": make_batch([text(9, 0), text(4, 1), text(6, 2)]),
        "image": make_batch([text(3, 3) + vision_block(IMG, (1, 6, 10)) + text(4, 4), text(5, 5)], images=[(1, 6, 10)]),
        "video": make_batch(
            [
                text(2, 6) + vision_block(VID, (2, 8, 12)) + text(3, 7),
                text(4, 8) + vision_block(VID, (3, 4, 4)) + text(2, 9),
            ],
            videos=[(2, 8, 12), (3, 4, 4)],
            second_per_grid_ts=[1.5, 0.5],
        ),
    }


def hf_greedy(path, batch):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, attn_implementation="eager").eval()
    ids = batch["input_ids"]
    kw = {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}
    kw["mm_token_type_ids"] = torch.from_numpy(np.where(ids == IMG, 1, np.where(ids == VID, 2, 0)))
    with torch.no_grad():
        out = model.generate(
            **kw, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0, eos_token_id=None
        )
    return out[:, ids.shape[1] :].numpy()


@pytest.mark.parametrize("case", list(batches()))
def test_greedy_matches_transformers(tiny, case):
    path, model = tiny
    batch = batches()[case]
    ours = rollout.generate(model, batch, n=1, max_new_tokens=NEW, temperature=0, stop_token_ids=())
    np.testing.assert_array_equal(ours.tokens, hf_greedy(path, batch))
    assert ours.mask.all() and (ours.lengths == NEW).all()


def test_shared_prefix_group_equals_single(tiny):
    _, model = tiny
    batch = batches()["image"]
    one = rollout.generate(model, batch, n=1, max_new_tokens=NEW, temperature=0, stop_token_ids=())
    eight = rollout.generate(model, batch, n=8, max_new_tokens=NEW, temperature=0, stop_token_ids=())
    np.testing.assert_array_equal(eight.tokens, np.repeat(one.tokens, 8, axis=0))
    np.testing.assert_allclose(eight.logprobs, np.repeat(one.logprobs, 8, axis=0), atol=1e-5)


def test_logprobs_equal_teacher_forcing(tiny):
    """Sampled log-probs at temperature 0.7 equal log_softmax(logits / 0.7) of a full forward over the tokens."""
    _, model = tiny
    batch = batches()["video"]
    out = rollout.generate(model, batch, n=3, max_new_tokens=12, temperature=0.7, top_p=0.9, seed=1)
    ids = np.repeat(batch["input_ids"], 3, axis=0)
    full = {
        "input_ids": np.concatenate([ids, out.tokens], axis=1),
        "attention_mask": np.concatenate([np.repeat(batch["attention_mask"], 3, axis=0), out.mask], axis=1),
    }
    videos = [(2, 8, 12), (3, 4, 4)]  # rows are grouped per prompt: v0, v0, v0, v1, v1, v1
    full["pixel_values_videos"] = np.concatenate(
        [
            np.concatenate([batch["pixel_values_videos"][:192]] * 3),
            np.concatenate([batch["pixel_values_videos"][192:]] * 3),
        ]
    )
    full["video_grid_thw"] = np.array([videos[0]] * 3 + [videos[1]] * 3)
    full["second_per_grid_ts"] = np.array([1.5] * 3 + [0.5] * 3, np.float32)
    logits = np.asarray(model(**full))[:, ids.shape[1] - 1 : -1]
    want = np.asarray(grpo.token_log_probs(logits / 0.7, out.tokens))
    valid = out.mask > 0
    assert np.abs(want - out.logprobs)[valid].max() <= 1e-4
    assert (out.logprobs[~valid] == 0).all()


def test_stop_tokens_end_sequences(tiny):
    _, model = tiny
    batch = batches()["text"]
    free = rollout.generate(model, batch, n=1, max_new_tokens=NEW, temperature=0, stop_token_ids=())
    stop_id = int(free.tokens[0, 5])  # a token greedy decoding emits at step 5 of row 0
    out = rollout.generate(
        model, batch, n=1, max_new_tokens=NEW, temperature=0, stop_token_ids=(stop_id,), pad_token_id=0
    )
    first = int(np.flatnonzero(free.tokens[0] == stop_id)[0])
    assert out.lengths[0] == first + 1 and out.tokens[0, first] == stop_id and (out.tokens[0, first + 1 :] == 0).all()
    longer = rollout.generate(
        model, batch, n=1, max_new_tokens=NEW, temperature=0, stop_token_ids=(stop_id,), min_new_tokens=first + 3
    )
    assert longer.lengths[0] >= first + 4 and stop_id not in longer.tokens[0, : first + 3]


def test_sampling_reproducible_by_seed(tiny):
    _, model = tiny
    batch = batches()["text"]
    a, b = (rollout.generate(model, batch, n=4, max_new_tokens=8, temperature=1.0, seed=s) for s in (5, 5))
    c = rollout.generate(model, batch, n=4, max_new_tokens=8, temperature=1.0, seed=6)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)


def test_top_k_top_p_stay_in_their_sets():
    logits = jax.numpy.asarray(np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05]] * 4000, np.float32)))
    keys = jax.random.split(jax.random.key(0), 3)
    tok_k, _ = sample(logits, keys[0], 1.0, top_k=2)
    assert set(np.unique(tok_k)) == {0, 1}
    tok_p, _ = sample(logits, keys[1], 1.0, top_p=0.8)  # 0.5 + 0.2 < 0.8 <= 0.5 + 0.2 + 0.15
    assert set(np.unique(tok_p)) == {0, 1, 2}
    kept = np.asarray(filter_logits(logits[:1], 0, 0.8))[0] > -1e30
    assert kept.tolist() == [True, True, True, False, False]
    tok_t, logp = sample(logits, keys[2], 0.5)  # p ~ p^2: [0.25, 0.04, ...] / sum
    freq = np.bincount(np.asarray(tok_t), minlength=5) / 4000
    want = np.array([0.5, 0.2, 0.15, 0.1, 0.05]) ** 2 / np.sum(np.array([0.5, 0.2, 0.15, 0.1, 0.05]) ** 2)
    assert np.abs(freq - want).max() < 0.03
    np.testing.assert_allclose(np.asarray(logp), np.log(want[np.asarray(tok_t)]), atol=1e-5)


def test_sharded_mesh_same_greedy_tokens(tiny):
    _, model = tiny
    batch = batches()["image"]
    single = rollout.generate(model, batch, n=4, max_new_tokens=16, temperature=0, stop_token_ids=())
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    path = tiny[0]
    sharded_model = qwen2_5_vl.from_pretrained(path, mesh=mesh)
    sharded = rollout.generate(
        sharded_model, batch, n=4, max_new_tokens=16, temperature=0, stop_token_ids=(), mesh=mesh
    )
    np.testing.assert_array_equal(sharded.tokens, single.tokens)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "at least one response"),
        ({"temperature": -0.5}, "must be >= 0"),
        ({"max_new_tokens": 5000}, "exceeds max_position_embeddings"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_bad_arguments_fail_before_compiling(tiny, kwargs, match):
    _, model = tiny
    with pytest.raises(ValueError, match=match):
        rollout.generate(model, batches()["text"], **{"max_new_tokens": 4, **kwargs})


def test_empty_prompt_is_an_error(tiny):
    _, model = tiny
    batch = make_batch([text(3, 0), text(2, 1)])
    batch["attention_mask"][1] = 0
    with pytest.raises(ValueError, match=r"empty prompt in rows \[1\]"):
        rollout.generate(model, batch, max_new_tokens=4)


def test_two_stage_draw_follows_the_weights_and_never_draws_a_zero():
    """Weights over 3 blocks and a partial one (V = 3 * BLOCK + 5), whole zero blocks, zeros at block edges."""
    from vrsjax.rollout.sampling import BLOCK, draw

    vocab = 3 * BLOCK + 5
    w = np.zeros(vocab, np.float32)
    w[[0, BLOCK - 1, 2 * BLOCK, 3 * BLOCK + 4]] = [0.4, 0.1, 0.3, 0.2]  # block 1 is all zero, the tail is partial
    tokens = np.asarray(draw(jax.numpy.broadcast_to(jax.numpy.asarray(w), (100_000, vocab)), jax.random.key(0)))
    assert set(np.unique(tokens)) <= set(np.flatnonzero(w))
    freq = np.bincount(tokens, minlength=vocab)[np.flatnonzero(w)] / tokens.size
    np.testing.assert_allclose(freq, [0.4, 0.1, 0.3, 0.2], atol=0.01)
