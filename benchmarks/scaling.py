"""Scaling sanity check: one GRPO update micro step (gradients + optimizer) of a small Qwen2.5-VL on 8 simulated CPU
devices under several meshes, and across 2 processes, with the step time split and the communication share.

Each mesh shards the parameters by the logical-axis rules (`vrsjax.parallel.rules`) and the batch rows over
`data` x `fsdp`; the step is `vrsjax.rl.update.micro_grads` (forward, backward, GRPO loss) then `apply_grads`
(clip + AdamW). Per mesh: median step times of both parts, the collectives XLA compiled into each (count and bytes
moved per step, from the optimized HLO) and the share of device time spent in them (a `jax.profiler` trace:
time in all-reduce / all-gather / reduce-scatter / all-to-all / collective-permute ops over time in all HLO ops,
summed over the devices). The 8 devices are threads of one process (`XLA_FLAGS=--xla_force_host_platform_device_
count=8`, set in a child process before JAX starts) sharing this machine's cores, and collectives are memory copies
that also wait for the slowest device: this checks that each mesh shards and communicates as intended, it is not a
speed claim. The 2-process run uses the launch of tests/parallel (a local coordinator, 4 simulated devices each,
CPU collectives between the processes).

A second part measures the whole GRPO step (`GRPOTrainer.step()`: rollout, old and reference log-probs, update,
optimizer) with Veason-R1's micro-batches (n = 8, one response per device and micro-batch) on 1, 2, 4 and 8
simulated devices (mesh fsdp = devices): strong scaling (8 prompts whatever the devices) and weak scaling (one
prompt per device), as per-device compiled FLOPs (`benchmarks/grpo_flops.py`) and FLOPs efficiency, with the wall
time of real steps as a sanity check only; and, per pass, per-device FLOPs over (1-device FLOPs / 8) on 8 devices
for 1, 2 and 8 groups per micro-batch (the table of docs/scaling.md).

    python benchmarks/scaling.py [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import gzip
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TITLE = "Scaling (simulated devices, sharding sanity check)"
MESHES = (  # (label, data, fsdp, tensor); 1 device first, as the baseline
    ("1 device", 1, 1, 1),
    ("data=8", 8, 1, 1),
    ("fsdp=8", 1, 8, 1),
    ("fsdp=4 x tensor=2", 1, 4, 2),
    ("data=2 x fsdp=4", 2, 4, 1),
)
PROCESS_MESHES = (("2 processes: fsdp=8", 1, 8, 1), ("2 processes: data=2 x fsdp=4", 2, 4, 1))
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8}
DEADLINE_S = 900


@dataclasses.dataclass(frozen=True)
class Size:
    hidden: int = 256
    layers: int = 4
    vocab: int = 4096
    rows: int = 16  # responses in the micro-batch (a multiple of 8: every mesh splits it)
    prompt: int = 64
    response: int = 64
    repeats: int = 5


QUICK = Size(hidden=128, layers=2, vocab=1024, rows=8, prompt=32, response=32, repeats=2)


# ----------------------------------------------------------------------------- compiled HLO and profiler traces


def hlo_collectives(hlo: str) -> dict[str, dict[str, float]]:
    """Optimized HLO text -> {op kind: {"count", "bytes"}} of the collectives (result bytes per device)."""
    out: dict[str, dict[str, float]] = {}
    pattern = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for line in hlo.splitlines():
        found = pattern.search(line)
        if not found or "-done(" in line:
            continue
        shapes = re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", found.group(1))
        size = sum(DTYPE_BYTES.get(t, 4) * _prod(d) for t, d in shapes)
        entry = out.setdefault(found.group(2), {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += size
    return out


def _prod(dims: str) -> int:
    n = 1
    for d in filter(None, dims.split(",")):
        n *= int(d)
    return n


def hlo_names(hlo: str) -> set[str]:
    """Every instruction name of the module (the names the CPU runtime gives its trace events)."""
    return set(re.findall(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=", hlo, re.M))


def trace_share(trace_dir: str, names: set[str]) -> tuple[float, float]:
    """-> (microseconds in collective ops, microseconds in all HLO ops) from the perfetto trace under `trace_dir`."""
    files = glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True)
    if not files:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(sorted(files)[-1]) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    comm = total = 0.0
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or name not in names:
            continue
        total += event.get("dur", 0.0)
        if name.startswith(COLLECTIVES):
            comm += event.get("dur", 0.0)
    return comm, total


# ----------------------------------------------------------------------------- the step on one mesh (in the child)


def build(size: Size):
    """A small random-weight model, its optimizer and a text-only GRPO micro-batch (host arrays)."""
    import numpy as np
    from flax import nnx

    from vrsjax.models import qwen2_5_vl
    from vrsjax.models.qwen2_5_vl.inputs import prepare_inputs
    from vrsjax.testing import tiny_config_dict

    d = tiny_config_dict(hidden_size=size.hidden, text_layers=size.layers, vocab_size=size.vocab, vision_depth=1)
    model = qwen2_5_vl.from_config(qwen2_5_vl.Qwen2_5_VLConfig.from_hf_dict(d), seed=0)
    rng = np.random.default_rng(0)
    length = size.prompt + size.response
    ids = rng.integers(0, min(size.vocab, 290), (size.rows, length))
    inputs = prepare_inputs(model.config, input_ids=ids, attention_mask=np.ones_like(ids))
    tokens = ids[:, size.prompt :].astype(np.int32)
    lengths = rng.integers(size.response // 2, size.response + 1, size.rows)
    mask = (np.arange(size.response)[None] < lengths[:, None]).astype(np.float32)
    old = -rng.gamma(1.0, 1.0, tokens.shape).astype(np.float32)
    batch = {
        "tokens": tokens,
        "mask": mask,
        "old": old,
        "ref": old + rng.normal(0, 0.1, old.shape).astype(np.float32),
        "adv": rng.normal(size=size.rows).astype(np.float32),
    }
    return model, nnx, inputs, batch


def place_batch(inputs, batch: dict, mesh, rows: int):
    """The micro-batch as global arrays, rows split over the batch axes (each process feeds its own rows)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from vrsjax.parallel.data import batch_sharding, process_rows

    local = process_rows(rows, mesh)

    def put(x, row_axis: int = 0):
        x = x[:, local] if row_axis == 1 else x[local]
        if row_axis == 0:
            sharding = batch_sharding(mesh, rows, x.ndim)
        else:  # position_ids [3, B, L]
            spec = batch_sharding(mesh, rows, 2).spec
            sharding = NamedSharding(mesh, PartitionSpec(None, *spec))
        shape = (*x.shape[:row_axis], rows, *x.shape[row_axis + 1 :])
        return jax.make_array_from_process_local_data(sharding, x, shape)

    placed = dataclasses.replace(
        inputs,
        input_ids=put(inputs.input_ids),
        attention_mask=put(inputs.attention_mask),
        position_ids=put(inputs.position_ids, 1),
        vision_src=put(inputs.vision_src),
    )
    return placed, {k: put(v) for k, v in batch.items()}


def measure_mesh(label: str, axes: tuple[int, int, int], size: Size, model, nnx, inputs, batch, trace_root: str):
    """Time the micro step on one mesh and read its communication; -> a result record (process 0's view)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from vrsjax.config import load_config
    from vrsjax.parallel.data import put_global
    from vrsjax.parallel.mesh import make_mesh
    from vrsjax.parallel.rules import shard_model
    from vrsjax.rl import grpo
    from vrsjax.rl.update import make_optimizer, micro_grads, optimizer_step

    data, fsdp, tensor = axes
    devices = jax.devices()[: data * fsdp * tensor]
    mesh = make_mesh(data, fsdp, tensor, devices=devices)
    shard_model(model, mesh)
    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)  # apply_grads donates its params: keep the model's own for the next mesh
    actor = load_config("configs/demo.yaml", []).worker.actor
    optimizer = make_optimizer(actor.optim, actor.max_grad_norm, 10)
    # optax creates its step counters on the default device: place them replicated on the mesh
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_state = jax.tree.map(
        lambda x: x if isinstance(x.sharding, NamedSharding) else put_global(np.asarray(x), replicated),
        optimizer.init(params),
    )
    # the jitted step behind vrsjax.rl.update.apply_grads: it keeps parameters and optimizer state on their input
    # shardings, so it compiles once; called directly here so that its HLO can be read
    apply_grads, params, opt_state = optimizer_step(params, opt_state, optimizer=optimizer)
    placed, b = place_batch(inputs, batch, mesh, size.rows)
    loss_config = grpo.get_loss_config("veason")
    counts = (jnp.sum(b["mask"]), jnp.float32(size.rows))
    static = dict(prompt_len=size.prompt, temperature=1.0, loss_config=loss_config)
    rest = (placed, b["tokens"], b["mask"], b["old"], b["ref"], b["adv"], *counts)
    state = {"params": params, "opt": opt_state}

    def grads_call():
        return jax.block_until_ready(micro_grads(graphdef, state["params"], frozen, *rest, **static))

    def apply_call(grads):
        # apply_grads donates params and optimizer state: keep the new ones for the next call
        state["params"], state["opt"], norm, _ = apply_grads(state["params"], state["opt"], grads)
        jax.block_until_ready(norm)

    for _ in range(2):  # compile both (twice: a changed input sharding would compile again)
        grads = grads_call()[0]
        apply_call(grads)
    grad_times, apply_times = [], []
    for _ in range(size.repeats):
        t0 = time.perf_counter()
        grads = grads_call()[0]
        t1 = time.perf_counter()
        apply_call(grads)
        grad_times.append(t1 - t0)
        apply_times.append(time.perf_counter() - t1)
    hlo_g = micro_grads.lower(graphdef, state["params"], frozen, *rest, **static).compile().as_text()
    hlo_a = apply_grads.lower(state["params"], state["opt"], grads).compile().as_text()
    shares = {}
    for part, call, hlo in (("grads", grads_call, hlo_g), ("apply", lambda: apply_call(grads), hlo_a)):
        trace_dir = os.path.join(trace_root, f"{label}_{part}".replace(" ", "_").replace("=", ""))
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        for _ in range(2):
            call()
        jax.profiler.stop_trace()
        shares[part] = trace_share(trace_dir, hlo_names(hlo))
    comm = sum(c for c, _ in shares.values())
    total = sum(t for _, t in shares.values())
    return {
        "label": label,
        "mesh": dict(mesh.shape),
        "devices": len(devices),
        "grads_s": statistics.median(grad_times),
        "grads_spread": [min(grad_times), max(grad_times)],
        "apply_s": statistics.median(apply_times),
        "apply_spread": [min(apply_times), max(apply_times)],
        "collectives": {"grads": hlo_collectives(hlo_g), "apply": hlo_collectives(hlo_a)},
        "comm_share": comm / total if total else 0.0,
        "comm_share_grads": shares["grads"][0] / shares["grads"][1] if shares["grads"][1] else 0.0,
    }


GRPO_DEVICES = (1, 2, 4, 8)
PASS_MESHES = (("data=8", 8, 1), ("fsdp=8", 1, 8))  # the columns; tests/rl also check data=2 x fsdp=4


def grpo_worker(out_json: str, quick: bool, parts: str = "scaling,passes") -> None:
    """Child process (8 simulated devices): GRPO-step scaling and/or the per-pass FLOPs ratios; writes JSON."""
    import grpo_flops as gf
    import jax

    from vrsjax.parallel.data import group_copies
    from vrsjax.parallel.mesh import make_mesh
    from vrsjax.processing import Processor
    from vrsjax.testing import write_tiny_checkpoint

    jax.config.update("jax_default_matmul_precision", "float32")
    with tempfile.TemporaryDirectory() as tmp:
        layers = dict(text_layers=1, vision_depth=1) if quick else {}
        path = write_tiny_checkpoint(Path(tmp) / "tiny", seed=0, **layers)
        proc = Processor.from_pretrained(path)
        records = []
        for kind in ("strong", "weak") if "scaling" in parts else ():
            for d in GRPO_DEVICES:
                prompts = 8 if kind == "strong" else d
                data = gf.samples(prompts)
                mesh = make_mesh(data=1, fsdp=d, devices=jax.devices()[:d])
                t = gf.make_trainer(path, proc, data, mesh, prompts, 1, Path(tmp) / f"{kind}{d}")
                flops = gf.step_flops(t, data)
                seconds = gf.step_seconds(t, 1 if quick else 2)
                records.append({"kind": kind, "devices": d, "prompts": prompts, "flops": flops, "seconds": seconds})
                print(f"GRPO step, {kind}, {d} devices: {flops:.3e} FLOPs per device, {min(seconds):.2f} s", flush=True)
        passes = []
        for groups in (1, 2, 8) if "passes" in parts else ():
            data = gf.samples(groups)
            one = gf.make_trainer(path, proc, data, None, groups, groups * 8, Path(tmp) / "one")
            single = gf.pass_flops(one, data, groups * 8) | {"rollout": gf.rollout_flops(one, data)}
            copies = group_copies(groups, gf.N, 8)
            for label, data_axis, fsdp in PASS_MESHES:
                mesh = make_mesh(data=data_axis, fsdp=fsdp)
                t = gf.make_trainer(path, proc, data, mesh, groups, groups, Path(tmp) / "mesh")
                per_device = gf.pass_flops(t, data, groups * 8) | {"rollout": gf.rollout_flops(t, data)}
                for name in per_device:
                    passes.append(
                        {
                            "pass": name,
                            "groups": groups,
                            "mesh": label,
                            "ratio": per_device[name] / (single[name] / 8),
                            "copies": copies,
                        }
                    )
                print(f"{groups} groups, {label}: " + ", ".join(f"{p['pass']} {p['ratio']:.2f}" for p in passes[-3:]))
    Path(out_json).write_text(json.dumps({"quick": quick, "records": records, "passes": passes}))


def grpo_body(result: dict) -> str:
    """The GRPO-step part of the section: strong and weak scaling, then the per-pass ratios."""
    base = {r["kind"]: r for r in result["records"] if r["devices"] == 1}
    scaling = ["| scaling | devices | prompts x n | FLOPs per device | ideal | efficiency | step (s) |"]
    scaling += ["| --- | --- | --- | --- | --- | --- | --- |"]
    rows = []
    for r in result["records"]:
        one = base[r["kind"]]
        ideal = one["flops"] / r["devices"] if r["kind"] == "strong" else one["flops"]
        rows.append(
            f"| {r['kind']} | {r['devices']} | {r['prompts']} x 8 | {r['flops']:.3e} | {ideal:.3e} | "
            f"{ideal / r['flops']:.2f} | {statistics.median(r['seconds']):.2f} |"
        )
    cells: dict = {}
    for p in result["passes"]:
        cells.setdefault((p["pass"], p["groups"]), {})[p["mesh"]] = p
    table = []
    for (name, groups), by_mesh in cells.items():
        ratios = " | ".join(f"{by_mesh[m]['ratio']:.2f}" for m, *_ in PASS_MESHES)
        table.append(f"| {name} | {groups} | {ratios} | {by_mesh[PASS_MESHES[0][0]]['copies']} |")
    model = "1 text layer, 1 vision block" if result["quick"] else "2 text layers, 2 vision blocks"
    return "\n".join(
        [
            "### Whole GRPO step (Veason-R1 micro-batches, simulated devices)",
            "",
            f"`GRPOTrainer.step()` on the tiny test model ({model}, 2 frames of 56 x 56 per prompt, "
            f"n = 8, {8} response tokens, KL loss), `micro_batch_size_per_device_for_update` and "
            "`_for_experience` = 1 as in configs/veason_r1_3b.yaml, mesh fsdp = devices. Per-device FLOPs: the "
            "compiled programs of one step (rollout prefill + one decode step, old and reference log-prob passes, "
            "update micro-batches, optimizer), each `compile().cost_analysis()` on the trainer's own arguments. "
            "Strong scaling keeps 8 prompts; weak scaling gives each device one prompt. Efficiency = ideal / "
            "per-device FLOPs, ideal = 1-device FLOPs / devices (strong) or 1-device FLOPs (weak). Below 8 devices "
            "a micro-batch of 1 response per device is not a whole group, so the passes run prompt + response per "
            "row; on 8 it is one group, run by the shared-prompt passes with the prompt repeated on every device "
            "(k = 8), which costs each device the same prompt + one response: no work is replicated either way, "
            "and the shared prompt saves nothing at these micro-batch sizes (see the rule in docs/scaling.md). "
            "Step time: median wall seconds of real steps after a warm-up, simulated devices sharing the CPU "
            "(a sanity check, not a speed claim; this machine was loaded by other jobs).",
            "",
            *(scaling + rows if rows else []),
            "",
            "Per pass on 8 devices: per-device FLOPs / (1-device FLOPs / 8) for the first micro-batch of G groups "
            "(rollout: G prompts), 1.0 = no repeated work. A micro-batch with fewer groups than shards repeats each "
            "prompt on k = 8 / gcd(G, 8) rows (last column), each taking n / k responses: the ratio above 1 is that "
            "repeated prompt (k - 1 extra prompt passes per group); tests/rl/test_rl_sharded_grpo.py bounds it by "
            "1.15 x (1-device FLOPs of the same layout, prompts repeated) / 8, for these meshes and data=2 x fsdp=4.",
            "",
            "| pass | groups per micro-batch | data=8 | fsdp=8 | prompt copies k |",
            "| --- | --- | --- | --- | --- |",
            *table,
        ]
    )


def worker(out_json: str, quick: bool, multi_process: bool) -> None:
    """Child process: JAX starts here with the simulated devices the parent set; writes the records to out_json."""
    import jax

    from vrsjax.parallel import distributed

    distributed.initialize()  # the 2-process run joins through JAX_COORDINATOR_ADDRESS etc.; else a no-op
    jax.config.update("jax_default_matmul_precision", "float32")
    size = QUICK if quick else Size()
    model, nnx, inputs, batch = build(size)
    meshes = PROCESS_MESHES if multi_process else MESHES
    records = []
    with tempfile.TemporaryDirectory() as traces:
        for label, *axes in meshes:
            records.append(measure_mesh(label, tuple(axes), size, model, nnx, inputs, batch, traces))
            distributed.main_print(f"{label}: {records[-1]['grads_s']:.3f} s + {records[-1]['apply_s']:.3f} s")
    if distributed.is_main_process():
        Path(out_json).write_text(json.dumps({"size": dataclasses.asdict(size), "records": records}))
    if multi_process:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("scaling done")  # nobody leaves while the others need the coordinator


# ----------------------------------------------------------------------------- the parent: launch and report


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, devices_each: int, quick: bool, tmp: Path, mode: str = "--worker", extra=()) -> dict:
    """Run the worker (`mode`: --worker, or --grpo-worker) in `processes` child processes with `devices_each`
    simulated devices; -> process 0's JSON."""
    out = tmp / f"scaling_{processes}{mode}.json"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "OMPI_", "TPU_"))}
    base |= {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_each}"}
    root = str(Path(__file__).resolve().parents[1])
    here = str(Path(__file__).resolve().parent)  # grpo_flops
    base["PYTHONPATH"] = os.pathsep.join(p for p in (root, here, base.get("PYTHONPATH", "")) if p)
    port = _free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), mode, str(out)] + ["--quick"] * quick + list(extra)
    procs = []
    try:
        for i in range(processes):
            env = dict(base)
            if processes > 1:
                env |= {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(processes)}
                env |= {"JAX_PROCESS_ID": str(i)}
            procs.append(subprocess.Popen(cmd + ["--multi-process"] * (processes > 1), env=env, cwd=root))
        deadline = time.monotonic() + DEADLINE_S * (4 if mode == "--grpo-worker" else 1)  # ~40 programs to compile
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise RuntimeError(f"scaling: worker process(es) {failed} of {processes} failed (see their output above)")
    return json.loads(out.read_text())


def _collective_cell(collectives: dict) -> str:
    parts = []
    for kind in COLLECTIVES:
        count = sum(c.get(kind, {}).get("count", 0) for c in collectives.values())
        moved = sum(c.get(kind, {}).get("bytes", 0) for c in collectives.values())
        if count:
            parts.append(f"{kind} {count} ({moved / 2**20:.1f} MiB)")
    return ", ".join(parts) or "none"


def body(single: dict, multi: dict | None, reason: str | None) -> str:
    from report import machine, skipped, versions

    s = single["size"]
    base = single["records"][0]["grads_s"] + single["records"][0]["apply_s"]
    rows = []
    for r in single["records"] + (multi["records"] if multi else []):
        step = r["grads_s"] + r["apply_s"]
        rows.append(
            f"| {r['label']} | {r['devices']} | {r['grads_s']:.3f} [{r['grads_spread'][0]:.3f}-"
            f"{r['grads_spread'][1]:.3f}] | {r['apply_s']:.4f} | {step:.3f} | x{base / step:.2f} | "
            f"{100 * r['comm_share']:.0f}% | {_collective_cell(r['collectives'])} |"
        )
    lines = [
        f"`python benchmarks/scaling.py` — {machine()}; {versions(('jax', 'jaxlib', 'flax'))}.",
        "",
        "**A sharding sanity check on simulated devices, not a speed claim**: the 8 devices are threads of one CPU "
        "process (`--xla_force_host_platform_device_count=8`) sharing this machine's cores, so more devices do not "
        "add compute, and a collective is a memory copy that also waits for the slowest device thread (so the "
        "communication share is mostly waiting). What to read here: every mesh runs the step end to end, in one "
        "process and across two, and compiles the collectives its sharding implies: none on 1 device; under pure "
        "`data` one combined all-reduce of the gradients (its bytes are the parameters' size); under `fsdp` the "
        "parameter all-gathers of the forward and backward passes plus gradient reductions; with `tensor` more "
        "all-reduces of activations. The same program across two processes moves the same bytes.",
        "",
        f"One GRPO update micro step (`vrsjax.rl.update.micro_grads`: forward, backward, Veason-R1 loss; then "
        f"`apply_grads`: clip + AdamW) of a random-weight Qwen2.5-VL text stack (hidden {s['hidden']}, "
        f"{s['layers']} layers, 4/2 heads, vocab {s['vocab']}), {s['rows']} responses x ({s['prompt']} prompt + "
        f"{s['response']} response tokens), float32; parameters sharded by the logical-axis rules, batch rows over "
        f"data x fsdp. Times: median [min-max] of {s['repeats']} steps after compilation. Communication share: "
        "time in collective ops over time in all HLO ops, summed over devices, from a `jax.profiler` trace of two "
        "steps. Collectives: per step as compiled (count, and bytes of their results per device).",
        "",
        "| mesh | devices | gradients (s) | optimizer (s) | step (s) | vs 1 device | communication | collectives |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]
    if reason:
        lines += ["", skipped(reason)]
    elif multi:
        lines += [
            "",
            "The 2-process rows: two processes with 4 simulated devices each, joined by `jax.distributed` through a "
            "local coordinator (the launch of tests/parallel/test_parallel_multiprocess.py), each feeding its own "
            "rows; process 0's devices are traced.",
        ]
    return "\n".join(lines)


def measure(quick: bool = False) -> str:
    """Both launches; -> the section body (the 2-process part is recorded as skipped if it fails)."""
    with tempfile.TemporaryDirectory() as tmp:
        single = launch(1, 8, quick, Path(tmp))
        multi, reason = None, None
        try:
            multi = launch(2, 4, quick, Path(tmp))
        except (RuntimeError, subprocess.TimeoutExpired, FileNotFoundError) as err:
            reason = f"2-process run did not complete: {err}"
        grpo = grpo_body(launch(1, 8, quick, Path(tmp), "--grpo-worker"))
    return body(single, multi, reason) + "\n\n" + grpo


def run(quick: bool = False) -> str:
    """The suite's entry point; writes the section and returns its body."""
    from report import write_section

    text = measure(quick)
    write_section(TITLE, text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--multi-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--grpo-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--grpo-parts", default="scaling,passes", help="with --grpo-only: scaling, passes or both")
    parser.add_argument("--grpo-only", action="store_true", help="only the whole-GRPO-step part (printed)")
    args = parser.parse_args()
    if args.grpo_worker:
        grpo_worker(args.grpo_worker, args.quick, args.grpo_parts)
        return
    if args.grpo_only:
        with tempfile.TemporaryDirectory() as tmp:
            parts = ["--grpo-parts", args.grpo_parts]
            print(grpo_body(launch(1, 8, args.quick, Path(tmp), "--grpo-worker", parts)))
        return
    if args.worker:
        worker(args.worker, args.quick, args.multi_process)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    text = measure(args.quick)
    print(text)
    if not args.no_write:
        from report import write_section

        write_section(TITLE, text)


if __name__ == "__main__":
    main()
