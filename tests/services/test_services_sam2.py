"""SAM2Service against the official sam2 1.1.0 predictors: from in-memory frames it gives the very logits and masks the
official video predictor gives from a JPEG folder through init_state (Veason-R1's call sequence), the group cache
computes each frame's features once without changing a bit, and the image path equals SAM2ImagePredictor."""

import numpy as np
import pytest
import torch
from sam2_cases import BOXES, FRAMES, HEIGHT, WIDTH

from vrsjax.services.sam2 import CONFIGS, SAM2Service, Video, resolve_config

pytestmark = [
    pytest.mark.filterwarnings("ignore:cannot import name '_C'"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def official_logits(service, folder, keyframe, boxes=None, points=None, labels=None):
    """float32[T, K, H, W]: Veason-R1's get_sam2_video_predict on the official predictor, logits kept."""
    predictor = service.predictor
    state = predictor.init_state(folder)
    predictor.reset_state(state)
    count = len(boxes) if boxes is not None else len(points)
    for k in range(count):
        predictor.add_new_points_or_box(
            state,
            frame_idx=keyframe,
            obj_id=k,
            box=None if boxes is None else boxes[k],
            points=None if points is None else points[k],
            labels=None if labels is None else labels[k],
        )
    frames = {}
    for reverse in (False, True):
        for t, _, logits in predictor.propagate_in_video(state, start_frame_idx=keyframe, reverse=reverse):
            frames[t] = logits[:, 0].cpu().numpy()
    assert sorted(frames) == list(range(FRAMES))
    return np.stack([frames[t] for t in range(FRAMES)])


@pytest.mark.parametrize("keyframe", [0, 2, FRAMES - 1])
def test_propagate_equals_official_init_state_path(sam2_service, jpeg_video, keyframe):
    folder, frames = jpeg_video
    expected = official_logits(sam2_service, folder, keyframe, BOXES)
    logits = sam2_service.propagate(frames, keyframe, BOXES, per_object=True, logits=True)
    np.testing.assert_array_equal(logits, expected)
    masks = sam2_service.propagate(frames, keyframe, BOXES)
    assert masks.shape == (FRAMES, HEIGHT, WIDTH) and masks.dtype == bool
    np.testing.assert_array_equal(masks, (expected > 0).any(axis=1))
    per_object = sam2_service.propagate(frames, keyframe, BOXES, per_object=True)
    np.testing.assert_array_equal(per_object, expected > 0)
    assert 0 < masks.mean() < 1 and not np.array_equal(per_object[:, 0], per_object[:, 1])  # the test can tell


def test_points_with_and_without_boxes_equal_official(sam2_service, jpeg_video):
    folder, frames = jpeg_video
    points = np.array([[[30, 20], [5, 40]], [[10, 10], [50, 40]]], dtype=np.float32)
    labels = np.array([[1, 0], [1, 1]], dtype=np.int32)
    expected = official_logits(sam2_service, folder, 1, BOXES, points, labels)
    np.testing.assert_array_equal(sam2_service.propagate(frames, 1, BOXES, points, labels, True, True), expected)
    only_points = official_logits(sam2_service, folder, 3, None, points, labels)
    np.testing.assert_array_equal(sam2_service.propagate(frames, 3, None, points, labels, True, True), only_points)


def test_group_cache_encodes_each_frame_once_and_changes_nothing(sam2_service, jpeg_video, monkeypatch):
    _, frames = jpeg_video
    answers = [(2, BOXES[:1]), (0, BOXES), (4, BOXES[1:]), (2, BOXES[:1] + 3)]
    uncached = [sam2_service.propagate(frames, k, boxes, logits=True) for k, boxes in answers]
    passes = []
    original = sam2_service.predictor.forward_image
    monkeypatch.setattr(sam2_service.predictor, "forward_image", lambda image: passes.append(1) or original(image))
    video = sam2_service.prepare(frames)
    cached = [sam2_service.propagate(video, k, boxes, logits=True) for k, boxes in answers]
    assert len(passes) == FRAMES  # one image-encoder pass per frame for the whole group
    for got, expected in zip(cached, uncached, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_repeated_prompt_reuses_its_masklet(sam2_service, jpeg_video):
    _, frames = jpeg_video
    video = sam2_service.prepare(frames)
    first = sam2_service.propagate(video, 2, BOXES)
    assert len(video.masklets) == 2
    np.testing.assert_array_equal(sam2_service.propagate(video, 2, BOXES[::-1]), first)  # same objects, reused
    assert len(video.masklets) == 2
    sam2_service.propagate(video, 3, BOXES[:1])
    assert len(video.masklets) == 3


def test_frames_from_torch_and_jax(sam2_service, jpeg_video):
    import jax.numpy as jnp

    _, frames = jpeg_video
    expected = sam2_service.propagate(frames, 2, BOXES[0])
    np.testing.assert_array_equal(sam2_service.propagate(torch.from_numpy(frames), 2, torch.tensor(BOXES[0])), expected)
    np.testing.assert_array_equal(
        sam2_service.propagate(jnp.asarray(frames), np.int64(2), jnp.asarray(BOXES[0])), expected
    )


def test_state_has_the_keys_of_init_state(sam2_service, jpeg_video):
    folder, frames = jpeg_video
    official = sam2_service.predictor.init_state(folder)
    ours = sam2_service._new_state(sam2_service.prepare(frames))
    assert set(ours) == set(official)
    assert torch.equal(ours["images"], official["images"])  # the preprocessing of the JPEG loader, bit for bit
    assert (ours["video_height"], ours["video_width"]) == (official["video_height"], official["video_width"])


def veason_image_mode(predictor, image, boxes=None, points=None, labels=None):
    """bool[K, H, W]: one official predict per object, the best of its three masks (Veason-R1's image mode)."""
    predictor.set_image(image)
    masks = []
    for k in range(len(boxes) if boxes is not None else len(points)):
        candidates, scores, _ = predictor.predict(
            point_coords=None if points is None else points[k],
            point_labels=None if labels is None else labels[k],
            box=None if boxes is None else boxes[k],
            multimask_output=True,
        )
        masks.append(candidates[np.argsort(scores)[::-1]][0].astype(np.uint8) > 0)
    return np.stack(masks)


def test_segment_image_equals_official_image_predictor(sam2_service, jpeg_video):
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    _, frames = jpeg_video
    model = build_sam2(sam2_service.config, None, device="cpu", hydra_overrides_extra=["++model.image_size=64"])
    model.load_state_dict(sam2_service.predictor.state_dict())  # strict: the same weights
    official = SAM2ImagePredictor(model)
    official._bb_feat_sizes = [(16, 16), (8, 8), (4, 4)]  # sam2 hard-codes the sizes of a 1024 input
    points, labels = np.array([[[30, 20], [5, 40]]], np.float32), np.array([[1, 0]], np.int32)
    for image in frames[:2]:
        expected = veason_image_mode(official, image, BOXES)
        np.testing.assert_array_equal(sam2_service.segment_image(image, BOXES, per_object=True, exact=True), expected)
        np.testing.assert_array_equal(sam2_service.segment_image(image, BOXES, exact=True), expected.any(axis=0))
        with_points = veason_image_mode(official, image, BOXES[:1], points, labels)
        np.testing.assert_array_equal(
            sam2_service.segment_image(image, BOXES[0], points[0], labels[0], True), with_points
        )  # one object: the batch is the official call


def test_checkpoint_loads_strictly(sam2_service, jpeg_video, tmp_path):
    _, frames = jpeg_video
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sam2_service.predictor.state_dict()}, path)
    loaded = SAM2Service("hiera_t", checkpoint=path, image_size=64, seed=99)  # the seed must not matter
    np.testing.assert_array_equal(
        loaded.propagate(frames, 2, BOXES, logits=True), sam2_service.propagate(frames, 2, BOXES, logits=True)
    )
    with pytest.raises(RuntimeError, match="does not fit config"):
        SAM2Service("hiera_s", checkpoint=path, image_size=64)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        SAM2Service("hiera_t", checkpoint=tmp_path / "missing.pt")


def test_resolve_config():
    assert resolve_config("hiera_l") == CONFIGS["hiera_l"] == "configs/sam2.1/sam2.1_hiera_l.yaml"
    assert resolve_config("configs/sam2.1/sam2.1_hiera_t.yaml") == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert resolve_config("/sam2/configs/sam2/sam2_hiera_l.yaml") == "configs/sam2/sam2_hiera_l.yaml"  # Veason-R1's
    assert resolve_config("sam2.1_hiera_b+") == "configs/sam2.1/sam2.1_hiera_b+.yaml"
    with pytest.raises(ValueError, match="hiera_t"):
        resolve_config("sam3_hiera_t")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda s, f: s.propagate(f.astype(np.float32), 0, BOXES), TypeError, "uint8"),
        (lambda s, f: s.propagate(f[..., :2], 0, BOXES), ValueError, r"\[T, H, W, 3\]"),
        (lambda s, f: s.propagate(f, FRAMES, BOXES), ValueError, "keyframe 5 is outside"),
        (lambda s, f: s.propagate(f, 0), ValueError, "at least one object"),
        (lambda s, f: s.propagate(f, 0, np.zeros((0, 4))), ValueError, "at least one object"),
        (lambda s, f: s.propagate(f, 0, [[1, 2, 3]]), ValueError, r"\[K, 4\]"),
        (lambda s, f: s.propagate(f, 0, [[1, 2, np.nan, 4]]), ValueError, "finite"),
        (lambda s, f: s.propagate(f, 0, BOXES, points=[[[1, 1]]], labels=[[1]]), ValueError, "object counts"),
        (lambda s, f: s.propagate(f, 0, points=[[1, 1]]), ValueError, "points and labels"),
        (lambda s, f: s.segment_image(f[0].astype(np.int64), BOXES), TypeError, "uint8"),
    ],
)
def test_bad_input_names_the_problem(sam2_service, jpeg_video, call, error, match):
    with pytest.raises(error, match=match):
        call(sam2_service, jpeg_video[1])


def test_video_from_another_size_is_refused(sam2_service, jpeg_video):
    video = sam2_service.prepare(jpeg_video[1])
    small = Video(video.images[..., :32, :32], video.height, video.width, video.features)
    with pytest.raises(ValueError, match="image_size 32"):
        sam2_service.propagate(small, 0, BOXES)


def test_missing_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA device"):
        SAM2Service("hiera_t", device="cuda", image_size=64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_autocast_equals_official_under_autocast(jpeg_video):
    folder, frames = jpeg_video
    service = SAM2Service("hiera_t", device="cuda", image_size=64, seed=3)
    assert service.autocast
    with torch.autocast("cuda", dtype=torch.bfloat16):
        expected = official_logits(service, folder, 2, BOXES)
    np.testing.assert_array_equal(service.propagate(frames, 2, BOXES, per_object=True, logits=True), expected)
