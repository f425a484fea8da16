"""Veason-R1's stratified subset, SFT label masks, and the `vrsjax data` commands."""

import json

import numpy as np
import pytest

from vrsjax.cli import main
from vrsjax.data.revos import read_revos
from vrsjax.data.sft import IGNORE_INDEX, label_segments
from vrsjax.data.subset import stratified_subset, write_subset

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"  # pycocotools on numpy 2
)


def _videos(counts):
    """A meta "videos" mapping with counts[(type_id, objects)] expressions of each kind."""
    videos, n = {}, 0
    for (type_id, objects), count in counts.items():
        for _ in range(count):
            exps = videos.setdefault(f"v{n % 7}", {"expressions": {}, "frames": ["00000"]})["expressions"]
            exps[str(len(exps))] = {"exp": "x", "obj_id": list(range(objects)), "anno_id": [], "type_id": type_id}
            n += 1
    return videos


def test_stratified_cells_follow_marginal_ratios():
    videos = _videos({(0, 1): 400, (0, 2): 100, (1, 1): 300, (1, 3): 200, (2, 0): 50})
    chosen = stratified_subset(videos, 100, seed=0)
    assert len(chosen) == len(set(chosen)) == 100
    kinds = {}
    for video, exp_id in chosen:
        exp = videos[video]["expressions"][exp_id]
        key = (exp["type_id"], "single" if len(exp["obj_id"]) == 1 else "multi")
        kinds[key] = kinds.get(key, 0) + 1
    # p(referring) = 0.5, p(single) = 0.7: round(p_t * p_o * 100) per cell, as the reference draws them
    assert kinds == {(0, "single"): 35, (0, "multi"): 15, (1, "single"): 35, (1, "multi"): 15}
    assert stratified_subset(videos, 100, seed=0) == chosen
    assert stratified_subset(videos, 100, seed=1) != chosen


def test_small_cells_are_filled_from_everything():
    videos = _videos({(0, 1): 10, (1, 2): 2, (2, 0): 30})
    chosen = stratified_subset(videos, 30, seed=3)
    assert len(chosen) == 30
    types = [videos[v]["expressions"][e]["type_id"] for v, e in chosen]
    assert types.count(1) == 2 and 2 in types  # the fill draws from every type, no-target included


def test_write_subset(synth, tmp_path):
    out, written, available = write_subset(
        synth.root / "meta_expressions_train_.json", tmp_path / "meta_expressions_train_select.json", size=10, seed=0
    )
    assert written == 10 and available > 10
    meta = json.loads(out.read_text())["videos"]
    original = json.loads((synth.root / "meta_expressions_train_.json").read_text())["videos"]
    assert meta.keys() == original.keys() and sum(len(v["expressions"]) for v in meta.values()) == 10
    video = next(iter(meta))
    assert {k: v for k, v in meta[video].items() if k != "expressions"} == {
        k: v for k, v in original[video].items() if k != "expressions"
    }


def test_subset_larger_than_the_file_says_what_was_written(synth, tmp_path, capsys):
    meta = synth.root / "meta_expressions_train_.json"
    available = sum(len(v["expressions"]) for v in json.loads(meta.read_text())["videos"].values())
    assert main(["data", "subset", str(meta), str(tmp_path / "s.json"), "--size", "1000"]) == 0
    out = capsys.readouterr().out
    assert f"wrote all {available} expressions" in out and "--size 1000 asked for more" in out
    written = json.loads((tmp_path / "s.json").read_text())["videos"]
    assert sum(len(v["expressions"]) for v in written.values()) == available
    assert main(["data", "subset", str(meta), str(tmp_path / "s.json"), "--size", "5"]) == 0
    assert f"wrote 5 of {available} expressions" in capsys.readouterr().out


def test_label_segments():
    ids, labels, mask = label_segments([([1, 2, 3], False), ([4, 5], True), ([6], False), ([7, 8], True)])
    assert ids.tolist() == [1, 2, 3, 4, 5, 6, 7, 8] and ids.dtype == np.int32
    assert mask.tolist() == [False, False, False, True, True, False, True, True]
    assert labels.tolist() == [IGNORE_INDEX] * 3 + [4, 5, IGNORE_INDEX, 7, 8]


def test_cli_synth_inspect_build(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--videos", "4", "--seed", "3", "--layout", "reasonvos"]) == 0
    assert "wrote 4 videos" in capsys.readouterr().out
    assert (tmp_path / "synth_reasonvos" / "meta_expressions.json").is_file()
    png = tmp_path / "grid.png"
    assert main(["data", "inspect", str(out), "--png", str(png), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out.split("\nwrote")[0])
    assert stats["videos"] == 3 and stats["expressions"] == len(read_revos(out, "train")) and png.is_file()
    assert set(stats["by_type"]) == {"referring", "reasoning", "no_target"}
    assert main(["data", "build", str(out), "--out", str(tmp_path / "records"), "--split", "valid"]) == 0
    assert "as ArrayRecord files" in capsys.readouterr().out
    assert (tmp_path / "records" / "vrsjax_expressions" / "1.0.0" / "metadata.json").is_file()
    (tmp_path / "records" / "notes.txt").write_text("mine")  # --overwrite replaces the builds, nothing else
    assert main(["data", "build", str(out), "--out", str(tmp_path / "records"), "--split", "valid", "--overwrite"]) == 0
    assert (tmp_path / "records" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "records" / "vrsjax_expressions" / "1.0.0" / "metadata.json").is_file()
    subset = tmp_path / "select.json"
    assert main(["data", "subset", str(out / "meta_expressions_train_.json"), str(subset), "--size", "5"]) == 0
    assert sum(len(v["expressions"]) for v in json.loads(subset.read_text())["videos"].values()) == 5
    with pytest.raises(SystemExit):
        main(["data", "synth"])


def test_data_modules_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, vrsjax.data, vrsjax.data.records, vrsjax.data.pipeline, vrsjax.data.synthetic, "
        "vrsjax.data.synthetic_layouts, vrsjax.data.summary, vrsjax.data.sft, vrsjax.data.subset; "
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
