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

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from model_forward import IDS, small_hf_model  # noqa: E402
from report import machine, write_section  # noqa: E402

from vrsjax import rollout  # noqa: E402
from vrsjax.models import qwen2_5_vl  # noqa: E402

PROMPTS, N, NEW, TEXT, GRID = 2, 8, 128, 256, (2, 16, 16)


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


def time_it(fn, repeats=2):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    torch.set_num_threads(os.cpu_count())
    b = batch()
    with tempfile.TemporaryDirectory() as tmp:
        hf = small_hf_model(tmp)
        ours = qwen2_5_vl.from_pretrained(tmp)
    kw = {k: torch.from_numpy(v) for k, v in b.items()}
    kw["mm_token_type_ids"] = torch.from_numpy(np.where(b["input_ids"] == IDS["video_token_id"], 2, 0))

    def hf_run(n=N, new=NEW):
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

    def jax_run(n=N, new=NEW):
        return rollout.generate(ours, b, n=n, max_new_tokens=new, temperature=1.0, top_p=1.0, seed=0, stop_token_ids=())

    tokens = PROMPTS * N * NEW
    t_hf, t_jx = time_it(hf_run, 1), time_it(jax_run)
    prefill = {n: time_it(lambda n=n: jax_run(n, 1)) for n in (1, N)}
    hf_prefill = {n: time_it(lambda n=n: hf_run(n, 1), 1) for n in (1, N)}
    print(f"transformers {tokens / t_hf:.1f} tok/s, vrsjax {tokens / t_jx:.1f} tok/s, x{t_hf / t_jx:.2f}")
    print(
        f"prefill+1 token, n=1 vs n={N}: vrsjax {prefill[1]:.3f}s / {prefill[N]:.3f}s, "
        f"transformers {hf_prefill[1]:.3f}s / {hf_prefill[N]:.3f}s"
    )
    write_section(
        "Rollout (group sampling, CPU)",
        f"""
`python benchmarks/rollout.py` — {machine()}; jax {jax.__version__}, torch {torch.__version__}
({torch.get_num_threads()} threads). The `small` model of the forward benchmark, {PROMPTS} prompts x n={N}, each
{TEXT} text tokens + one 4-frame 224x224 video ({GRID[0] * GRID[1] * GRID[2] // 4} vision tokens), {NEW} new tokens
with stop tokens ignored, temperature 1, top_p 1, float32; transformers `generate(num_return_sequences={N})`
(sdpa) vs `vrsjax.rollout.generate` (compilation excluded; best of runs).

| | transformers | vrsjax | ratio |
| --- | --- | --- | --- |
| tokens/s ({tokens} tokens) | {tokens / t_hf:.1f} | {tokens / t_jx:.1f} | x{t_hf / t_jx:.2f} |
| prefill + 1 token, n=1 (s) | {hf_prefill[1]:.3f} | {prefill[1]:.3f} | |
| prefill + 1 token, n={N} (s) | {hf_prefill[N]:.3f} | {prefill[N]:.3f} | |

vrsjax prefills each prompt once and shares its KV across the group, so its n={N} prefill costs
x{prefill[N] / prefill[1]:.2f} the n=1 one; transformers expands the prompt {N} times before prefill
(x{hf_prefill[N] / hf_prefill[1]:.2f}).
""",
    )


if __name__ == "__main__":
    main()
