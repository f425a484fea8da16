"""GRPO loss functions: vrsjax.rl.grpo against verl's `core_algos` (PyTorch) where verl is installed.

The loss math of one Veason-R1 update batch: 128 responses (16 prompts x n=8) of up to 1024 tokens with random
lengths; group advantages, the low_var_kl (k3) penalty against reference log-probs, the vanilla clipped PPO loss
with token-mean aggregation, and the gradient of that loss with respect to the log-probs. vrsjax's advantages are
numpy on the host (float64 group statistics), its losses jitted JAX. Both sides run on the
same float32 inputs on the same CPU threads; values are compared (max |difference|) and times are medians with
their spread over repeats, after a warm-up (compilation excluded). verl is not a dependency of vrsjax: when
`import verl` fails, only vrsjax is timed and the section says the comparison was skipped and why.

    python benchmarks/grpo_loss.py [--responses 128] [--tokens 1024] [--repeats 20]
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from report import fmt, machine, repeats, skipped, spread_note, write_section  # noqa: E402

from vrsjax.rl import grpo  # noqa: E402

TITLE = "GRPO loss functions (vs verl)"
N = 8  # responses per prompt
CLIP, CLIP_C = 0.2, 3.0


def inputs(responses: int, tokens: int, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 log-probs (current, old, reference) [B, T], a right-padded mask, scores [B], group ids [B]."""
    rng = np.random.default_rng(seed)
    old = -rng.gamma(1.0, 1.0, (responses, tokens)).astype(np.float32)
    lengths = rng.integers(tokens // 4, tokens + 1, responses)
    return {
        "logp": (old + rng.normal(0, 0.1, old.shape)).astype(np.float32),
        "old": old,
        "ref": (old + rng.normal(0, 0.2, old.shape)).astype(np.float32),
        "mask": (np.arange(tokens)[None] < lengths[:, None]).astype(np.float32),
        "scores": rng.uniform(0, 5, responses).astype(np.float32),
        "groups": np.repeat(np.arange(responses // N), N),
    }


def vrsjax_fns(x: dict) -> dict:
    """name -> a call returning numpy arrays, on device-resident inputs."""
    d = {k: jnp.asarray(v) for k, v in x.items()}

    @jax.jit
    def pg_grad(logp, old, adv, mask):
        loss = lambda lp: grpo.policy_loss(lp, old, adv, mask, CLIP, CLIP, CLIP_C, "token-mean")[0]  # noqa: E731
        return jax.value_and_grad(loss)(logp)

    adv = grpo.group_advantages(d["scores"], x["groups"])
    return {
        "group advantages": lambda: np.asarray(grpo.group_advantages(d["scores"], x["groups"])),
        "low_var_kl": lambda: np.asarray(grpo.kl_penalty(d["logp"], d["ref"], "low_var_kl")),
        "policy loss (token-mean)": lambda: np.asarray(
            grpo.policy_loss(d["logp"], d["old"], adv, d["mask"], CLIP, CLIP, CLIP_C, "token-mean")[0]
        ),
        "policy loss + d/d logp": lambda: np.asarray(pg_grad(d["logp"], d["old"], adv, d["mask"])[1]),
    }


def verl_policy_loss(core_algos, old, logp, adv, mask):
    """verl's vanilla loss across its API versions: the old keyword form, else the registered 'vanilla' function."""
    fn = getattr(core_algos, "compute_policy_loss", None)
    if fn is not None and "cliprange" in inspect.signature(fn).parameters:
        return fn(old, logp, adv, mask, cliprange=CLIP, cliprange_low=CLIP, cliprange_high=CLIP, clip_ratio_c=CLIP_C)[0]
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {"clip_ratio": CLIP, "clip_ratio_low": CLIP, "clip_ratio_high": CLIP, "clip_ratio_c": CLIP_C}
    )
    return core_algos.get_policy_loss_fn("vanilla")(old, logp, adv, mask, "token-mean", config)[0]


def verl_fns(x: dict) -> dict:
    """The same four computations with verl's functions on torch tensors (CPU); raises ImportError without verl."""
    import torch
    from verl.trainer.ppo import core_algos

    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in x.items() if k != "groups"}
    last = t["mask"].sum(-1).long() - 1
    token_rewards = torch.zeros_like(t["mask"]).scatter(1, last[:, None], t["scores"][:, None])
    index = np.asarray(x["groups"]).astype(str).astype(object)

    def advantages():
        return core_algos.compute_grpo_outcome_advantage(token_rewards, t["mask"], index, epsilon=1e-6)[0]

    adv = advantages()

    def pg_grad():
        logp = t["logp"].clone().requires_grad_(True)
        verl_policy_loss(core_algos, t["old"], logp, adv, t["mask"]).backward()
        return logp.grad

    calls = {
        "group advantages": lambda: advantages()[:, 0],
        "low_var_kl": lambda: core_algos.kl_penalty(t["logp"], t["ref"], "low_var_kl"),
        "policy loss (token-mean)": lambda: verl_policy_loss(core_algos, t["old"], t["logp"], adv, t["mask"]),
    }
    out = {name: (lambda fn=fn: _no_grad_numpy(fn)) for name, fn in calls.items()}
    out["policy loss + d/d logp"] = lambda: pg_grad().numpy()
    return out


def _no_grad_numpy(fn):
    import torch

    with torch.no_grad():
        value = fn()
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def ms(times: list[float]) -> str:
    return fmt([1e3 * t for t in times], 3)


def timed(fn, reps: int) -> tuple[list[float], np.ndarray]:
    value = fn()  # warm-up (compilation on the JAX side)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return times, np.asarray(value)


def measure(responses: int = 128, tokens: int = 1024, reps: int = 20) -> str:
    """Time every function on both sides (verl where installed); -> the section body."""
    x = inputs(responses, tokens)
    ours = {name: timed(fn, reps) for name, fn in vrsjax_fns(x).items()}
    try:
        import verl  # noqa: F401

        ref = verl_fns(x)
        theirs = {name: timed(fn, reps) for name, fn in ref.items()}
        reason = None
    except ImportError as err:
        theirs, reason = {}, f"verl comparison: verl is not installed ({err}); only vrsjax was timed"
    except Exception as err:  # an API this script does not know: say so rather than guess
        theirs, reason = {}, f"verl comparison: verl's API was not recognised ({type(err).__name__}: {err})"
    rows = []
    for name, (times, value) in ours.items():
        if name in theirs:
            their_times, their_value = theirs[name]
            diff = float(np.abs(value.reshape(-1) - np.asarray(their_value, np.float32).reshape(-1)).max())
            ratio = statistics.median(their_times) / statistics.median(times)
            rows.append(f"| {name} | {ms(their_times)} | {ms(times)} | x{ratio:.2f} | {diff:.1e} |")
        else:
            rows.append(f"| {name} | not run | {ms(times)} | | |")
        print(rows[-1])
    versions = f"jax {jax.__version__}"
    if theirs:
        import torch
        import verl

        versions += f", torch {torch.__version__} ({torch.get_num_threads()} threads), verl {verl.__version__}"
    lines = [
        f"`python benchmarks/grpo_loss.py` — {machine()}; {versions}, device {jax.devices()[0].platform}.",
        f"{responses} responses ({responses // N} groups of {N}) x {tokens} tokens, random lengths, float32: "
        f"`vrsjax.rl.grpo` (advantages: numpy on the host, float64 group statistics; losses: jitted JAX) vs verl's "
        "`verl/trainer/ppo/core_algos.py` on the same inputs; "
        f"clip {CLIP}/{CLIP}, dual clip {CLIP_C}, token-mean. Milliseconds per call, {spread_note(reps)} after a "
        "warm-up; ratio = verl median over vrsjax median.",
        "",
        "| function | verl (ms) | vrsjax (ms) | ratio | max abs difference |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]
    if reason:
        lines += ["", skipped(reason)]
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    """The suite's entry point (quick: 32 responses x 256 tokens, 5 repeats); writes the section."""
    body = measure(32, 256, repeats(5)) if quick else measure(reps=repeats(20))
    write_section(TITLE, body)
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    body = measure(args.responses, args.tokens, args.repeats)
    print(body)
    write_section(TITLE, body)


if __name__ == "__main__":
    main()
