"""Batching (left padding, buckets, M-RoPE positions, prompt-length limits) and bad input."""

import numpy as np
import pytest

from vrsjax.models.qwen2_5_vl.positions import get_rope_index
from vrsjax.processing import PromptTooLongError, bucket_length, load_image, load_video, pad_left, sampling

IMG = "<|vision_start|><|image_pad|><|vision_end|>"
VID = "<|vision_start|><|video_pad|><|vision_end|>"
RNG = np.random.default_rng(0)


def _img(h=56, w=84):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_bucket_length():
    assert [bucket_length(n) for n in (1, 16, 17, 100, 1024, 1025)] == [16, 16, 32, 128, 1024, 2048]
    assert bucket_length(300, [256, 512, 1024]) == 512 and bucket_length(7, None) == 7
    with pytest.raises(ValueError, match="longer than the largest bucket 1024"):
        bucket_length(2000, [512, 1024])


def test_pad_left():
    ids, mask = pad_left([[1, 2, 3], [4]], 5, 0)
    assert ids.tolist() == [[0, 0, 1, 2, 3], [0, 0, 0, 0, 4]] and mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]]


def test_bucketed_batch_and_positions(proc):
    texts = [f"{IMG}a short one", f"two {IMG} images {IMG} and a video {VID} in a longer prompt"]
    images, video = [_img(), _img(28, 28), _img(84, 56)], RNG.integers(0, 256, (5, 56, 56, 3), dtype=np.uint8)
    batch = proc(text=texts, images=images, videos=[video], fps=1.0, padding="bucket", return_position_ids=True)
    length = batch["input_ids"].shape[1]
    assert length == bucket_length(int(batch["attention_mask"].sum(1).max()))
    assert batch["input_ids"][0, 0] == proc.tokenizer.pad_token_id and batch["attention_mask"][:, -1].all()
    positions, deltas = get_rope_index(
        batch["input_ids"],
        batch["attention_mask"],
        batch["image_grid_thw"],
        batch["video_grid_thw"],
        batch["second_per_grid_ts"],
        image_token_id=300,
        video_token_id=301,
    )
    assert np.array_equal(batch["position_ids"], positions) and np.array_equal(batch["rope_deltas"], deltas)
    # each row's positions are those of the sample processed alone (padding changes nothing but the offsets)
    alone = proc(text=texts[:1], images=images[:1], return_position_ids=True)
    n = alone["input_ids"].shape[1]
    assert np.array_equal(batch["position_ids"][:, 0, -n:], alone["position_ids"][:, 0])
    assert set(batch.model_inputs()) == {
        "input_ids",
        "attention_mask",
        "pixel_values",
        "image_grid_thw",
        "pixel_values_videos",
        "video_grid_thw",
        "second_per_grid_ts",
        "position_ids",
    }


def test_prompt_too_long_raises_with_both_lengths(proc):
    with pytest.raises(
        PromptTooLongError, match=r"sample clip-7: the prompt has \d+ tokens but max_prompt_length is 20"
    ):
        proc(text=[f"{IMG} hi"], images=[_img(112, 112)], max_prompt_length=20, sample_ids=["clip-7"])


def test_prompt_too_long_skipped_and_counted(proc):
    big, small = _img(112, 112), _img(28, 28)
    texts = [f"{IMG} big", f"{IMG} small", "text only", f"{IMG}{IMG} two big"]
    out = proc(text=texts, images=[big, small, big, big], max_prompt_length=20, overflow="skip")
    assert [s for s, _ in out.length_report.skipped] == ["0", "3"] and out.length_report.num_skipped == 2
    kept = proc(text=[texts[1], texts[2]], images=[small])
    for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw"):
        assert np.array_equal(out[key], kept[key]), key
    none_left = proc(text=[f"{IMG} big"], images=[big], max_prompt_length=5, overflow="skip")
    assert "pixel_values" not in none_left and "input_ids" not in none_left and none_left.length_report.num_skipped == 1


def test_processor_output_feeds_the_model(tmp_path):
    from vrsjax.models import qwen2_5_vl
    from vrsjax.processing import Processor
    from vrsjax.testing import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "tiny", layout="v5")
    proc = Processor.from_pretrained(ckpt)
    model = qwen2_5_vl.from_pretrained(ckpt)
    video = RNG.integers(0, 256, (3, 28, 28, 3), dtype=np.uint8)
    batch = proc(text=[f"{IMG} what?", f"{VID} and?"], images=[_img(28, 56)], videos=[video], fps=2.0)
    logits = np.asarray(model(**batch.model_inputs()))
    assert logits.shape == (*batch["input_ids"].shape, 320) and np.isfinite(logits).all()


def test_unreadable_and_truncated_files(tmp_path):
    from PIL import Image

    path = tmp_path / "frame.jpg"
    Image.fromarray(_img(64, 64)).save(path)
    assert load_image(path).shape == (64, 64, 3)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"cannot read image {path}"):
        load_image(path)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image .*notes.txt"):
        load_image(tmp_path / "notes.txt")
    empty = tmp_path / "empty_video"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no image frames"):
        load_video(empty)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        load_video(tmp_path / "missing.mp4")


def test_video_folder_loads_sorted(tmp_path):
    from PIL import Image

    frames = RNG.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.png")
    video, fps = load_video(tmp_path)
    assert np.array_equal(video, frames) and fps is None


def test_bad_vision_inputs(proc):
    with pytest.raises(ValueError, match="video 0 has zero frames"):
        proc(text=VID, videos=[np.zeros((0, 28, 28, 3), np.uint8)])
    with pytest.raises(ValueError, match="image 0: expected uint8 pixels"):
        proc(text=IMG, images=[np.zeros((28, 28, 3), np.float32)])
    with pytest.raises(ValueError, match="cannot sample 10 frames from 4"):
        sampling.hf_frame_indices(4, 30.0, num_frames=10)
    with pytest.raises(ValueError, match="fps has 1 entries for 2 videos"):
        proc(text=VID * 2, videos=[np.zeros((2, 28, 28, 3), np.uint8)] * 2, fps=[1.0])
