"""`vrsjax train-grpo config=...`: build everything a recipe names and run the GRPO trainer.

Reads the model (`worker.actor.model.model_path`, an HF or converted directory), its processor, the training
split (`data.train_files`, any layout `vrsjax.data` reads), builds the mesh (`mesh.*`), trains for
`trainer.max_steps`, and exports the policy to HF safetensors (LoRA merged) under the run directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from vrsjax.config import Config, ConfigError, load_config
from vrsjax.rl.trainer import (
    GRPOSample,
    GRPOTrainer,
    sam2_propagate_for,
    sample_from_example,
    veason_reward,
    xmem_propagate_for,
)


class VeasonSamples(Sequence):
    """Random access to Veason-R1 training prompts: example i is drawn with its own seeded keyframe choice."""

    def __init__(self, dataset, num_frames: int, size: int, seed: int):
        self.dataset, self.num_frames, self.size, self.seed = dataset, num_frames, size, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> GRPOSample:
        from vrsjax.data.examples import train_example

        ex = train_example(self.dataset[i], np.random.default_rng([self.seed, i]), self.num_frames, self.size)
        return sample_from_example(ex)


def build(cfg: Config, out_dir: str | Path | None = None) -> GRPOTrainer:
    from vrsjax.data import open_dataset
    from vrsjax.models import qwen2_5_vl
    from vrsjax.parallel.mesh import make_mesh
    from vrsjax.processing import Processor

    model_cfg = cfg.worker.actor.model
    if not model_cfg.model_path:
        raise ConfigError("worker.actor.model.model_path is not set: point it at an HF or converted Qwen2.5-VL dir")
    sizes = cfg.mesh.resolve(len(jax.devices()))
    mesh = make_mesh(**sizes) if len(jax.devices()) > 1 else None
    model = qwen2_5_vl.from_pretrained(model_cfg.model_path, dtype=cfg.worker.actor.fsdp.torch_dtype or "float32")
    processor = Processor.from_pretrained(model_cfg.tokenizer_path or model_cfg.model_path)
    dataset = open_dataset(None, cfg.data.train_files, "train", skip_bad_samples=cfg.data.skip_bad_samples)
    samples = VeasonSamples(dataset, cfg.data.sampled_frames, cfg.data.keyframe_resize, cfg.data.seed)
    reward = cfg.worker.reward
    propagate_for = None
    if reward.sam2_config:
        from vrsjax.services.sam2 import SAM2Service

        sam = SAM2Service(
            reward.sam2_config,
            checkpoint=reward.sam2_checkpoint,
            device=reward.sam2_device,
            image_size=reward.sam2_image_size,
        )
        propagate_for = sam2_propagate_for(sam)
        if reward.propagator == "xmem":  # VideoSeg-R1: SAM2 on the keyframe, XMem both ways
            from vrsjax.services.xmem import XMem, masks_from_probs

            device = "cpu" if reward.sam2_device == "cpu" else "auto"
            xmem = (
                XMem.from_checkpoint(reward.xmem_checkpoint, device=device)
                if reward.xmem_checkpoint
                else XMem.random(0)
            )
            propagate_for = xmem_propagate_for(sam, xmem, masks_from_probs)
    return GRPOTrainer(
        cfg, model, processor, samples, out_dir=out_dir, mesh=mesh, reward_fn=veason_reward(propagate_for)
    )


def main(overrides: list[str], debug: bool = False) -> Path:
    """Train as the recipe says; returns the exported HF directory. A checkpoint that cannot be written or restored
    ends the run with one CheckpointError line (orbax's own log lines only with `debug`)."""
    from vrsjax.checkpoint import quiet_orbax
    from vrsjax.layers.lora import merge_lora

    quiet_orbax(not debug)
    cfg = load_config(None, overrides)
    trainer = build(cfg)
    if cfg.worker.reward.sam2_config:
        weights = "random weights" if cfg.worker.reward.sam2_checkpoint is None else cfg.worker.reward.sam2_checkpoint
        print(
            f"GRPO: Veason-R1 reward with SAM2 {cfg.worker.reward.sam2_config} ({weights}) for the consistency term"
            f", propagated with {cfg.worker.reward.propagator}"
        )
    else:
        print("GRPO: Veason-R1 reward without the SAM2 consistency term (worker.reward.sam2_config is null)")
    # EasyR1 HEAD: resume from trainer.load_checkpoint_path, else (find_last_checkpoint) from this run's newest
    resume = cfg.trainer.load_checkpoint_path is not None or cfg.trainer.find_last_checkpoint
    try:
        history = trainer.train(resume=resume)
        trainer.save()
    finally:  # pending checkpoints written (or their failure reported), the reward thread and the writers stopped
        trainer.close()
    out = trainer.policy()
    exported = merge_lora(out).save_pretrained(trainer.out_dir / "hf")
    last = history[-1] if history else {}
    print(
        f"done: {trainer.step_count} steps, last mean score {last.get('reward/score_mean', float('nan')):.3f}; "
        f"metrics {trainer.out_dir / 'metrics.jsonl'}, curves {trainer.out_dir / 'curves.png'}, policy {exported}"
    )
    return exported
