"""The CoT SFT recipe: LLaMA-Factory's flat YAML keys (the stage Veason-R1 runs with `template: qwen2_vl`,
`finetuning_type: lora`) as one frozen, self-validating dataclass, plus vrsjax's `mesh` section.

`load_sft_config("configs/sft_veason_3b.yaml", ["learning_rate=2e-4"])` merges defaults <- YAML <- dotted overrides
with OmegaConf. Defaults are LLaMA-Factory's and HF `TrainingArguments`' (lora_alpha = 2 x lora_rank, vision tower
and projector frozen, linear schedule, lr 5e-5). Keys that only configure LLaMA-Factory's engines (DeepSpeed, data
loader workers, caches, loggers) are accepted, listed in one `IgnoredKeysWarning` and dropped; any other unknown
key is an error that names it and suggests the closest valid key. This module must stay importable without jax.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vrsjax.config import (
    ConfigError,
    IgnoredKeysWarning,
    MeshConfig,
    _defaults,
    _in_range,
    _parse_overrides,
    _positive,
    _read_yaml,
    _Section,
)

FINETUNING_TYPES = ("lora", "full")
TEMPLATES = ("qwen2_vl",)  # LLaMA-Factory's Qwen2-VL / Qwen2.5-VL template
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
# LLaMA-Factory / HF keys for engines vrsjax replaces (DeepSpeed, torch data loaders, dataset caches, loggers).
ENGINE_KEYS = frozenset(
    "trust_remote_code overwrite_cache preprocessing_num_workers dataloader_num_workers ddp_timeout report_to "
    "deepspeed flash_attn overwrite_output_dir save_only_model do_train plot_loss include_num_input_tokens_seen "
    "optim run_name logging_dir gradient_checkpointing tf32 enable_liger_kernel use_unsloth".split()
)


@dataclass(frozen=True)
class SFTConfig(_Section):
    # --- model
    model_name_or_path: str = ""  # HF or converted Qwen2.5-VL directory
    image_max_pixels: int = 768 * 768  # LLaMA-Factory resizes larger images down to this area (before the processor)
    image_min_pixels: int = 32 * 32  # LLaMA-Factory resizes smaller images up to this area
    image_resize: int | None = 560  # vrsjax: square-resize images first (Veason-R1's 560x560 frames); null = as is
    # --- method
    stage: str = "sft"  # training stage: sft only (GRPO is vrsjax train-grpo)
    finetuning_type: str = "lora"  # lora (adapters only) or full
    lora_rank: int = 8  # LoRA rank r
    lora_alpha: float | None = None  # null = 2 x lora_rank (LLaMA-Factory)
    lora_dropout: float = 0.0  # dropout on the LoRA branch's input while training
    lora_target: str = "all"  # 'all' or module names: q_proj,v_proj
    use_rslora: bool = False  # rank-stabilised LoRA: scale alpha / sqrt(r) instead of alpha / r
    freeze_vision_tower: bool = True  # keep the vision encoder fixed
    freeze_multi_modal_projector: bool = True  # keep the vision-to-text merger fixed
    # --- dataset
    dataset: str = ""  # comma-separated names in <dataset_dir>/dataset_info.json, or .json/.jsonl paths
    dataset_dir: str = "data"  # folder of dataset_info.json and the data files
    media_dir: str | None = None  # image paths resolve here; null = dataset_dir (LLaMA-Factory)
    template: str = "qwen2_vl"  # chat template: qwen2_vl (Qwen2-VL and Qwen2.5-VL)
    cutoff_len: int = 2048  # most tokens per sample, vision tokens included; longer ones fail (or skip), uncut
    max_samples: int | None = None  # use at most this many samples per dataset; null = all
    packing: bool = False  # sequence packing; not supported, must be false
    skip_bad_samples: bool = False  # vrsjax: count and report broken or over-long samples instead of failing
    # --- output
    output_dir: str = "saves/sft"  # checkpoints and metrics go here
    logging_steps: int = 10  # optimizer steps between metric lines
    save_steps: int = 500  # optimizer steps between checkpoints
    export_dir: str | None = None  # vrsjax: merged HF export at the end; null = <output_dir>/hf
    # --- train
    per_device_train_batch_size: int = 8  # samples per device per micro-batch
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    learning_rate: float = 5e-5  # peak AdamW learning rate
    num_train_epochs: float = 3.0  # passes over the data (fractions allowed)
    max_steps: int = -1  # > 0 overrides num_train_epochs
    lr_scheduler_type: str = "linear"  # linear|cosine|constant|constant_with_warmup: the schedule after warmup
    warmup_ratio: float = 0.0  # share of the training steps spent warming the learning rate up
    warmup_steps: int = 0  # > 0 overrides warmup_ratio
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    adam_beta1: float = 0.9  # AdamW beta1
    adam_beta2: float = 0.999  # AdamW beta2
    max_grad_norm: float = 1.0  # gradients are clipped to this global norm
    bf16: bool = False  # load and train the model in bfloat16
    fp16: bool = False  # load and train the model in float16
    seed: int = 42  # seed of the data order, LoRA init and dropout
    resume_from_checkpoint: bool | None = None  # true/null: continue from <output_dir>/checkpoints if there is one
    mesh: MeshConfig = field(default_factory=MeshConfig)

    def _derive(self) -> None:
        if self.lora_alpha is None:
            object.__setattr__(self, "lora_alpha", float(2 * self.lora_rank))
        if self.media_dir is None:
            object.__setattr__(self, "media_dir", self.dataset_dir)

    def _check(self) -> Iterator[tuple[str, str]]:
        if self.stage != "sft":
            yield "stage", "vrsjax train-sft runs the sft stage only (GRPO is vrsjax train-grpo)"
        for key, choices in (
            ("finetuning_type", FINETUNING_TYPES),
            ("template", TEMPLATES),
            ("lr_scheduler_type", SCHEDULERS),
        ):
            if getattr(self, key) not in choices:
                close = difflib.get_close_matches(str(getattr(self, key)), choices, n=1)
                yield key, f"must be one of {', '.join(choices)}" + (f"; did you mean {close[0]}?" if close else "")
        if self.packing:
            yield "packing", "sequence packing is not supported; set packing: false"
        if self.bf16 and self.fp16:
            yield "bf16", "bf16 and fp16 are both true; pick one"
        yield from _positive(self, "lora_rank", "cutoff_len", "per_device_train_batch_size")
        yield from _positive(self, "gradient_accumulation_steps", "logging_steps", "save_steps")
        if self.learning_rate <= 0:
            yield "learning_rate", "must be > 0 (LLaMA-Factory's LoRA examples use 1e-4)"
        yield from _in_range(self, "lora_dropout", 0.0, 1.0, hi_open=True)
        yield from _in_range(self, "warmup_ratio", 0.0, 1.0)
        yield from _in_range(self, "weight_decay", 0.0, math.inf)
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            yield "num_train_epochs", "must be > 0 (or set max_steps)"
        if not self.lora_target.strip():
            yield "lora_target", "name the modules, e.g. all or q_proj,v_proj"

    @property
    def dtype(self) -> str:
        return "bfloat16" if self.bf16 else "float16" if self.fp16 else "float32"

    @property
    def datasets(self) -> list[str]:
        return [d.strip() for d in self.dataset.split(",") if d.strip()]


_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SFTConfig))


def load_sft_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> SFTConfig:
    """Defaults <- YAML at `path` <- dotted overrides ("key=value"; a "config=PATH" item sets the file)."""
    overrides = list(overrides)
    for item in list(overrides):
        if item.startswith("config="):
            path = item.split("=", 1)[1]
            overrides.remove(item)
    sources = [] if path is None else [_read_yaml(path)]
    return sft_config_from_dict(sources, _parse_overrides(overrides))


def sft_config_from_dict(sources: list[dict], overrides: dict | None = None) -> SFTConfig:
    try:
        user = [OmegaConf.create(s) for s in [*sources, overrides or {}]]
        raw = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(_defaults(SFTConfig)), *user), resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"could not read the SFT config: {err}") from err
    errors, ignored, values = [], {}, {}
    for key, value in raw.items():
        if key in ENGINE_KEYS:
            ignored[key] = value
        elif key not in _KEYS:
            errors.append(f"{key}: unknown key{_suggest(key)}")
        elif key == "mesh":
            if not isinstance(value, dict):
                errors.append(f"mesh={value!r}: is a section; give a mapping of data, fsdp, tensor")
                continue
            unknown = [k for k in value if k not in MeshConfig.AXES]
            errors += [f"mesh.{k}: unknown key; valid keys under mesh: {', '.join(MeshConfig.AXES)}" for k in unknown]
            values[key] = MeshConfig(**{k: v for k, v in value.items() if k in MeshConfig.AXES})
        else:
            values[key] = value
    if errors:
        raise ConfigError("SFT config keys not accepted:\n  " + "\n  ".join(errors))
    if ignored:
        listed = ", ".join(f"{k}={v!r}" for k, v in ignored.items())
        warnings.warn(f"ignoring {len(ignored)} LLaMA-Factory engine keys: {listed}", IgnoredKeysWarning, stacklevel=3)
    return SFTConfig(**values)


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, [*_KEYS, *ENGINE_KEYS], n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else f"; valid keys: {', '.join(_KEYS)}"
