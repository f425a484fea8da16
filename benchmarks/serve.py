"""`vrsjax serve` throughput: requests/s and completion tokens/s under 16 concurrent clients vs the same requests sent
one after another, one run, one server.

The `small` config of benchmarks/model_forward.py (text hidden 512, 8 layers, vocab 32000; vision depth 4, hidden
256), random weights written by vrsjax (no torch), the tiny test tokenizer; `vrsjax serve --max-batch 16` on CPU.
Each request: one 224x224 image (64 vision tokens) + a short text, temperature 1, no seed, max_tokens 32 (a random
model almost never emits the stop token, so each reply is 32 tokens). Both modes are warmed up first, so generate's
compilations for the batch sizes used are excluded.

    python benchmarks/serve.py [--quick]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from report import machine, versions, write_section  # noqa: E402

TITLE = "Serve (OpenAI-compatible server, small config, CPU)"
CLIENTS, NEW_TOKENS, IMAGE = 16, 32, 224


def write_small_checkpoint(path: Path) -> Path:
    """The `small` config with the tiny tokenizer's special-token ids, random weights, saved in HF format."""
    from vrsjax.models.qwen2_5_vl import Qwen2_5_VLConfig, from_config
    from vrsjax.testing import tiny_config_dict, write_tiny_tokenizer

    hf = tiny_config_dict(tie_word_embeddings=False)
    hf["text_config"].update(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
    )
    hf["vision_config"].update(
        depth=4, hidden_size=256, intermediate_size=1024, num_heads=4, out_hidden_size=512, fullatt_block_indexes=[1, 3]
    )
    model = from_config(Qwen2_5_VLConfig.from_hf_dict(hf), seed=0)
    out = model.save_pretrained(path)
    write_tiny_tokenizer(out)
    return out


def start(checkpoint: Path, log: Path, deadline_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "vrsjax.cli", "serve", "--checkpoint", str(checkpoint), "--port", "0"]
    cmd += ["--max-batch", str(CLIENTS), "--model-name", "small"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        ready = [line for line in log.read_text().splitlines() if line.startswith("VRSJAX_SERVE_READY")]
        if ready:
            return proc, ready[0].split()[1]
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"vrsjax serve did not start:\n{log.read_text()}")


def request(i: int, new_tokens: int) -> dict:
    rng = np.random.default_rng(i)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": f"where is object {i}?"}]
    return {"model": "small", "messages": [{"role": "user", "content": content}], "max_tokens": new_tokens}


def run_clients(url: str, bodies: list[dict], clients: int) -> tuple[float, int]:
    """Send bodies from `clients` threads (each takes the next unsent body); -> (wall seconds, completion tokens)."""
    pending, lock, tokens = list(bodies), threading.Lock(), []

    def client() -> None:
        with httpx.Client(timeout=600) as http:
            while True:
                with lock:
                    if not pending:
                        return
                    body = pending.pop()
                response = http.post(f"{url}/v1/chat/completions", json=body)
                response.raise_for_status()
                tokens.append(response.json()["usage"]["completion_tokens"])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start_time = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start_time, sum(tokens)


def measure(total: int, new_tokens: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_small_checkpoint(Path(tmp) / "small")
        proc, url = start(checkpoint, Path(tmp) / "serve.log")
        try:
            bodies = [request(i, new_tokens) for i in range(total)]
            for _ in range(2):  # warm-up: every batch shape the server pads to (1, 2, 4, 8, 16)
                for size in (1, 2, 4, 8, CLIENTS):
                    run_clients(url, bodies[:size], size)
            before = httpx.get(f"{url}/health").json()["batches"]
            seq_s, seq_tokens = run_clients(url, bodies, 1)
            mid = httpx.get(f"{url}/health").json()["batches"]
            con_s, con_tokens = run_clients(url, bodies, CLIENTS)
            after = httpx.get(f"{url}/health").json()["batches"]
        finally:
            proc.terminate()
            proc.wait(30)
    rows = [
        ("sequential (1 client)", seq_s, seq_tokens, total / max(mid - before, 1)),
        (f"{CLIENTS} concurrent clients", con_s, con_tokens, total / max(after - mid, 1)),
    ]
    table = "\n".join(
        f"| {name} | {total} | {s:.2f} | {total / s:.2f} | {tok / s:.1f} | {batch:.1f} |"
        for name, s, tok, batch in rows
    )
    speedup = (total / con_s) / (total / seq_s)
    return f"""
`python benchmarks/serve.py` — {machine()}; {versions(("jax", "jaxlib", "flax", "httpx"))}.
`small` config (text hidden 512, 8 layers, vocab 32000; vision depth 4, hidden 256), float32, random weights;
`vrsjax serve --max-batch 16` (5 ms batching window) on CPU, clients on the same machine. {total} requests, each one
224x224 image + a short text, temperature 1, max_tokens {new_tokens}; warmed up first (compilation excluded).
Mean batch = requests / generate calls.

| mode | requests | wall (s) | requests/s | completion tokens/s | mean batch |
| --- | --- | --- | --- | --- | --- |
{table}

Concurrent vs sequential throughput: x{speedup:.2f}.
"""


def run(quick: bool = False) -> str:
    """The suite's entry point (quick: 16 requests of 8 tokens); writes the section and returns its body."""
    body = measure(16, 8) if quick else measure(64, NEW_TOKENS)
    write_section(TITLE, body)
    return body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(run(args.quick))


if __name__ == "__main__":
    main()
