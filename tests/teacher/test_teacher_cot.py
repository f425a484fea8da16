"""`vrsjax data cot` against the scripted loopback teacher: the Veason-R1 sampling and prompt, reply validation with
re-asks and drops, output that `read_sharegpt` reads, the retry path, and resuming from the cache after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scripted_teacher import ScriptedTeacher, valid_cot_reply

from vrsjax.data import transforms as T
from vrsjax.data.formats import open_dataset
from vrsjax.data.sft import read_sharegpt
from vrsjax.processing.prompts import veason_user_prompt
from vrsjax.rewards import veason
from vrsjax.teacher import cot
from vrsjax.teacher.jobs import InvalidReply, select_samples


def _args(dataset, out, url, *extra):
    return ["--dataset", str(dataset.root), "--out", str(out), "--endpoint", url, "--model", "teacher", *extra]


@pytest.fixture(scope="module")
def samples(teacher_dataset):
    chosen, _ = select_samples(open_dataset("revos", teacher_dataset.root, "train"))
    return chosen


def test_plan_follows_veason_sampling(samples):
    job = cot.plan_job(samples[0], num_frames=8, seed=0)
    assert job == cot.plan_job(samples[0], num_frames=8, seed=0)  # seeded per sample
    areas = T.union_areas(samples[0].union_masks())
    assert job.keyframe in T.top_area_frames(areas) and job.keyframe in job.frame_ids
    step = -(-samples[0].num_frames // 7)
    assert list(job.frame_ids) == list(range(job.keyframe % step, samples[0].num_frames, step))
    assert {cot.plan_job(s, 8, seed).template for s in samples for seed in range(4)} == {0, 1, 2}


def test_messages_show_timestamped_frames_with_boxes(samples):
    job = cot.plan_job(samples[0], 8, 0)
    content = cot.build_messages(job)[0]["content"]
    captions = [p["text"] for p in content[:-1:2]]
    assert captions == [f"[{t} s]" for t in job.frame_ids]
    assert all(
        p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/jpeg;base64,")
        for p in content[1:-1:2]
    )
    prompt = content[-1]["text"]
    assert (
        f"Keyframe timestamp: {job.keyframe}" in prompt and "Step 3" in prompt and cot.EXAMPLES[job.template] in prompt
    )


def test_validate_reply_rejects_bad_shapes(samples):
    job = cot.plan_job(samples[0], 8, 0)
    good = valid_cot_reply({"messages": cot.build_messages(job)})
    assert cot.validate_reply(job, good).startswith("Step 1")
    answer = '<answer>{"keyframe_timestamp": %d, "bbox_2d_list": %s}</answer>'
    bad = {
        "no_think": "no tags " + answer % (job.keyframe, "[[1, 2, 3, 4]]"),
        "no_answer": "<think>x</think> nothing",
        "bad_json": "<think>x</think><answer>{keyframe</answer>",
        "wrong_keyframe": "<think>x</think>" + answer % (job.keyframe + 1, "[[1, 2, 3, 4]]"),
        "bad_boxes": "<think>x</think>" + answer % (job.keyframe, "[[1, 2, 700, 4]]"),
    }
    for reason, text in bad.items():
        with pytest.raises(InvalidReply, match=reason):
            cot.validate_reply(job, text)
    gt = job.gt_boxes[job.frame_ids.index(job.keyframe)]
    exact = "<think>x</think>" + answer % (job.keyframe, json.dumps([list(b) for b in gt]))
    assert cot.validate_reply(job, exact, min_iou=0.9) == "x"
    with pytest.raises(InvalidReply, match="low_iou"):
        cot.validate_reply(job, "<think>x</think>" + answer % (job.keyframe, "[[0, 0, 1, 1]]"), min_iou=0.5)


def test_cot_writes_sharegpt_that_read_sharegpt_reads(teacher_dataset, tmp_path, run_data, samples):
    out = tmp_path / "cot" / "cot.json"
    with ScriptedTeacher(valid_cot_reply, failures=[429, 500]) as teacher:
        report = run_data("cot", *_args(teacher_dataset, out, teacher.url, "--seed", "1"))
    counts, usage = report["counts"], report["usage"]
    assert counts["kept"] == counts["selected"] == len(samples) and counts["dropped_invalid"] == 0
    assert usage["retries"] == 2 and usage["statuses"]["429"] == 1 and usage["statuses"]["500"] == 1
    conversations, skipped = read_sharegpt(out)
    assert len(conversations) == len(samples) and skipped.total == 0
    records = {r["id"]: r for r in json.loads(out.read_text())}
    by_key = {s.key: s for s in samples}
    for conv in conversations:
        record, sample = records[conv.id], by_key[conv.id]
        job = cot.plan_job(sample, 8, 1)
        assert conv.turns[0].content == veason_user_prompt(sample.expression, job.frame_ids)
        assert [Path(p).resolve() for p in conv.images] == [
            Path(sample.frame_paths[t]).resolve() for t in job.frame_ids
        ]
        reply = conv.turns[1].content
        assert veason.format_reward(reply) == 2.0  # the GRPO format reward accepts the SFT target
        answer = json.loads(reply.split("<answer>")[1].split("</answer>")[0])
        assert answer == {"keyframe_timestamp": job.keyframe, "bbox_2d_list": job.keyframe_boxes}
        gt = T.veason_gt_boxes(T.object_extents(sample.object_masks([job.keyframe])), sample.width, sample.height)[0]
        np.testing.assert_allclose(answer["bbox_2d_list"], gt, atol=0.005)
        assert record["keyframe"] == job.keyframe
    info = json.loads((out.parent / "dataset_info.json").read_text())
    assert info["vrsjax_cot"]["file_name"] == "cot.json"


def test_invalid_replies_are_reasked_then_dropped(teacher_dataset, tmp_path, run_data, samples):
    def reply(body):  # the first ask of every sample is invalid; later asks valid only for even keyframes
        text = valid_cot_reply(body)
        keyframe = json.loads(text.split("<answer>")[1].split("</answer>")[0])["keyframe_timestamp"]
        return text if body["seed"] > 0 and keyframe % 2 == 0 else "I cannot tell."

    with ScriptedTeacher(reply) as teacher:
        report = run_data("cot", *_args(teacher_dataset, tmp_path / "c.json", teacher.url, "--max-attempts", "2"))
    counts = report["counts"]
    even = sum(cot.plan_job(s, 8, 0).keyframe % 2 == 0 for s in samples)
    assert counts["kept"] == even and counts["dropped_invalid"] == len(samples) - even
    assert counts["reasks"] == len(samples) and counts["invalid_reasons"] == {"no_think": 2 * len(samples) - even}
    assert len(teacher.answered) == 2 * len(samples)
    assert len(json.loads((tmp_path / "c.json").read_text())) == even


def test_resume_after_kill_does_not_pay_twice(teacher_dataset, tmp_path, run_data, samples):
    out, hold = tmp_path / "r.json", 3
    with ScriptedTeacher(valid_cot_reply, hold_after=hold) as teacher:
        argv = _args(teacher_dataset, out, teacher.url, "--concurrency", "2")
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.Popen([sys.executable, "-m", "vrsjax.cli", "data", "cot", *argv], env=env)
        try:
            deadline = time.monotonic() + 120
            while len(list(Path(f"{out}.cache").rglob("*.json"))) < hold:
                assert time.monotonic() < deadline and proc.poll() is None, "the first run made no progress"
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        assert not out.exists()
        teacher.release()
        report = run_data("cot", *argv)
    assert report["usage"]["cache_hits"] == hold
    assert len(teacher.answered) == len(samples) == len(set(teacher.answered))
    assert report["counts"]["kept"] == len(samples)


def test_a_run_whose_every_request_failed_exits_1_and_writes_nothing(teacher_dataset, tmp_path):
    import socket

    from vrsjax.cli import main

    with socket.socket() as closed:  # a port nobody listens on: every request is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    out = tmp_path / "cot.json"
    argv = _args(teacher_dataset, out, f"http://127.0.0.1:{port}/v1", "--max-retries", "0", "--timeout", "5")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "cot", *argv])
    message = str(exit_info.value.code)
    assert message.startswith(f"vrsjax data cot: --endpoint http://127.0.0.1:{port}/v1: no sample kept: ")
    assert "requests failed" in message and "was not written" in message and "\n" not in message
    assert not out.exists() and not (tmp_path / "dataset_info.json").exists()
    assert json.loads((tmp_path / "cot.json.report.json").read_text())["counts"]["kept"] == 0
