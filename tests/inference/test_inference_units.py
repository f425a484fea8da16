"""The inference pipelines' pure parts: reading Veason-R1 and VideoSeg-R1 answers as the released evaluation does,
the hierarchical sampler's segment arithmetic, video IO, and the bad-input errors raised before any model loads."""

import json

import numpy as np
import pytest
from inference_cases import SEGMENTER_ARGS
from PIL import Image

from vrsjax.cli import main
from vrsjax.inference import SegmenterOptions, check_checkpoint, read_video, veason, videoseg
from vrsjax.inference.video import overlay, write_masks, write_video
from vrsjax.processing.sampling import veason_eval_indices


def veason_text(keyframe, boxes, quote='"'):
    body = json.dumps({"keyframe_timestamp": keyframe, "bbox_2d_list": boxes})
    return f"<think>it moves</think>\n<answer>{body.replace(chr(34), quote)}</answer>"


def reference_boxes(boxes, width, height, size=560):
    """multi_gpu_eval_keyframe_sft_mod_reason_vos.py: int(v * factor + 0.5) with factor = W / 560, H / 560."""
    fx, fy = width / size, height / size
    return [[int(b[0] * fx + 0.5), int(b[1] * fy + 0.5), int(b[2] * fx + 0.5), int(b[3] * fy + 0.5)] for b in boxes]


@pytest.mark.parametrize("width,height", [(1280, 720), (64, 48), (853, 480)])
def test_veason_answer_maps_boxes_as_the_reference(width, height):
    boxes = [[10, 20, 300, 400], [0.4, 559.6, 280.5, 1]]
    answer = veason.read_answer(veason_text(5, boxes), 30, width, height)
    assert answer.parse_ok and answer.keyframe == 5 and not answer.keyframe_clipped
    assert answer.boxes == reference_boxes(boxes, width, height)
    assert answer.data == {"keyframe_timestamp": 5, "bbox_2d_list": boxes}
    single_quotes = veason.read_answer(veason_text(5, boxes, "'"), 30, width, height)
    assert single_quotes.boxes == answer.boxes and single_quotes.parse_ok


@pytest.mark.parametrize(
    "text",
    [
        "no answer",
        "<answer>{not json}</answer>",
        '<answer>{"bbox_2d_list": [[1, 2, 3, 4]]}</answer>',  # no timestamp (the reference crashes)
        veason_text(3, []),  # an empty box list: the reference's fallback
        veason_text(3, [[1, 2, 3]]),
    ],
)
def test_veason_unusable_answer_falls_back_to_keyframe_0_and_an_empty_box(text):
    answer = veason.read_answer(text, 10, 64, 48)
    assert (answer.keyframe, answer.boxes, answer.parse_ok) == (0, [[0, 0, 0, 0]], False)


def test_veason_keyframe_outside_the_video_is_clipped_and_reported():
    late = veason.read_answer(veason_text(40, [[1, 2, 3, 4]]), 10, 64, 48)
    assert (late.keyframe, late.keyframe_clipped, late.parse_ok) == (9, True, True)
    early = veason.read_answer(veason_text(-2, [[1, 2, 3, 4]]), 10, 64, 48)
    assert (early.keyframe, early.keyframe_clipped) == (0, True)


def test_veason_prompt_samples_and_resizes_as_released():
    frames = np.random.default_rng(0).integers(0, 255, (20, 30, 50, 3), np.uint8)
    text, ids, images = veason.prompt("The Dog.", frames, veason.VeasonConfig(size=56))
    assert ids == veason_eval_indices(20, 8) == [0, 2, 5, 8, 10, 13, 16, 19]
    assert images.shape == (8, 56, 56, 3)
    assert "(0s)<|vision_start|><|image_pad|><|vision_end|>, (2s)" in text and "'the dog'" in text
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    _, few, _ = veason.prompt("x", frames[:5], veason.VeasonConfig(size=56))
    assert few == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("query", ["", "   ", "..", " . \n", None])
def test_empty_query_is_rejected(query):
    with pytest.raises(ValueError, match="empty query"):
        veason.check_query(query)


def test_videoseg_segment_arithmetic():
    assert videoseg.uniform_ids(10, 13, 8) == [10, 11, 12, 13]
    assert videoseg.uniform_ids(0, 99, 4) == [0, 33, 66, 99]
    assert videoseg.narrow((10, 50), (12.4, 30.2)) == (12, 31)  # widened to whole frames
    assert videoseg.narrow((10, 50), (0.0, 80.0)) == (10, 50)  # clipped to the segment
    assert videoseg.narrow((10, 50), (60.0, 70.0)) is None and videoseg.narrow((0, 5), None) is None
    config = videoseg.VideoSegConfig(num_reference_frames=3, num_key_frames=2)
    assert videoseg.context_ids(100, (40, 60), 50, config) == [0, 40, 49, 60, 99]


def test_videoseg_answer_gives_box_positive_and_negative_points():
    text = (
        '<think>a</think><answer>[{"bbox_2d": [84, 168, 420, 840], "point_2d": [210, 420], '
        '"negative_point_2d": [[80, 160], [500, 10]]}, {"bbox_2d": [1, 2, 3]}, {"bbox_2d": [0, 0, 840, 840]}]</answer>'
    )
    boxes, points, labels, data = videoseg.read_answer(text, 1280, 720)
    assert boxes == [[128, 144, 640, 720], [0, 0, 1280, 720]]  # the 3-number box is dropped
    assert points == [[[320, 360], [122, 137], [762, 9]], []]
    assert labels == [[1, 0, 0], []]
    assert len(data) == 3
    assert videoseg.read_answer("<answer>oops</answer>", 64, 48)[:3] == ([], [], [])


def test_videoseg_config_validates():
    with pytest.raises(ValueError, match="delta"):
        videoseg.VideoSegConfig(delta=1.5)
    with pytest.raises(ValueError, match="propagator"):
        videoseg.VideoSegConfig(propagator="cutie")
    with pytest.raises(ValueError, match="multiple of 28"):
        videoseg.VideoSegConfig(target_size=100)


def test_video_folder_and_mp4_round_trip(tmp_path, frame_folder):
    folder, frames = frame_folder
    clip = read_video(folder)
    np.testing.assert_array_equal(clip.frames, frames)
    assert clip.names == [f"img_{t:03d}" for t in range(6)] and clip.fps is None
    mp4 = read_video(write_video(tmp_path / "a.mp4", frames, fps=4))
    assert mp4.frames.shape == frames.shape and mp4.names[:2] == ["00000", "00001"] and mp4.fps == 4
    assert np.abs(mp4.frames.astype(int) - frames).mean() < 12  # lossy, but the same pictures
    odd = read_video(write_video(tmp_path / "odd.mp4", frames[:, :47, :63], fps=2))
    assert odd.frames.shape[1:3] == (48, 64)  # yuv420p needs even sides: padded by one row and column
    gif = write_video(tmp_path / "a.gif", frames)
    assert gif.stat().st_size > 0


def test_masks_and_overlay(tmp_path, frame_folder):
    _, frames = frame_folder
    masks = np.zeros(frames.shape[:3], bool)
    masks[:, 10:20, 5:15] = True
    paths = write_masks(tmp_path, [f"f{t}" for t in range(6)], masks)
    loaded = np.stack([np.asarray(Image.open(p)) for p in paths])
    assert loaded.dtype == np.uint8 and set(np.unique(loaded)) == {0, 255}
    np.testing.assert_array_equal(loaded > 0, masks)
    drawn = overlay(frames, masks, 2, boxes=[[30, 5, 50, 30]], points=[[40, 20], [2, 2]], labels=[1, 0])
    assert drawn.shape == frames.shape and drawn.dtype == np.uint8
    assert not np.array_equal(drawn[0, 10:20, 5:15], frames[0, 10:20, 5:15])  # tinted
    np.testing.assert_array_equal(drawn[0, 30:, 30:], frames[0, 30:, 30:])  # untouched outside the mask
    assert not np.array_equal(drawn[2], overlay(frames, masks)[2])  # the keyframe carries its prompts


def test_unreadable_video_names_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="broken.mp4"):
        read_video(bad)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no image frames"):
        read_video(tmp_path / "empty")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "00000.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ValueError, match="00000.jpg"):
        read_video(tmp_path / "cut")


def test_checkpoint_of_another_model_names_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match=r"config.json: model_type='llama'.*not a Qwen2.5-VL"):
        check_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        check_checkpoint(tmp_path / "..")
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        check_checkpoint(tmp_path)


def test_segmenter_options_need_weights_or_an_explicit_random_flag(tmp_path):
    with pytest.raises(ValueError, match="no SAM2 weights"):
        SegmenterOptions().build_sam2()
    with pytest.raises(ValueError, match="no XMem weights"):
        SegmenterOptions().build_xmem()
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        SegmenterOptions(sam2_checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="either"):
        SegmenterOptions(xmem_checkpoint=__file__, xmem_random=True)


def run_cli(*args):
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", *args])
    return str(exit_info.value)


def test_cli_bad_input_fails_with_one_line(tmp_path, tiny_checkpoint, frame_folder):
    folder, _ = frame_folder
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 100)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    common = ["--out", str(tmp_path / "out"), *SEGMENTER_ARGS]
    message = run_cli("--checkpoint", str(tiny_checkpoint), "--video", str(bad), "--query", "x", *common)
    assert message.startswith("vrsjax infer: cannot decode video") and "clip.mp4" in message
    message = run_cli("--checkpoint", str(tiny_checkpoint), "--video", str(folder), "--query", " ", *common)
    assert "empty query" in message
    message = run_cli("--checkpoint", str(other), "--video", str(folder), "--query", "x", *common)
    assert "other/config.json: model_type='bert'" in message
    message = run_cli("--checkpoint", str(tiny_checkpoint), "--video", str(folder), "--query", "x", "--out", "o")
    assert "no SAM2 weights" in message
    assert not (tmp_path / "out").exists()


def sam2_run_warnings(silence: bool) -> list[str]:
    """The warnings of what SAM2 does on every run, and one other deprecation."""
    import warnings

    import torch
    from sam2.utils.misc import fill_holes_in_mask_scores

    from vrsjax.inference.commands import silence_known_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if silence:
            silence_known_warnings()
        torch.jit.script(torch.nn.Sequential(torch.nn.ReLU()))  # what sam2's SAM2Transforms does
        fill_holes_in_mask_scores(torch.zeros(1, 1, 8, 8), 4)  # needs sam2's CUDA extension _C, not built here
        warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    return [str(w.message) for w in caught]


def test_infer_and_predict_silence_only_the_known_sam2_warnings():
    loud = sam2_run_warnings(silence=False)
    assert any("torch.jit.script" in m for m in loud) and any("'_C'" in m for m in loud)
    assert sam2_run_warnings(silence=True) == ["another deprecation"]


@pytest.fixture(scope="module")
def damaged_mp4(tmp_path_factory):
    """A 40-frame MP4 written with PyAV, and a copy with 3 KB zeroed in the middle of the stream."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 128)[None, :, None]
    frames = np.stack([np.broadcast_to((np.sin(6 * ramp + t / 4) * 0.5 + 0.5) * 255, (96, 128, 3)) for t in range(40)])
    frames = frames.astype(np.uint8)
    frames[:, 30:60, 40:80] = rng.integers(0, 255, (40, 30, 40, 3))
    folder = tmp_path_factory.mktemp("damaged")
    clean = write_video(folder / "clean.mp4", frames, fps=10)
    data = bytearray(clean.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 3072] = bytes(3072)
    bad = folder / "bad.mp4"
    bad.write_bytes(bytes(data))
    return clean, bad


def test_damaged_frames_are_counted_reported_and_refused_over_the_limit(damaged_mp4, caplog):
    from vrsjax.errors import UserError

    clean, bad = damaged_mp4
    good = read_video(clean)
    assert good.num_frames == 40 and good.damaged == []
    with caplog.at_level("WARNING", logger="vrsjax.inference.video"):
        video = read_video(bad, max_damaged=0.5)
    assert video.num_frames == 40 and video.names == good.names  # frames keep their times
    assert 0 < len(video.damaged) <= 0.5 * 40
    assert [r.getMessage() for r in caplog.records] == [
        f"video {bad}: {len(video.damaged)} of 40 frames are damaged (frames "
        f"{', '.join(map(str, video.damaged))}); each missing one repeats the previous frame"
    ]
    undamaged = [t for t in range(40) if t not in video.damaged]
    np.testing.assert_array_equal(video.frames[undamaged[:5]], good.frames[undamaged[:5]])
    with pytest.raises(UserError, match=f"video {bad}: {len(video.damaged)} of 40 frames are damaged"):
        read_video(bad, max_damaged=(len(video.damaged) - 1) / 40)


def test_infer_out_that_is_a_file_fails_before_any_work(tmp_path):
    (tmp_path / "out").write_text("x")
    message = run_cli(
        "--checkpoint", str(tmp_path), "--video", str(tmp_path), "--query", "x", "--out", str(tmp_path / "out")
    )
    assert message.startswith(f"vrsjax infer: --out {tmp_path / 'out'}: is a file")
