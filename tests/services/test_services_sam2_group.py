"""SAM2Service.propagate_group against the official sam2 1.1.0 video predictor: a group of distinct requests (1-3
boxes each, different keyframes, boxes on the border, an empty box) tracked as one batch gives, per request, the
official per-response logits up to float rounding; exact=True gives them bit for bit; a repeated object is tracked
once."""

import numpy as np
import pytest
from sam2_cases import FRAMES, HEIGHT, WIDTH
from test_services_sam2 import official_logits

from vrsjax.services import sam2_group

pytestmark = [
    pytest.mark.filterwarnings("ignore:cannot import name '_C'"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.filterwarnings("ignore:.*Skipping the post-processing step"),
    pytest.mark.usefixtures("one_torch_thread"),
]

REQUESTS = [
    {"keyframe": 2, "boxes": [[18, 8, 42, 33]]},
    {"keyframe": 0, "boxes": [[18, 8, 42, 33], [2, 2, 20, 20]]},
    {"keyframe": 4, "boxes": [[0, 0, 25, 30], [40, 20, 63, 47], [10, 30, 30, 47]]},  # boxes on the border
    {"keyframe": 1, "boxes": [[20, 14, 39, 33]]},
    {"keyframe": 3, "boxes": [[30, 30, 30, 30]]},  # an empty box
    {"keyframe": 2, "boxes": [[5, 25, 60, 45], [22, 12, 40, 30]]},
    {"keyframe": 4, "boxes": [[0, 0, 63, 47]]},  # the whole frame
    {"keyframe": 1, "boxes": [[2, 2, 20, 20], [18, 8, 42, 33], [44, 0, 63, 16]]},
]


def assert_close_to_official(logits, official):
    """Logits within 1e-3 + 1e-3 |official| everywhere; masks identical where |official| > 1e-2."""
    error = np.abs(logits - official)
    assert (error <= 1e-3 + 1e-3 * np.abs(official)).all(), f"max error {error.max()}"
    sure = np.abs(official) > 1e-2
    np.testing.assert_array_equal(logits[sure] > 0, official[sure] > 0)


@pytest.fixture(scope="module")
def official(sam2_service, jpeg_video):
    folder, _ = jpeg_video
    return [official_logits(sam2_service, folder, r["keyframe"], np.asarray(r["boxes"], float)) for r in REQUESTS]


def test_group_equals_official_per_response_path(sam2_service, jpeg_video, official):
    _, frames = jpeg_video
    assert sam2_group.unsupported(sam2_service.predictor) is None
    video = sam2_service.prepare(frames)
    got = sam2_service.propagate_group(video, REQUESTS, per_object=True, logits=True)
    assert len(got) == len(REQUESTS)
    for request, logits, expected in zip(REQUESTS, got, official, strict=True):
        assert logits.shape == (FRAMES, len(request["boxes"]), HEIGHT, WIDTH)
        assert_close_to_official(logits, expected)
    masks = sam2_service.propagate_group(video, REQUESTS)  # tracked masklets are reused, not tracked again
    for mask, expected in zip(masks, official, strict=True):
        assert mask.shape == (FRAMES, HEIGHT, WIDTH) and mask.dtype == bool
        sure = np.abs(expected).max(axis=1) > 1e-2
        np.testing.assert_array_equal(mask[sure], (expected > 0).any(axis=1)[sure])
    assert 0 < np.mean([m.mean() for m in masks]) < 1  # the test can tell masks apart


def test_points_with_and_without_boxes_in_one_group(sam2_service, jpeg_video):
    folder, frames = jpeg_video
    points = np.array([[[30, 20], [5, 40]], [[10, 10], [50, 40]]], dtype=np.float32)
    labels = np.array([[1, 0], [1, 1]], dtype=np.int32)
    boxes = np.array([[18, 8, 42, 33], [2, 2, 20, 20]], dtype=np.float32)
    requests = [
        {"keyframe": 1, "boxes": boxes, "points": points, "labels": labels},
        {"keyframe": 3, "points": points[:1], "labels": labels[:1]},
        {"keyframe": 3, "points": points[:, :1], "labels": labels[:, :1]},  # one point each: multimask on the keyframe
    ]
    got = sam2_service.propagate_group(sam2_service.prepare(frames), requests, per_object=True, logits=True)
    for request, logits in zip(requests, got, strict=True):
        expected = official_logits(
            sam2_service, folder, request["keyframe"], request.get("boxes"), request["points"], request["labels"]
        )
        assert_close_to_official(logits, expected)


def test_exact_group_is_the_official_path_bit_for_bit(sam2_service, jpeg_video, official):
    _, frames = jpeg_video
    got = sam2_service.propagate_group(
        sam2_service.prepare(frames), REQUESTS[:3], per_object=True, logits=True, exact=True
    )
    for logits, expected in zip(got, official[:3], strict=True):
        np.testing.assert_array_equal(logits, expected)


def test_identical_objects_are_tracked_once(sam2_service, jpeg_video, monkeypatch):
    _, frames = jpeg_video
    video = sam2_service.prepare(frames)
    steps = []
    original = sam2_group.step
    monkeypatch.setattr(
        sam2_group, "step", lambda model, batch, *a: steps.append(len(batch)) or original(model, batch, *a)
    )
    twice = [REQUESTS[0], REQUESTS[1], dict(REQUESTS[0]), {"keyframe": 0, "boxes": REQUESTS[1]["boxes"][::-1]}]
    first, second, third, fourth = sam2_service.propagate_group(video, twice, logits=True)
    np.testing.assert_array_equal(first, third)
    np.testing.assert_array_equal(second, fourth)
    assert len(video.masklets) == 3  # 3 distinct objects
    # forward: frames 1, 2 the two keyframe-0 objects, 3, 4 the keyframe-2 one too; backward: frames 1, 0 that one
    assert steps == [2, 2, 3, 3, 1, 1]


def test_video_without_cached_features(sam2_service, jpeg_video, official):
    from vrsjax.services.sam2 import Video

    _, frames = jpeg_video
    video = sam2_service.prepare(frames)
    bare = Video(video.images, video.height, video.width, features={})
    got = sam2_service.propagate_group(bare, REQUESTS[:2], per_object=True, logits=True)
    for logits, expected in zip(got, official[:2], strict=True):
        assert_close_to_official(logits, expected)


def test_segment_image_sends_all_boxes_in_one_call(sam2_service, jpeg_video, monkeypatch):
    from vrsjax.services.sam2 import object_prompts

    _, frames = jpeg_video
    boxes = np.array([[18, 8, 42, 33], [0, 0, 25, 30], [30, 30, 30, 30], [40, 20, 63, 47]], np.float32)
    prompts = object_prompts(boxes)
    with sam2_service._running():
        sam2_service.image_predictor.set_image(frames[1])
        exact = sam2_service._image_logits(prompts, True, exact=True)  # one official predict per object
        calls = []
        predict = sam2_service.image_predictor.predict
        monkeypatch.setattr(sam2_service.image_predictor, "predict", lambda **kw: calls.append(1) or predict(**kw))
        batched = sam2_service._image_logits(prompts, True, exact=False)
    assert len(calls) == 1 and batched.shape == (4, HEIGHT, WIDTH)
    assert_close_to_official(batched, exact)
    masks = sam2_service.segment_image(frames[1], boxes, per_object=True)
    sure = np.abs(exact) > 1e-2
    np.testing.assert_array_equal(masks[sure], exact[sure] > 0)


@pytest.mark.parametrize(
    ("requests", "match"),
    [
        ([{"boxes": [[1, 2, 3, 4]]}], "needs a keyframe"),
        ([{"keyframe": 0, "box": [[1, 2, 3, 4]]}], "needs a keyframe"),
        (
            [{"keyframe": 0, "boxes": [[1, 2, 3, 4]]}, {"keyframe": FRAMES, "boxes": [[1, 2, 3, 4]]}],
            "request 1: keyframe",
        ),
        ([{"keyframe": 0}], "at least one object"),
    ],
)
def test_bad_request_names_the_problem(sam2_service, jpeg_video, requests, match):
    video = sam2_service.prepare(jpeg_video[1][:FRAMES])
    with pytest.raises(ValueError, match=match):
        sam2_service.propagate_group(video, requests)


def test_trainer_reward_scores_a_group_with_one_sam2_call(sam2_service, monkeypatch):
    from sam2_cases import FRAME_IDS, RESPONSES, veason_group

    from vrsjax.rewards.wiring import sam2_propagate_for, score_groups, veason_reward
    from vrsjax.rl.trainer import GRPOSample

    group = veason_group()
    sample = GRPOSample("s", "x", group.frames, FRAME_IDS, group.fields["gt_masks"], group.fields["gt_boxes"])
    reward = veason_reward(sam2_propagate_for(sam2_service), consistency_weight=2.0)
    one_by_one = [reward(response, sample) for response in RESPONSES]  # a propagate_group call per response
    calls = []
    original = sam2_service.propagate_group
    monkeypatch.setattr(
        sam2_service, "propagate_group", lambda video, reqs: calls.append(len(reqs)) or original(video, reqs)
    )
    together = score_groups(reward, RESPONSES * 2, [sample, sample], len(RESPONSES))
    assert calls == [4, 4]  # one call per group: the 4 responses whose boxes matched
    for got, expected in zip(together, one_by_one * 2, strict=True):
        assert got.keys() == expected.keys()
        for name in got:
            assert got[name] == pytest.approx(expected[name], abs=1e-3 if name == "consistency" else 0)
    assert any(parts["consistency"] > 0 for parts in together)
