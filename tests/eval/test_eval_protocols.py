"""vrsjax.eval.evaluate and `vrsjax eval` on the synthetic dataset in every benchmark layout: GT as prediction,
empty predictions (values derived by hand from the definitions), missing and wrong-size predictions, and a mixed
set checked against a straightforward re-implementation of VISA's `eval_revos.py` that reads the files itself."""

import json

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from skimage.morphology import disk

from vrsjax import cli
from vrsjax.data import open_dataset
from vrsjax.data.synthetic import write_dataset
from vrsjax.data.synthetic_layouts import write_layout
from vrsjax.eval import evaluate, layout

# ----------------------------------------------------------------------------- a straightforward reference


def ref_j(gt: np.ndarray, pred: np.ndarray) -> float:
    """DAVIS `db_eval_iou`, one frame."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    union = np.sum(gt | pred)
    return 1.0 if union == 0 else np.sum(gt & pred) / union


def ref_bmap(seg: np.ndarray) -> np.ndarray:
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1], s[:-1, :], se[:-1, :-1] = seg[:, 1:], seg[1:, :], seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :], b[:, -1] = seg[-1, :] ^ e[-1, :], seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def ref_f(gt: np.ndarray, pred: np.ndarray) -> float:
    """DAVIS `db_eval_boundary`, one frame, bound_th 0.008."""
    kernel = disk(np.ceil(0.008 * np.linalg.norm(gt.shape))).astype(np.uint8)
    fg_b, gt_b = ref_bmap(pred), ref_bmap(gt)
    n_fg, n_gt = fg_b.sum(), gt_b.sum()
    if n_fg == 0 or n_gt == 0:
        precision, recall = (1.0 if n_fg == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
        precision, recall = (1.0, 1.0) if n_fg == n_gt == 0 else (precision, recall)
    else:
        precision = np.sum(fg_b & cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)) / n_fg
        recall = np.sum(gt_b & cv2.dilate(fg_b.astype(np.uint8), kernel).astype(bool)) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def visa_revos(data_root, pred_root) -> dict:
    """VISA's eval_revos.py, restated: metadata frame order, uint8 sums, cv2 grayscale reads, uint8 R/A, a missing
    prediction scored 0, per-expression values x100 rounded to 2 decimals, type means, overall = their mean."""
    meta = json.loads((data_root / "meta_expressions_valid_.json").read_text())["videos"]
    mask_dict = json.loads((data_root / "mask_dict.json").read_text())
    foreground = json.loads((data_root / "mask_dict_foreground.json").read_text())
    rows = []
    for video, vid in meta.items():
        for exp_id, exp in vid["expressions"].items():
            folder = pred_root / video / exp_id
            j = f = a = r = 0.0
            if folder.is_dir():
                js, fs, accs, rs = [], [], [], []
                for t, frame in enumerate(vid["frames"]):
                    pred = cv2.imread(str(folder / f"{frame}.png"), cv2.IMREAD_GRAYSCALE)
                    gt = np.zeros(pred.shape, np.uint8)
                    for anno in exp["anno_id"]:
                        if mask_dict[str(anno)][t]:
                            gt += mask_utils.decode(mask_dict[str(anno)][t])
                    fg = mask_utils.decode(foreground[video]["masks_rle"][t]).astype(np.uint8)
                    js.append(ref_j(gt, pred))
                    fs.append(ref_f(gt, pred))
                    accs.append(np.mean(gt == pred))
                    rs.append(max(1 - ((1 - gt) * pred).sum() / (fg.sum() + 1e-6), 0.0))
                j, f, a, r = (float(np.mean(x)) for x in (js, fs, accs, rs))
            rows.append(
                {"type_id": exp["type_id"], **{k: round(100 * v, 2) for k, v in zip("JFAR", (j, f, a, r), strict=True)}}
            )
    out = {}
    for name, type_id in (("referring", 0), ("reasoning", 1)):
        out[name] = {k: np.mean([row[k] for row in rows if row["type_id"] == type_id]) for k in "JFAR"}
        out[name]["J&F"] = (out[name]["J"] + out[name]["F"]) / 2
    out["overall"] = {k: (out["referring"][k] + out["reasoning"][k]) / 2 for k in ("J", "F", "A", "R", "J&F")}
    return out


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_data")
    dataset = write_dataset(root / "revos", num_videos=4, seed=3, valid_every=2, sft=False, num_frames=(6, 8))
    return root, dataset


@pytest.fixture(scope="module")
def revos_valid(synthetic):
    root, _ = synthetic
    return root / "revos", open_dataset("revos", root / "revos", "valid", with_foreground=True)


def write_predictions(pred_root, samples, make) -> None:
    for i, sample in enumerate(samples):
        masks = make(i, sample)
        if masks is not None:
            layout.write_masks(pred_root, sample.video, sample.exp_id, sample.frame_names, masks)


def gt_of(i, sample):
    return sample.union_masks()


def empty_of(i, sample):
    return np.zeros((sample.num_frames, sample.height, sample.width), bool)


# ----------------------------------------------------------------------------- ReVOS


def test_revos_gt_as_prediction_scores_100_through_the_cli(revos_valid, tmp_path, capsys):
    data_root, data = revos_valid
    write_predictions(tmp_path / "pred", data, gt_of)
    out = tmp_path / "report.json"
    args = ["eval", "--dataset", "revos", "--data", str(data_root), "--split", "valid"]
    assert cli.main([*args, "--pred", str(tmp_path / "pred"), "--out", str(out), "--workers", "2"]) == 0
    report = json.loads(out.read_text())
    for group in ("referring", "reasoning", "overall"):
        for key in ("J", "F", "J&F", "R"):
            assert report["aggregates"][group][key] == 100.0, (group, key)
    counts = report["counts"]
    assert counts["missing"] == 0 and counts["expressions"] == len(data)
    assert counts["excluded_no_target"] == sum(s.type_id == 2 for s in data) > 0
    assert counts["scored"] == sum(s.type_id in (0, 1) for s in data)
    assert report["aggregates"]["referring"]["count"] == sum(s.type_id == 0 for s in data)
    assert len(report["rows"]) == len(data) and report["missing"] == []
    table = capsys.readouterr().out
    assert "overall" in table and "100.00" in table and str(out) in table


def test_revos_empty_predictions_give_the_values_the_definitions_imply(revos_valid, tmp_path):
    data_root, data = revos_valid
    write_predictions(tmp_path, data, empty_of)
    expected = {}
    for convention in ("visa", "binary"):
        report = evaluate.evaluate("revos", data_root, tmp_path, "valid", r_convention=convention, progress=False)
        for row, sample in zip(report["rows"], data, strict=True):
            gt = sample.union_masks()
            empty_frames = ~gt.reshape(len(gt), -1).any(axis=1)
            # J: an empty union is 1, any GT pixel gives 0; F: no boundary on either side is 1, a GT boundary
            # against none predicted is P = 1, R = 0, so 0. No prediction means no false positive: R = 1.
            assert row["J"] == pytest.approx(empty_frames.mean(), abs=1e-12)
            assert row["F"] == pytest.approx(empty_frames.mean(), abs=1e-12)
            assert row["R"] == 1.0
            assert row["A"] == pytest.approx((gt == 0).mean(), abs=1e-12)  # both conventions agree on background
            expected[(sample.video, sample.exp_id)] = row
        for name, type_id in (("referring", 0), ("reasoning", 1)):
            members = [r for r in report["rows"] if r["type_id"] == type_id]
            j = np.mean([round(100 * r["J"], 2) for r in members])
            assert report["aggregates"][name]["J"] == pytest.approx(j, abs=1e-12)
            assert report["aggregates"][name]["R"] == 100.0
    no_target = [r for r in report["rows"] if r["type_id"] == 2]
    assert no_target and all(r["J"] == r["F"] == 1.0 for r in no_target)


def test_revos_missing_expression_scores_zero_and_is_listed(revos_valid, tmp_path):
    data_root, data = revos_valid
    skip = {1, 6}
    write_predictions(tmp_path, data, lambda i, s: None if i in skip else gt_of(i, s))
    report = evaluate.evaluate("revos", data_root, tmp_path, "valid", progress=False)
    missing = {(m["video"], m["exp_id"]) for m in report["missing"]}
    assert missing == {(data[i].video, data[i].exp_id) for i in skip}
    assert all("no prediction folder" in m["reason"] for m in report["missing"])
    assert report["counts"]["missing"] == 2
    for i, row in enumerate(report["rows"]):
        value = 0.0 if i in skip else 1.0
        assert (row["J"], row["F"], row["R"]) == (value, value, value)
    assert_matches_visa(report["aggregates"], visa_revos(data_root, tmp_path))


def test_revos_mixed_predictions_match_visa_eval(revos_valid, tmp_path):
    data_root, data = revos_valid
    rng = np.random.default_rng(0)

    def mixed(i, sample):
        gt = sample.union_masks().astype(bool)
        kind = i % 6
        if kind == 0:
            return gt
        if kind == 1:
            return np.roll(gt, (3, -5), axis=(1, 2))  # a shifted prediction
        if kind == 2:
            return gt | (rng.random(gt.shape) < 0.02)  # false positives: R < 1
        if kind == 3:
            return data[(i + 1) % len(data)].union_masks().astype(bool)  # another expression's target
        if kind == 4:
            return np.ones_like(gt)
        return None  # missing

    write_predictions(tmp_path, data, mixed)
    report = evaluate.evaluate("revos", data_root, tmp_path, "valid", workers=2, progress=False)
    reference = visa_revos(data_root, tmp_path)
    assert_matches_visa(report["aggregates"], reference)
    assert 0 < report["aggregates"]["overall"]["R"] < 100
    # the type split: overall is the mean of the two type means, not the mean over all expressions
    ref, rea = report["aggregates"]["referring"], report["aggregates"]["reasoning"]
    assert report["aggregates"]["overall"]["J&F"] == pytest.approx((ref["J&F"] + rea["J&F"]) / 2)
    scored = [r for r in report["rows"] if r["type_id"] in (0, 1)]
    assert ref["count"] != rea["count"] and report["aggregates"]["overall"]["J"] != pytest.approx(
        np.mean([round(100 * r["J"], 2) for r in scored])
    )


def assert_matches_visa(aggregates: dict, reference: dict) -> None:
    assert set(aggregates) == set(reference)
    for group, values in reference.items():
        for key, value in values.items():
            assert aggregates[group][key] == pytest.approx(value, abs=1e-9), (group, key)


def test_revos_binary_r_convention(revos_valid, tmp_path):
    data_root, data = revos_valid
    write_predictions(tmp_path, data, lambda i, s: s.union_masks().astype(bool) | np.eye(s.height, s.width, dtype=bool))
    visa = evaluate.evaluate("revos", data_root, tmp_path, "valid", progress=False)
    binary = evaluate.evaluate("revos", data_root, tmp_path, "valid", r_convention="binary", progress=False)
    for v, b, sample in zip(visa["rows"], binary["rows"], data, strict=True):
        gt, fg = sample.union_masks(), sample.extra["foreground"].object_masks(range(sample.num_frames))[:, 0]
        fp = (np.eye(sample.height, sample.width, dtype=bool) & (gt == 0)).sum(axis=(1, 2))
        assert b["R"] == pytest.approx(np.mean(np.maximum(1 - fp / (fg.sum(axis=(1, 2)) + 1e-6), 0)), abs=1e-12)
        assert v["R"] <= b["R"]  # VISA counts each false positive 255 times
        assert v["J"] == b["J"] and v["F"] == b["F"]


def test_wrong_size_png_is_an_error_naming_the_file(revos_valid, tmp_path):
    data_root, data = revos_valid
    write_predictions(tmp_path, data, gt_of)
    sample = data[2]
    bad = layout.prediction_dir(tmp_path, sample.video, sample.exp_id) / f"{sample.frame_names[1]}.png"
    cv2.imwrite(str(bad), np.zeros((sample.height + 1, sample.width), np.uint8))
    with pytest.raises(layout.BadPrediction, match=str(bad).replace("\\", "\\\\")):
        evaluate.evaluate("revos", data_root, tmp_path, "valid", progress=False)
    args = ["eval", "--dataset", "revos", "--data", str(data_root), "--pred", str(tmp_path)]
    with pytest.raises(SystemExit, match=f"vrsjax eval: predicted mask {bad}"):
        cli.main(args)


# ----------------------------------------------------------------------------- the other layouts


@pytest.mark.parametrize(
    ("layout_name", "protocol", "split"),
    [("mevis", "mevis", "valid_u"), ("reasonvos", "reasonvos", None), ("refytvos", "refytvos", "train"),
     ("davis17", "davis17", "valid")],
)  # fmt: skip
def test_mean_protocols_gt_empty_and_missing(synthetic, tmp_path, layout_name, protocol, split):
    root, dataset = synthetic
    data_root = tmp_path / layout_name
    write_layout(dataset, layout_name, data_root)
    data = open_dataset(protocol, data_root, split)
    write_predictions(tmp_path / "gt", data, gt_of)
    report = evaluate.evaluate(protocol, data_root, tmp_path / "gt", split, progress=False)
    assert report["aggregates"]["all"] == {"J": 100.0, "F": 100.0, "J&F": 100.0, "count": len(data)}

    write_predictions(tmp_path / "mixed", data, lambda i, s: None if i == 0 else (empty_of if i % 2 else gt_of)(i, s))
    report = evaluate.evaluate(protocol, data_root, tmp_path / "mixed", split, progress=False)
    per_expression = []
    for i, sample in enumerate(data):
        gt = sample.union_masks()
        empty_frames = (~gt.reshape(len(gt), -1).any(axis=1)).mean()
        per_expression.append(0.0 if i == 0 else empty_frames if i % 2 else 1.0)
    mean = 100 * np.mean(per_expression)
    assert report["aggregates"]["all"] == pytest.approx({"J": mean, "F": mean, "J&F": mean, "count": len(data)})
    assert [(m["video"], m["exp_id"]) for m in report["missing"]] == [(data[0].video, data[0].exp_id)]


def test_splits_without_ground_truth_say_where_they_are_scored(synthetic, tmp_path):
    root, dataset = synthetic
    write_layout(dataset, "refytvos", tmp_path / "ytvos")
    (tmp_path / "pred").mkdir()
    with pytest.raises(ValueError, match="Ref-YouTube-VOS challenge server"):
        evaluate.evaluate("refytvos", tmp_path / "ytvos", tmp_path / "pred", "valid", progress=False)
    with pytest.raises(FileNotFoundError, match="prediction folder"):
        evaluate.evaluate("refytvos", tmp_path / "ytvos", tmp_path / "nothing", "train", progress=False)


def test_image_giou_ciou(synthetic, tmp_path):
    root, dataset = synthetic
    write_layout(dataset, "image_json", tmp_path / "img")
    json_file = tmp_path / "img" / "refcoco_like.json"
    data = open_dataset("image_json", json_file)
    assert len(data) >= 3
    write_predictions(tmp_path / "gt", data, gt_of)
    report = evaluate.evaluate("image", json_file, tmp_path / "gt", progress=False)
    expected = 100 * len(data) / (len(data) + 1e-5)  # LISA: IoU I / (U + 1e-5) averaged over N + 1e-5
    areas = np.array([s.union_masks().sum() for s in data], np.float64)
    assert report["aggregates"]["all"]["gIoU"] == pytest.approx(
        100 * np.sum(areas / (areas + 1e-5)) / (len(data) + 1e-5), abs=1e-9
    )
    assert report["aggregates"]["all"]["gIoU"] == pytest.approx(expected, abs=1e-3)
    assert report["aggregates"]["all"]["cIoU"] == pytest.approx(100 * areas.sum() / (areas.sum() + 1e-10), abs=1e-9)

    # half the first object's box predicted, the second sample missing, the rest exact
    def partial(i, sample):
        gt = sample.union_masks().astype(bool)
        if i == 0:
            pred = np.zeros_like(gt)
            pred[:, : sample.height // 2] = gt[:, : sample.height // 2]
            return pred
        return None if i == 1 else gt

    write_predictions(tmp_path / "mixed", data, partial)
    report = evaluate.evaluate("image", json_file, tmp_path / "mixed", progress=False)
    inter = areas.copy()
    inter[0] = data[0].union_masks()[:, : data[0].height // 2].sum()
    inter[1] = 0
    assert report["aggregates"]["all"]["gIoU"] == pytest.approx(
        100 * np.sum(inter / (areas + 1e-5)) / (len(data) + 1e-5), abs=1e-9
    )
    assert report["aggregates"]["all"]["cIoU"] == pytest.approx(100 * inter.sum() / (areas.sum() + 1e-10), abs=1e-9)
    assert [m["exp_id"] for m in report["missing"]] == [data[1].exp_id]
