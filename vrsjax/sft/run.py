"""`vrsjax train-sft config=configs/sft_veason_3b.yaml [key=value ...]`: CoT SFT as a LLaMA-Factory recipe says.

Loads the model (`model_name_or_path`, HF or converted) and its processor, tokenizes the datasets, builds the mesh
(`mesh.*`), trains (resuming from `<output_dir>/checkpoints` unless `resume_from_checkpoint: false`), saves the
final train state and exports the policy, LoRA merged, as an HF checkpoint to `export_dir` (default
`<output_dir>/hf`), ready for `vrsjax train-grpo worker.actor.model.model_path=...`.
"""

from __future__ import annotations

from pathlib import Path

import jax

from vrsjax.errors import UserError
from vrsjax.sft.config import SFTConfig, load_sft_config
from vrsjax.sft.trainer import SFTTrainer


def build(cfg: SFTConfig) -> SFTTrainer:
    from vrsjax.models import qwen2_5_vl
    from vrsjax.parallel.mesh import make_mesh
    from vrsjax.processing import Processor
    from vrsjax.sft.data import load_examples

    if not cfg.model_name_or_path:
        raise UserError("model_name_or_path is not set: point it at an HF or converted Qwen2.5-VL directory")
    mesh = make_mesh(**cfg.mesh.resolve(len(jax.devices()))) if len(jax.devices()) > 1 else None
    processor = Processor.from_pretrained(cfg.model_name_or_path)
    examples, skipped = load_examples(cfg, processor)
    if skipped.total:
        print(skipped.report())
    model = qwen2_5_vl.from_pretrained(cfg.model_name_or_path, dtype=cfg.dtype)
    return SFTTrainer(cfg, model, examples, mesh=mesh)


def main(overrides: list[str]) -> Path:
    """Train as the recipe says; returns the exported HF directory."""
    cfg = load_sft_config(None, overrides)
    trainer = build(cfg)
    tokens = sum(e.num_response_tokens for e in trainer.examples)
    print(
        f"SFT ({cfg.finetuning_type}"
        + (
            f", rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g}, targets {cfg.lora_target}"
            if cfg.finetuning_type == "lora"
            else ""
        )
        + f"): {len(trainer.examples)} conversations, {tokens} response tokens, {trainer.total_steps} steps of "
        f"{trainer.global_batch} conversations"
    )
    history = trainer.train(resume=cfg.resume_from_checkpoint is not False)
    trainer.save()
    exported = trainer.export(cfg.export_dir or Path(cfg.output_dir) / "hf")
    last = history[-1] if history else {}
    print(
        f"done: {trainer.step_count} steps, last loss {last.get('loss', float('nan')):.4f}; metrics "
        f"{trainer.out_dir / 'metrics.jsonl'}, curves {trainer.out_dir / 'sft_curves.png'}, policy {exported}"
    )
    return exported
