"""One GRPO step: vrsjax vs TRL's `GRPOTrainer`, alternating in one process, split into generation / log-probs /
update. Runs when `trl` is installed (`pip install -e .[bench]`), else writes a skip line.

Both sides train the same tiny Qwen2.5-VL checkpoint (`vrsjax.testing.write_tiny_checkpoint`: text hidden 256, 4
layers, vocab 8000; its processor and chat template) on 2 prompts x 8 responses of exactly 64 sampled tokens
(stop tokens suppressed), float32, KL 0.04 against a frozen reference, one AdamW step per GRPO step, and the same
passes: generation (which gives the old log-probs: TRL reuses the policy pass's detached log-probs when there is
one optimizer step per generation, vrsjax takes them from the rollout), one reference log-prob pass, one policy
forward + backward, the optimizer. The reward is the same cheap function of the response tokens on both sides.
Settings: text-only prompts; one 224x224 image per prompt; Veason-shaped, 4 frames of 448x448 per prompt (as
images, Veason-R1's keyframe prompt). The two trainers take turns step by step (a TRL step, then a vrsjax step), so
both see the same machine load; the first step of each (compilation for vrsjax) is not timed.

Phases: TRL's generation is its `_generate_single_turn` (model.generate on the n-times repeated prompts), log-probs
its no-gradient `_get_per_token_logps_and_entropies` calls (the reference pass), update the rest of the step
(policy forward + backward, optimizer, its bookkeeping). vrsjax: `rollout.generate`, `update.shared_log_probs` with
the reference parameters, `update.shared_micro_grads` + `apply_grads`.

    python benchmarks/grpo_vs_trl.py [--repeats 5] [--only text,image,veason]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
from report import fmt, machine, repeats, skipped, spread_note, write_section  # noqa: E402

TITLE = "GRPO step vs TRL (CPU)"
PROMPTS, N, NEW, KL, LR = 2, 8, 64, 0.04, 1e-5
SIZE = dict(hidden_size=256, text_layers=4, vocab_size=8000)
# name -> (images per prompt, side in pixels); 0 images = text only
SETTINGS = {"text": (0, 0), "image": (1, 224), "veason": (4, 448)}
PHASES = ("generation", "log_probs", "update")
QUESTION = "Which object moves first in these frames, and where is it? Answer with a box."


def reward_of(tokens: np.ndarray) -> np.ndarray:
    """The same cheap score on both sides: int[R, T] response tokens -> float[R] (a fixed function of the ids)."""
    return ((tokens.astype(np.int64) * 2654435761) % 1000).mean(axis=1) / 1000.0


def images_for(count: int, side: int, seed: int) -> list:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (side, side, 3), np.uint8)) for _ in range(count)]


def conversation(count: int) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * count + [{"type": "text", "text": QUESTION}]}]


# ----------------------------------------------------------------------------- TRL


class TRLSide:
    """A GRPOTrainer on the checkpoint; `step()` runs one training step and returns its phase times (s)."""

    def __init__(self, path: Path, count: int, side: int, out: Path, steps: int):
        import torch
        from datasets import Dataset
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
        from trl import GRPOConfig, GRPOTrainer

        torch.set_num_threads(1)
        rows = [
            {"prompt": conversation(count)} | ({"images": images_for(count, side, i)} if count else {})
            for i in range(PROMPTS)
        ]
        data = Dataset.from_list(rows * steps)
        config = GRPOConfig(
            output_dir=str(out),
            per_device_train_batch_size=PROMPTS * N,
            num_generations=N,
            gradient_accumulation_steps=1,
            max_completion_length=NEW,
            generation_kwargs={"min_new_tokens": NEW},  # 64 tokens whatever is sampled
            temperature=1.0,
            top_p=1.0,
            beta=KL,
            learning_rate=LR,
            max_steps=steps,
            use_cpu=True,
            bf16=False,
            report_to=[],
            logging_steps=10**9,
            save_strategy="no",
            shuffle_dataset=False,
            seed=0,
            gradient_checkpointing=False,  # TRL's default recomputes the forward in the backward; vrsjax does not
        )
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch.float32)

        def reward(completion_ids, **_):
            width = max(len(c) for c in completion_ids)
            padded = np.array([list(c) + [0] * (width - len(c)) for c in completion_ids])
            return reward_of(padded).tolist()

        self.trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=config,
            train_dataset=data,
            processing_class=AutoProcessor.from_pretrained(path),
        )
        self.times = {p: 0.0 for p in PHASES}
        self._wrap()

    def _wrap(self):
        import torch

        trainer, times = self.trainer, self.times
        generate, logps = trainer._generate_single_turn, trainer._get_per_token_logps_and_entropies

        def timed_generate(*args, **kwargs):
            start = time.perf_counter()
            out = generate(*args, **kwargs)
            times["generation"] += time.perf_counter() - start
            return out

        def timed_logps(*args, **kwargs):
            start = time.perf_counter()
            out = logps(*args, **kwargs)
            if not torch.is_grad_enabled():  # the reference (and any old-policy) pass; the policy pass is the update
                times["log_probs"] += time.perf_counter() - start
            return out

        trainer._generate_single_turn = timed_generate
        trainer._get_per_token_logps_and_entropies = timed_logps


class StepClock:
    """A transformers TrainerCallback timing each TRL step and running `between()` after it (the vrsjax step)."""

    def __init__(self, trl: TRLSide, between):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                for p in PHASES:
                    trl.times[p] = 0.0
                clock.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                total = time.perf_counter() - clock.start
                split = dict(trl.times)
                split["update"] = total - split["generation"] - split["log_probs"]
                clock.steps.append(split | {"step": total})
                between()

        self.steps: list[dict] = []
        self.callback = Callback()


# ----------------------------------------------------------------------------- vrsjax


class JaxSide:
    """The same step with vrsjax's passes: rollout (old log-probs), shared-prompt reference pass, shared-prompt
    gradients, AdamW; `step()` -> phase times (s)."""

    def __init__(self, path: Path, count: int, side: int):
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx

        from vrsjax.models import qwen2_5_vl
        from vrsjax.processing import Processor
        from vrsjax.rl import grpo
        from vrsjax.rl.sequences import prompt_data, prompt_inputs

        model = qwen2_5_vl.from_pretrained(path)
        proc = Processor.from_pretrained(path)
        text = proc.apply_chat_template(conversation(count), add_generation_prompt=True)
        images = [images_for(count, side, i) for i in range(PROMPTS)] if count else None
        per_prompt = [
            proc(text=[text], images=[[np.asarray(im) for im in images[i]]] if images else None) for i in range(PROMPTS)
        ]
        self.batch = proc(
            text=[text] * PROMPTS, images=[[np.asarray(im) for im in ims] for ims in images] if images else None
        )
        self.model, self.proc = model, proc
        self.graphdef, self.params, self.frozen = nnx.split(model, nnx.Param, ...)
        self.ref = jax.tree.map(jnp.copy, self.params)  # the frozen reference policy
        self.optimizer = optax.adamw(LR)
        self.opt_state = self.optimizer.init(self.params)
        prompts = [prompt_data(model.config, b) for b in per_prompt]
        self.prompts = prompt_inputs(model.config, prompts, np.arange(PROMPTS))
        self.next_pos = np.array([p.next_pos for p in prompts], np.int32)
        self.loss = grpo.LossConfig(kl_coef=KL, kl_kind="low_var_kl")
        self.seed = 0

    def step(self) -> dict:
        import jax
        from flax import nnx

        from vrsjax import rollout
        from vrsjax.rl import grpo
        from vrsjax.rl.update import apply_grads, shared_log_probs, shared_micro_grads

        nnx.update(self.model, self.params)
        self.seed += 1
        times = {}
        start = time.perf_counter()
        out = rollout.generate(
            self.model,
            self.batch,
            n=N,
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            temperature=1.0,
            seed=self.seed,
            stop_token_ids=(),
        )
        times["generation"] = time.perf_counter() - start
        scores = reward_of(out.tokens)
        adv = np.asarray(grpo.group_advantages(scores, np.repeat(np.arange(PROMPTS), N)), np.float32)
        adv = np.repeat(adv[:, None], NEW, axis=1)
        tokens, mask = (a.reshape(PROMPTS, N, NEW) for a in (out.tokens, out.mask))
        start = time.perf_counter()
        ref, _ = shared_log_probs(
            self.graphdef, self.ref, self.frozen, self.prompts, tokens, mask, self.next_pos, temperature=1.0
        )
        ref = jax.block_until_ready(ref).reshape(PROMPTS * N, NEW)
        times["log_probs"] = time.perf_counter() - start
        start = time.perf_counter()
        grads, loss, _ = shared_micro_grads(
            self.graphdef,
            self.params,
            self.frozen,
            self.prompts,
            tokens,
            mask,
            self.next_pos,
            out.logprobs,
            ref,
            adv,
            float(out.mask.sum()),
            float(PROMPTS * N),
            temperature=1.0,
            loss_config=self.loss,
        )
        self.params, self.opt_state, _, _ = apply_grads(self.params, self.opt_state, grads, optimizer=self.optimizer)
        jax.block_until_ready(self.params)
        times["update"] = time.perf_counter() - start
        return times | {"step": sum(times.values())}


# ----------------------------------------------------------------------------- the comparison


def compare(name: str, reps: int, tmp: Path) -> dict:
    """Alternate TRL and vrsjax steps in setting `name`; -> {"trl": [phase dicts], "vrsjax": [...]}."""
    count, side = SETTINGS[name]
    from vrsjax.testing import write_tiny_checkpoint

    path = write_tiny_checkpoint(tmp / f"tiny_{name}", seed=0, **SIZE)
    ours = JaxSide(path, count, side)
    ours.step()  # compilation
    jax_steps: list[dict] = []
    trl = TRLSide(path, count, side, tmp / f"trl_{name}", steps=reps + 1)
    clock = StepClock(trl, lambda: jax_steps.append(ours.step()))
    trl.trainer.add_callback(clock.callback)
    trl.trainer.train()
    # the first TRL step (and the vrsjax step after it) warm up allocators and caches: not timed
    return {"trl": clock.steps[1:], "vrsjax": jax_steps[1:]}


def table(name: str, runs: dict) -> tuple[list[str], float]:
    rows = []
    for phase in (*PHASES, "step"):
        t, j = ([r[phase] for r in runs[side]] for side in ("trl", "vrsjax"))
        ratio = np.median(t) / np.median(j)
        label = f"**{ratio:.2f}x**" if phase == "step" else f"{ratio:.2f}x"
        rows.append(f"| {name} | {phase} | {fmt(t)} | {fmt(j)} | {label} |")
    return rows, float(np.median([r["step"] for r in runs["trl"]]) / np.median([r["step"] for r in runs["vrsjax"]]))


def pin_one_core() -> int:
    """Run this process (XLA's and torch's threads alike) on one CPU: `$VRSJAX_BENCH_CPU`, else the first allowed.
    On a machine shared with other jobs, torch's multi-threaded kernels spin and wait on busy cores and slow down far
    more than XLA's (ratios of 30x and more, all load); one core each keeps the comparison about the work done."""
    cpu = int(os.environ.get("VRSJAX_BENCH_CPU", min(os.sched_getaffinity(0))))
    os.sched_setaffinity(0, {cpu})
    return cpu


def measure(reps: int, only: list[str]) -> str:
    if importlib.util.find_spec("trl") is None:
        return skipped("trl is not installed (pip install -e .[bench] installs trl==1.16.0); no TRL comparison")
    core = pin_one_core()
    import jax
    import torch
    import trl

    rows, ratios = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in only:
            runs = compare(name, reps, Path(tmp))
            part, ratios[name] = table(name, runs)
            rows += part
            print("\n".join(part), flush=True)
    load = os.getloadavg()[0]
    return f"""
`python benchmarks/grpo_vs_trl.py` — {machine()}; jax {jax.__version__}, torch {torch.__version__}
(1 thread), trl {trl.__version__}; both sides pinned to CPU {core} (one core, in turn); load average
{load:.1f} at the end (the machine is shared with other jobs; steps alternate, so both sides see the same load).
The same tiny Qwen2.5-VL checkpoint
(text hidden 256, 4 layers, vocab 8000), {PROMPTS} prompts x {N} responses of {NEW} forced tokens, float32, KL
{KL} with a reference, one AdamW step; same passes on both sides (old log-probs from the generation). Times in
seconds, {spread_note(reps)} (steps, after a warm-up step); ratio = TRL median / vrsjax median.

| setting | phase | TRL `GRPOTrainer` | vrsjax | ratio |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Settings: text = text-only prompts; image = one 224x224 image per prompt; veason = 4 frames of 448x448 per prompt.

Where the time goes: TRL repeats each prompt, its images included, n = {N} times and runs every pass (generation's
prefill, the reference pass, the policy forward and backward) over the {PROMPTS * N} full sequences, with the vision
tower on every copy; its update (forward + backward + AdamW) is the largest phase. vrsjax runs each prompt and its
images once per group in all three passes (the rollout's shared prefill, `shared_log_probs`, `shared_micro_grads`)
and decodes in one compiled loop, so its advantage grows with the prompt's share of the sequence: smallest
text-only, larger with images, largest with Veason's 4 frames.
"""


def run(quick: bool = False) -> str:
    """The suite's entry point (quick: the text setting, 2 timed steps); writes the section, returns its body."""
    body = measure(repeats(2), ["text"]) if quick else measure(repeats(5), list(SETTINGS))
    write_section(TITLE, body)
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default=",".join(SETTINGS), help="settings to run: " + ",".join(SETTINGS))
    args = parser.parse_args()
    write_section(TITLE, measure(args.repeats, [s for s in args.only.split(",") if s]))


if __name__ == "__main__":
    main()
