"""Deliberately corrupted fixtures: each bad input is an error naming dataset, video, expression and file, or with
skip_bad_samples a counted, reported skip. Never a silently wrong mask."""

import json
import shutil

import pytest

from vrsjax.data import DataError
from vrsjax.data.revos import read_revos
from vrsjax.data.sft import read_sharegpt

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"  # pycocotools on numpy 2
)


@pytest.fixture()
def revos(synth, tmp_path):
    root = tmp_path / "revos"
    shutil.copytree(synth.root, root)
    meta = json.loads((root / "meta_expressions_train_.json").read_text())
    return root, meta


def _write(root, meta=None, mask_dict=None):
    if meta is not None:
        (root / "meta_expressions_train_.json").write_text(json.dumps(meta))
    if mask_dict is not None:
        (root / "mask_dict.json").write_text(json.dumps(mask_dict))


def _first(meta):
    video, vid = next(iter(meta["videos"].items()))
    exp_id, exp = next(iter(vid["expressions"].items()))
    return video, vid, exp_id, exp


def _check_error(root, *parts):
    with pytest.raises(DataError) as info:
        read_revos(root, "train")
    message = str(info.value)
    for part in ("'revos'", *parts):
        assert part in message, (part, message)
    return message


def test_missing_frame_file(revos):
    root, meta = revos
    video, vid, _, _ = _first(meta)
    frame = root / "JPEGImages" / video / f"{vid['frames'][3]}.jpg"
    frame.unlink()
    _check_error(root, repr(video), str(frame), "frame files are missing")


def test_rle_size_differs_from_frame(revos):
    root, meta = revos
    video, vid, exp_id, exp = _first(meta)
    mask_dict = json.loads((root / "mask_dict.json").read_text())
    rles = mask_dict[str(exp["anno_id"][0])]
    t = next(i for i, r in enumerate(rles) if r is not None)
    rles[t]["size"] = [rles[t]["size"][0] + 1, rles[t]["size"][1]]
    _write(root, mask_dict=mask_dict)
    _check_error(root, repr(video), repr(exp_id), "mask_dict.json", f"frame {t}", "differs from the frame size")


def test_anno_id_absent_from_mask_dict(revos):
    root, meta = revos
    video, vid, exp_id, exp = _first(meta)
    exp["anno_id"] = [987654]
    _write(root, meta)
    _check_error(root, repr(video), repr(exp_id), "mask_dict.json", "anno_id 987654 is not in mask_dict.json")


def test_mask_list_length(revos):
    root, meta = revos
    video, vid, exp_id, exp = _first(meta)
    mask_dict = json.loads((root / "mask_dict.json").read_text())
    mask_dict[str(exp["anno_id"][0])].pop()
    _write(root, mask_dict=mask_dict)
    _check_error(root, repr(video), repr(exp_id), "mask entries for")


def test_empty_video(revos):
    root, meta = revos
    video, vid, _, _ = _first(meta)
    vid["frames"] = []
    _write(root, meta)
    _check_error(root, repr(video), "meta_expressions_train_.json", "no frames")


def test_malformed_json(revos):
    root, _ = revos
    (root / "meta_expressions_train_.json").write_text('{"videos": {"a": [1, 2,}')
    message = _check_error(root, "meta_expressions_train_.json", "malformed JSON at line 1")
    assert "column" in message
    (root / "mask_dict.json").write_text("{")
    with pytest.raises(DataError, match="mask_dict.json.*malformed JSON"):
        read_revos(root, "valid")


def test_missing_metadata_file(revos):
    root, _ = revos
    with pytest.raises(DataError, match="metadata file is missing"):
        read_revos(root, "test")


def test_frame_size_disagrees_with_metadata(revos):
    root, meta = revos
    video, vid, _, _ = _first(meta)
    vid["height"] += 2
    _write(root, meta)
    _check_error(root, repr(video), "metadata says")


def test_skip_bad_samples_counts_and_reports(revos, synth):
    root, meta = revos
    videos = list(meta["videos"].items())
    (video_a, vid_a), (video_b, vid_b) = videos[0], videos[1]
    expected = sum(len(v["expressions"]) for _, v in videos)
    (root / "JPEGImages" / video_a / f"{vid_a['frames'][0]}.jpg").unlink()  # drops all of video a
    exp_id, exp = next(iter(vid_b["expressions"].items()))
    exp["anno_id"] = [987654]  # drops one expression of video b
    _write(root, meta)
    data = read_revos(root, "train", skip_bad_samples=True)
    dropped = len(vid_a["expressions"]) + 1
    assert len(data) == expected - dropped
    assert data.skipped.total == dropped
    assert data.skipped.counts == {"missing_frame": len(vid_a["expressions"]), "missing_anno": 1}
    report = data.skipped.report()
    assert "skipped" in report and video_a in report and "987654" in report
    assert all((s.video, s.exp_id) != (video_b, exp_id) for s in data)
    for sample in data:  # what is kept is still exact
        assert (sample.object_masks() == synth.expression_masks(sample.video, sample.exp_id)).all()


def test_bad_conversations(synth, tmp_path):
    records = json.loads((synth.root / "sft" / "cot_sft.json").read_text())
    good = records[0]
    bad_order = {**good, "conversations": good["conversations"][::-1]}
    bad_images = {**good, "images": good["images"][:-1]}
    odd = {**good, "conversations": good["conversations"][:1]}
    path = tmp_path / "conv.json"
    for record, match in (
        (bad_order, "turn 0 has role 'gpt'"),
        (bad_images, "placeholders for"),
        (odd, "does not end with an assistant turn"),
    ):
        path.write_text(json.dumps([good, record]))
        with pytest.raises(DataError, match=match):
            read_sharegpt(path, synth.root)
    path.write_text(json.dumps([good, bad_order, bad_images]))
    samples, skipped = read_sharegpt(path, synth.root, skip_bad_samples=True)
    assert len(samples) == 1 and skipped.total == 2 and skipped.counts == {"bad_conversation": 2}


def test_missing_annotation_png_and_mask_folder(synth, tmp_path):
    from vrsjax.data.reasonvos import read_reasonvos
    from vrsjax.data.refytvos import read_refytvos
    from vrsjax.data.synthetic_layouts import write_layout

    write_layout(synth, "refytvos", tmp_path / "refytvos")
    png = next((tmp_path / "refytvos" / "train" / "Annotations").rglob("*.png"))
    png.unlink()
    with pytest.raises(DataError, match="'refytvos'.*annotation files are missing") as info:
        read_refytvos(tmp_path / "refytvos", "train")
    assert str(png) in str(info.value)
    write_layout(synth, "reasonvos", tmp_path / "reasonvos")
    folder = next((tmp_path / "reasonvos" / "Annotations").iterdir())
    shutil.rmtree(folder)
    with pytest.raises(DataError, match="'reasonvos'.*expression '.*annotation files are missing"):
        read_reasonvos(tmp_path / "reasonvos")
    data = read_reasonvos(tmp_path / "reasonvos", skip_bad_samples=True)
    assert data.skipped.counts == {"missing_annotation": 1}
