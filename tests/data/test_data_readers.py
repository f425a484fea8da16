"""Each reader on a fixture in its real layout (the synthetic dataset re-written by `synthetic_layouts`): masks
equal to the generator's bit for bit, frames and metadata as the layout defines them."""

import json

import numpy as np
import pytest
from PIL import Image

from vrsjax.data import detect_format, open_dataset
from vrsjax.data.images import read_image_json
from vrsjax.data.masks import combine
from vrsjax.data.reasonvos import read_reasonvos
from vrsjax.data.refytvos import read_davis17, read_refytvos
from vrsjax.data.revos import read_mevis, read_revos
from vrsjax.data.synthetic_layouts import write_layout

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"  # pycocotools on numpy 2
)


@pytest.fixture(scope="module")
def layouts(synth, tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {
        name: (root / name, write_layout(synth, name, root / name))
        for name in ("mevis", "refytvos", "davis17", "reasonvos", "image_json")
    }


def _assert_masks(dataset, mapping, synth, frame_ids=None):
    assert len(dataset) == sum(1 for key in mapping if key[0] in {s.video for s in dataset})
    for sample in dataset:
        video, objects = mapping[(sample.video, sample.exp_id)]
        expected = synth.videos[video].object_masks[:, objects]
        if frame_ids is not None:
            expected = expected[frame_ids]
        got = sample.object_masks(frame_ids)
        np.testing.assert_array_equal(got, expected, err_msg=f"{sample.dataset} {sample.key}")


def test_revos(synth, revos_train):
    assert revos_train.name == "revos" and revos_train.split == "train"
    assert {s.type_id for s in revos_train} == {0, 1, 2}
    no_target = next(s for s in revos_train if s.type_id == 2)
    assert no_target.object_masks().shape[1] == 0 and not no_target.union_masks().any()
    trained = read_revos(synth.root, "train", include_no_target=False)
    assert len(trained) == len(revos_train) - sum(s.type_id == 2 for s in revos_train)
    sample = next(s for s in revos_train if len(s.obj_ids) > 1)
    np.testing.assert_array_equal(sample.union_masks([1, 3]), combine(sample.object_masks([1, 3])))
    assert sample.union_masks(mode="sum").max() <= 1  # synthetic objects never overlap


def test_revos_foreground_and_meta_file(synth, tmp_path):
    valid = read_revos(synth.root, "valid", with_foreground=True)
    for sample in valid:
        vid = synth.videos[sample.video]
        referred = sorted({k for e in vid.expressions.values() for k in e["obj_id"]})
        np.testing.assert_array_equal(
            sample.extra["foreground"].object_masks(range(sample.num_frames))[:, 0],
            vid.object_masks[:, referred].any(axis=1).astype(np.uint8),
        )
    # Veason-R1 trains on meta_expressions_train_select.json; names without the underscore work too.
    (synth.root / "meta_expressions_train_select.json").write_text(
        (synth.root / "meta_expressions_train_.json").read_text()
    )
    assert len(read_revos(synth.root, meta_file="meta_expressions_train_select.json")) == len(
        read_revos(synth.root, "train")
    )


def test_revos_unsorted_frames_keep_their_masks(synth, tmp_path):
    import shutil

    root = tmp_path / "revos"
    shutil.copytree(synth.root, root)
    meta = json.loads((root / "meta_expressions_train_.json").read_text())
    mask_dict = json.loads((root / "mask_dict.json").read_text())
    video, vid = next(iter(meta["videos"].items()))
    vid["frames"] = vid["frames"][::-1]  # list frames backwards and their masks with them
    for anno in {a for e in vid["expressions"].values() for a in e["anno_id"]}:
        mask_dict[str(anno)] = mask_dict[str(anno)][::-1]
    (root / "meta_expressions_train_.json").write_text(json.dumps(meta))
    (root / "mask_dict.json").write_text(json.dumps(mask_dict))
    sample = next(s for s in read_revos(root, "train") if s.video == video)
    assert list(sample.frame_names) == sorted(sample.frame_names)
    np.testing.assert_array_equal(sample.object_masks(), synth.expression_masks(video, sample.exp_id))


def test_mevis(synth, layouts):
    root, mapping = layouts["mevis"]
    train = read_mevis(root, "train")
    assert train.name == "mevis" and all(s.type_id is None for s in train)
    _assert_masks(train, mapping, synth)
    _assert_masks(read_mevis(root, "valid_u"), mapping, synth)
    valid = read_mevis(root / "valid")
    assert len(valid) and not any(s.has_masks for s in valid)
    with pytest.raises(ValueError, match="no ground-truth masks"):
        valid[0].union_masks()


def test_refytvos(synth, layouts):
    root, mapping = layouts["refytvos"]
    train = read_refytvos(root, "train")
    _assert_masks(train, mapping, synth, frame_ids=[0, 2])
    assert train[0].extra["category"] in ("square", "circle", "triangle")
    assert train[0].obj_ids[0] >= 1
    valid = read_refytvos(root, "valid")
    assert len(valid) and not any(s.has_masks for s in valid)


def test_davis17(synth, layouts):
    root, mapping = layouts["davis17"]
    valid = read_davis17(root, "valid")
    _assert_masks(valid, mapping, synth)
    kinds = [(s.extra["annotator"], s.extra["kind"]) for s in valid if s.video == valid[0].video][:4]
    assert kinds == [(1, "first_frame"), (1, "full_video"), (2, "first_frame"), (2, "full_video")]
    _assert_masks(read_davis17(root, "train"), mapping, synth, frame_ids=[1])


def test_reasonvos(synth, layouts):
    root, mapping = layouts["reasonvos"]
    data = read_reasonvos(root)
    _assert_masks(data, mapping, synth)
    assert {s.extra["source"] for s in data} == {"MOSE", "mevis", "BURST", "VIPSeg"}
    assert isinstance(data[0].extra["is_sent"], bool)


def test_reasonvos_list_expressions_and_lowercase_source(synth, layouts, tmp_path):
    import shutil

    root, mapping = layouts["reasonvos"]
    copy = tmp_path / "reasonvos"
    shutil.copytree(root, copy)
    meta = json.loads((copy / "meta_expressions.json").read_text())
    for name, vid in meta["videos"].items():
        # Veason-R1's converted copy: a list of {"exp_id", "exp_text", "obj_id"}
        vid["expressions"] = [{"exp_id": k, **e} for k, e in vid["expressions"].items()]
        if vid["source"] == "MOSE":  # folders named with the lower-cased source (benchmark_check.py)
            for folder in list((copy / "Annotations").glob(f"MOSE_{name}_*")):
                folder.rename(folder.with_name(folder.name.replace("MOSE_", "mose_", 1)))
    (copy / "meta_expressions.json").write_text(json.dumps(meta))
    _assert_masks(read_reasonvos(copy), mapping, synth)


def test_image_json(synth, layouts, tmp_path):
    root, mapping = layouts["image_json"]
    data = read_image_json(root / "refcoco_like.json")
    assert data.name == "image_json" and len(data)
    for sample in data:
        video, objects = mapping[(sample.video, sample.exp_id)]
        np.testing.assert_array_equal(sample.object_masks()[0], synth.videos[video].object_masks[0, objects])
        assert sample.num_frames == 1 and sample.extra["solution"][0].keys() == {"bbox_2d", "point_2d"}
    # the other mask encodings: a PNG path and an inline 0/1 list, in JSON Lines
    record = json.loads((root / "refcoco_like.json").read_text())[0]
    video, objects = mapping[(record["image_id"], record["ann_id"])]
    mask = synth.videos[video].object_masks[0, objects].any(axis=0)
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "mask.png")
    lines = [{**record, "mask": "mask.png"}, {**record, "mask": mask.astype(int).tolist(), "problem": "x"}]
    for line in lines[1:]:
        del line["text"]
    (tmp_path / "more.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    more = read_image_json(tmp_path / "more.jsonl", image_root=root)
    for sample in more:
        np.testing.assert_array_equal(sample.union_masks()[0], mask.astype(np.uint8))
    assert more[1].expression == "x"


def test_detect_and_open(synth, layouts):
    assert detect_format(synth.root) == "revos"
    assert open_dataset(None, synth.root, "valid").split == "valid"
    for name in ("mevis", "refytvos", "davis17", "reasonvos"):
        root = layouts[name][0]
        assert detect_format(root) == name, name
        assert len(open_dataset(name, root)) > 0
    assert detect_format(layouts["image_json"][0] / "refcoco_like.json") == "image_json"
    with pytest.raises(ValueError, match="unknown dataset format"):
        open_dataset("kinetics", synth.root)


def test_frames(revos_train):
    sample = revos_train[0]
    frames = sample.read_frames([0, 2], size=560)
    assert frames.shape == (2, 560, 560, 3) and frames.dtype == np.uint8
    with Image.open(sample.frame_paths[2]) as image:
        expected = np.asarray(image.convert("RGB").resize((560, 560), Image.BILINEAR))
    np.testing.assert_array_equal(frames[1], expected)
    with pytest.raises(IndexError, match="outside"):
        sample.read_frames([sample.num_frames])
