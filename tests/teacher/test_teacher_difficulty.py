"""`vrsjax data difficulty` against the scripted loopback teacher: five ratings, D, the level, JSON Lines that the
VideoSeg-R1 length-penalty reward reads through `read_difficulty` and `videoseg.sample_difficulty`."""

import json

import numpy as np
import pytest
from scripted_teacher import ScriptedTeacher, ratings_for, valid_difficulty_reply

from vrsjax.data.formats import open_dataset
from vrsjax.rewards import videoseg
from vrsjax.teacher import difficulty
from vrsjax.teacher.jobs import InvalidReply, select_samples


def _args(dataset, out, url, *extra):
    return ["--dataset", str(dataset.root), "--out", str(out), "--endpoint", url, "--model", "teacher", *extra]


def test_parse_ratings():
    good = (
        '<answer>{"scene_complexity": 3, "segmentation_challenge": 4.5, "temporal_ambiguity": 1, '
        '"motion_complexity": 10, "linguistic_ambiguity": 2}</answer>'
    )
    assert difficulty.parse_ratings(good) == [3.0, 4.5, 1.0, 10.0, 2.0]
    assert difficulty.parse_ratings("thinking... " + good.replace("<answer>", "").replace("</answer>", "")) == [
        3.0,
        4.5,
        1.0,
        10.0,
        2.0,
    ]
    for reason, text in {
        "no_json": "hard to say",
        "missing_rating": '<answer>{"scene_complexity": 3}</answer>',
        "bad_rating": good.replace("10", "11"),
        "bad_json": "<answer>{'scene_complexity': 3}</answer>",
    }.items():
        with pytest.raises(InvalidReply, match=reason):
            difficulty.parse_ratings(text)
    with pytest.raises(InvalidReply, match="bad_rating"):
        difficulty.parse_ratings(good.replace("10", "true"))


def test_difficulty_feeds_the_length_penalty(teacher_dataset, tmp_path, run_data):
    out = tmp_path / "difficulty.jsonl"
    with ScriptedTeacher(valid_difficulty_reply, failures=[503]) as teacher:
        report = run_data("difficulty", *_args(teacher_dataset, out, teacher.url, "--easy-threshold", "5"))
    samples, _ = select_samples(open_dataset("revos", teacher_dataset.root, "train"))
    assert report["counts"]["kept"] == len(samples) and report["usage"]["retries"] == 1
    records = difficulty.read_difficulty(out)
    assert set(records) == {s.key for s in samples}
    for sample in samples:
        record = records[sample.key]
        ratings = ratings_for(sample.expression)
        assert record["difficulty_ratings"] == ratings
        d = videoseg.sample_difficulty(record)  # the reward's own reader of a sample's difficulty
        assert d == pytest.approx(np.mean(ratings)) and record["difficulty"] == d
        budget = videoseg.LengthBudget(easy_threshold=5.0)
        assert record["level"] == videoseg.difficulty_level(d, budget)
    assert sum(report["levels"].values()) == len(samples)
    # the score uses the budget of the sample's level: over budget by 100 tokens costs beta * 100
    d = videoseg.sample_difficulty(next(iter(records.values())))
    over = videoseg.token_budget(d) + 100
    full = videoseg.score("<think>x</think><answer>[]</answer>", [], np.zeros((4, 4), bool), 0, d)
    penalized = videoseg.score("<think>x</think><answer>[]</answer>", [], np.zeros((4, 4), bool), over, d)
    assert penalized == pytest.approx(full * (1 - 100 * videoseg.DEFAULT_BUDGET.beta))


def test_read_difficulty_names_a_bad_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"key": "v/0", "difficulty": 3.0}) + "\n\nnot json\n")
    with pytest.raises(ValueError, match="d.jsonl:3"):
        difficulty.read_difficulty(path)
