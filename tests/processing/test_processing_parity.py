"""`Processor` against transformers 5.23's Qwen2_5_VLProcessor built from the same tiny checkpoint dir.

Images: the PIL image processor (default) and the torchvision one (`image_backend="torch"`, what AutoProcessor
picks); videos: Qwen2VLVideoProcessor. Everything is compared for exact equality, pixels included.
"""

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrsjax.processing import Processor

RNG = np.random.default_rng(0)
VSTART, VEND = "<|vision_start|>", "<|vision_end|>"
IMG = f"{VSTART}<|image_pad|>{VEND}"
VID = f"{VSTART}<|video_pad|>{VEND}"
# (height, width): tiny, square, extreme aspect ratios (up to 185), odd sizes, no-resize, upscale
IMAGE_SIZES = [(5, 7), (28, 28), (30, 40), (100, 150), (333, 777), (1000, 7), (7, 1300), (56, 1), (719, 1281), (9, 200)]


def _image(h, w):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _video(t, h, w):
    base = RNG.integers(0, 256, (1, h, w, 3)).astype(np.int64)
    drift = RNG.integers(-20, 20, (t, 1, 1, 3))
    return np.clip(base + drift, 0, 255).astype(np.uint8)


def assert_same(ours, ref, keys=None):
    keys = keys or [k for k in ref if k != "video_metadata" and (k in ours or k != "mm_token_type_ids")]
    assert set(keys) <= set(ours), f"missing {set(keys) - set(ours)}"
    for key in keys:
        a, b = np.asarray(ours[key]), np.asarray(ref[key])
        assert a.shape == b.shape, f"{key}: {a.shape} vs {b.shape}"
        assert a.dtype == b.dtype, f"{key}: {a.dtype} vs {b.dtype}"
        if a.dtype.kind == "f":
            assert np.abs(a - b).max(initial=0) == 0, f"{key}: max abs diff {np.abs(a - b).max()}"
        else:
            assert np.array_equal(a, b), f"{key} differs"


def _hf(processor, **kwargs):
    return processor(return_tensors="np", padding=True, padding_side="left", **kwargs)


@pytest.mark.parametrize("size", IMAGE_SIZES, ids=[f"{h}x{w}" for h, w in IMAGE_SIZES])
def test_single_image_pil(proc, hf_pil, size):
    text = f"<|im_start|>user\n{IMG}Describe.<|im_end|>\n<|im_start|>assistant\n"
    image = _image(*size)
    ours = proc(text=text, images=[image], return_mm_token_type_ids=True)
    assert_same(ours, _hf(hf_pil, text=[text], images=[image]))


@pytest.mark.parametrize("size", IMAGE_SIZES[::3], ids=[f"{h}x{w}" for h, w in IMAGE_SIZES[::3]])
def test_single_image_torchvision(proc_torch, hf_auto, size):
    text = f"a {IMG} b"
    image = _image(*size)
    assert_same(
        proc_torch(text=text, images=image, return_mm_token_type_ids=True), _hf(hf_auto, text=[text], images=[image])
    )


def test_pil_images_and_grayscale_rgba(proc, hf_pil):
    from PIL import Image

    gray = Image.fromarray(RNG.integers(0, 256, (40, 60), dtype=np.uint8), "L")
    rgba = Image.fromarray(RNG.integers(0, 256, (50, 30, 4), dtype=np.uint8), "RGBA")
    arr_gray = RNG.integers(0, 256, (33, 45, 1), dtype=np.uint8)
    arr_rgba = RNG.integers(0, 256, (44, 31, 4), dtype=np.uint8)
    text = IMG * 4
    images = [gray, rgba, arr_gray, arr_rgba]
    assert_same(proc(text=text, images=images, return_mm_token_type_ids=True), _hf(hf_pil, text=[text], images=images))


@pytest.mark.parametrize(
    "frames,size,fps",
    [
        (1, (40, 60), 2.0),
        (3, (28, 28), 1.0),
        (4, (100, 70), 30.0),
        (7, (45, 123), 0.5),
        (8, (720 // 8, 1280 // 8), 24.0),
    ],
)
def test_video_lengths_and_fps(proc, hf_pil, frames, size, fps):
    text = f"<|im_start|>user\n{VID}What happens?<|im_end|>\n"
    video = _video(frames, *size)
    ours = proc(text=text, videos=[video], fps=fps, return_mm_token_type_ids=True)
    ref = _hf(hf_pil, text=[text], videos=[video], video_metadata=[{"fps": fps, "total_num_frames": frames}])
    assert_same(ours, ref)
    assert ours["second_per_grid_ts"].tolist() == [2 / fps]


def test_video_default_timing_and_metadata(proc, hf_pil):
    """Without fps transformers assumes 24 fps; `video_metadata` is read the same way as there."""
    video = _video(6, 30, 30)
    assert_same(proc(text=VID, videos=video), _hf(hf_pil, text=[VID], videos=[video]))
    meta = [{"fps": 10.0, "total_num_frames": 30, "frames_indices": list(range(0, 30, 5))}]
    ours = proc(text=VID, videos=[video], video_metadata=meta)
    assert_same(ours, _hf(hf_pil, text=[VID], videos=[video], video_metadata=meta))
    assert ours["second_per_grid_ts"].tolist() == [1.0]  # 6 of 30 frames at 10 fps: 2 fps


def test_video_as_list_of_frames(proc, hf_pil):
    from PIL import Image

    frames = [Image.fromarray(f) for f in _video(5, 36, 52)]
    ours = proc(text=VID, videos=[frames], fps=2.0)
    ref = _hf(hf_pil, text=[VID], videos=[frames], video_metadata=[{"fps": 2.0, "total_num_frames": 5}])
    assert_same(ours, ref)


def test_mixed_batch(proc, hf_pil):
    texts = [
        f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{IMG}{VID}two things<|im_end|>",
        "just text, 東京 🙂  \n\n",
        f"{VID} then {IMG} and {IMG}<|im_end|>",
    ]
    images = [_image(64, 48), _image(30, 90), _image(200, 20)]
    videos = [_video(3, 40, 40), _video(5, 28, 84)]
    metadata = [{"fps": 2.0, "total_num_frames": 3}, {"fps": 6.0, "total_num_frames": 5}]
    ours = proc(text=texts, images=images, videos=videos, fps=[2.0, 6.0], return_mm_token_type_ids=True)
    ref = _hf(hf_pil, text=texts, images=images, videos=videos, video_metadata=metadata)
    assert_same(ours, ref)
    assert (ours["attention_mask"][:, -1] == 1).all() and (ours["attention_mask"][1, 0] == 0)  # left padded


def test_images_nested_per_sample(proc, hf_pil):
    texts = [IMG, f"x {IMG}{IMG}"]
    images = [[_image(40, 40)], [_image(28, 56), _image(56, 28)]]
    assert_same(proc(text=texts, images=images), _hf(hf_pil, text=texts, images=images))


def test_chat_template_matches(proc, hf_auto):
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        {"role": "user", "content": "And now?"},
    ]
    for kwargs in ({}, {"add_generation_prompt": True}, {"add_generation_prompt": True, "add_vision_id": True}):
        assert proc.apply_chat_template(conversation, **kwargs) == hf_auto.apply_chat_template(conversation, **kwargs)
    system_first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert proc.apply_chat_template(system_first) == hf_auto.apply_chat_template(system_first)
    assert proc.apply_chat_template(system_first) == hf_auto.tokenizer.apply_chat_template(system_first, tokenize=False)


@pytest.fixture(scope="module")
def small_pixels_dir(proc_dir, tmp_path_factory):
    """A copy of the tiny dir whose image/video pixel budgets force downscaling and sampling by fps."""
    out = tmp_path_factory.mktemp("small_pixels")
    for f in proc_dir.iterdir():
        shutil.copy(f, out / f.name)
    image = json.loads((out / "preprocessor_config.json").read_text())
    (out / "preprocessor_config.json").write_text(json.dumps({**image, "max_pixels": 28 * 28 * 12, "min_pixels": 784}))
    video = json.loads((out / "video_preprocessor_config.json").read_text())
    video |= {"max_pixels": 28 * 28 * 20, "min_pixels": 28 * 28 * 4, "do_sample_frames": True, "fps": 2.0}
    (out / "video_preprocessor_config.json").write_text(json.dumps(video))
    return out


def test_downscale_and_frame_sampling(small_pixels_dir):
    from transformers import AutoProcessor, AutoTokenizer, AutoVideoProcessor
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    hf = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(small_pixels_dir),
        tokenizer=AutoTokenizer.from_pretrained(small_pixels_dir),
        video_processor=AutoVideoProcessor.from_pretrained(small_pixels_dir),
    )
    ours = Processor.from_pretrained(small_pixels_dir)
    images, video = [_image(300, 500), _image(1000, 40)], _video(31, 120, 160)
    text = f"{IMG} {IMG} {VID}"
    meta = [{"fps": 10.0, "total_num_frames": 31}]
    assert_same(
        ours(text=text, images=images, videos=[video], video_metadata=meta),
        _hf(hf, text=[text], images=images, videos=[video], video_metadata=meta),
    )
    torch_ours = Processor.from_pretrained(small_pixels_dir, image_backend="torch")
    assert_same(
        torch_ours(text=text, images=images, videos=[video], video_metadata=meta),
        _hf(
            AutoProcessor.from_pretrained(small_pixels_dir),
            text=[text],
            images=images,
            videos=[video],
            video_metadata=meta,
        ),
    )


def test_aspect_ratio_over_200_is_rejected(proc, hf_pil):
    image = _image(2, 500)
    with pytest.raises(ValueError, match="absolute aspect ratio"):
        hf_pil(text=[IMG], images=[image], return_tensors="np")
    with pytest.raises(ValueError, match=r"image 0: aspect ratio 250.0 of a 2x500 image is over 200"):
        proc(text=IMG, images=[image])


def test_pad_count_mismatch_is_an_error(proc):
    with pytest.raises(ValueError, match=r"1 <\|image_pad\|> tokens .* but 2 images"):
        proc(text=IMG, images=[_image(28, 28), _image(28, 28)])


@pytest.mark.parametrize(
    "in_hw,out_hw",
    [
        ((720, 1280), (560, 1008)),
        ((37, 500), (56, 672)),
        ((1, 1), (56, 56)),
        ((1000, 30), (28, 1260)),
        ((300, 300), (560, 560)),
        ((57, 57), (28, 28)),
        ((4000, 20), (448, 28)),
        ((99, 101), (99, 56)),
    ],
)
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_resize_matches_torch_uint8_antialias(in_hw, out_hw, mode):
    import torch

    from vrsjax.processing.resize import BICUBIC, BILINEAR, resize_torch

    frames = RNG.integers(0, 256, (2, *in_hw, 3), dtype=np.uint8)
    ref = (
        torch.nn.functional.interpolate(
            torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), size=out_hw, mode=mode, antialias=True
        )
        .permute(0, 2, 3, 1)
        .numpy()
    )
    ours, layout = resize_torch(frames, *out_hw, BICUBIC if mode == "bicubic" else BILINEAR)
    assert np.array_equal(ours.transpose([layout.index(a) for a in "thwc"]), ref)


@pytest.mark.parametrize("total,num", [(10, 4), (10, 6), (31, 8), (97, 12), (300, 16), (1000, 64), (7, 2), (120, 120)])
def test_hf_frame_indices(total, num):
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
    from transformers.video_utils import VideoMetadata

    from vrsjax.processing import hf_frame_indices

    ref = Qwen2VLVideoProcessor().sample_frames(VideoMetadata(total_num_frames=total, fps=25.0), num_frames=num)
    assert hf_frame_indices(total, 25.0, num_frames=num).tolist() == ref.tolist()
    ref = Qwen2VLVideoProcessor().sample_frames(VideoMetadata(total_num_frames=total, fps=25.0), fps=num / 10)
    assert hf_frame_indices(total, 25.0, fps=num / 10).tolist() == ref.tolist()


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.sampled_from([(3136, 12845056), (128 * 28 * 28, 768 * 28 * 28), (784, 28 * 28 * 12)]),
)
def test_smart_resize_matches_transformers(height, width, bounds):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    from vrsjax.processing import smart_resize

    try:
        expected = hf_smart_resize(height, width, 28, *bounds)
    except ValueError:
        with pytest.raises(ValueError, match="aspect ratio"):
            smart_resize(height, width, 28, *bounds)
        return
    assert smart_resize(height, width, 28, *bounds) == expected


def test_patchify_function_matches_processors():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from vrsjax.processing.patchify import patchify

    image = _image(90, 130)
    ref = Qwen2VLImageProcessorPil()(images=[image], return_tensors="np")
    pixels, grid = patchify(image)
    assert np.array_equal(pixels, ref["pixel_values"]) and grid.tolist() == ref["image_grid_thw"][0].tolist()
    video = _video(5, 64, 96)
    ref = Qwen2VLVideoProcessor()(videos=[video], return_tensors="np", cap_pixels_per_frame=False)
    pixels, grid = patchify(video, min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28, backend="torch")
    assert np.array_equal(pixels, ref["pixel_values_videos"]) and grid.tolist() == ref["video_grid_thw"][0].tolist()
