"""`vrsjax predict` on the synthetic ReVOS-layout dataset: the benchmark layout is written, a second run skips
every finished expression, an interrupted or deleted expression is predicted again, and batched greedy answers do
not depend on which expressions share a batch."""

import json
import shutil

import numpy as np
import pytest

from vrsjax.cli import main
from vrsjax.data import open_dataset, synthetic
from vrsjax.eval import layout
from vrsjax.inference import VeasonConfig, predict
from vrsjax.inference.predict_split import ANSWERS_FILE, REPORT_FILE

pytestmark = [
    pytest.mark.filterwarnings("ignore:cannot import name '_C'"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),
    pytest.mark.usefixtures("one_torch_thread"),
]
CONFIG = VeasonConfig(size=56, max_new_tokens=8)


def answers(out):
    lines = [json.loads(line) for line in (out / ANSWERS_FILE).read_text().splitlines()]
    return {(a["video"], a["exp_id"]): a for a in lines}


def test_predict_writes_the_layout_and_resumes(tmp_path, tiny_checkpoint, policy, sam2_service, capsys):
    data = synthetic.write_dataset(tmp_path / "revos", num_videos=4, num_frames=(4, 5), size=(64, 48), sft=False)
    out = tmp_path / "pred"
    split = open_dataset("revos", data.root, "valid")
    run = dict(dataset="revos", split="valid", config=CONFIG, batch_size=2, policy=policy, sam=sam2_service)
    report = predict(data.root, out, limit=4, progress=False, **run)
    assert (report.selected, report.skipped_complete, report.predicted) == (4, 0, 4)
    assert len(report.parse_failures) == 4  # a random tiny policy never answers in the format
    for sample in split[:4]:
        assert layout.is_complete(out, sample.video, sample.exp_id, sample.frame_names)
        masks = layout.read_masks(out, sample.video, sample.exp_id, sample.frame_names, (48, 64))
        assert masks.shape == (sample.num_frames, 48, 64)
    assert not layout.is_complete(out, split[4].video, split[4].exp_id, split[4].frame_names)
    first = answers(out)
    assert json.loads((out / REPORT_FILE).read_text())["predicted"] == 4

    # A second run (through the command line) finds everything done: nothing is loaded or predicted.
    argv = ["predict", "--dataset", "revos", "--data", str(data.root), "--split", "valid", "--out", str(out)]
    assert main([*argv, "--checkpoint", str(tiny_checkpoint), "--limit", "4"]) == 0
    assert "0 predicted, 4 already complete, of 4; parse failures (all runs) 4" in capsys.readouterr().out
    assert len(json.loads((out / REPORT_FILE).read_text())["parse_failures"]) == 4  # the first run's stay

    # An interrupted expression (a frame missing) and a deleted one are predicted again, in one batch whose
    # partners differ from the first run's: greedy answers and masks come out the same.
    before = layout.read_masks(out, split[1].video, split[1].exp_id, split[1].frame_names, (48, 64))
    (layout.prediction_dir(out, split[1].video, split[1].exp_id) / f"{split[1].frame_names[-1]}.png").unlink()
    shutil.rmtree(layout.prediction_dir(out, split[2].video, split[2].exp_id))
    report = predict(data.root, out, limit=4, progress=False, **run)
    assert (report.skipped_complete, report.predicted) == (2, 2)
    assert sorted(report.parse_failures) == sorted(s.key for s in split[:4])  # 2 from this run, 2 from the first
    assert json.loads((out / REPORT_FILE).read_text())["parse_failures"] == report.parse_failures
    again = answers(out)  # the file is appended to: the latest line of each expression wins
    for sample in split[1:3]:
        key = (sample.video, sample.exp_id)
        assert again[key]["text"] == first[key]["text"]
    after = layout.read_masks(out, split[1].video, split[1].exp_id, split[1].frame_names, (48, 64))
    np.testing.assert_array_equal(after, before)


def test_predict_rejects_bad_input_before_loading_anything(tmp_path):
    with pytest.raises(SystemExit, match="cannot tell the dataset layout"):
        main(["predict", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--checkpoint", str(tmp_path)])
    with pytest.raises(ValueError, match="batch_size"):
        predict(tmp_path, tmp_path / "o", batch_size=0)
    data = synthetic.write_dataset(tmp_path / "revos", num_videos=4, num_frames=(4, 4), size=(32, 32), sft=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    with pytest.raises(ValueError, match="other/config.json: model_type='qwen2_vl'"):
        predict(data.root, tmp_path / "o", checkpoint=other, dataset="revos", split="valid")
    meta_file = data.root / "meta_expressions_valid_.json"
    meta = json.loads(meta_file.read_text())
    video = next(iter(meta["videos"]))
    meta["videos"][video]["expressions"]["1"]["exp"] = " . "
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"{video}/1: empty query"):
        predict(data.root, tmp_path / "o", checkpoint=other, dataset="revos", split="valid")
