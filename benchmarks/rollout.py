"""Rollout tokens/s: vrsjax group sampling vs transformers `generate(num_return_sequences=8)`, one run.

The `small` config of benchmarks/model_forward.py; 2 prompts x n=8, each 256 text tokens + one 4-frame 224x224
video, 128 new tokens (stop tokens ignored), temperature 1, top_p 1, same CPU threads. Also the prefill cost for
n=1 vs n=8 (one new token), to show the shared prompt is not recomputed per group member.

    python benchmarks/rollout.py
"""

from __future__ import annotations

import os
import tempfile
import time
from statistics import median

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from model_forward import IDS, small_hf_model  # noqa: E402
from report import fmt, machine, repeats, spread_note, write_section  # noqa: E402

from vrsjax import rollout  # noqa: E402
from vrsjax.models import qwen2_5_vl  # noqa: E402

PROMPTS, N, NEW, TEXT, GRID = 2, 8, 128, 256, (2, 16, 16)
TITLE = "Rollout (group sampling, CPU)"


def batch() -> dict:
    rng = np.random.default_rng(0)
    n_vid = GRID[0] * GRID[1] * GRID[2] // 4
    rows = [
        list(rng.integers(0, 31000, TEXT // 2))
        + [IDS["vision_start_token_id"]]
        + [IDS["video_token_id"]] * n_vid
        + [IDS["vision_end_token_id"]]
        + list(rng.integers(0, 31000, TEXT // 2))
        for _ in range(PROMPTS)
    ]
    return {
        "input_ids": np.array(rows, np.int64),
        "attention_mask": np.ones((PROMPTS, len(rows[0])), np.int64),
        "pixel_values_videos": rng.normal(size=(PROMPTS * int(np.prod(GRID)), 1176)).astype(np.float32),
        "video_grid_thw": np.array([GRID] * PROMPTS),
        "second_per_grid_ts": np.ones(PROMPTS, np.float32),
    }


def time_it(fn, repeats: int = 2) -> list[float]:
    """Seconds of each of `repeats` calls after one warm-up (compilation for vrsjax)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def measure(new: int = NEW, reps: int = 3) -> str:
    """Sampling and prefill on both sides with the same weights; -> the section body."""
    torch.set_num_threads(os.cpu_count())
    b = batch()
    with tempfile.TemporaryDirectory() as tmp:
        hf = small_hf_model(tmp)
        ours = qwen2_5_vl.from_pretrained(tmp)
    kw = {k: torch.from_numpy(v) for k, v in b.items()}
    kw["mm_token_type_ids"] = torch.from_numpy(np.where(b["input_ids"] == IDS["video_token_id"], 2, 0))

    def hf_run(n=N, new=new):
        with torch.no_grad():
            return hf.generate(
                **kw,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                num_return_sequences=n,
                max_new_tokens=new,
                min_new_tokens=new,
                pad_token_id=0,
                eos_token_id=None,
            )

    def jax_run(n=N, new=new):
        return rollout.generate(ours, b, n=n, max_new_tokens=new, temperature=1.0, top_p=1.0, seed=0, stop_token_ids=())

    tokens = PROMPTS * N * new
    hf_times, jx_times = time_it(hf_run, max(1, reps - 1)), time_it(jax_run, reps)
    prefill = {n: median(time_it(lambda n=n: jax_run(n, 1), reps)) for n in (1, N)}
    hf_prefill = {n: median(time_it(lambda n=n: hf_run(n, 1), reps)) for n in (1, N)}
    t_hf, t_jx = median(hf_times), median(jx_times)
    hf_rate, jx_rate = fmt([tokens / t for t in hf_times], 1), fmt([tokens / t for t in jx_times], 1)
    print(f"transformers {hf_rate} tok/s, vrsjax {jx_rate} tok/s, x{t_hf / t_jx:.2f}")
    print(
        f"prefill+1 token, n=1 vs n={N}: vrsjax {prefill[1]:.3f}s / {prefill[N]:.3f}s, "
        f"transformers {hf_prefill[1]:.3f}s / {hf_prefill[N]:.3f}s"
    )
    return f"""
`python benchmarks/rollout.py` — {machine()}; jax {jax.__version__}, torch {torch.__version__}
({torch.get_num_threads()} threads). The `small` model of the forward benchmark, {PROMPTS} prompts x n={N}, each
{TEXT} text tokens + one 4-frame 224x224 video ({GRID[0] * GRID[1] * GRID[2] // 4} vision tokens), {new} new tokens
with stop tokens ignored, temperature 1, top_p 1, float32; transformers `generate(num_return_sequences={N})`
(sdpa) vs `vrsjax.rollout.generate` (compilation excluded). Tokens/s: {spread_note(len(jx_times))} for vrsjax,
{spread_note(len(hf_times))} for transformers; prefill times are medians; ratio = median over median.

| | transformers | vrsjax | ratio |
| --- | --- | --- | --- |
| tokens/s ({tokens} tokens) | {hf_rate} | {jx_rate} | x{t_hf / t_jx:.2f} |
| prefill + 1 token, n=1 (s) | {hf_prefill[1]:.3f} | {prefill[1]:.3f} | |
| prefill + 1 token, n={N} (s) | {hf_prefill[N]:.3f} | {prefill[N]:.3f} | |

vrsjax prefills each prompt once and shares its KV across the group, so its n={N} prefill costs
x{prefill[N] / prefill[1]:.2f} the n=1 one; transformers expands the prompt {N} times before prefill
(x{hf_prefill[N] / hf_prefill[1]:.2f}).
"""


def run(quick: bool = False) -> str:
    """The suite's entry point (quick: 16 new tokens, 2 repeats); writes the section and returns its body."""
    body = measure(16, repeats(2)) if quick else measure(NEW, repeats(3))
    write_section(TITLE, body)
    return body


def main() -> None:
    write_section(TITLE, measure())


if __name__ == "__main__":
    main()
