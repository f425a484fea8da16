"""The demo's run: world -> held-out evaluation -> CoT SFT -> evaluation -> GRPO -> evaluation -> learning check.

It writes the synthetic ReVOS-format dataset with the demo's scenes, a tiny random Qwen2.5-VL whose BPE tokenizer
is trained on the training text, and chain-of-thought SFT conversations built from the ground truth
(`vrsjax.demo.world`); runs CoT SFT (`vrsjax.sft`, full fine-tuning) for a fixed number of steps; then GRPO
(`vrsjax.rl.trainer.GRPOTrainer`) with the Veason-R1 reward (format + keyframe + spatial; the SAM2 consistency term
is off by default because SAM2 has no weights here); and evaluates held-out expressions before SFT, after SFT and
after GRPO with ground-truth-free segmenters that follow the policy's boxes (`vrsjax.demo.measure`). The learning
check (`measure.learning_checks`: J&F >= JF_GOAL and paired two-standard-error gains) decides the exit status.
`out/summary.json` holds the numbers, `report.md` the story; `quick=True` runs a few steps of each stage (CI checks
the artifacts, not learning).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    videos: int = 160  # every 4th is held out (and never trained on)
    frames: int = 4  # sampled frames per prompt
    size: int = 84  # frames shown at size x size: 3 x 3 vision tokens each, one per cell of the scenes' grid
    hidden: int = 128
    vision_hidden: int = 64
    layers: int = 4
    bpe_size: int = 1200
    sft_batch: int = 16
    sft_lr: float = 2e-3
    sft_schedule: str = "cosine"
    sft_steps: int = 300
    sft_check_every: int = 100  # format check on training prompts (reported, not a stopping rule)
    grpo_steps: int = 40
    rollout_batch: int = 4
    n: int = 8
    grpo_lr: float = 3e-4
    temperature: float = 1.0
    kl_coef: float = 5e-3
    consistency_weight: float = 0.0  # random-weight SAM2 masks carry no signal: the term would only add noise
    sam2_image_size: int = 64
    max_response: int = 64
    held_out: int = 48  # held-out expressions evaluated (the first ones, all of them when fewer)
    seed: int = 0


# The J&F the learning check uses: the policy's boxes themselves (see vrsjax.demo.measure for both segmenters).
HEADLINE = "static_box"
QUICK = DemoSettings(
    videos=8, sft_steps=4, sft_check_every=4, grpo_steps=2, rollout_batch=2, n=4, consistency_weight=1.0, held_out=4
)
JF_GOAL = 30.0  # held-out J&F (box as mask) after GRPO
# What `vrsjax demo` writes in its --out folder (vrsjax.outdir removes these, and nothing else, on a re-run).
WRITES = (
    "data", "policy_init", "sft", "grpo", "gifs", "metrics.jsonl", "report.md", "summary.json", "eval_*.json",
    "reward_*.png", "overlay.png",
)  # fmt: skip


def run(
    out_dir: str | Path = "demo_out",
    quick: bool = False,
    settings: DemoSettings | None = None,
    *,
    seed: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Run the demo; returns {"passed": bool or None (quick), "summary": dict, "report": path, ...}."""
    import jax

    from vrsjax.outdir import claim

    jax.config.update("jax_default_matmul_precision", "float32")
    s = settings or (QUICK if quick else DemoSettings())
    s = s if seed is None else dataclasses.replace(s, seed=seed)
    out = claim(out_dir, WRITES, overwrite=overwrite, tool="vrsjax demo")
    t_start = time.perf_counter()
    log = out / "metrics.jsonl"
    print(f"vrsjax demo ({'quick' if quick else 'full'}, seed {s.seed}, {_cores()} cores): CoT SFT then GRPO on "
          f"synthetic videos; output in {out}/")  # fmt: skip
    policy, processor, train, held, stop = _setup(out, s)
    evals = {"before SFT": _evaluate(policy, processor, held, s, stop, log, "before_sft")}

    sft_trainer, sft_history = _sft(out, s, policy, processor, train, stop, log)
    evals["after SFT"] = _evaluate(sft_trainer.policy(), processor, held, s, stop, log, "after_sft")

    grpo_trainer, grpo_history = _grpo(out, s, sft_trainer.policy(), processor, train, log)
    evals["after GRPO"] = _evaluate(grpo_trainer.policy(), processor, held, s, stop, log, "after_grpo")

    from vrsjax.demo.measure import learning_checks, plot_rewards

    plots = plot_rewards(grpo_history, out)
    checks = learning_checks(evals, grpo_history, HEADLINE, JF_GOAL, s.seed)
    gifs = _gifs(out, held, evals["after GRPO"], s)
    passed = None if quick else all(c["ok"] for c in checks["checks"])
    elapsed = time.perf_counter() - t_start
    summary = _summary(passed, s, elapsed, evals, checks)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    report = _report(out, s, quick, evals, checks, passed, sft_history, grpo_history, plots, gifs, elapsed)
    print(report.read_text())
    verdict = "skipped (quick mode)" if passed is None else "PASSED" if passed else "FAILED"
    print(f"learning check {verdict}; demo done in {elapsed:.0f}s; report {report}, summary {out / 'summary.json'}")
    return {"passed": passed, "summary": summary, "report": report, "out": out, "seconds": elapsed}


def _cores() -> int:
    """CPU cores this process may run on (`taskset -c 0` gives 1)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _summary(passed, s: DemoSettings, elapsed: float, evals: dict, checks: dict) -> dict:
    """demo_out/summary.json: exactly the keys issue 17 lists (J&F 0-100 overall on held-out expressions)."""
    jf = {k: v[HEADLINE]["overall"]["J&F"] for k, v in evals.items()}
    iou = {k: v["box_iou"] for k, v in evals.items()}
    return {
        "passed": passed,
        "seed": s.seed,
        "cores": _cores(),
        "wall_s": round(elapsed, 1),
        "jf_before_sft": jf["before SFT"],
        "jf_after_sft": jf["after SFT"],
        "jf_after_grpo": jf["after GRPO"],
        "box_iou_before_sft": iou["before SFT"],
        "box_iou_after_sft": iou["after SFT"],
        "box_iou_after_grpo": iou["after GRPO"],
        "format_after_grpo": evals["after GRPO"]["format"],
        "reward_gain": checks["reward"]["diff"],
        "reward_gain_se": checks["reward"]["se"],
        "spatial_gain": checks["spatial"]["diff"],
        "spatial_gain_se": checks["spatial"]["se"],
    }


# ------------------------------------------------------------------------------------------------------ stages


def _setup(out: Path, s: DemoSettings):
    from vrsjax.data.synthetic import write_dataset
    from vrsjax.demo.world import build_samples, scene, write_checkpoint
    from vrsjax.models import qwen2_5_vl

    t0 = time.perf_counter()
    write_dataset(out / "data", s.videos, s.seed, num_frames=(6, 8), sft=False, keep_arrays=False, scene=scene)
    train = build_samples(out / "data", "train", s.frames, s.size, s.seed, whole_video=False)
    held = build_samples(out / "data", "valid", s.frames, s.size, s.seed, whole_video=True)[: s.held_out]
    ckpt = write_checkpoint(
        out / "policy_init",
        train,
        bpe_size=s.bpe_size,
        seed=s.seed,
        hidden_size=s.hidden,
        text_layers=s.layers,
        vision_hidden=s.vision_hidden,
    )
    processor, stop = _processor(ckpt)
    model = qwen2_5_vl.from_pretrained(ckpt)
    print(
        f"[1/5] synthetic ReVOS-format dataset: {s.videos} videos, {len(train)} training and {len(held)} held-out "
        f"expressions (held-out videos are never trained on); tiny Qwen2.5-VL (hidden {s.hidden}, {s.layers} "
        f"layers) with a {s.bpe_size}-entry BPE trained on the training text, written to {ckpt} "
        f"({time.perf_counter() - t0:.0f}s)"
    )
    return model, processor, train, held, stop


def _processor(path):
    """The checkpoint's processor and its stop ids (<|im_end|>, <|endoftext|> of the tiny vocabulary)."""
    from vrsjax.processing import Processor

    processor = Processor.from_pretrained(path)
    tok = processor.tokenizer
    return processor, (tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>"))


def _evaluate(model, processor, held, s: DemoSettings, stop, log: Path, phase: str) -> dict:
    from vrsjax.demo.measure import evaluate, write_jsonl

    t0 = time.perf_counter()
    result = evaluate(model, processor, held, s.size, s.max_response, stop)
    box = result["static_box"]["overall"]["J&F"]
    colour = result["colour_track"]["overall"]["J&F"]
    print(f"  eval {phase}: J&F {box:.1f} (box as mask), {colour:.1f} (colour track), keyframe box IoU "
          f"{result['box_iou']:.3f}, format {result['format']:.2f}/2 on {len(held)} held-out expressions "
          f"({time.perf_counter() - t0:.0f}s)")  # fmt: skip
    write_jsonl(log, {"phase": f"eval/{phase}", **{k: v for k, v in result.items() if k != "records"}})
    (log.parent / f"eval_{phase}.json").write_text(json.dumps(result, indent=1))
    return result


def _sft(out: Path, s: DemoSettings, model, processor, train, stop, log: Path):
    from vrsjax.demo.measure import greedy_answers, write_jsonl
    from vrsjax.demo.world import conversation
    from vrsjax.rewards import veason
    from vrsjax.sft.config import sft_config_from_dict
    from vrsjax.sft.data import encode_conversation
    from vrsjax.sft.trainer import SFTTrainer

    examples = [encode_conversation(processor, conversation(d), list(d.sample.frames)) for d in train]
    cfg = sft_config_from_dict(
        [
            {
                "model_name_or_path": str(out / "policy_init"),
                "finetuning_type": "full",  # a random base model: LoRA would have nothing to adapt
                "freeze_vision_tower": False,
                "freeze_multi_modal_projector": False,
                "per_device_train_batch_size": s.sft_batch,
                "learning_rate": s.sft_lr,
                "lr_scheduler_type": s.sft_schedule,
                "warmup_steps": 10,
                "max_steps": s.sft_steps,
                "output_dir": str(out / "sft"),
                "save_steps": 10**6,
                "seed": s.seed,
            }
        ]
    )
    trainer = SFTTrainer(cfg, model, examples)
    print(f"[2/5] CoT SFT (full fine-tuning) on {len(examples)} conversations, {s.sft_steps} steps")
    history, probe = [], train[:8]
    while trainer.step_count < s.sft_steps:
        history += trainer.train(min(trainer.step_count + s.sft_check_every, s.sft_steps), desc="SFT")
        texts = greedy_answers(trainer.policy(), processor, probe, s.max_response, stop)
        fmt = float(np.mean([veason.format_reward(t) for t in texts]))
        write_jsonl(log, {"phase": "sft/format_check", "step": trainer.step_count, "format": fmt})
        print(
            f"  SFT step {trainer.step_count}: loss {history[-1]['loss']:.3f}, format {fmt:.2f}/2 on training prompts"
        )
    for m in history:
        write_jsonl(log, {"phase": "sft", **m})
    return trainer, history


def _grpo(out: Path, s: DemoSettings, model, processor, train, log: Path):
    from vrsjax.config import from_dict
    from vrsjax.demo.measure import write_jsonl
    from vrsjax.rl.trainer import GRPOTrainer, veason_reward

    if s.consistency_weight:
        from vrsjax.services.sam2 import SAM2Service

        sam = SAM2Service("hiera_t", device="cpu", image_size=s.sam2_image_size, seed=3)
        propagate_for = _memo_propagate_for(sam, len(train))
        term = (f"{s.consistency_weight:g} x consistency with SAM2 hiera-t of RANDOM weights at image size "
                f"{s.sam2_image_size}: nothing is downloaded, so its masks carry no signal")  # fmt: skip
    else:
        propagate_for, term = (
            None,
            "no consistency term: SAM2 would run with random weights, whose masks carry no signal",
        )
    print(f"[3/5] GRPO with the Veason-R1 reward (format + keyframe + spatial; {term})")
    cfg = from_dict(_grpo_config(out, s))
    samples = [d.sample for d in train]
    reward = veason_reward(propagate_for, consistency_weight=s.consistency_weight)
    trainer = GRPOTrainer(cfg, model, processor, samples, reward_fn=reward, out_dir=out / "grpo")
    history = trainer.train(s.grpo_steps)
    for m in history:
        write_jsonl(log, {"phase": "grpo", **m})
    return trainer, history


def _grpo_config(out: Path, s: DemoSettings) -> dict:
    return {
        "data": {
            "train_files": str(out / "data"),
            "max_prompt_length": 2048,
            "max_response_length": s.max_response,
            "rollout_batch_size": s.rollout_batch,
            "seed": s.seed,
            "keyframe_resize": s.size,
            "sampled_frames": s.frames,
        },
        "algorithm": {"adv_estimator": "grpo", "kl_coef": 0.0},
        "worker": {
            "actor": {
                "global_batch_size": s.rollout_batch,
                "micro_batch_size_per_device_for_update": s.rollout_batch,
                "micro_batch_size_per_device_for_experience": s.rollout_batch,
                "use_kl_loss": True,
                "kl_loss_coef": s.kl_coef,
                "kl_loss_type": "low_var_kl",
                "model": {"model_path": str(out / "policy_init"), "enable_gradient_checkpointing": False},
                "optim": {"lr": s.grpo_lr, "weight_decay": 0.01},
                "fsdp": {"torch_dtype": "float32", "mp_param_dtype": "float32"},
            },
            "rollout": {"n": s.n, "temperature": s.temperature, "dtype": "float32", "seed": s.seed},
        },
        "trainer": {
            "max_steps": s.grpo_steps,
            "save_freq": -1,
            "project_name": "vrsjax_demo",
            "experiment_name": "demo",
            "logger": ["console"],
            "save_checkpoint_path": str(out / "grpo"),
            "val_before_train": False,
        },
        "mesh": {"data": 1, "fsdp": -1, "tensor": 1},
    }


def _memo_propagate_for(sam, cache_size: int):
    """`sam2_propagate_for` with each (sample, keyframe, boxes) propagated once: identical answers in a group (more
    of them as the policy sharpens) reuse the masks."""
    from vrsjax.rl.trainer import sam2_propagate_for

    base, memo = sam2_propagate_for(sam, cache_size=cache_size), {}

    def for_sample(sample):
        propagate = base(sample)

        def cached(keyframe, boxes):
            key = (sample.sample_id, int(keyframe), np.asarray(boxes, np.float32).tobytes())
            if key not in memo:
                memo[key] = propagate(keyframe, boxes)
            return memo[key]

        return cached

    return for_sample


# ------------------------------------------------------------------------------------------------------ report


def _gifs(out: Path, held, result: dict, s: DemoSettings, count: int = 3) -> list[Path]:
    from vrsjax.demo.measure import overlay_gif, overlay_png, segment

    (out / "gifs").mkdir(exist_ok=True)
    paths = []
    for demo, record in list(zip(held, result["records"], strict=True))[:count]:
        pred = segment(HEADLINE, demo.video_frames, record["keyframe"], record["boxes"])
        name = demo.sample.sample_id.replace("/", "_")
        title = f"{demo.sample.expression} J&F {record[HEADLINE]['J&F']:.0f}"
        paths.append(overlay_gif(out / "gifs" / f"{name}.gif", demo.video_frames, pred, demo.video_masks, title))
    best = int(np.argmax([r["box_iou"] for r in result["records"]]))
    demo, record = held[best], result["records"][best]
    keyframe = record["keyframe"]
    pred = segment(HEADLINE, demo.video_frames, keyframe, record["boxes"])[keyframe : keyframe + 1]
    title = f"{demo.sample.expression}: box IoU {record['box_iou']:.2f}"
    overlay_png(
        out / "overlay.png",
        demo.video_frames[keyframe : keyframe + 1],
        pred,
        demo.video_masks[keyframe : keyframe + 1],
        title,
    )
    return paths


def _report(out, s, quick, evals, checks, passed, sft_history, grpo_history, plots, gifs, elapsed):
    rows = []
    for phase, r in evals.items():
        for seg in ("static_box", "colour_track"):
            o, ref, rea = r[seg]["overall"], r[seg]["referring"] or {}, r[seg]["reasoning"] or {}
            nan = float("nan")
            rows.append(
                f"| {phase} | {seg} | {o['J&F']:.1f} | {o['J']:.1f} | {o['F']:.1f} | {ref.get('J&F', nan):.1f} "
                f"| {rea.get('J&F', nan):.1f} | {r['box_iou']:.3f} | {r['format']:.2f} |"
            )
    comps = [k[7:-5] for k in grpo_history[0] if k.startswith("reward/") and k.endswith("_mean")]
    comp_rows = []
    for c in comps:
        g = _gain_of(grpo_history, f"reward/{c}_mean", s.seed)
        comp_rows.append(f"| {c} | {g['first']:.3f} | {g['last']:.3f} | {g['diff']:+.3f} | {g['se']:.3f} |")
    gain = checks["reward"]
    verdict = "not applied (quick mode)" if passed is None else "**PASSED**" if passed else "**FAILED**"
    consistency = (
        f"{s.consistency_weight:g} x consistency computed by **SAM2 hiera-t with random weights** at image size "
        f"{s.sam2_image_size} (no weights are downloaded): its masks carry no signal"
        if s.consistency_weight
        else "no consistency term (SAM2 would run with random weights here: its masks would carry no signal)"
    )
    lines = [
        f"# vrsjax demo report ({'quick' if quick else 'full'} mode)",
        "",
        f"Runtime {elapsed:.0f}s on {_cores()} cores. Settings: `{dataclasses.asdict(s)}`.",
        "",
        "## What ran",
        f"- Synthetic ReVOS-format dataset (`vrsjax.data.synthetic`, the demo's scenes `vrsjax.demo.world.scene`): "
        f"{s.videos} videos, every 4th held out; {len(evals['after GRPO']['records'])} held-out expressions "
        "evaluated.",
        f"- Tiny random Qwen2.5-VL (hidden {s.hidden}, {s.layers} text layers), BPE trained on the training text.",
        f"- CoT SFT (full fine-tuning, {s.sft_schedule} lr {s.sft_lr}), {len(sft_history)} steps of {s.sft_batch} "
        f"conversations; final loss {sft_history[-1]['loss']:.3f}.",
        f"- GRPO (`GRPOTrainer`), {len(grpo_history)} steps of {s.rollout_batch} prompts x {s.n} responses, "
        f"temperature {s.temperature}, lr {s.grpo_lr}, KL {s.kl_coef} (low_var_kl); reward format + keyframe + "
        f"spatial, {consistency}.",
        "",
        "## Held-out J&F (greedy decoding, Veason-R1 inference sampling)",
        "The evaluation segments with ground-truth-free stand-ins driven by the policy's answer: `static_box` (the "
        "predicted boxes drawn as the mask on every frame; the number the learning check uses) and `colour_track` "
        "(the dominant saturated colour inside the predicted keyframe boxes, tracked by colour through the video). "
        "Box IoU: the best-matched predicted box against each target's box on the keyframe the policy chose.",
        "",
        "| policy | segmenter | J&F | J | F | referring J&F | reasoning J&F | box IoU | format (0-2) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "## GRPO reward: last quarter of steps vs first quarter",
        f"Total reward: first {gain['first']:.3f}, last {gain['last']:.3f}, difference **{gain['diff']:+.3f}** +- "
        f"{gain['se']:.3f} (standard error over {gain['q']} steps per quarter), bootstrap 95% interval "
        f"[{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}].",
        "",
        "| component | first quarter | last quarter | difference | std. error |",
        "| --- | --- | --- | --- | --- |",
        *comp_rows,
        "",
        "## Learning check (each gain must exceed two standard errors)",
        *[f"- {c['name']}: {c['value']}: {'yes' if c['ok'] else 'no'}" for c in checks["checks"]],
        f"- verdict: {verdict}",
        "",
        "## Files",
        "- `summary.json` (the numbers above), `metrics.jsonl` (every SFT and GRPO step, format checks, "
        "evaluations), `eval_*.json` (per expression)",
        "- " + ", ".join(f"`{p.name}`" for p in plots) + ", `grpo/curves.png`, `sft/sft_curves.png`",
        "- " + ", ".join(f"`gifs/{p.name}`" for p in gifs) + " (prediction red, ground-truth outline green), "
        "`overlay.png` (the keyframe of the held-out expression with the best box after GRPO)",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _gain_of(history, key: str, seed: int) -> dict:
    from vrsjax.demo.measure import quarter_gain

    return quarter_gain([m[key] for m in history], seed=seed)
