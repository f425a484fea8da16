"""benchmarks/reward.py runs end to end on a tiny setting (official, exact and group paths on groups of 1 and 2
distinct answers), finds the exact masks identical to the official ones and the group masks equal wherever the official
logit is clear, and writes its section from a saved summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "reward.py"
sys.path.insert(0, str(BENCHMARK.parent))

import report  # noqa: E402
import reward  # noqa: E402


def test_a_smaller_group_takes_the_first_answers_of_a_larger_one():
    boxes = reward.synthetic_video(4, 64, 0)[1]
    small, large = reward.group_answers(boxes, 3, 1), reward.group_answers(boxes, 8, 1)
    assert all(a[0] == b[0] and (a[1] == b[1]).all() for a, b in zip(small, large, strict=False))
    assert len({(k, b.tobytes()) for k, b in large}) == 8  # distinct answers


def test_only_the_headline_setting_writes_the_headline_section():
    headline = {"device": "cpu", "settings": {"config": "hiera_t", "image_size": None}}
    assert reward.title(headline) == reward.TITLE == "Reward (SAM2 consistency, one GRPO group)"
    assert reward.title(headline | {"device": "cuda:0"}) == "Reward (SAM2 consistency, one GRPO group, cuda)"
    quick_large = {"device": "cpu", "settings": {"config": "hiera_l", "image_size": 256}}
    assert reward.title(quick_large) == "Reward (SAM2 consistency, one GRPO group, hiera_l, input 256)"


@pytest.mark.slow
def test_reward_benchmark_smoke(tmp_path):
    summary_path, section_path = tmp_path / "summary.json", tmp_path / "BENCHMARKS.md"
    args = ["--image-size", "64", "--size", "64", "--frames", "3", "--groups", "1", "2", "--device", "cpu"]
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), *args, "--no-write", "--json", str(summary_path), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARK.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(summary_path.read_text())
    assert summary["identical"] and summary["exact_identical"] and summary["group_agrees"]
    assert summary["group_max_logit_error"] < 1e-3
    assert set(summary["group_2"]["seconds"]) == {"official", "exact", "group"}
    assert len(summary["per_response"]["official"]["seconds"]) == 2
    # the section is written from the saved summary alone, as for a run measured on another machine
    env = os.environ | {"VRSJAX_BENCHMARKS_MD": str(section_path)}
    subprocess.run(
        [sys.executable, str(BENCHMARK), "--from-json", str(summary_path)], check=True, env=env, cwd=BENCHMARK.parent
    )
    body = report.read_section(f"{reward.TITLE[:-1]}, input 64)", section_path)
    assert "Exact masks identical to the official ones:\n**True**" in body
    assert "| 2 distinct answers | vrsjax group |" in body and "the official per-response path for 1 distinct" in body
    assert reward.title(summary | {"device": "cuda:0"}) == "Reward (SAM2 consistency, one GRPO group, cuda, input 64)"
