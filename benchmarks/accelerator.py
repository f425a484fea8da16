"""On a GPU or TPU: train-step MFU of a 3B-shaped model in bfloat16, decode tokens/s against the HBM roofline, and
SAM2 object-frames/s; on a CPU-only machine each is skipped and the section says so.

- Train step: `vrsjax.rl.update.micro_grads` (forward, backward, GRPO loss on the response tokens) + `apply_grads`
  (AdamW) of the Qwen2.5-VL-3B text stack (hidden 2048, 36 layers, 16/2 heads, intermediate 11008, vocab 151936;
  the vision tower trimmed to one block, as text-only inputs do not run it), bfloat16 parameters and compute,
  attention backend `auto` (cuDNN flash attention on NVIDIA, splash on TPU), parameters sharded fsdp over all local
  devices. MFU = model FLOPs per step / (step time x peak bf16 FLOP/s of the devices); model FLOPs = 6 x (matmul
  parameters, lm_head included) x tokens + the causal attention's 6 x layers x heads x head_dim x length per token,
  the logits counted on the response positions only (as `micro_grads` computes them). Goal: >= 35% on H100.
- Decode: `vrsjax.rollout.generate` of the same model, 2 prompts x n=8, greedy sampling off (temperature 1),
  stop tokens ignored; decode time = the whole call minus a 1-token call (the prefill). The roofline: every decode
  step reads all parameters plus the KV cache once from HBM, so tokens/s <= sequences x bandwidth / bytes per step.
- SAM2: hiera-l (Veason-R1's model), random weights, bfloat16 autocast on CUDA, 8 frames of 560x560 prepared once,
  then 8 answers of 2 objects propagated from a middle keyframe; object-frames/s = objects x frames / time.

    python benchmarks/accelerator.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from report import accelerator, machine, repeats, skipped, versions, write_section

TITLE = "Accelerator (MFU, decode roofline, SAM2)"
# HBM bandwidth (GB/s) per device, from the vendors' data sheets, matched against jax's device_kind, most specific
# first; the peak FLOP/s come from vrsjax.rl.flops (the trainer's MFU uses the same table).
HBM_GBPS = (
    ("H100 PCIe", 2000.0),
    ("H100", 3350.0),
    ("H200", 4800.0),
    ("A100", 2039.0),
    ("L4", 300.0),
    ("TPU v6", 1640.0),  # v6e ("TPU v6 lite")
    ("TPU v5p", 2765.0),
    ("TPU v5", 819.0),  # v5e ("TPU v5 lite")
    ("TPU v4", 1228.0),
)


def device_peaks(kind: str) -> tuple[float, float] | None:
    """device_kind -> (peak bf16 FLOP/s, HBM bytes/s) per device, or None for an unknown device."""
    from vrsjax.rl.flops import peak_flops

    flops = peak_flops(kind, "bfloat16")
    gbps = next((g for name, g in HBM_GBPS if name.lower() in kind.lower()), None)
    return None if flops is None or gbps is None else (flops, gbps * 1e9)


def model_3b(attention: str = "auto"):
    from vrsjax.models import qwen2_5_vl
    from vrsjax.parallel.plan import preset_config

    d = preset_config("3b")
    d["vision_config"] |= {"depth": 1, "fullatt_block_indexes": [0]}
    config = qwen2_5_vl.Qwen2_5_VLConfig.from_hf_dict(d, dtype="bfloat16", param_dtype="bfloat16", attention=attention)
    return qwen2_5_vl.from_config(config, seed=0)


def train_flops(config, rows: int, length: int, response: int) -> float:
    """Model FLOPs of one forward + backward over rows x length tokens (logits on the response positions)."""
    t = config.text
    hd = t.hidden_size // t.num_attention_heads
    per_layer = (
        2 * t.hidden_size**2 + 2 * t.hidden_size * t.num_key_value_heads * hd + 3 * t.hidden_size * t.intermediate_size
    )
    tokens = rows * length
    dense = 6 * per_layer * t.num_hidden_layers * tokens + 6 * t.vocab_size * t.hidden_size * rows * response
    attention = 6 * t.num_hidden_layers * t.num_attention_heads * hd * length * tokens  # causal: half of 12
    return float(dense + attention)


def train_step(quick: bool, peak: float) -> list[str]:
    """Time the 3B train step; -> table rows."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from vrsjax.config import load_config
    from vrsjax.models.qwen2_5_vl.inputs import prepare_inputs
    from vrsjax.parallel.mesh import make_mesh
    from vrsjax.parallel.rules import shard_model
    from vrsjax.rl import grpo
    from vrsjax.rl.update import apply_grads, make_optimizer, micro_grads

    rows, length, response = (1, 1024, 256) if quick else (2, 4096, 1024)
    mesh = make_mesh(fsdp=-1)
    model = shard_model(model_3b(), mesh)
    graphdef, params, frozen = nnx.split(model, nnx.Param, ...)
    actor = load_config("configs/demo.yaml", []).worker.actor
    optimizer = make_optimizer(actor.optim, actor.max_grad_norm, 10)
    state = {"params": params, "opt": optimizer.init(params)}
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 150000, (rows, length))
    inputs = jax.device_put(prepare_inputs(model.config, input_ids=ids, attention_mask=np.ones_like(ids)))
    tokens = jnp.asarray(ids[:, length - response :], jnp.int32)
    mask = jnp.ones(tokens.shape, jnp.float32)
    old = jnp.asarray(-rng.gamma(1.0, 1.0, tokens.shape), jnp.float32)
    adv = jnp.asarray(rng.normal(size=rows), jnp.float32)
    static = dict(prompt_len=length - response, temperature=1.0, loss_config=grpo.get_loss_config("veason"))

    def step():
        grads, loss, _ = micro_grads(
            graphdef, state["params"], frozen, inputs, tokens, mask, old, old, adv, mask.sum(), float(rows), **static
        )
        state["params"], state["opt"], norm, _ = apply_grads(state["params"], state["opt"], grads, optimizer=optimizer)
        jax.block_until_ready((loss, norm))

    for _ in range(2):  # compile (twice: the optimizer state's placement settles after one step)
        step()
    times = []
    for _ in range(repeats(3 if quick else 10)):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    flops = train_flops(model.config, rows, length, response)
    seconds = statistics.median(times)
    mfu = flops / seconds / (peak * len(mesh.devices.flat))
    return [
        f"| train step, 3B-shaped, bf16, {rows} x {length} tokens ({response} response) | "
        f"{seconds:.3f} s [{min(times):.3f}-{max(times):.3f}] | {flops / seconds / 1e12:.1f} TFLOP/s | "
        f"**MFU {100 * mfu:.1f}%** (goal 35% on H100) |"
    ]


def decode(quick: bool, bandwidth: float) -> list[str]:
    """Time decoding with the 3B model; -> table rows with the fraction of the HBM roofline."""
    import jax
    from flax import nnx

    from vrsjax import rollout

    prompts, n, prompt_len, new = (2, 8, 256, 32) if quick else (2, 8, 1024, 256)
    model = model_3b()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 150000, (prompts, prompt_len))
    batch = {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    def call(tokens: int) -> float:
        start = time.perf_counter()
        out = rollout.generate(model, batch, n=n, max_new_tokens=tokens, temperature=1.0, seed=0, stop_token_ids=())
        jax.block_until_ready(out.tokens)
        return time.perf_counter() - start

    call(new), call(1)  # compile
    decode_times = [call(new) - call(1) for _ in range(repeats(3))]
    seconds = statistics.median(decode_times)
    seqs = prompts * n
    rate = seqs * (new - 1) / seconds
    t = model.config.text
    param_bytes = sum(v.get_value().nbytes for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    hd = t.hidden_size // t.num_attention_heads
    kv_per_token = 2 * t.num_hidden_layers * t.num_key_value_heads * hd * 2  # bf16 K and V
    # the prompt's KV is shared by the group (read once per prompt), each response's own KV per sequence
    kv_bytes = kv_per_token * (prompts * prompt_len + seqs * new / 2)
    roofline = seqs * bandwidth / (param_bytes + kv_bytes)
    return [
        f"| decode, 3B-shaped, bf16, {prompts} prompts x n={n}, {prompt_len}-token prompts, {new} new tokens | "
        f"{rate:.0f} tokens/s [{seqs * (new - 1) / max(decode_times):.0f}-{seqs * (new - 1) / min(decode_times):.0f}] "
        f"| roofline {roofline:.0f} tokens/s ({(param_bytes + kv_bytes) / 2**30:.2f} GiB per step) | "
        f"**{100 * rate / roofline:.0f}% of the HBM roofline** |"
    ]


def sam2_rate(quick: bool) -> list[str]:
    """SAM2 hiera-l on CUDA: object-frames/s of one group's propagation; -> table rows."""
    from vrsjax.services.sam2 import SAM2Service

    frames_n, answers, size = (4, 2, 560) if quick else (8, 8, 560)
    service = SAM2Service(config="hiera_l", device="cuda")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (frames_n, size, size, 3), np.uint8)
    boxes = np.array([[100, 120, 260, 300], [300, 200, 480, 420]], np.float32)
    start = time.perf_counter()
    video = service.prepare(frames)
    prepared = time.perf_counter() - start
    times = []
    for _ in range(answers):
        t0 = time.perf_counter()
        service.propagate(video, frames_n // 2, boxes=boxes)
        times.append(time.perf_counter() - t0)
    object_frames = len(boxes) * frames_n
    total = prepared + sum(times)
    return [
        f"| SAM2 hiera-l, {answers} answers x {len(boxes)} objects x {frames_n} frames at {size}x{size} | "
        f"prepare {prepared:.2f} s, propagate {statistics.median(times):.3f} s per answer "
        f"[{min(times):.3f}-{max(times):.3f}] | {object_frames / statistics.median(times):.1f} object-frames/s "
        f"(tracking only) | **{object_frames * answers / total:.1f} object-frames/s** (group, encoder included) |"
    ]


def measure(quick: bool = False) -> str:
    import jax

    platform = jax.devices()[0].platform
    kind = jax.devices()[0].device_kind
    head = [
        f"`python benchmarks/accelerator.py` — {machine()}; accelerator: {accelerator()}; {versions()}.",
        "",
    ]
    if platform not in ("gpu", "tpu"):
        reason = (
            f"no GPU or TPU (JAX platform `{platform}`): train-step MFU, decode tokens/s vs the HBM roofline and "
            "SAM2 object-frames/s run only on an accelerator (`vrsjax bench --only accelerator` there)"
        )
        return "\n".join(head + [skipped(reason)])
    rows, notes = [], []
    peaks = device_peaks(kind)
    if peaks is None:
        notes.append(
            skipped(f"MFU and roofline: peak FLOP/s and bandwidth of `{kind}` unknown (add it to PEAK_FLOPS, HBM_GBPS)")
        )
    else:
        rows += train_step(quick, peaks[0])
        rows += decode(quick, peaks[1])
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        notes.append(skipped("SAM2: torch is not installed"))
    else:
        import torch

        if torch.cuda.is_available():
            rows += sam2_rate(quick)
        else:
            notes.append(skipped("SAM2 object-frames/s: torch sees no CUDA device (SAM2 runs in PyTorch)"))
    lines = head + [
        f"Device: {kind} x {jax.device_count()}; peak bf16 {peaks[0] / 1e12:.0f} TFLOP/s and HBM {peaks[1] / 1e9:.0f} "
        "GB/s per device (data sheets)."
        if peaks
        else f"Device: {kind} x {jax.device_count()}.",
        "",
        "| workload | time | throughput | headline |",
        "| --- | --- | --- | --- |",
        *rows,
    ]
    return "\n".join(lines + ([""] + notes if notes else []))


def run(quick: bool = False) -> str:
    """The suite's entry point; writes the section and returns its body."""
    body = measure(quick)
    write_section(TITLE, body)
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(run(args.quick))


if __name__ == "__main__":
    main()
