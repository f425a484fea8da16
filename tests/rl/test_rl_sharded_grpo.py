"""Sharded GRPO divides the work: on 8 simulated devices, with Veason-R1's micro-batches (n = 8, 1, 2 or 8 groups per
micro-batch), the update, both log-prob passes and the rollout give the single-device numbers, and each device's
compiled FLOPs are at most 1.15 x (single-device FLOPs / 8) plus the documented repeated prompt cost: a micro-batch
of G groups that does not split over the 8 shards repeats each prompt on k = 8 / gcd(G, 8) rows (`group_copies`),
and that cost is measured here as the single-device FLOPs of the same layout minus the plain one, over 8, under the
same 1.15 allowance for sharding overhead (fsdp adds ~2% to the repeated prompt rows as to the others)."""

import importlib

import jax
import numpy as np
import pytest
from flax import nnx

from vrsjax import rollout
from vrsjax.config import load_config
from vrsjax.models import qwen2_5_vl
from vrsjax.parallel.mesh import make_mesh
from vrsjax.processing import Processor
from vrsjax.rl.sequences import prompt_data
from vrsjax.rl.trainer import GRPOSample, GRPOTrainer
from vrsjax.testing import write_tiny_checkpoint

N, T, SIZE = 8, 6, 56
MESHES = {"data=8": (8, 1), "fsdp=8": (1, 8), "data=2 x fsdp=4": (2, 4)}
GROUPS = (1, 2, 8)
SLACK = 1.15
FAST = {("data=8", 1), ("fsdp=8", 2), ("data=2 x fsdp=4", 1)}  # the rest of the matrix is marked slow (compiles)
CASES = [
    pytest.param(m, g, id=f"{m}-{g}", marks=() if (m, g) in FAST else pytest.mark.slow) for m in MESHES for g in GROUPS
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("sharded") / "tiny", seed=0, text_layers=1, vision_depth=1)
    proc = Processor.from_pretrained(path)
    rng = np.random.default_rng(0)
    samples = []
    for i in range(8):
        frames = rng.integers(0, 255, (2, SIZE, SIZE, 3), np.uint8)
        samples.append(GRPOSample(f"s{i}", "The red square.", frames, [0, 5], np.zeros((2, 8, 8), bool), [[], []]))
    tokens = rng.integers(0, 290, (8 * N, T)).astype(np.int32)
    mask = (np.arange(T)[None] < rng.integers(1, T + 1, (8 * N, 1))).astype(np.int32)
    out = rollout.RolloutOutput(tokens, np.zeros(tokens.shape, np.float32), mask, mask.sum(1))
    old = rng.normal(-5, 0.3, tokens.shape).astype(np.float32)
    ref = (old + rng.normal(0, 0.1, tokens.shape)).astype(np.float32)
    adv = rng.normal(size=8 * N).astype(np.float32)
    return path, proc, samples, out, old, ref, adv, {}


def trainer(world, groups: int, mesh=None) -> GRPOTrainer:
    path, proc, samples, *_ = world
    overrides = {
        "worker.rollout.n": N,
        "data.max_response_length": T,
        "data.rollout_batch_size": 8,
        "worker.actor.global_batch_size": 8,
        "worker.actor.micro_batch_size_per_device_for_update": groups,
        "worker.actor.micro_batch_size_per_device_for_experience": groups,
        "worker.actor.use_kl_loss": "true",
        "worker.actor.fsdp.torch_dtype": "float32",
        "worker.rollout.temperature": 1.0,
    }
    cfg = load_config("configs/demo.yaml", [f"{k}={v}" for k, v in overrides.items()])
    return GRPOTrainer(cfg, qwen2_5_vl.from_pretrained(path), proc, samples, mesh=mesh, out_dir=path.parent / "run")


def prompts_of(t: GRPOTrainer, samples):
    """The PromptData list `GRPOTrainer.step()` builds."""
    return [prompt_data(t.model.config, t.processor(text=[t._prompt_text(s)], images=list(s.frames))) for s in samples]


def flops(program) -> float:
    cost = program.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def calls(t: GRPOTrainer, world, groups: int) -> dict:
    """{pass: (fn, args, kwargs)} exactly as `step()` calls them for the first micro-batch of `groups` groups."""
    _, _, samples, out, old, ref, adv, _ = world
    prompts = prompts_of(t, samples[:groups])
    rows, micro = np.repeat(np.arange(groups), N), groups * N
    us = slice(0, micro)
    counts = float(out.mask[us].sum()), float(micro)
    return {
        "update": t._micro_call(prompts, rows, out, us, old, ref, adv, *counts, micro),
        "old log-probs": t._log_prob_call(t.params, prompts, rows, out, us, micro),
        "ref log-probs": t._log_prob_call(t.ref_params, prompts, rows, out, us, micro),
    }


def run(t: GRPOTrainer, world, groups: int, execute: bool = True) -> dict:
    """{pass: (per-device FLOPs of its compiled program, its outputs)}. The reference pass runs the old pass's
    compiled program: that it accepts the reference arguments proves they are placed alike (same FLOPs)."""
    out, old_program = {}, None
    for name, (fn, args, kwargs) in calls(t, world, groups).items():  # update, old, ref
        # args[0] (the graphdef) and the kwargs are static
        program = old_program if name == "ref log-probs" else fn.lower(*args, **kwargs).compile()
        old_program = program if name == "old log-probs" else old_program
        out[name] = (flops(program), program(*args[1:]) if execute else None)
    return out


def single_device(world, groups: int) -> dict:
    """Per pass: (plain 1-device FLOPs, 1-device FLOPs of the 8-way layout with the prompts repeated, outputs)."""
    cache = world[-1]
    if groups not in cache:
        one = trainer(world, groups)
        plain = run(one, world, groups)
        one.devices = 8  # the layout an 8-way mesh runs (prompts repeated when groups < 8), on one device
        repeated = plain if groups % 8 == 0 else run(one, world, groups, execute=False)
        cache[groups] = {k: (plain[k][0], repeated[k][0], plain[k][1]) for k in plain}
    return cache[groups]


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


@pytest.mark.parametrize("mesh_name, groups", CASES)
def test_training_passes_split_and_equal_one_device(world, mesh_name, groups):
    data, fsdp = MESHES[mesh_name]
    sharded = run(trainer(world, groups, make_mesh(data=data, fsdp=fsdp)), world, groups)
    valid = world[3].mask[: groups * N] > 0
    for name, (plain, repeated, want) in single_device(world, groups).items():
        per_device, got = sharded[name]
        prompt_cost = (repeated - plain) / 8  # each device runs its own copy of its group's prompt
        assert per_device <= SLACK * (plain / 8 + prompt_cost), (name, per_device, plain / 8, prompt_cost)
        if name == "update":
            (g_mesh, loss_mesh, _), (g_one, loss_one, _) = got, want
            assert abs(float(loss_mesh) - float(loss_one)) <= 1e-5
            assert np.abs(flat(g_mesh) - flat(g_one)).max() <= 1e-5
        else:
            logp, logp_one = np.asarray(got[0]).reshape(-1, T), np.asarray(want[0]).reshape(-1, T)
            assert np.abs(logp - logp_one)[valid].max() <= 1e-5, name


def rollout_program(t: GRPOTrainer, samples, mesh, copies: int = 1):
    """The compiled `rollout._rollout` and its arguments exactly as `GRPOTrainer._rollout` -> `rollout.generate`
    builds them; `copies` repeats each prompt, each copy sampling N / copies (the layout a mesh uses, on one device)."""
    from vrsjax.models.qwen2_5_vl.inputs import prepare_inputs
    from vrsjax.models.qwen2_5_vl.vision import bucket
    from vrsjax.processing.processor import MODEL_KEYS

    g = importlib.import_module("vrsjax.rollout.generate")  # the module (the package exports the function)

    samples = [s for s in samples for _ in range(copies)]
    texts = [t._prompt_text(s) for s in samples]
    batch = t.processor(text=texts, images=[f for s in samples for f in s.frames], padding="bucket")
    model = t.policy()
    inputs = prepare_inputs(model.config, **{k: v for k, v in batch.items() if k in MODEL_KEYS})
    next_pos = g._validate(model.config, inputs, N, T, 0, 1.0, 1.0, 0)
    inputs, next_pos = g._pad_prompt(inputs, next_pos)
    per_row = N // copies
    if mesh is not None:
        inputs, next_pos, per_row = g._split_groups(model.config, inputs, next_pos, N, mesh, batch)
        inputs, next_pos = g._shard_batch((inputs, next_pos), mesh)
    graphdef, state = nnx.split(model)
    static = dict(n=per_row, max_new_tokens=T, capacity=bucket(T, 8), temperature=1.0, top_p=1.0, top_k=0)
    static |= dict(min_new_tokens=0, stop=(1,), pad=0, kv_dtype="float32")
    args = (graphdef, state, inputs, next_pos, jax.random.key(3))
    return g._rollout.lower(*args, **static).compile(), args[1:]


def single_device_rollout(world, prompts: int):
    """(plain 1-device FLOPs, 1-device FLOPs of the 8-way layout, outputs) of a rollout of `prompts` prompts."""
    cache = world[-1]
    if ("rollout", prompts) not in cache:
        one = trainer(world, 1)
        samples = world[2][:prompts]
        program, args = rollout_program(one, samples, None)
        copies = 8 // np.gcd(prompts, 8)
        repeated = flops(rollout_program(one, samples, None, copies)[0]) if copies > 1 else flops(program)
        cache["rollout", prompts] = flops(program), repeated, program(*args)
    return cache["rollout", prompts]


@pytest.mark.parametrize("mesh_name, prompts", CASES)
def test_rollout_splits_and_equals_one_device(world, mesh_name, prompts):
    data, fsdp = MESHES[mesh_name]
    mesh = make_mesh(data=data, fsdp=fsdp)
    program, args = rollout_program(trainer(world, 1, mesh), world[2][:prompts], mesh)
    plain, repeated, want = single_device_rollout(world, prompts)
    assert flops(program) <= SLACK * (plain / 8 + (repeated - plain) / 8), (flops(program), plain / 8)
    got = program(*args)  # tokens, log-probs, mask: [rows, responses per row, T], rows prompt-major
    np.testing.assert_array_equal(np.asarray(got[0]).reshape(-1, T), np.asarray(want[0]).reshape(-1, T))
    assert np.abs(np.asarray(got[1]).reshape(-1, T) - np.asarray(want[1]).reshape(-1, T)).max() <= 1e-5
