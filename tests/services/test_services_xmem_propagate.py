"""`XMem.propagate`: the official inference schedule (memory frames, deep updates, the last frame), both-way
propagation from a keyframe as two fresh runs, long-term consolidation within 20 frames, VISA's empty-mask rule,
eval.py's flip and resize options, input formats, and clear errors for bad input.

Bit-for-bit agreement with the official hkchengrex/XMem code on the same random weights is checked outside the
repository (the official code is not on PyPI); these tests pin the behaviour that comparison established."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from xmem_cases import random_xmem, synthetic_video

from vrsjax.services.xmem import XMemConfig, masks_from_probs
from vrsjax.services.xmem.inference import Run, normalize

SMALL = dict(top_k=20, mem_every=2)  # 64x96 frames have 4x6 = 24 memory elements per frame
LONG = dict(top_k=20, mem_every=1, max_mid_term_frames=4, min_mid_term_frames=2, num_prototypes=8)

# The official hkchengrex/XMem (commit f3b841d, eval.py's loop per direction) on `random_official_state(0)`, recorded
# outside the repository: per-frame channel means float[T, 3] and the probabilities at PIXELS (t, y, x).
PIXELS = [(0, 10, 20), (2, 40, 70), (5, 20, 50), (7, 60, 5)]
OFFICIAL_BOTH = {  # synthetic_video(8, 64, 96, seed=1), keyframe 3, both ways, SMALL
    "means": [
        [0.241906, 0.377287, 0.380807], [0.219225, 0.387463, 0.393310], [0.263233, 0.365727, 0.371039],
        [0.879882, 0.060058, 0.060058], [0.274529, 0.360062, 0.365410], [0.243290, 0.374756, 0.381954],
        [0.266090, 0.365211, 0.368698], [0.235921, 0.380050, 0.384027],
    ],
    "pixels": [
        [0.326667, 0.334722, 0.338611], [0.027425, 0.482618, 0.489957],
        [0.011443, 0.489360, 0.499197], [0.334650, 0.332451, 0.332897],
    ],
}  # fmt: skip
OFFICIAL_LONG = {  # synthetic_video(20, 64, 96, seed=2), keyframe 10, both ways, LONG, max_long_term_elements=30
    "means": [
        [0.247830, 0.375860, 0.376309], [0.252191, 0.373818, 0.373989], [0.257982, 0.370916, 0.371100],
        [0.262863, 0.368440, 0.368694], [0.270473, 0.364713, 0.364814], [0.284422, 0.357719, 0.357858],
        [0.279381, 0.360226, 0.360392], [0.274868, 0.362576, 0.362554], [0.263197, 0.368162, 0.368640],
        [0.258621, 0.370411, 0.370967], [0.915364, 0.060058, 0.024576], [0.264113, 0.367789, 0.368097],
        [0.259903, 0.369899, 0.370196], [0.251935, 0.374182, 0.373881], [0.252743, 0.373645, 0.373611],
        [0.250162, 0.375039, 0.374799], [0.251280, 0.374449, 0.374271], [0.245930, 0.377207, 0.376863],
        [0.246914, 0.376626, 0.376457], [0.250992, 0.374612, 0.374395],
    ],
    "pixels": [
        [0.273788, 0.362630, 0.363579], [0.031449, 0.485249, 0.483300],
        [0.020718, 0.488660, 0.490622], [0.418457, 0.290679, 0.290863],
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def model():
    return random_xmem()


@pytest.fixture(scope="module")
def video():
    return synthetic_video(8, 64, 96, seed=1)


@pytest.fixture(scope="module")
def both(model, video):
    frames, masks = video
    return model.propagate(frames, masks[3], 3, direction="both", **SMALL)


def keyframe_probs(mask):
    """The keyframe's output: its masks soft-aggregated (reference formula, float32)."""
    p = mask.astype(np.float32)
    p = np.clip(np.concatenate([np.prod(1 - p, 0, keepdims=True), p]), 1e-7, 1 - 1e-7)
    e = np.exp(np.log(p / (1 - p)))
    return e / e.sum(0, keepdims=True)


def assert_official(probs, official):
    """Probabilities equal the recorded official ones (1e-4: whole model)."""
    np.testing.assert_allclose(probs.mean((2, 3)), official["means"], atol=1e-4)
    np.testing.assert_allclose([probs[t, :, y, x] for t, y, x in PIXELS], official["pixels"], atol=1e-4)


def test_output_shape_probabilities_and_keyframe(both, video):
    frames, masks = video
    assert both.shape == (8, 3, 64, 96) and both.dtype == np.float32
    assert np.isfinite(both).all() and (both >= 0).all()
    np.testing.assert_allclose(both.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(both[3], keyframe_probs(masks[3]), rtol=1e-5, atol=1e-6)
    assert (masks_from_probs(both)[3] == masks[3]).all()
    assert_official(both, OFFICIAL_BOTH)


def test_both_is_a_forward_run_and_a_run_over_the_reversed_frames(model, video, both):
    frames, masks = video
    forward = model.propagate(frames, masks[3], 3, direction="forward", **SMALL)
    backward = model.propagate(frames, masks[3], 3, direction="backward", **SMALL)
    np.testing.assert_array_equal(both[3:], forward[3:])
    np.testing.assert_array_equal(both[:4], backward[:4])
    assert (forward[:3, 0] == 1).all() and (forward[:3, 1:] == 0).all()  # not reached going forward
    assert (backward[4:, 0] == 1).all() and (backward[4:, 1:] == 0).all()
    reversed_forward = model.propagate(frames[::-1], masks[3], 4, direction="forward", **SMALL)
    np.testing.assert_array_equal(backward[:4], reversed_forward[::-1][:4])
    # Every call starts from a fresh memory.
    np.testing.assert_array_equal(model.propagate(frames, masks[3], 3, **SMALL), both)


def run_schedule(model, frames, masks, **overrides):
    """Step a run by hand and record, after each frame, the working and long-term memory sizes."""
    config = XMemConfig.from_overrides(**overrides).for_video(len(frames))
    run, sizes = Run(model, config), []
    with torch.inference_mode():
        for i, frame in enumerate(frames):
            mask = torch.from_numpy(masks.astype(np.float32)) if i == 0 else None
            run.step(normalize(torch.from_numpy(frame)), mask, end=i == len(frames) - 1)
            sizes.append((run.memory.work.size, run.memory.long.size))
    return run, sizes


def test_memory_frames_every_mem_every_frames_but_never_the_last(model, video):
    frames, masks = video
    hw = 24
    _, sizes = run_schedule(model, frames[:7], masks[0], top_k=20, mem_every=2)
    # Memory frames: 0 (the mask), 2, 4; frame 6 ends the run.
    assert [w // hw for w, _ in sizes] == [1, 1, 2, 2, 3, 3, 3]
    _, sizes = run_schedule(model, frames[:1], masks[0], top_k=20)
    assert sizes == [(0, 0)]  # a one-frame run stores nothing


def test_long_term_consolidation_happens_within_20_frames(model):
    frames, masks = synthetic_video(20, 64, 96, seed=2)
    run, sizes = run_schedule(model, frames, masks[0], max_long_term_elements=30, **LONG)
    hw = 24
    assert max(w for w, _ in sizes) == 4 * hw - hw  # consolidated as it reaches 4 frames, down to 2
    assert run.memory.long.size > 0 and run.memory.long.count_usage
    assert all(long <= 30 for _, long in sizes)  # obsolete prototypes were pruned
    probs = model.propagate(frames, masks[10], 10, max_long_term_elements=30, **LONG)
    assert_official(probs, OFFICIAL_LONG)


def test_deep_update_schedule_changes_the_result(model, video, both):
    frames, masks = video
    other = model.propagate(frames, masks[3], 3, deep_update_every=3, **SMALL)
    assert not np.array_equal(other, both)
    np.testing.assert_array_equal(other[3], both[3])


def test_empty_keyframe_masks_stay_empty(model, video):
    frames, masks = video
    probs = model.propagate(frames, np.zeros((2, 64, 96), bool), 3, **SMALL)
    assert (probs[:, 0] == 1).all() and (probs[:, 1:] == 0).all()
    # An empty object among others is not tracked; the others are propagated as if it were absent.
    with_empty = np.stack([masks[3, 0], np.zeros_like(masks[3, 0]), masks[3, 1]])
    probs = model.propagate(frames, with_empty, 3, **SMALL)
    alone = model.propagate(frames, masks[3], 3, **SMALL)
    assert (probs[:, 2] == 0).all()
    np.testing.assert_array_equal(probs[:, [0, 1, 3]], alone)


def test_mask_and_frame_formats_agree(model, video):
    frames, masks = video
    reference = model.propagate(frames[:4], masks[1, 0], 1, **SMALL)
    assert reference.shape == (4, 2, 64, 96)
    for alternative in (
        model.propagate(list(frames[:4]), masks[1, :1], 1, **SMALL),
        model.propagate(frames[:4], masks[:4, :1], 1, **SMALL),  # every frame's masks: the keyframe's are used
        model.propagate(torch.from_numpy(frames[:4]), masks[1, 0].astype(np.uint8) * 255, 1, **SMALL),
        model.propagate(jnp.asarray(frames[:4]), jnp.asarray(masks[1, 0]), np.int64(1), **SMALL),
        model.propagate(frames[:4], masks[1, 0].astype(np.float32), 1, progress=True, **SMALL),
    ):
        np.testing.assert_array_equal(alternative, reference)


def test_flip_is_the_mirror_image_of_the_mirrored_video(model, video):
    frames, masks = video
    flipped = model.propagate(frames[:5], masks[2], 2, flip=True, **SMALL)
    mirrored = model.propagate(frames[:5, :, ::-1].copy(), masks[2, :, :, ::-1].copy(), 2, **SMALL)
    np.testing.assert_array_equal(flipped, mirrored[..., ::-1])


def test_size_resizes_for_inference_and_back(model):
    frames, masks = synthetic_video(3, 70, 100, seed=3)
    probs = model.propagate(frames, masks[1], 1, size=48, top_k=10)
    assert probs.shape == (3, 3, 70, 100)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


def test_masks_from_probs():
    probs = np.zeros((1, 3, 1, 4), np.float32)
    probs[0, :, 0] = [[0.5, 0.1, 0.2, 0.0], [0.3, 0.8, 0.1, 0.4], [0.2, 0.1, 0.7, 0.6]]
    assert masks_from_probs(probs).tolist() == [[[[False, True, False, False]], [[False, False, True, True]]]]
    assert masks_from_probs(probs, union=True).tolist() == [[[False, True, True, True]]]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m, f, k: m.propagate([f[0], f[1][:32]], k[0], 0), ValueError, "frame 0 is .* frame 1 is"),
        (lambda m, f, k: m.propagate(f, k[0][:, :32], 0), ValueError, "keyframe masks are .* but frames are"),
        (lambda m, f, k: m.propagate(f, k[0], 8), ValueError, "keyframe 8 is out of range for 8 frames"),
        (lambda m, f, k: m.propagate(f, k[0], -1), ValueError, "keyframe -1 is out of range"),
        (lambda m, f, k: m.propagate(f, k[0], 1.0), TypeError, "keyframe must be an int"),
        (lambda m, f, k: m.propagate(f / 255, k[0], 0), ValueError, "expected uint8 RGB frames"),
        (lambda m, f, k: m.propagate(f[..., :2], k[0], 0), ValueError, "expected frames uint8"),
        (lambda m, f, k: m.propagate(f, k[0] * 2.0, 0), ValueError, "probabilities in"),
        (lambda m, f, k: m.propagate(f, k[0], 0, direction="up"), ValueError, "direction must be one of"),
        (lambda m, f, k: m.propagate(f, k[0], 0, topk=5), TypeError, "unknown XMem option"),
        (lambda m, f, k: m.propagate(f, k[0], 0, mem_every=0), ValueError, "mem_every must be >= 1"),
        (lambda m, f, k: m.propagate(f, k[0], 0, min_mid_term_frames=10), ValueError, "min_mid_term_frames <"),
        (lambda m, f, k: m.propagate(f, k[0], 0), ValueError, "top_k=30 is larger than the 24 memory elements"),
    ],
)
def test_bad_input_gets_a_clear_error(model, video, call, error, match):
    frames, masks = video
    with pytest.raises(error, match=match):
        call(model, frames, masks)
