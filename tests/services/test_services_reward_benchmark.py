"""benchmarks/reward.py runs end to end on a tiny setting and finds the cached and official masks identical."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "reward.py"


@pytest.mark.slow
def test_reward_benchmark_smoke():
    args = ["--image-size", "64", "--size", "64", "--frames", "3", "--responses", "2", "--device", "cpu", "--no-write"]
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), *args], capture_output=True, text=True, timeout=300, cwd=BENCHMARK.parent
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["identical"] is True
    assert summary["image_encoder_passes"]["vrsjax"] == 3
