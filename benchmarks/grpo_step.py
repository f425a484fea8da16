"""One GRPO step on CPU, split by phase: per-sequence vs shared-prompt training passes, in one run.

The `small` model (text hidden 512, 8 layers, 8/2 heads, intermediate 1408, vocab 32000; vision depth 4, hidden
256), 2 prompts x n=8, each prompt 6 frames of 224x224 as timestamped images (Veason-R1 style, 384 vision tokens)
plus the Veason prompt text, 48 response tokens, float32. Both trainers start from the same weights and greedy
rollouts (identical responses), so the only difference is how the log-prob and update passes run. Also reported:
the trainer's model-FLOPs estimate per phase (`vrsjax.rl.flops`), achieved TFLOP/s, and MFU where the device's peak
is known (`PEAK_FLOPS`; CPUs have no entry, pass `--peak-flops` to set one).

    python benchmarks/grpo_step.py [--quick] [--peak-flops 1e12]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from report import machine, write_section  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "rl"))

from vrsjax.config import load_config  # noqa: E402
from vrsjax.models import qwen2_5_vl  # noqa: E402
from vrsjax.processing import Processor  # noqa: E402
from vrsjax.rl.trainer import GRPOSample, GRPOTrainer  # noqa: E402
from vrsjax.testing import tiny_config_dict, write_tiny_tokenizer  # noqa: E402

N, PROMPTS, FRAMES, SIZE, RESPONSE = 8, 2, 6, 224, 48


def small_model():
    d = tiny_config_dict(
        hidden_size=512, text_layers=8, vision_hidden=256, vision_depth=4, vocab_size=32000, tie_word_embeddings=False
    )
    d["text_config"] |= {"num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 1408}
    d["text_config"]["rope_parameters"]["mrope_section"] = [8, 12, 12]  # head_dim 64
    d["vision_config"] |= {"num_heads": 4, "intermediate_size": 1024, "fullatt_block_indexes": [1, 3]}
    return qwen2_5_vl.from_config(qwen2_5_vl.Qwen2_5_VLConfig.from_hf_dict(d), seed=0)


def samples():
    rng = np.random.default_rng(0)
    out = []
    for i in range(PROMPTS):
        frames = rng.integers(0, 255, (FRAMES, SIZE, SIZE, 3), np.uint8)
        masks = rng.random((FRAMES, 64, 64)) > 0.7
        boxes = [[[100.5, 100.5, 300.5, 300.5]] for _ in range(FRAMES)]
        out.append(
            GRPOSample(f"s{i}", "the object that moves first", frames, list(range(0, 3 * FRAMES, 3)), masks, boxes)
        )
    return out


def trainer(proc, shared: bool, tmp: Path, peak: float | None = None) -> GRPOTrainer:
    cfg = load_config(
        "configs/demo.yaml",
        [
            f"worker.rollout.n={N}",
            f"data.rollout_batch_size={PROMPTS}",
            f"worker.actor.global_batch_size={PROMPTS}",
            f"worker.actor.micro_batch_size_per_device_for_update={N}",
            f"worker.actor.micro_batch_size_per_device_for_experience={N}",
            f"data.max_response_length={RESPONSE}",
            "data.max_prompt_length=4096",
            "worker.rollout.temperature=0",
            f"worker.actor.shared_prompt={shared}",
        ],
    )
    return GRPOTrainer(cfg, small_model(), proc, samples(), out_dir=tmp / f"shared_{shared}", peak_flops=peak)


def run(quick: bool = False, peak_flops: float | None = None) -> str:
    """Time one step each way (the second, after compilation); write the BENCHMARKS.md section; return its body.
    quick: 16 response tokens instead of 48 (a smoke run; the section says so)."""
    global RESPONSE
    if quick:
        RESPONSE = 16
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proc = Processor.from_pretrained(write_tiny_tokenizer(tmp / "tok"))
        runs = {}
        for shared in (False, True):
            t = trainer(proc, shared, tmp, peak_flops)
            t.step()  # compile
            t.data_position = 0
            t.rollouts = 0
            runs[shared] = t.step()
            t.close()
    rows, tokens = [], runs[True]["response/length_mean"] * PROMPTS * N
    for phase in ("rollout", "reward", "log_probs", "update"):
        a, b = runs[False][f"time/{phase}"], runs[True][f"time/{phase}"]
        rows.append(f"| {phase} | {a:.2f} | {b:.2f} | x{a / b:.2f} |")
    train = {s: runs[s]["time/log_probs"] + runs[s]["time/update"] for s in runs}
    total = {s: runs[s]["time/step"] for s in runs}
    print("\n".join(rows), f"\ntraining passes x{train[False] / train[True]:.2f}")
    mfu = {s: runs[s].get("perf/mfu") for s in runs}
    mfu_text = (
        f"MFU {mfu[False]:.2%} (per-sequence) / {mfu[True]:.2%} (shared), "
        f"update MFU {runs[True]['perf/mfu_update']:.2%}"
        if mfu[True] is not None
        else "MFU: no peak FLOP/s is known for this device (pass --peak-flops)"
    )
    body = f"""
`python benchmarks/grpo_step.py{" --quick" if quick else ""}` — {machine()}; jax {jax.__version__}. The `small` model,
{PROMPTS} prompts x n={N}, each {FRAMES} frames of {SIZE}x{SIZE} as timestamped images ({FRAMES * 64} vision tokens)
+ the Veason-R1 prompt text, {RESPONSE} response tokens (greedy, so both runs train on identical responses),
float32, one micro-batch per group; compilation excluded (second step timed); the reward runs in a background
thread during the log-prob passes (`reward` = its own time).

| phase (s) | per-sequence passes | shared-prompt passes | ratio |
| --- | --- | --- | --- |
{chr(10).join(rows)}
| whole step | {total[False]:.2f} | {total[True]:.2f} | x{total[False] / total[True]:.2f} |

Training passes (old/reference log-probs + update): x{train[False] / train[True]:.2f} faster with the prompt run
once per group. Step throughput: {tokens / total[True]:.1f} response tokens/s (shared). Model FLOPs of the step
(`vrsjax.rl.flops`: 2N per token forward, 6N for the update, plus causal attention and the vision tower):
{runs[False]["perf/tflops_step"]:.2f} TFLOP per-sequence, {runs[True]["perf/tflops_step"]:.2f} TFLOP shared;
achieved {runs[False]["perf/tflops_per_s"]:.3f} / {runs[True]["perf/tflops_per_s"]:.3f} TFLOP/s. {mfu_text}.
"""
    write_section("GRPO step (CPU)", body)
    return body


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 response tokens (smoke run)")
    parser.add_argument("--peak-flops", type=float, default=None, help="one device's peak FLOP/s for the MFU")
    args = parser.parse_args()
    run(args.quick, args.peak_flops)


if __name__ == "__main__":
    main()
