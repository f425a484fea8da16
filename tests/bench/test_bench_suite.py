"""`vrsjax bench`: the suite runs a benchmark in a child process and regenerates a copy of BENCHMARKS.md (its section,
the machine and versions header, the summary row), keeps the sections it did not run, and names unknown benchmarks;
the helpers behind the scaling and accelerator sections on real compiled programs and profiler traces."""

import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import accelerator  # noqa: E402
import report  # noqa: E402
import scaling  # noqa: E402
import suite  # noqa: E402

from vrsjax import cli  # noqa: E402


def test_bench_quick_metrics_writes_its_section_to_the_given_file(tmp_path, capsys):
    out, before = tmp_path / "BENCHMARKS.md", tmp_path / "before.md"
    shutil.copy(BENCHMARKS.parent / "BENCHMARKS.md", out)
    shutil.copy(out, before)
    assert cli.main(["bench", "--quick", "--only", "metrics", "--out", str(out)]) == 0
    text = out.read_text()
    header, _, sections = text.partition("\n## ")
    assert "- Machine:" in header and "accelerator: none (CPU only)" in header
    assert "jax " in header and "transformers " in header and "sam2 " in header
    row = next(line for line in header.splitlines() if line.startswith("| `metrics`"))
    assert "| ok (quick) |" in row
    metrics = report.read_section("Metrics", out)
    assert "10-frame" in metrics and "identical in both" in metrics and "median [min-max range] of 3" in metrics
    # the sections it did not run are kept as they were
    titles = [line[3:] for line in before.read_text().splitlines() if line.startswith("## ") and line != "## Metrics"]
    assert all(report.read_section(t, out) == report.read_section(t, before) for t in titles)
    assert "wrote" in capsys.readouterr().out


def test_unknown_benchmark_is_named_with_the_valid_ones(tmp_path):
    with pytest.raises(SystemExit, match="unknown benchmark.*'nope'.*metrics"):
        cli.main(["bench", "--only", "nope", "--out", str(tmp_path / "b.md")])
    assert not (tmp_path / "b.md").exists()


def test_summary_keeps_rows_of_benchmarks_not_run():
    previous = "| `xmem` | XMem | ok | 12 | 1.07x |  |\n| `metrics` | J and F | ok | 3 | 7.7x |  |"
    results = {"metrics": {"status": "failed", "reason": "ValueError: x", "seconds": 1.0, "body": "", "quick": True}}
    rows = suite.summary_rows(results, {"metrics": "J and F"}, previous)
    assert any(r.startswith("| `xmem` | XMem | ok | 12") for r in rows)
    assert any(r.startswith("| `metrics` | J and F | failed (quick) | 1 |") and "ValueError: x" in r for r in rows)
    assert suite.headline("Speed-up: **3.9x** over **2.0x**") == "3.9x"
    assert suite.headline("| forward | 3.1 | 1.0 | x3.10 |") == ""


def test_spread_and_output_path(tmp_path, monkeypatch):
    s = report.spread([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["median"], s["min"], s["max"], s["q1"], s["q3"]) == (3.0, 1.0, 5.0, 2.0, 4.0)
    assert report.fmt([1.0, 3.0], 1) == "2.0 [1.0-3.0]"  # below 4 repeats: min-max
    monkeypatch.setenv("VRSJAX_BENCHMARKS_MD", str(tmp_path / "env.md"))
    report.write_section("A", "first")
    report.write_section("B", "second")
    report.write_section("A", "again")
    text = (tmp_path / "env.md").read_text()
    assert text.index("## A") < text.index("## B") and "again" in text and "first" not in text
    report.write_header("# Title\n\nnew preamble")
    assert (tmp_path / "env.md").read_text().startswith("# Title\n\nnew preamble\n\n## A\n\nagain")


def test_scaling_reads_collectives_and_their_time_from_a_real_sharded_step(tmp_path):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(8), ("fsdp",))
    w = jax.device_put(jnp.ones((256, 128)), NamedSharding(mesh, PartitionSpec("fsdp", None)))
    x = jax.device_put(jnp.ones((64, 256)), NamedSharding(mesh, PartitionSpec("fsdp", None)))

    @jax.jit
    def grad(w, x):
        return jax.grad(lambda w: jnp.sum(jnp.tanh(x @ w) ** 2))(w)

    hlo = grad.lower(w, x).compile().as_text()
    found = scaling.hlo_collectives(hlo)
    assert found and set(found) <= set(scaling.COLLECTIVES)
    # fsdp: the weight is gathered whole ([256, 128] float32 = 128 KiB) before the matmul
    assert "all-gather" in found and found["all-gather"]["bytes"] >= 256 * 128 * 4
    jax.block_until_ready(grad(w, x))
    jax.profiler.start_trace(str(tmp_path), create_perfetto_trace=True)
    for _ in range(2):
        jax.block_until_ready(grad(w, x))
    jax.profiler.stop_trace()
    comm, total = scaling.trace_share(str(tmp_path), scaling.hlo_names(hlo))
    assert 0 < comm <= total


def test_accelerator_is_skipped_on_cpu_and_its_arithmetic():
    body = accelerator.measure(quick=True)
    assert "**Skipped:** no GPU or TPU" in body and "accelerator: none (CPU only)" in body
    assert accelerator.device_peaks("NVIDIA H100 80GB HBM3") == (989e12, 3350e9)
    assert accelerator.device_peaks("NVIDIA H100 PCIe") == (756e12, 2000e9)
    assert accelerator.device_peaks("TPU v6 lite")[0] == 918e12 and accelerator.device_peaks("Radeon") is None
    from vrsjax.models import qwen2_5_vl
    from vrsjax.parallel.plan import preset_config

    config = qwen2_5_vl.Qwen2_5_VLConfig.from_hf_dict(preset_config("3b"))
    t = config.text
    # 6 x tokens x (text-layer matmul parameters), computed here from the 3B shapes (REFERENCE.md section 2)
    layer = 2048 * 2048 * 2 + 2048 * 256 * 2 + 3 * 2048 * 11008
    attention = 6 * t.num_hidden_layers * 16 * 128 * 1024 * 1024
    lm_head = 6 * 151936 * 2048 * 256
    assert accelerator.train_flops(config, 1, 1024, 256) == 6 * layer * 36 * 1024 + lm_head + attention


def test_grpo_vs_trl_is_registered_and_skips_without_trl(monkeypatch):
    import importlib.util

    import grpo_vs_trl

    assert "grpo_vs_trl" in dict(suite.available())
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    body = grpo_vs_trl.measure(1, ["text"])
    assert body.startswith("**Skipped:** trl is not installed") and "pip install -e .[bench]" in body
