"""The synthetic generator: exact ReVOS layout, deterministic by seed, every expression kind, masks that round-trip."""

import hashlib
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from vrsjax.data import synthetic
from vrsjax.data.revos import read_revos
from vrsjax.data.sft import read_sharegpt

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"  # pycocotools on numpy 2
)

FILES = ("mask_dict.json", "mask_dict_foreground.json", "meta_expressions_train_.json", "meta_expressions_valid_.json")


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_layout_files(synth):
    root = synth.root
    for name in FILES + ("sft/cot_sft.json", "sft/dataset_info.json"):
        assert (root / name).is_file(), name
    meta = json.loads((root / "meta_expressions_train_.json").read_text())["videos"]
    video, vid = next(iter(meta.items()))
    assert video.startswith("SYN/all/") and set(vid) == {"vid_id", "frames", "height", "width", "expressions"}
    exp = next(iter(vid["expressions"].values()))
    assert set(exp) == {"exp", "obj_id", "anno_id", "type_id"}
    for frame in vid["frames"]:
        assert (root / "JPEGImages" / video / f"{frame}.jpg").is_file()
    mask_dict = json.loads((root / "mask_dict.json").read_text())
    rle = next(r for r in mask_dict[str(exp["anno_id"][0])] if r is not None)
    assert set(rle) == {"size", "counts"} and isinstance(rle["counts"], str)


def test_deterministic_by_seed(tmp_path):
    a = synthetic.write_dataset(tmp_path / "a", num_videos=3, seed=7)
    b = synthetic.write_dataset(tmp_path / "b", num_videos=3, seed=7)
    c = synthetic.write_dataset(tmp_path / "c", num_videos=3, seed=8)
    assert _digest(a.root) == _digest(b.root)
    assert _digest(a.root) != _digest(c.root)


def test_expression_kinds(synth):
    exps = [e for v in synth.videos.values() for e in v.expressions.values()]
    kinds = {(e["type_id"], min(len(e["obj_id"]), 2)) for e in exps}
    assert {(0, 1), (0, 2), (1, 1), (1, 2), (2, 0)} <= kinds
    assert any(e["exp"] == "the shape that overtakes the others" for e in exps)
    assert {v.split for v in synth.videos.values()} == {"train", "valid"}


def test_masks_round_trip_bit_for_bit(synth):
    for split in ("train", "valid"):
        for sample in read_revos(synth.root, split):
            expected = synth.expression_masks(sample.video, sample.exp_id)
            got = sample.object_masks()
            assert got.dtype == np.uint8 and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)
            np.testing.assert_array_equal(sample.union_masks(), expected.any(axis=1).astype(np.uint8))


def test_frames_close_to_drawn(synth, revos_train):
    sample = revos_train[0]
    drawn = synth.videos[sample.video].frames
    assert np.abs(sample.read_frames().astype(int) - drawn).mean() < 8  # JPEG at quality 90


def test_occlusion_and_absence(synth):
    masks = [v.object_masks for v in synth.videos.values()]
    overlaps = [(m.sum(axis=1) > 1).any() for m in masks]
    assert not any(overlaps)  # visible masks are disjoint: the top shape hides the others
    mask_dict = json.loads((synth.root / "mask_dict.json").read_text())
    assert any(r is None for rles in mask_dict.values() for r in rles)  # shapes leave the frame


def test_foreground_is_union_of_referred_objects(synth):
    foreground = json.loads((synth.root / "mask_dict_foreground.json").read_text())
    for name, vid in synth.videos.items():
        referred = sorted({k for e in vid.expressions.values() for k in e["obj_id"]})
        union = vid.object_masks[:, referred].any(axis=1)
        entry = foreground[name]
        assert len(entry["masks_rle"]) == len(entry["foreground_ratio"]) == union.shape[0]
        decoded = np.stack([mask_utils.decode(r) for r in entry["masks_rle"]])
        np.testing.assert_array_equal(decoded, union.astype(np.uint8))


def test_sft_conversations(synth):
    samples, skipped = read_sharegpt(synth.root / "sft" / "cot_sft.json", synth.root)
    assert samples and skipped.total == 0
    train_targets = sum(
        e["type_id"] != 2 for v in synth.videos.values() if v.split == "train" for e in v.expressions.values()
    )
    assert len(samples) == train_targets
    sample = samples[0]
    assert sample.system == synthetic.SYSTEM_PROMPT and [t.role for t in sample.turns] == ["user", "assistant"]
    answer = sample.turns[1].content
    assert answer.startswith("<think>") and "</think>\n<answer>{" in answer and answer.endswith("}</answer>")
    parsed = json.loads(answer.split("<answer>")[1].removesuffix("</answer>"))
    assert set(parsed) == {"keyframe_timestamp", "bbox_2d_list"}
    assert f"({parsed['keyframe_timestamp']}s)<image>" in sample.turns[0].content
    assert sample.read_images().shape == (len(sample.images), 560, 560, 3)
    info = json.loads((synth.root / "sft" / "dataset_info.json").read_text())
    assert info["vrsjax_synthetic_cot"]["formatting"] == "sharegpt"
