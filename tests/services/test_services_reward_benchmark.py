"""benchmarks/reward.py runs end to end on a tiny setting, finds the cached and official masks identical in both groups
(distinct and repeated answers), tracks a repeated answer once, and writes its section from a saved summary."""

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


@pytest.mark.parametrize(("count", "rate"), [(8, 0.5), (8, 0.0), (2, 0.5), (8, 1.0), (1, 0.5)])
def test_repeated_answers_repeat_the_stated_share(count, rate):
    distinct = [(k, object()) for k in range(count)]
    group = reward.repeated_answers(distinct, rate, seed=2)
    assert len(group) == count and group[0] is distinct[0]
    fresh = [answer for i, answer in enumerate(group) if all(answer is not earlier for earlier in group[:i])]
    assert len(fresh) == count - min(int(rate * count), count - 1)
    assert all(a is b for a, b in zip(fresh, distinct, strict=False))  # new answers come in order, repeats are copies


def test_only_the_headline_setting_writes_the_headline_section():
    headline = {"device": "cpu", "settings": {"config": "hiera_t", "image_size": None}}
    assert reward.title(headline) == reward.TITLE == "Reward (SAM2 consistency, one GRPO group)"
    assert reward.title(headline | {"device": "cuda:0"}) == "Reward (SAM2 consistency, one GRPO group, cuda)"
    quick_large = {"device": "cpu", "settings": {"config": "hiera_l", "image_size": 256}}
    assert reward.title(quick_large) == "Reward (SAM2 consistency, one GRPO group, hiera_l, input 256)"


@pytest.mark.slow
def test_reward_benchmark_smoke(tmp_path):
    summary_path, section_path = tmp_path / "summary.json", tmp_path / "BENCHMARKS.md"
    args = ["--image-size", "64", "--size", "64", "--frames", "3", "--responses", "2", "--device", "cpu", "--no-write"]
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), *args, "--json", str(summary_path)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=BENCHMARK.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(summary_path.read_text())
    assert summary["identical"] is True and summary["distinct"]["identical"] and summary["repeated"]["identical"]
    assert summary["image_encoder_passes"]["vrsjax"] == 3
    assert summary["distinct"]["masklets"] == {"official": 2, "vrsjax": 2}
    assert summary["repeated"]["answers"] == 1 and summary["repeated"]["masklets"] == {"official": 2, "vrsjax": 1}
    # the section is written from the saved summary alone, as for a run measured on another machine
    env = os.environ | {"VRSJAX_BENCHMARKS_MD": str(section_path)}
    subprocess.run(
        [sys.executable, str(BENCHMARK), "--from-json", str(summary_path)], check=True, env=env, cwd=BENCHMARK.parent
    )
    body = report.read_section(f"{reward.TITLE[:-1]}, input 64)", section_path)
    assert "Masks identical to the official path's, every response of every group: **True**" in body
    assert "2 distinct answers (headline)" in body and "1 distinct answers of 2" in body
    assert reward.title(summary | {"device": "cuda:0"}) == "Reward (SAM2 consistency, one GRPO group, cuda, input 64)"
