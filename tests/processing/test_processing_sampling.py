"""Frame samplers: qwen-vl-utils semantics (against torch's linspace and torchvision's resize), Veason-R1's."""

import math

import numpy as np
import pytest

from vrsjax.processing import sampling


@pytest.mark.parametrize(
    "total,video_fps,kwargs,expected",
    [
        (300, 30.0, {}, 20),  # 300 / 30 * 2 fps
        (10, 30.0, {}, 4),  # raised to min_frames
        (3, 30.0, {}, 2),  # capped by the (even) video length
        (1000, 25.0, {"fps": 2.0}, 80),
        (5000, 10.0, {}, 768),  # max_frames
        (101, 1.0, {"fps": 1.0}, 100),  # floored to even
        (50, 25.0, {"nframes": 5}, 4),  # round(2.5) = 2 (half to even), * 2
        (50, 25.0, {"nframes": 7}, 8),
        (120, 24.0, {"min_frames": 7, "max_frames": 9}, 8),
    ],
)
def test_qwen_nframes(total, video_fps, kwargs, expected):
    assert sampling.qwen_nframes(total, video_fps, **kwargs) == expected


def test_qwen_nframes_errors_name_the_video():
    with pytest.raises(ValueError, match=r"clip\.mp4: 0 frames requested from a video of 1 frames"):
        sampling.qwen_nframes(1, 30.0, name="clip.mp4")
    with pytest.raises(ValueError, match="8 frames requested from a video of 7 frames"):
        sampling.qwen_nframes(7, 30.0, nframes=7)
    with pytest.raises(ValueError, match="has 0 frames"):
        sampling.qwen_nframes(0, 30.0)


@pytest.mark.parametrize("total,n", [(300, 20), (10, 4), (7, 6), (1001, 768), (33, 32), (2, 2), (12345, 400)])
def test_qwen_frame_indices_match_torch(total, n):
    import torch

    ref = torch.linspace(0, total - 1, n).round().long().tolist()
    assert sampling.qwen_frame_indices(total, n).tolist() == ref


def test_qwen_video_matches_fetch_video_semantics():
    """Frame choice, timing and size of qwen-vl-utils; pixels with torchvision's uint8 kernel (transformers' video
    processor arithmetic; qwen-vl-utils' own v1 `resize` goes through float32 and may differ by a few levels)."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as tvf

    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (30, 72, 128, 3), dtype=np.uint8)
    frames, sample_fps = sampling.qwen_video(video, video_fps=30.0)
    idx = torch.linspace(0, 29, 4).round().long()
    assert sample_fps == 4 / 30 * 30.0
    h, w = sampling.qwen_smart_resize(72, 128, 28, 128 * 28 * 28, 768 * 28 * 28)
    assert (h, w) == (252, 448)
    ref = tvf.resize(
        torch.from_numpy(video).permute(0, 3, 1, 2)[idx], [h, w], InterpolationMode.BICUBIC, antialias=True
    )
    assert np.array_equal(frames, ref.permute(0, 2, 3, 1).numpy())


def test_qwen_video_pixel_budget_shrinks_with_frames():
    assert sampling.qwen_video_max_pixels(20) == 768 * 28 * 28
    assert sampling.qwen_video_max_pixels(768) == 128000 * 28 * 28 * 0.9 / 768 * 2
    assert sampling.qwen_video_max_pixels(768, min_pixels=300 * 28 * 28) == int(300 * 28 * 28 * 1.05)
    assert sampling.qwen_video_max_pixels(20, max_pixels=1000) == 1000


def test_qwen_image_frames_pad_to_even():
    from PIL import Image

    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(3)]
    video, fps = sampling.qwen_image_frames(images, fps=1.0)
    assert video.shape == (4, 56, 56, 3) and fps == 1.0
    assert np.array_equal(video[0], np.asarray(images[0].resize((56, 56))))
    assert np.array_equal(video[3], video[2])
    with pytest.raises(ValueError, match="empty"):
        sampling.qwen_image_frames([])


def test_veason_train_indices():
    masks = np.zeros((23, 8, 8), bool)
    for t, area in enumerate([1, 5, 9, 2, 40, 3, 6, 7, 30, 4, 8, 2, 1, 0, 50, 9, 9, 10, 3, 2, 20, 1, 0]):
        masks[t].flat[:area] = True
    areas = masks.reshape(23, -1).sum(1)
    top5 = set(areas.argsort()[-5:].tolist())
    for seed in range(20):
        ids, keyframe = sampling.veason_train_indices(masks, num_frames=6, rng=np.random.default_rng(seed))
        step = math.ceil(23 / 5)
        assert keyframe in top5 and keyframe in ids
        assert ids == list(range(keyframe % step, 23, step)) and len(ids) <= 6
    assert sampling.veason_train_indices(areas, num_frames=1, rng=np.random.default_rng(0))[0] == [
        sampling.veason_train_indices(areas, num_frames=1, rng=np.random.default_rng(0))[1]
    ]


def test_veason_eval_indices():
    assert sampling.veason_eval_indices(100) == [0, 14, 28, 42, 56, 70, 84, 99]
    assert sampling.veason_eval_indices(100) == np.linspace(0, 99, num=8, dtype=int).tolist()
    assert sampling.veason_eval_indices(5) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="0 frames"):
        sampling.veason_eval_indices(0)
