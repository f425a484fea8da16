"""`vrsjax lower` from this CPU host: the tiny model (128-wide text heads) for TPU on fsdp=2 x tensor=2 and for CUDA
on data=2 x fsdp=2, four host devices each. Every artifact deserializes for its platform with 4 devices and
sharded inputs, holds no call only a CPU can serve, and the TPU text attention is the Mosaic splash kernel."""

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vrsjax import cli, lower
from vrsjax.errors import UserError

RUNS = {"tpu": "fsdp=2,tensor=2", "cuda": "data=2,fsdp=2"}
SMALL = ["--seq", "128", "--n", "2", "--response", "16"]  # lowering time hardly depends on sizes


@pytest.fixture(scope="module")
def lowered(tmp_path_factory):
    out = {}
    for platform, mesh in RUNS.items():
        folder = tmp_path_factory.mktemp(platform)
        argv = ["lower", "--platform", platform, "--model", "tiny", "--mesh", mesh, "--out", str(folder), *SMALL]
        assert cli.main(argv) == 0
        out[platform] = folder
    return out


def _artifacts(folder):
    summary = json.loads((folder / "summary.json").read_text())
    for entry in summary["artifacts"]:
        yield entry, jax.export.deserialize(bytearray((folder / entry["file"]).read_bytes()))


@pytest.mark.parametrize("platform", RUNS)
def test_every_artifact_deserializes_for_its_platform_sharded_on_4_devices(lowered, platform):
    summary = json.loads((lowered[platform] / "summary.json").read_text())
    assert summary["platform"] == platform and summary["mesh"] == dict(lower.parse_mesh(RUNS[platform]))
    assert [a["name"] for a in summary["artifacts"]] == list(lower.ARTIFACTS)
    for entry, exported in _artifacts(lowered[platform]):
        assert entry["file"] == f"{entry['name']}.{platform}.bin"
        assert exported.platforms == (platform,) and exported.nr_devices == entry["devices"] == 4
        shardings = [None if s is None else str(s) for s in exported.in_shardings_hlo]  # None: an unused input
        assert shardings == entry["in_shardings"]
        assert any("devices=[" in s for s in shardings), f"{entry['name']}: no sharded input"
        assert "sdy.sharding" in exported.mlir_module()  # the partitioner's annotations travel with the module
        assert isinstance(entry["bytes_per_device"], int) and entry["bytes_per_device"] > 0


@pytest.mark.parametrize("platform", RUNS)
def test_no_cpu_only_calls(lowered, platform):
    for entry, exported in _artifacts(lowered[platform]):
        calls = lower.custom_calls(exported)
        assert calls == entry["custom_calls"]
        assert not [c for c in calls if lower.CPU_ONLY_CALLS.search(c)], entry["name"]
        calls_text = [line for line in exported.mlir_module().splitlines() if "custom_call" in line]
        assert not [line for line in calls_text if re.search(r"callback|lapack", line, re.IGNORECASE)], entry["name"]


def test_tpu_text_attention_is_the_mosaic_kernel(lowered):
    for entry, exported in _artifacts(lowered["tpu"]):
        calls = lower.custom_calls(exported)
        if entry["name"] == "decode":  # the decode step's own shared-prefix attention, no backend switch
            assert "tpu_custom_call" not in calls
            continue
        assert entry["attention"].startswith("text: splash"), entry
        assert "vision: xla" in entry["attention"]  # 16-wide vision heads: not a lane multiple
        assert "tpu_custom_call" in calls, entry["name"]


def test_cuda_attention_says_what_it_lowered(lowered):
    from vrsjax.layers.attention import cudnn_lowering_error

    reason = cudnn_lowering_error()
    for entry, _ in _artifacts(lowered["cuda"]):
        assert "tpu_custom_call" not in entry["custom_calls"]
        if entry["name"] != "decode":
            want = "text: cudnn" if reason is None else "text: xla (cuDNN cannot be lowered from this host"
            assert entry["attention"].startswith(want), entry


def test_a_lowering_failure_names_the_artifact_and_the_cause():
    mesh = lower.host_mesh({"data": 1, "fsdp": 1, "tensor": 1})
    x = jax.ShapeDtypeStruct((4,), jnp.float32, sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    host_callback = jax.jit(lambda a: jax.pure_callback(np.sin, jax.ShapeDtypeStruct((4,), jnp.float32), a))
    with pytest.raises(UserError, match=r"artifact 'probe' does not lower for tpu: \w+"):
        lower._export("probe", "tpu", host_callback, (x,))


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--mesh", "fsdp=two"], "--mesh 'fsdp=two'"),
        (["--mesh", "fsdp=64"], "needs 64 devices"),
        (["--seq", "32"], "--seq 32"),
        (["--layers", "0"], "--layers 0"),
        (["--mesh", "data=2", "--batch", "3"], "--batch 3: use a multiple of data x fsdp = 2"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["lower", "--platform", "tpu", "--out", str(tmp_path), *argv])
    assert match in str(exit_info.value) and "\n" not in str(exit_info.value)
    assert not (tmp_path / "summary.json").exists()


def test_an_artifact_lowered_for_this_host_computes_the_model_forward(tmp_path):
    """The calling convention the README documents (the leaves of (model state, ModelInputs), flattened) on the
    function the model jits: lowered for CPU on one device, called, equal to the model's own forward."""
    from flax import nnx

    from vrsjax.models import qwen2_5_vl
    from vrsjax.testing import TINY_IDS

    settings = lower.Settings(platform="cpu", model="tiny", seq=128, n=2, response=16, dtype="float32")
    lower.run(settings, tmp_path, names=("forward",))
    exported = jax.export.deserialize(bytearray((tmp_path / "forward.cpu.bin").read_bytes()))
    config = lower.model_config("tiny", dtype="float32")
    model = qwen2_5_vl.from_config(config, seed=1)
    grid = lower.video_grid(config, settings.prompt_len)  # the video the artifact was lowered for
    tokens = math.prod(grid) // config.vision.spatial_merge_size**2
    rng = np.random.default_rng(0)
    text = rng.integers(0, 290, settings.prompt_len - tokens - 2)
    start, pad, end = (TINY_IDS[f"{k}_token_id"] for k in ("vision_start", "video", "vision_end"))
    ids = [start] + [pad] * tokens + [end]
    inputs = qwen2_5_vl.prepare_inputs(
        config,
        np.concatenate([ids, text])[None],
        pixel_values_videos=rng.normal(size=(math.prod(grid), config.vision.patch_dim)).astype(np.float32),
        video_grid_thw=np.array([grid]),
        second_per_grid_ts=np.array([1.0]),
    )
    got = exported.call(*jax.tree.leaves((nnx.state(model), inputs)))[0]
    want = jax.jit(lambda m, x: m.forward(x))(model, inputs)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
