"""`vrsjax infer` end to end with a tiny Qwen2.5-VL checkpoint and random-weight SAM2 / XMem on a synthetic video:
both pipelines, a frame folder and an MP4 file, checking the files written, their shapes, and that the masks are
what SAM2 gives for the prompt the pipeline reports."""

import json

import numpy as np
import pytest
from inference_cases import SEGMENTER_ARGS
from PIL import Image

from vrsjax.cli import main
from vrsjax.inference import read_video, videoseg
from vrsjax.processing.sampling import veason_eval_indices

pytestmark = [
    pytest.mark.filterwarnings("ignore:cannot import name '_C'"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.usefixtures("one_torch_thread"),
]
SMALL = ["--frame-size", "56", "--max-new-tokens", "8"]


def read_pngs(folder, names):
    return np.stack([np.asarray(Image.open(folder / f"{name}.png")) for name in names])


def test_veason_infer_on_a_frame_folder(tmp_path, tiny_checkpoint, frame_folder, sam2_service, capsys):
    folder, frames = frame_folder
    out = tmp_path / "out"
    argv = ["infer", "--checkpoint", str(tiny_checkpoint), "--video", str(folder), "--query", "The bright square."]
    assert main([*argv, "--out", str(out), *SEGMENTER_ARGS, *SMALL]) == 0
    assert "wrote" in capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())
    names = [f"img_{t:03d}" for t in range(6)]
    pngs = read_pngs(out / "masks", names)
    assert pngs.shape == (6, 48, 64) and pngs.dtype == np.uint8 and set(np.unique(pngs)) <= {0, 255}
    assert result["mask_shape"] == [6, 48, 64] and result["frame_ids"] == veason_eval_indices(6, 8)
    assert result["pipeline"] == "veason" and result["config"]["size"] == 56
    assert {"prompt", "generate", "sam2", "total", "load_policy", "wall"} <= set(result["timings"])
    # A random tiny policy does not answer in the format: the reference's fallback prompt, and SAM2's masks for it.
    assert (result["parse_ok"], result["keyframe"], result["boxes"]) == (False, 0, [[0, 0, 0, 0]])
    expected = sam2_service.propagate(frames, 0, [[0, 0, 0, 0]])
    np.testing.assert_array_equal(pngs > 0, expected)
    overlay = read_video(out / "overlay.mp4")
    assert overlay.frames.shape == (6, 48, 64, 3)


@pytest.mark.slow  # three compilations of the tiny policy (interval, percent and answer prompts): ~45 s
def test_videoseg_infer_on_an_mp4_with_xmem(tmp_path, tiny_checkpoint, mp4_video):
    out = tmp_path / "out"
    sampler = json.dumps({"num_intervals": 2, "num_percents": 2, "delta": 0.5, "max_rounds": 1})
    argv = ["infer", "--checkpoint", str(tiny_checkpoint), "--video", str(mp4_video), "--query", "the square"]
    argv += ["--out", str(out), "--pipeline", "videoseg", "--xmem-random", "--target-size", "56", "--sampler", sampler]
    assert main([*argv, *SEGMENTER_ARGS, *SMALL, "--overlay", "gif"]) == 0
    result = json.loads((out / "result.json").read_text())
    pngs = read_pngs(out / "masks", [f"{t:05d}" for t in range(6)])
    assert pngs.shape == (6, 96, 128) and set(np.unique(pngs)) <= {0, 255}
    assert result["pipeline"] == "videoseg" and result["details"]["propagator"] == "xmem"
    assert 0 <= result["keyframe"] < 6 and result["frame_ids"][-1] == result["keyframe"]
    assert len(result["details"]["rounds"]) == 1 and len(result["details"]["percents"]) == 2
    assert {"sampler", "generate", "sam2", "xmem"} <= set(result["timings"])
    assert result["config"]["num_intervals"] == 2 and result["config"]["target_size"] == 56
    with Image.open(out / "overlay.gif") as gif:
        assert gif.n_frames == 6 and gif.size == (128, 96)


@pytest.mark.slow  # ~20 s
def test_videoseg_with_sam2_propagation_from_python(policy, sam2_service, frame_folder):
    _, frames = frame_folder
    config = videoseg.VideoSegConfig(
        num_intervals=1,
        num_percents=1,
        sampler_temperature=0.0,
        max_rounds=2,
        sampler_size=56,
        context_size=56,
        target_size=56,
        max_new_tokens=8,
        propagator="sam2",
        num_reference_frames=2,
        num_key_frames=0,
    )
    result = videoseg.run(policy, sam2_service, frames, "the square", config)
    assert result.masks.shape == (6, 48, 64) and result.masks.dtype == bool
    target, trace = videoseg.locate(policy, frames, "the square", config)
    assert target == result.keyframe  # greedy sampler: deterministic
    assert trace["key_segment"] == result.details["key_segment"]
    if not result.parse_ok:
        expected = sam2_service.propagate(frames, result.keyframe, [[0, 0, 0, 0]])
        np.testing.assert_array_equal(result.masks, expected)


def test_long_videos_stream_sam2_features_with_the_same_masks(sam2_service, frame_folder):
    from vrsjax.inference import veason

    _, frames = frame_folder
    boxes = [[18, 8, 42, 33], [2, 2, 20, 20]]
    cached = veason.prepare_video(sam2_service, frames)
    streamed = veason.prepare_video(sam2_service, frames, cache_frames=4)
    assert len(cached.features) == 6 and streamed.features == {}
    expected = veason.segment(sam2_service, cached, 2, boxes)
    np.testing.assert_array_equal(veason.segment(sam2_service, streamed, 2, boxes), expected)
    assert 0 < expected.mean() < 1
