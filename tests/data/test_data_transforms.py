"""Dataset-side transforms against the reference behaviour, on the same inputs: Veason-R1's keyframe + stride
sampling (Python `random`), inference sampling, per-frame GT boxes and the solution string, torch's nearest mask
resize, and a whole training example rebuilt the way the reference loader builds it (pycocotools on mask_dict.json,
PIL for frames, torch F.interpolate for masks)."""

import json
import math
import random

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vrsjax.data import examples
from vrsjax.data import transforms as T

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"  # pycocotools on numpy 2
)


def reference_frame_ids(areas, num_samples, py_random):
    """Veason-R1's training sampling, restated: top-5 by area, random.choice, stride through the keyframe."""
    top = areas.argsort()[-5:][::-1]
    keyframe = int(py_random.choice(top))
    if num_samples == 1:
        return [keyframe], keyframe
    step = math.ceil(len(areas) / (num_samples - 1))
    return list(range(keyframe % step, len(areas), step)), keyframe


def reference_boxes(object_masks, width, height, size=560):
    """Veason-R1's per-frame GT: np.where(mask == 1) extents scaled with +0.5, [0,0,0,0] for absent objects."""
    xf, yf = size / width, size / height
    out = {}
    for i, frame in enumerate(object_masks):
        if np.any(frame == 1):
            boxes = []
            for obj in frame:
                if np.all(obj == 0):
                    boxes.append({"bbox_2d": [0, 0, 0, 0]})
                else:
                    ys, xs = np.where(obj == 1)
                    boxes.append(
                        {
                            "bbox_2d": [
                                xs.min() * xf + 0.5,
                                ys.min() * yf + 0.5,
                                xs.max() * xf + 0.5,
                                ys.max() * yf + 0.5,
                            ]
                        }
                    )
        else:
            boxes = [{"bbox_2d": [0, 0, 0, 0]}]
        out[i] = boxes
    return out


@pytest.mark.parametrize("num_frames", [1, 2, 5, 6, 7, 12, 37, 100])
@pytest.mark.parametrize("num_samples", [1, 2, 6, 8])
def test_training_sampling_matches_reference(num_frames, num_samples):
    rng = np.random.default_rng(num_frames * 10 + num_samples)
    for trial in range(5):
        areas = rng.integers(0, 4, size=num_frames) * (trial % 2)  # many ties; all zeros on even trials
        expected = reference_frame_ids(areas, num_samples, random.Random(trial))
        got = T.veason_train_frame_ids(areas, num_samples, random.Random(trial))
        assert got == expected
        assert got[1] in got[0]


def test_keyframe_among_top_five_with_numpy_generator():
    areas = np.array([5, 90, 3, 80, 70, 60, 50, 1, 0, 55])
    keyframes = {T.veason_train_frame_ids(areas, 6, np.random.default_rng(s))[1] for s in range(200)}
    assert keyframes == {1, 3, 4, 5, 9}


@pytest.mark.parametrize("num_frames", list(range(1, 30)) + [100, 181])
def test_inference_sampling(num_frames):
    expected = list(np.linspace(0, num_frames - 1, num=8, dtype=int)) if num_frames > 8 else list(range(num_frames))
    assert T.inference_frame_ids(num_frames) == [int(v) for v in expected]


def test_gt_boxes_and_solution_match_reference():
    rng = np.random.default_rng(0)
    masks = np.zeros((5, 3, 48, 64), np.uint8)
    masks[0, 0, 3:9, 5:20] = 1
    masks[0, 2, 40:48, 60:64] = 1
    masks[1, 1, 10, 11] = 1  # one pixel
    masks[3] = rng.random((3, 48, 64)) > 0.97  # frame 2 and 4 empty
    reference = reference_boxes(masks, 64, 48)
    boxes = T.veason_gt_boxes(T.object_extents(masks), 64, 48)
    assert boxes == [[b["bbox_2d"] for b in reference[i]] for i in range(5)]
    assert T.veason_solution(boxes) == json.dumps(reference)


def test_object_extents():
    rng = np.random.default_rng(1)
    masks = (rng.random((4, 3, 20, 30)) > 0.995).astype(np.uint8)
    extents = T.object_extents(masks)
    for t in range(4):
        for k in range(3):
            ys, xs = np.nonzero(masks[t, k])
            expected = [-1] * 4 if ys.size == 0 else [xs.min(), ys.min(), xs.max(), ys.max()]
            assert extents[t, k].tolist() == expected


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [
        (720, 1280, 560),
        (1080, 1920, 560),
        (121, 97, 560),
        (560, 560, 560),
        (280, 280, 560),
        (1000, 333, 840),
        (33, 1, 560),
        (600, 900, 840),
    ],
)
def test_nearest_resize_matches_torch(height, width, size):
    masks = (np.random.default_rng(height).random((2, height, width)) > 0.5).astype(np.uint8)
    expected = F.interpolate(torch.from_numpy(masks).unsqueeze(1), size=(size, size), mode="nearest").squeeze(1)
    np.testing.assert_array_equal(T.resize_masks_nearest(masks, size), expected.numpy())


def test_vision_reasoner_and_videoseg_targets():
    from vrsjax.rewards.videoseg import negative_point_score, taxicab_distance_to_mask

    masks = np.zeros((3, 120, 160), np.uint8)
    masks[0, 10:40, 20:60] = 1
    masks[1, 70:110, 100:150] = 1  # object 2 absent
    targets = T.videoseg_targets(masks)
    assert len(targets) == 2
    assert targets[0]["bbox_2d"] == [int(20 * 840 / 160 + 0.5), int(10 * 7 + 0.5), int(59 * 5.25 + 0.5), 39 * 7]
    union = T.resize_masks_nearest(masks.any(axis=0, keepdims=True).astype(np.uint8), 840)[0]
    for target in targets:
        x1, y1, x2, y2 = target["bbox_2d"]
        px, py = target["point_2d"]
        assert x1 <= px <= x2 and y1 <= py <= y2 and union[py, px]
        negative = target[T.NEGATIVE_POINT_KEY]
        assert taxicab_distance_to_mask(negative, union > 0) == T.NEGATIVE_POINT_MARGIN
        assert negative_point_score([tuple(negative)], union) == 1.0
    assert [t["bbox_2d"] for t in T.vision_reasoner_targets(masks)] == [t["bbox_2d"] for t in targets]
    assert T.negative_point(np.ones((4, 4)), [1, 1]) is None


def reference_train_example(root, sample, py_random, num_samples=6, size=560):
    """The reference loader's __getitem__, restated: every frame's masks decoded from mask_dict.json with
    pycocotools and OR-ed, top-5 keyframe, stride sampling, PIL bilinear frames, torch nearest masks."""
    mask_dict = json.loads((root / "mask_dict.json").read_text())
    height, width = sample.height, sample.width
    union, per_object = [], []
    for t in range(sample.num_frames):
        frame_union, objects = np.zeros((height, width), np.uint8), []
        for anno in sample.anno_ids:
            obj = np.zeros((height, width), np.uint8)
            if mask_dict[anno][t] is not None:
                m = mask_utils.decode(mask_dict[anno][t]).astype(np.uint8)
                frame_union, obj = frame_union | m, obj | m
            objects.append(obj)
        union.append(frame_union)
        per_object.append(np.stack(objects))
    union, per_object = np.stack(union), np.stack(per_object)
    frame_ids, keyframe = reference_frame_ids((union > 0).sum(axis=(1, 2)), num_samples, py_random)
    frames = np.stack(
        [
            np.asarray(Image.open(sample.frame_paths[t]).convert("RGB").resize((size, size), Image.BILINEAR))
            for t in frame_ids
        ]
    )
    masks = F.interpolate(torch.from_numpy(union[frame_ids]).unsqueeze(1), size=(size, size), mode="nearest")
    return {
        "frame_ids": frame_ids,
        "keyframe": keyframe,
        "frames": frames,
        "gt_masks": masks.squeeze(1).numpy(),
        "solution": json.dumps(reference_boxes(per_object[frame_ids], width, height, size)),
    }


def test_train_example_matches_reference_loader(synth, revos_train):
    samples = [s for s in revos_train if s.type_id != 2]
    for seed, sample in enumerate(samples[:: max(1, len(samples) // 6)]):
        expected = reference_train_example(synth.root, sample, random.Random(seed))
        got = examples.train_example(sample, random.Random(seed))
        assert got["frame_ids"].tolist() == expected["frame_ids"] and got["keyframe"] == expected["keyframe"]
        np.testing.assert_array_equal(got["frames"], expected["frames"])
        np.testing.assert_array_equal(got["gt_masks"], expected["gt_masks"])
        assert got["solution"] == expected["solution"]
        assert got["gt_boxes"] == [[b["bbox_2d"] for b in v] for v in json.loads(expected["solution"]).values()]


def test_inference_and_task_examples(revos_train):
    sample = next(s for s in revos_train if len(s.obj_ids) > 1)
    example = examples.inference_example(sample)
    assert example["keyframe"] == -1 and example["frame_ids"].tolist() == T.inference_frame_ids(sample.num_frames)
    assert example["frames"].shape == (len(example["frame_ids"]), 560, 560, 3)
    videoseg = examples.train_example(sample, np.random.default_rng(0), task="videoseg")
    position = videoseg["frame_ids"].tolist().index(videoseg["keyframe"])
    present = int(sample.object_masks([videoseg["keyframe"]])[0].reshape(len(sample.obj_ids), -1).any(1).sum())
    assert len(videoseg["targets"]) == present and position >= 0
    assert all(T.NEGATIVE_POINT_KEY in t for t in videoseg["targets"])


def test_image_example(synth, tmp_path):
    from vrsjax.data.images import read_image_json
    from vrsjax.data.synthetic_layouts import write_layout

    write_layout(synth, "image_json", tmp_path / "images")
    sample = read_image_json(tmp_path / "images" / "refcoco_like.json")[0]
    example = examples.image_example(sample)
    assert example["frames"].shape == (1, 840, 840, 3) and example["gt_masks"].shape == (1, 840, 840)
    assert example["targets"] == sample.extra["solution"]  # the layout's solution is vision_reasoner_targets
