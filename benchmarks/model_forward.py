"""Qwen2.5-VL forward and forward+backward: vrsjax vs transformers on the same CPU threads, one run.

The `small` config (text hidden 512, 8 layers, 8/2 heads, intermediate 1408, vocab 32000; vision depth 4,
hidden 256), batch 4 of one 4-frame 224x224 video + 256 text tokens each, float32. Same weights on both sides.
Writes the ratios to BENCHMARKS.md.

    python benchmarks/model_forward.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402
from report import fmt, machine, repeats, spread_note, write_section  # noqa: E402

from vrsjax.models import qwen2_5_vl  # noqa: E402
from vrsjax.models.qwen2_5_vl.inputs import prepare_inputs  # noqa: E402

IDS = {"image_token_id": 31990, "video_token_id": 31991, "vision_start_token_id": 31992, "vision_end_token_id": 31993}
BATCH, TEXT, GRID = 4, 256, (2, 16, 16)
TITLE = "Model forward (Qwen2.5-VL small, CPU)"  # 4 frames of 224x224 -> grid t=2, 16x16 patches


def small_hf_model(path: str):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=32000,
            hidden_size=512,
            intermediate_size=1408,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
        ),
        vision_config=dict(
            depth=4,
            hidden_size=256,
            intermediate_size=1024,
            num_heads=4,
            out_hidden_size=512,
            fullatt_block_indexes=[1, 3],
            tokens_per_second=2,
            window_size=112,
        ),
        tie_word_embeddings=False,
        **IDS,
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(path)
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(path, attn_implementation="sdpa").eval()


def batch(size: int = BATCH) -> dict:
    rng = np.random.default_rng(0)
    n_vid = GRID[0] * GRID[1] * GRID[2] // 4
    rows = [
        [IDS["vision_start_token_id"]]
        + [IDS["video_token_id"]] * n_vid
        + [IDS["vision_end_token_id"]]
        + list(rng.integers(0, 31000, TEXT))
        for _ in range(size)
    ]
    n_patches = size * GRID[0] * GRID[1] * GRID[2]
    return {
        "input_ids": np.array(rows, np.int64),
        "attention_mask": np.ones((size, len(rows[0])), np.int64),
        "pixel_values_videos": rng.normal(size=(n_patches, 1176)).astype(np.float32),
        "video_grid_thw": np.array([GRID] * size, np.int64),
        "second_per_grid_ts": np.ones(size, np.float32),
    }


def timed(fn, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls after one warm-up (compilation for the jitted side)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def hf_fns(model, b):
    kw = {k: torch.from_numpy(v) for k, v in b.items()}
    kw["mm_token_type_ids"] = torch.from_numpy(np.where(b["input_ids"] == IDS["video_token_id"], 2, 0))

    def forward():
        with torch.no_grad():
            return model(**kw).logits

    def forward_backward():
        model.zero_grad(set_to_none=True)
        loss = model(**kw).logits.float().logsumexp(-1).mean()
        loss.backward()
        return loss

    return forward, forward_backward


def jax_fns(model, b):
    inputs = jax.device_put(prepare_inputs(model.config, **b))
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, inputs):
        return nnx.merge(graphdef, state).forward(inputs)

    @jax.jit
    def grad(state, inputs):
        def loss(s):
            return jax.nn.logsumexp(nnx.merge(graphdef, s).forward(inputs), -1).mean()

        return jax.grad(loss)(state)

    return (lambda: jax.block_until_ready(forward(state, inputs)), lambda: jax.block_until_ready(grad(state, inputs)))


def measure(repeats: int, size: int = BATCH) -> str:
    """Both passes on both sides with the same weights and batch; -> the section body."""
    torch.set_num_threads(os.cpu_count())
    jax.config.update("jax_default_matmul_precision", "float32")
    with tempfile.TemporaryDirectory() as tmp:
        hf = small_hf_model(tmp)
        ours = qwen2_5_vl.from_pretrained(tmp)
    b = batch(size)
    hf_fwd, hf_fb = hf_fns(hf, b)
    jx_fwd, jx_fb = jax_fns(ours, b)
    diff = float(np.abs(np.asarray(jx_fwd()) - hf_fwd().numpy()).max())
    results = {}
    for name, h, j in (("forward", hf_fwd, jx_fwd), ("forward+backward", hf_fb, jx_fb)):
        results[name] = (timed(h, repeats), timed(j, repeats))
        ratio = statistics.median(results[name][0]) / statistics.median(results[name][1])
        print(f"{name}: transformers {fmt(results[name][0])} s, vrsjax {fmt(results[name][1])} s, x{ratio:.2f}")
    train_ratio = statistics.median(results["forward+backward"][0]) / statistics.median(results["forward+backward"][1])
    rows = "\n".join(
        f"| {k} | {fmt(h)} | {fmt(j)} | x{statistics.median(h) / statistics.median(j):.2f} |"
        for k, (h, j) in results.items()
    )
    return f"""
`python benchmarks/model_forward.py` — {machine()}; jax {jax.__version__}, torch {torch.__version__}
({torch.get_num_threads()} threads), transformers sdpa attention vs vrsjax reference attention under `jax.jit`.
`small` config: text hidden 512, 8 layers, 8/2 heads, intermediate 1408, vocab 32000; vision depth 4,
hidden 256. Batch {size} x (one 4-frame 224x224 video = {GRID[0] * GRID[1] * GRID[2] // 4} tokens + {TEXT} text
tokens), float32, {spread_note(repeats)} after one warm-up (compilation excluded); speed-up = median over median.
Max |logit difference| between the two: {diff:.2e}.

| pass | transformers (s) | vrsjax (s) | speed-up |
| --- | --- | --- | --- |
{rows}

Speed-up of forward+backward (the training pass): **x{train_ratio:.2f}**.
"""


def run(quick: bool = False) -> str:
    """The suite's entry point (quick: batch 1, 2 repeats); writes the section and returns its body."""
    body = measure(repeats(2), 1) if quick else measure(repeats(5))
    write_section(TITLE, body)
    return body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    write_section(TITLE, measure(args.repeats))


if __name__ == "__main__":
    main()
