"""`vrsjax plan`: planned bytes per device against the real sharded arrays, the presets against transformers, the CLI.

Parameters and optimizer state are exact, so they are compared byte for byte with what `from_pretrained(...,
mesh=...)` and the trainer's optax AdamW put on each of the 8 simulated devices.
"""

import json
import math

import jax
import numpy as np
import pytest
from flax import nnx

from vrsjax import cli
from vrsjax.config import load_config
from vrsjax.models import qwen2_5_vl
from vrsjax.parallel import plan
from vrsjax.parallel.mesh import make_mesh
from vrsjax.rl.update import make_optimizer

MESHES = [(2, 2, 2), (1, 8, 1), (1, 4, 2), (1, 1, 8)]


def _bytes_per_device(tree) -> dict:
    out = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out


@pytest.mark.parametrize("sizes", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_parameter_and_optimizer_bytes_match_the_sharded_arrays(tiny, sizes):
    mesh = make_mesh(*sizes)
    model = qwen2_5_vl.from_pretrained(tiny, mesh=mesh)
    params = nnx.state(model, nnx.Param)
    real = _bytes_per_device(params)
    planned, count = plan.param_bytes_per_device(model.config, dict(mesh.shape), "float32")
    assert len(real) == 8 and set(real.values()) == {planned}
    assert count == sum(math.prod(v.shape) for v in jax.tree.leaves(params))

    # the trainer's optimizer (clip + AdamW), initialised as the trainer does: two moments sharded like the params
    opt_state = make_optimizer(load_config().worker.actor.optim, 1.0, 10).init(params)
    scalars = sum(leaf.nbytes for leaf in jax.tree.leaves(opt_state) if leaf.ndim == 0)  # step counts, one device
    assert {b - 2 * planned for b in _bytes_per_device(opt_state).values()} == {0, scalars}


def test_bfloat16_parameters(tiny):
    mesh = make_mesh(1, 4, 2)
    model = qwen2_5_vl.from_pretrained(tiny, dtype="bfloat16", mesh=mesh)
    real = _bytes_per_device(nnx.state(model, nnx.Param))
    assert set(real.values()) == {plan.param_bytes_per_device(model.config, dict(mesh.shape), "bfloat16")[0]}


def test_prompt_kv_cache_matches_prefill(tiny):
    """Prompt KV as rollout prefill returns it: k and v [B, L, K, Dh] per layer, in the rollout dtype."""
    cfg = load_config("configs/demo.yaml", ["data.max_prompt_length=16", "data.rollout_batch_size=4", "mesh.fsdp=1"])
    model = qwen2_5_vl.from_pretrained(tiny)
    ids = np.random.default_rng(0).integers(0, 290, (4, 16))
    inputs = qwen2_5_vl.prepare_inputs(model.config, ids, np.ones_like(ids))
    text = model.model.language_model
    _, kvs = text(model.embed(inputs), inputs.position_ids, inputs.attention_mask, return_kv=True)
    real = sum(a.astype(cfg.worker.rollout.dtype).nbytes for kv in kvs for a in kv)
    prompt_kv, own_kv = plan.kv_cache_bytes(plan.inputs_from_config(cfg, devices=1, model=str(tiny), sam2=None))
    assert prompt_kv == real
    # n responses of bucket(max_response_length) = 32 tokens each, per prompt
    assert own_kv == real // 16 * cfg.worker.rollout.n * 32


@pytest.mark.slow
def test_presets_match_transformers_parameter_counts():
    torch = pytest.importorskip("torch")
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    for name, expected in (("3b", 3_754_622_976), ("7b", 8_292_166_656)):
        config, _ = plan.resolve_model(name)
        _, count = plan.param_bytes_per_device(config, {"data": 1, "fsdp": 1, "tensor": 1}, "bfloat16")
        with torch.device("meta"):
            hf = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**plan.preset_config(name)))
        hf_count = sum(p.numel() for p in hf.parameters())
        assert count == hf_count == expected, name


def test_estimates_move_the_right_way():
    cfg = load_config("configs/veason_r1_3b.yaml")
    base = plan.inputs_from_config(cfg, devices=8, model="3b")
    p = plan.make_plan(base, knobs=False)
    assert p.components["activations, update (remat)"] < p.components["activations, update (no remat)"]
    flash = plan.make_plan(plan.dataclasses.replace(base, attention="cudnn"), knobs=False)
    assert flash.peak < p.peak
    wide = plan.make_plan(plan.dataclasses.replace(base, mesh={"data": 1, "fsdp": 16, "tensor": 1}), knobs=False)
    assert wide.components["parameters (actor)"] * 2 == pytest.approx(p.components["parameters (actor)"], rel=0.01)
    tpu = plan.inputs_from_config(cfg, devices=8, model="3b", device="v5p")
    assert plan.make_plan(tpu, knobs=False).components["SAM2 (reward service)"] == 0


def test_cli_plan_fits_and_json(tiny, capsys):
    code = cli.main(["plan", "config=configs/demo.yaml", f"worker.actor.model.model_path={tiny}", "--devices", "8"])
    out = capsys.readouterr().out
    assert code == 0 and ": fits" in out and "KV cache: prompts (shared per group)" in out
    code = cli.main(["plan", "config=configs/demo.yaml", "--model", str(tiny), "--json", "--sam2", "none"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["fits"] and data["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}


def test_cli_plan_does_not_fit_and_names_knobs(capsys):
    argv = ["plan", "config=configs/veason_r1_7b.yaml", "worker.actor.model.enable_gradient_checkpointing=false"]
    code = cli.main(argv + ["--model", "7b", "--device", "v6e", "--devices", "4"])
    out = capsys.readouterr().out
    assert code == 2 and "does NOT fit" in out
    assert "enable_gradient_checkpointing=true (remat)" in out


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"device": "a100"}, "device 'a100': choose one of h100, h200, v5p, v6e"),
        ({"model": "/no/such/dir"}, "not a directory with config.json and not a preset"),
        ({"sam2": "hiera_xl"}, "sam2 'hiera_xl': choose one of"),
        ({"devices": 6}, "does not fit 6 devices"),
    ],
)
def test_bad_inputs_are_named(kwargs, message):
    cfg = load_config("configs/veason_r1_3b.yaml", ["mesh.data=4", "mesh.fsdp=2"] if "devices" in kwargs else [])
    kwargs = {"devices": 8, "model": "3b", **kwargs}
    with pytest.raises(ValueError, match=message):
        plan.inputs_from_config(cfg, **kwargs)


def test_cli_plan_errors_are_one_line():
    with pytest.raises(SystemExit, match="vrsjax plan: no model: set worker.actor.model.model_path"):
        cli.main(["plan", "config=configs/base.yaml"])
    # a recipe's model_path that names a size plans with that preset before the checkpoint exists
    text, result = plan.run(["config=configs/veason_r1_3b.yaml"], sam2="none")
    assert result.inputs.model_name == "Qwen2.5-VL-3B preset" and "3B preset" in text
