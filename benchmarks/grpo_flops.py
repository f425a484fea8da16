"""Per-device compiled FLOPs of a whole GRPO step as `GRPOTrainer.step()` runs it, for `scaling.py`.

Every jitted program of a step is lowered with the exact arguments the trainer builds (`_micro_call`,
`_log_prob_call`, the rollout's `_rollout` as `rollout.generate` prepares it, the optimizer step) and compiled for
the trainer's mesh; `compile().cost_analysis()["flops"]` is then what one device computes. A step is the rollout,
the old and reference log-prob passes over `micro_batch_size_per_device_for_experience` micro-batches and the
update over `micro_batch_size_per_device_for_update` micro-batches; XLA counts a while loop's body once, so the
rollout is its prefill plus one decode step. Runs in a child process that has the simulated devices.
"""

from __future__ import annotations

import importlib
import time

import numpy as np

N, T, SIZE = 8, 8, 56


def samples(count: int, seed: int = 0) -> list:
    from vrsjax.rl.trainer import GRPOSample

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        frames = rng.integers(0, 255, (2, SIZE, SIZE, 3), np.uint8)
        out.append(GRPOSample(f"s{i}", "The red square.", frames, [0, 5], np.zeros((2, SIZE, SIZE), bool), [[], []]))
    return out


def make_trainer(path, proc, data, mesh, prompts: int, micro: int, tmp):
    """Veason-R1's step settings (n = 8, KL loss, `micro` responses per device and pass) on a tiny model."""
    from vrsjax.config import load_config
    from vrsjax.models import qwen2_5_vl
    from vrsjax.rl.trainer import GRPOTrainer

    overrides = {
        "worker.rollout.n": N,
        "data.max_response_length": T,
        "data.rollout_batch_size": prompts,
        "worker.actor.global_batch_size": prompts,
        "worker.actor.micro_batch_size_per_device_for_update": micro,
        "worker.actor.micro_batch_size_per_device_for_experience": micro,
        "worker.actor.use_kl_loss": "true",
        "worker.actor.fsdp.torch_dtype": "float32",
    }
    cfg = load_config("configs/demo.yaml", [f"{k}={v}" for k, v in overrides.items()])
    model = qwen2_5_vl.from_pretrained(path)
    return GRPOTrainer(cfg, model, proc, data, mesh=mesh, out_dir=tmp)


def _flops(program) -> float:
    cost = program.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def rollout_flops(t, data, copies: int = 1) -> float:
    """The rollout program as `rollout.generate(..., mesh=t.mesh)` builds it; `copies` repeats each prompt, each
    copy sampling N / copies (the layout a mesh runs, on one device)."""
    from flax import nnx

    from vrsjax.models.qwen2_5_vl.inputs import prepare_inputs
    from vrsjax.models.qwen2_5_vl.vision import bucket
    from vrsjax.processing.processor import MODEL_KEYS

    g = importlib.import_module("vrsjax.rollout.generate")
    import jax

    data = [s for s in data for _ in range(copies)]
    batch = t.processor(
        text=[t._prompt_text(s) for s in data], images=[f for s in data for f in s.frames], padding="bucket"
    )
    model = t.policy()
    inputs = prepare_inputs(model.config, **{k: v for k, v in batch.items() if k in MODEL_KEYS})
    next_pos = g._validate(model.config, inputs, N, T, 0, 1.0, 1.0, 0)
    inputs, next_pos = g._pad_prompt(inputs, next_pos)
    per_row = N // copies
    if t.mesh is not None:
        inputs, next_pos, per_row = g._split_groups(model.config, inputs, next_pos, N, t.mesh, batch)
        inputs, next_pos = g._shard_batch((inputs, next_pos), t.mesh)
    graphdef, state = nnx.split(model)
    static = dict(n=per_row, max_new_tokens=T, capacity=bucket(T, 8), temperature=1.0, top_p=1.0, top_k=0)
    static |= dict(min_new_tokens=0, stop=(1,), pad=0, kv_dtype="float32")
    return _flops(g._rollout.lower(graphdef, state, inputs, next_pos, jax.random.key(0), **static).compile())


def fake_rollout(prompts: int, seed: int = 0):
    """Rollout-shaped rows (tokens, mask) for lowering the training passes; values do not change FLOPs."""
    from vrsjax import rollout

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 290, (prompts * N, T)).astype(np.int32)
    mask = (np.arange(T)[None] < rng.integers(1, T + 1, (prompts * N, 1))).astype(np.int32)
    return rollout.RolloutOutput(tokens, np.zeros(tokens.shape, np.float32), mask, mask.sum(1))


def pass_flops(t, data, micro_rows: int) -> dict:
    """{"update", "log-probs"}: per-device FLOPs of the first micro-batch of `micro_rows` rows, as the trainer runs."""
    from vrsjax.rl.sequences import prompt_data

    prompts = [prompt_data(t.model.config, t.processor(text=[t._prompt_text(s)], images=list(s.frames))) for s in data]
    out = fake_rollout(len(data))
    rows = np.repeat(np.arange(len(data)), N)
    old = np.full(out.tokens.shape, -2.0, np.float32)
    adv = np.linspace(-1, 1, len(rows)).astype(np.float32)
    us = slice(0, micro_rows)
    counts = float(out.mask.sum()), float(len(rows))
    calls = {
        "update": t._micro_call(prompts, rows, out, us, old, old, adv, *counts, micro_rows),
        "log-probs": t._log_prob_call(t.params, prompts, rows, out, us, micro_rows),
    }
    return {k: _flops(fn.lower(*args, **kwargs).compile()) for k, (fn, args, kwargs) in calls.items()}


def step_flops(t, data) -> float:
    """Per-device FLOPs of one whole step of trainer `t` on `data` (its rollout batch)."""
    from vrsjax.rl.update import optimizer_step

    actor = t.cfg.worker.actor
    rows = len(data) * N
    micro_exp = actor.micro_batch_size_per_device_for_experience * t.devices
    micro_up = actor.micro_batch_size_per_device_for_update * t.devices
    exp = pass_flops(t, data, micro_exp)["log-probs"]
    update = pass_flops(t, data, micro_up)["update"]
    step, params, opt_state = optimizer_step(t.params, t.opt_state, optimizer=t.optimizer)
    optimizer = _flops(step.lower(params, opt_state, params).compile())
    passes = 1 + int(t.ref_params is not None)
    total = rollout_flops(t, data) + passes * -(-rows // micro_exp) * exp + -(-rows // micro_up) * update
    return total + optimizer * actor.ppo_epochs * -(-rows // (actor.global_batch_size * N))


def step_seconds(t, repeats: int) -> list[float]:
    """Wall seconds of `repeats` real steps after one warm-up step (compilation)."""
    t.step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        t.step()
        times.append(time.perf_counter() - t0)
    return times
