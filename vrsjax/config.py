"""Configuration: one frozen, self-validating dataclass per section, loaded from YAML with dotted overrides.

Section and key names, nesting and (with the deviations noted on the fields) defaults follow EasyR1@2a0f95d plus
Veason-R1's `data.*` additions, the schema that Seg-Zero and Veason-R1 fork, so their recipes load unchanged:
`load_config("x.yaml", ["worker.rollout.n=8"])` merges dataclass defaults <- YAML <- overrides with OmegaConf
(interpolations resolve), then converts and validates here so that every error names its dotted key. Keys that
only configure EasyR1's engines (vLLM, FSDP/torch, Ray) or its critic are accepted, reported in one
`IgnoredKeysWarning` and dropped (`ENGINE_KEYS`); a few EasyR1 HEAD renames are read as aliases (`ALIASES`). The
string 'None' (what OmegaConf makes of `key=None`) means null: None for optional keys, "" for plain strings such
as `data.val_files`, an error elsewhere. `mesh` (`data`, `fsdp`, `tensor`; -1 = the rest) is vrsjax's own section.
This module must stay importable without jax.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vrsjax.errors import UserError


class ConfigError(UserError, ValueError):
    """A key is unknown, has the wrong type or an invalid value; the message names the dotted key."""


class IgnoredKeysWarning(UserWarning):
    """EasyR1 keys that configure engines vrsjax replaces; they were accepted and have no effect."""


KL_PENALTIES = ("kl", "k1", "abs", "k2", "mse", "low_var_kl", "k3")
# A trailing "+" keeps the estimator's value with k2's gradient (straight-through), as in verl.
KL_PENALTY_NAMES = KL_PENALTIES + tuple(name + "+" for name in KL_PENALTIES)
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
# Critic-free estimators only: EasyR1's "gae" needs a value model and Veason-R1's "grpo_certainty" is unpublished.
ADV_ESTIMATORS = ("grpo", "rloo")  # vrsjax.rl.grpo's registry
GROUP_ESTIMATORS = ("grpo", "rloo")  # baselines computed within a prompt's group of n responses
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
DTYPES |= {"float16": "float16", "fp16": "float16"}
LOGGERS = ("console", "wandb", "mlflow", "swanlab", "tensorboard")
SAM2_MODES = ("images", "video")
WARMUP_STYLES = ("constant", "cosine")


def _keys(prefix: str, names: str) -> list[str]:
    return [prefix + name for name in names.split()]


# EasyR1 keys that only configure engines vrsjax replaces: vLLM (rollout is a jitted decode), FSDP/torch/HF
# (sharding and dtypes come from `mesh` and `worker.actor.fsdp.*_dtype`), Ray (processes come from
# jax.distributed), the critic (GRPO has none), and keys EasyR1 declares but never reads. They are accepted so
# recipes load unchanged, listed in one warning, and dropped. A key naming a section covers all below it.
ENGINE_KEYS = frozenset(
    # vLLM: the rollout is a jitted prefill + decode with its own KV cache
    _keys(
        "worker.rollout.",
        "name gpu_memory_utilization enforce_eager free_cache_engine enable_chunked_prefill tensor_parallel_size "
        "max_num_batched_tokens max_num_seqs disable_log_stats do_sample limit_images max_model_len disable_tqdm "
        "trust_remote_code val_override_config",
    )
    # FSDP / torch / HF: sharding comes from mesh.*, dtypes from worker.actor.fsdp.*_dtype
    + _keys(
        "worker.actor.",
        "strategy padding_free ulysses_sequence_parallel_size ulysses_size dynamic_batching use_torch_compile "
        "global_batch_size_per_device offload model.trust_remote_code fsdp.enable_full_shard fsdp.param_offload "
        "fsdp.optimizer_offload fsdp.mp_buffer_dtype fsdp.enable_cpu_offload fsdp.enable_rank0_init "
        "fsdp.use_orig_params fsdp.fsdp_size",
    )
    + _keys("worker.ref.", "strategy padding_free offload fsdp dynamic_batching ulysses_size use_torch_compile")
    # Ray / cluster (processes come from jax.distributed); the critic (GRPO has none); keys EasyR1 declares but
    # never reads; a CUDA device list; a SAM3 variant whose source is not published
    + _keys(
        "",
        "worker.hybrid_engine worker.reward.num_cpus trainer.nnodes trainer.n_gpus_per_node trainer.ray_timeline "
        "worker.critic trainer.critic_warmup worker.reward.reward_type data.return_raw_input_ids "
        "data.return_raw_prompt data.use_text_prompt data.gpus_to_use data.sam3_mode",
    )
)

# EasyR1 HEAD renames read as the fork's names: HEAD key -> (fork key in the same section, value translation).
ALIASES: dict[str, tuple[str, dict[str, str]]] = {
    "trainer.total_epochs": ("total_episodes", {}),
    "trainer.val_freq": ("test_freq", {}),
    "trainer.val_generations_to_log": ("val_generations_to_log_to_wandb", {}),
    "worker.actor.optim.lr_warmup_ratio": ("lr_warmup_steps_ratio", {}),
    "worker.actor.optim.lr_scheduler_type": ("warmup_style", {}),
    "worker.actor.loss_avg_mode": ("loss_agg_mode", {"token": "token-mean", "seq": "seq-mean-token-mean"}),
}
# HEAD keys whose meaning moved or changed; not aliased, but the unknown-key error points at the fork's key.
MOVED = {
    "algorithm.use_kl_loss": "worker.actor.use_kl_loss",
    "algorithm.disable_kl": "worker.actor.use_kl_loss and algorithm.kl_coef",
    "worker.reward.reward_function": "worker.reward.compute_score (a reward name registered in vrsjax.rewards)",
    "data.format_prompt": "data.system_prompt",
}


class _Section:
    """Shared __post_init__: coerce field types, derive auto keys, then collect every failed check and raise."""

    _PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        errors = _coerce_fields(self)
        if not errors:
            self._derive()
            errors = [f"{self._PREFIX}{key}={get(self, key)!r}: {need}" for key, need in self._check()]
        if errors:
            raise ConfigError(errors[0] if len(errors) == 1 else "invalid config:\n  " + "\n  ".join(errors))

    def _derive(self) -> None:
        """Fill auto keys (EasyR1's post_init copies); frozen, so through object.__setattr__."""

    def _check(self) -> Iterator[tuple[str, str]]:
        """Yield (key relative to this section, what is wrong and what to do) for each failed check."""
        return iter(())


@dataclass(frozen=True)
class DataConfig(_Section):
    """Training and validation data, prompt rendering and the frames each prompt shows."""

    _PREFIX: ClassVar[str] = "data."
    name: str = ""  # dataset format (Veason-R1 dispatch names such as video_seg_keyframe_sft_base_mod)
    train_files: str = ""  # training data: a dataset directory in any format `vrsjax data inspect` detects
    other_train_files: str = ""  # Veason-R1: further training sources mixed with train_files
    val_files: str = ""  # validation data; "" = none
    prompt_key: str = "prompt"  # EasyR1: the dataset column holding the prompt text
    max_prompt_length: int = 512  # prompt tokens, vision tokens included; sets worker.rollout.prompt_length
    max_response_length: int = 512  # tokens generated per response; sets worker.rollout.response_length
    rollout_batch_size: int = 512  # prompts per step; each yields worker.rollout.n responses
    system_prompt: str = "You are a helpful assistant."  # system message (Seg-Zero's; EasyR1's asks for \boxed{})
    system_prompt_path: str | None = None  # a text file whose contents replace data.system_prompt
    shuffle: bool = True  # reshuffle the training prompts every epoch
    seed: int = 1  # seed of the shuffling and of each sample's frame choice
    max_pixels: int = 4194304  # most pixels per image after the Qwen2.5-VL resize (smart_resize)
    min_pixels: int = 262144  # fewest pixels per image after the Qwen2.5-VL resize
    keyframe_resize: int = 840  # Veason-R1: side in pixels of the square frames shown to the policy
    reference_image_resize: int = 840  # Veason-R1: side in pixels of the reference image
    sam2_mode: str = "video"  # SAM2 in the reward: "images" (per frame) or "video" (propagation)
    sampled_frames: int = 6  # Veason-R1: frames sampled per video for the prompt
    skip_bad_samples: bool = False  # vrsjax: drop bad dataset samples (counted, reported) instead of raising

    def _check(self) -> Iterator[tuple[str, str]]:
        yield from _positive(self, "max_prompt_length", "max_response_length", "rollout_batch_size", "min_pixels")
        yield from _positive(self, "keyframe_resize", "reference_image_resize", "sampled_frames")
        if self.max_pixels < self.min_pixels:
            yield "max_pixels", f"must be >= data.min_pixels={self.min_pixels}"
        yield from _one_of(self, "sam2_mode", SAM2_MODES)


@dataclass(frozen=True)
class AlgorithmConfig(_Section):
    """Advantage estimation and the in-reward KL penalty (EasyR1's algorithm section)."""

    _PREFIX: ClassVar[str] = "algorithm."
    gamma: float = 1.0  # discount of the return (GAE / REINFORCE++); 1 = none
    lam: float = 1.0  # GAE lambda (EasyR1 schema; GRPO does not use it)
    # advantage estimator: grpo or rloo (EasyR1's reinforce_plus_plus and remax are not implemented)
    adv_estimator: str = "grpo"  # EasyR1@2a0f95d defaults to "gae", which needs the critic vrsjax does not have
    kl_penalty: str = "kl"  # estimator for the in-reward KL, used only when worker.actor.use_kl_loss is false
    kl_type: str = "fixed"  # in-reward KL coefficient: fixed or adaptive (a controller toward kl_target)
    kl_coef: float = 1e-3  # coefficient of the in-reward KL penalty (worker.actor.use_kl_loss=false)
    kl_horizon: float = 0.0  # steps over which the adaptive KL controller adjusts kl_coef
    kl_target: float = 0.0  # KL the adaptive controller steers toward
    norm_adv_by_std_in_grpo: bool = True  # verl's name; false is Dr.GRPO (A = s - mean)
    # EasyR1 HEAD (DAPO dynamic sampling): keep only groups whose mean `filter_key` score is in (low, high),
    # sampling more prompts until data.rollout_batch_size groups are kept (trainer.max_try_make_batch tries)
    online_filtering: bool = False
    filter_key: str = "overall"  # "overall" = the total score, else a reward component (format, keyframe, ...)
    filter_low: float = 0.01  # online filtering keeps groups whose mean score is above this
    filter_high: float = 0.99  # online filtering keeps groups whose mean score is below this

    def _check(self) -> Iterator[tuple[str, str]]:
        if self.adv_estimator == "gae":
            yield "adv_estimator", "gae needs a critic (value model), which vrsjax does not implement; use grpo"
        elif self.adv_estimator in ("reinforce_plus_plus", "remax"):
            yield "adv_estimator", f"{self.adv_estimator} is not implemented in vrsjax; use grpo or rloo"
        else:
            yield from _one_of(self, "adv_estimator", ADV_ESTIMATORS)
        yield from _one_of(self, "kl_penalty", KL_PENALTY_NAMES)
        yield from _one_of(self, "kl_type", ("fixed", "adaptive"))
        if self.kl_type == "adaptive" and self.kl_horizon <= 0:
            yield "kl_horizon", "must be > 0 with algorithm.kl_type=adaptive (the controller divides by it)"
        yield from _in_range(self, "kl_coef", 0.0, math.inf)
        yield from _in_range(self, "gamma", 0.0, 1.0)
        yield from _in_range(self, "lam", 0.0, 1.0)
        if self.online_filtering and self.filter_low >= self.filter_high:
            yield "filter_low", f"must be < algorithm.filter_high={self.filter_high} (groups are kept in (low, high))"


@dataclass(frozen=True)
class ModelConfig(_Section):
    """The policy checkpoint to start from."""

    _PREFIX: ClassVar[str] = "worker.actor.model."
    model_path: str | None = None  # HF-format Qwen2.5-VL directory
    tokenizer_path: str | None = None  # defaults to model_path
    override_config: dict[str, Any] = field(default_factory=dict)  # merged into the HF config.json
    enable_gradient_checkpointing: bool = True  # remat in the training forward pass
    freeze_vision_tower: bool = False  # train the language model only (EasyR1 HEAD key)

    def _derive(self) -> None:
        if self.tokenizer_path is None:
            object.__setattr__(self, "tokenizer_path", self.model_path)


@dataclass(frozen=True)
class OptimConfig(_Section):
    """AdamW and the learning-rate schedule of the policy update."""

    _PREFIX: ClassVar[str] = "worker.actor.optim."
    lr: float = 1e-6  # AdamW learning rate (Veason-R1: 1e-6)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW (beta1, beta2)
    weight_decay: float = 1e-2  # AdamW decoupled weight decay
    lr_warmup_steps_ratio: float = 0.0  # warmup steps = int(ratio * training_steps)
    min_lr_ratio: float | None = None  # floor of the cosine schedule, as a fraction of lr
    warmup_style: str = "constant"  # constant|cosine: the schedule after warmup
    training_steps: int = -1  # auto: the trainer sets it (trainer.max_steps or steps per episode * episodes)

    def _check(self) -> Iterator[tuple[str, str]]:
        if self.lr <= 0:
            yield "lr", "must be > 0 (Veason-R1 uses 1e-6)"
        yield from _in_range(self, "weight_decay", 0.0, math.inf)
        if not all(0.0 <= beta < 1.0 for beta in self.betas):
            yield "betas", "both must be in [0, 1), e.g. [0.9, 0.999]"
        yield from _in_range(self, "lr_warmup_steps_ratio", 0.0, 1.0)
        if self.min_lr_ratio is not None:
            yield from _in_range(self, "min_lr_ratio", 0.0, 1.0)
        yield from _one_of(self, "warmup_style", WARMUP_STYLES)
        if self.training_steps != -1 and self.training_steps < 1:
            yield "training_steps", "must be -1 (set by the trainer) or a positive integer"


@dataclass(frozen=True)
class FSDPConfig(_Section):
    """The dtype keys of EasyR1's FSDP section, which mean the same here; its sharding keys are ENGINE_KEYS."""

    _PREFIX: ClassVar[str] = "worker.actor.fsdp."
    torch_dtype: str | None = None  # parameter dtype; None = float32 for the actor, bfloat16 for the reference
    mp_param_dtype: str = "bfloat16"  # compute dtype of the training forward and backward passes
    mp_reduce_dtype: str = "float32"  # dtype of gradient reductions and accumulation

    def param_dtype(self, role: str = "actor") -> str:
        """Parameter dtype of the actor or the frozen reference model (EasyR1's rule for torch_dtype=None)."""
        return self.torch_dtype or ("float32" if role == "actor" else "bfloat16")

    def _derive(self) -> None:
        for key in ("torch_dtype", "mp_param_dtype", "mp_reduce_dtype"):
            object.__setattr__(self, key, DTYPES.get(getattr(self, key), getattr(self, key)))

    def _check(self) -> Iterator[tuple[str, str]]:
        if self.torch_dtype is not None:
            yield from _one_of(self, "torch_dtype", tuple(DTYPES))
        yield from _one_of(self, "mp_param_dtype", tuple(DTYPES))
        yield from _one_of(self, "mp_reduce_dtype", tuple(DTYPES))


@dataclass(frozen=True)
class ActorConfig(_Section):
    """The policy update: batch sizes, PPO clipping, the loss, KL to the reference, LoRA."""

    _PREFIX: ClassVar[str] = "worker.actor."
    global_batch_size: int = 256  # prompts per optimizer step (x rollout.n responses)
    # EasyR1@2a0f95d has -1 here (unusable unless set); these are EasyR1 HEAD's defaults.
    micro_batch_size_per_device_for_update: int = 4  # responses per device per gradient micro-batch
    micro_batch_size_per_device_for_experience: int = 16  # responses per device per log-prob (old/ref) forward pass
    max_grad_norm: float = 1.0  # gradients are clipped to this global norm
    clip_ratio: float = 0.2  # PPO clip range epsilon: the ratio is clipped to [1 - low, 1 + high]
    clip_ratio_low: float | None = None  # lower clip range (EasyR1 HEAD keys); None = clip_ratio
    clip_ratio_high: float | None = None  # upper clip range (DAPO clip-higher); None = clip_ratio
    clip_ratio_dual: float | None = None  # dual-clip constant c > 1; None = off, as in the Veason fork
    loss_agg_mode: str = "token-mean"  # how token losses average (verl's names, see LOSS_AGG_MODES)
    entropy_coeff: float = 1e-3  # loss -= entropy_coeff * entropy; active by default in the fork
    use_kl_loss: bool = True  # KL to the reference policy as a loss term (GRPO) rather than in the reward
    kl_loss_coef: float = 1e-3  # weight of the KL loss term
    kl_loss_type: str = "low_var_kl"  # KL estimator of the loss term: k1|abs|k2|mse|low_var_kl|k3, '+' = k2 gradient
    ppo_epochs: int = 1  # passes over each step's rollouts
    # verl's key: the rollout's log-probs are the old log-probs (no recompute pass); they were sampled at
    # worker.rollout.dtype, so in bfloat16 the ratio starts slightly off 1
    use_rollout_log_probs: bool = False
    # vrsjax: run each group's prompt once in the training passes (same numbers, most prompt FLOPs saved)
    shared_prompt: bool = True
    # vrsjax: LoRA training (LLaMA-Factory's names); 0 = full fine-tuning. The reference is the base model.
    lora_rank: int = 0
    lora_alpha: float = 16.0  # LoRA scale numerator: the update is (alpha / rank) B A
    lora_target: str = "all"  # comma-separated module names (q_proj,v_proj,...) or all
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)

    @property
    def clip_low(self) -> float:
        return self.clip_ratio if self.clip_ratio_low is None else self.clip_ratio_low

    @property
    def clip_high(self) -> float:
        return self.clip_ratio if self.clip_ratio_high is None else self.clip_ratio_high

    def _check(self) -> Iterator[tuple[str, str]]:
        yield from _positive(self, "global_batch_size", "micro_batch_size_per_device_for_update", "ppo_epochs")
        yield from _positive(self, "micro_batch_size_per_device_for_experience")
        if self.max_grad_norm <= 0:
            yield "max_grad_norm", "must be > 0 (gradients are always clipped; 1.0 is the recipes' value)"
        for key in ("clip_ratio", "clip_ratio_low"):
            if getattr(self, key) is not None:
                yield from _in_range(self, key, 0.0, 1.0, hi_open=True)
        if self.clip_ratio_high is not None:
            yield from _in_range(self, "clip_ratio_high", 0.0, math.inf)
        if self.clip_ratio_dual is not None and self.clip_ratio_dual <= 1:
            yield "clip_ratio_dual", "must be > 1 (verl uses 3.0) or null to turn dual clipping off"
        yield from _one_of(self, "loss_agg_mode", LOSS_AGG_MODES)
        yield from _one_of(self, "kl_loss_type", KL_PENALTY_NAMES)
        yield from _in_range(self, "kl_loss_coef", 0.0, math.inf)


@dataclass(frozen=True)
class RefConfig(_Section):
    """The frozen reference policy; it shares worker.actor.model and .fsdp, as in EasyR1."""

    _PREFIX: ClassVar[str] = "worker.ref."
    micro_batch_size_per_device_for_experience: int = -1  # auto: copied from worker.actor


@dataclass(frozen=True)
class RewardConfig(_Section):
    """The reward function and the segmentation services its consistency term calls."""

    _PREFIX: ClassVar[str] = "worker.reward."
    compute_score: str = "video_match_keyframe_sft_sam_mod"  # a name in vrsjax.rewards (EasyR1's default: math)
    reward_function_kwargs: dict[str, Any] = field(default_factory=dict)  # EasyR1 HEAD key: constants for the reward
    # vrsjax: SAM2 for the consistency term; null = no SAM2 (the term is 0, as Veason's no-SAM2 ablation)
    sam2_config: str | None = None  # hiera_t|hiera_s|hiera_b+|hiera_l or a sam2 config path
    sam2_checkpoint: str | None = None  # official .pt; null = random weights (tests, demos)
    sam2_device: str = "auto"  # cpu|cuda|auto
    sam2_image_size: int | None = None  # override the model's input size (small for CPU demos)
    propagator: str = "sam2"  # sam2: SAM2 video propagation; xmem: SAM2 keyframe masks, then XMem both ways
    xmem_checkpoint: str | None = None  # official XMem.pth; null = random weights (tests, demos)

    def _check(self) -> Iterator[tuple[str, str]]:
        if self.propagator not in ("sam2", "xmem"):
            yield "propagator", f"must be sam2 or xmem, got {self.propagator!r}"
        if not self.compute_score:
            yield "compute_score", "must name a reward function, e.g. video_match_keyframe_sft_sam_mod"


@dataclass(frozen=True)
class RolloutConfig(_Section):
    """Sampling of the n responses per prompt."""

    _PREFIX: ClassVar[str] = "worker.rollout."
    temperature: float = 1.0  # sampling temperature; 0 = greedy
    top_k: int = -1  # sample from the k likeliest tokens; -1 or 0 = off
    top_p: float = 1.0  # nucleus sampling mass; 1 = off
    dtype: str = "bfloat16"  # dtype of the rollout's forward passes and KV cache
    ignore_eos: bool = False  # keep generating past the end-of-sequence token
    n: int = 8  # responses per prompt (the GRPO group); EasyR1's default 1 cannot train GRPO
    seed: int = 1  # EasyR1 HEAD key: base of the sampling PRNG keys
    prompt_length: int = -1  # auto: data.max_prompt_length
    response_length: int = -1  # auto: data.max_response_length

    def _check(self) -> Iterator[tuple[str, str]]:
        yield from _in_range(self, "temperature", 0.0, math.inf)
        if not 0.0 < self.top_p <= 1.0:
            yield "top_p", "must be in (0, 1]; 1 turns nucleus sampling off"
        if self.top_k < -1:
            yield "top_k", "must be -1 or 0 (off) or a positive integer"
        yield from _positive(self, "n")
        yield from _one_of(self, "dtype", tuple(DTYPES))

    def _derive(self) -> None:
        object.__setattr__(self, "dtype", DTYPES.get(self.dtype, self.dtype))


@dataclass(frozen=True)
class WorkerConfig(_Section):
    _PREFIX: ClassVar[str] = "worker."
    actor: ActorConfig = field(default_factory=ActorConfig)
    ref: RefConfig = field(default_factory=RefConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def _derive(self) -> None:
        micro = self.actor.micro_batch_size_per_device_for_experience
        object.__setattr__(self, "ref", dataclasses.replace(self.ref, micro_batch_size_per_device_for_experience=micro))


@dataclass(frozen=True)
class TrainerConfig(_Section):
    """Run length, logging, validation and checkpoints."""

    _PREFIX: ClassVar[str] = "trainer."
    total_episodes: int = 10  # passes over the training set (HEAD: total_epochs)
    max_steps: int | None = None  # stop after this many steps; overrides total_episodes
    project_name: str = "easy_r1"  # names the run (loggers) and its checkpoint directory
    experiment_name: str = "demo"  # names the run within the project
    logger: tuple[str, ...] = ("console", "wandb")  # metric backends: console, wandb, mlflow, swanlab, tensorboard
    val_generations_to_log_to_wandb: int = 0  # validation responses logged per validation
    save_freq: int = -1  # steps between checkpoints; -1 = only at the end
    load_checkpoint_path: str | None = None  # a run's checkpoints to resume from (its save_checkpoint_path)
    find_last_checkpoint: bool = True  # EasyR1 HEAD key: resume from the newest checkpoint in save_checkpoint_path
    val_before_train: bool = True  # validate once before the first step
    val_only: bool = False  # validate and stop
    test_freq: int = -1  # steps between validations; -1 = never
    remove_previous_ckpt: bool = False  # keep only the newest checkpoint (= save_limit 1)
    save_limit: int = -1  # EasyR1 HEAD key: keep the newest N checkpoints; -1 = all
    max_try_make_batch: int = 20  # EasyR1 HEAD key: rollouts per step with online filtering; -1 = no limit
    del_local_ckpt_after_load: bool = False  # delete the local checkpoint once it is loaded
    save_checkpoint_path: str | None = None  # checkpoint dir; default checkpoints/<project_name>/<experiment_name>

    def _derive(self) -> None:
        if self.save_checkpoint_path is None:
            path = os.path.join("checkpoints", self.project_name, self.experiment_name)
            object.__setattr__(self, "save_checkpoint_path", path)

    def _check(self) -> Iterator[tuple[str, str]]:
        yield from _positive(self, "total_episodes")
        if self.max_steps is not None:
            yield from _positive(self, "max_steps")
        if self.save_limit != -1 and self.save_limit < 1:
            yield "save_limit", "must be -1 (keep all) or a positive number of checkpoints"
        if self.max_try_make_batch == 0 or self.max_try_make_batch < -1:
            yield "max_try_make_batch", "must be -1 (no limit) or a positive number of rollouts"
        for key in ("save_freq", "test_freq"):
            if getattr(self, key) != -1 and getattr(self, key) < 1:
                yield key, "must be -1 (off) or a positive number of steps"
        for backend in self.logger:
            if backend not in LOGGERS:
                yield "logger", f"unknown backend {backend!r}; choose from {', '.join(LOGGERS)}"
        yield from _in_range(self, "val_generations_to_log_to_wandb", 0, math.inf)
        for key in ("project_name", "experiment_name"):
            if not getattr(self, key):
                yield key, "must not be empty (it names the run and its checkpoint directory)"


@dataclass(frozen=True)
class MeshConfig(_Section):
    """Device mesh for everything that jits: axis sizes, -1 = the devices left over (at most one axis)."""

    _PREFIX: ClassVar[str] = "mesh."
    AXES: ClassVar[tuple[str, ...]] = ("data", "fsdp", "tensor")
    data: int = 1  # data-parallel axis: replicas that each hold the whole model
    fsdp: int = -1  # fully sharded data-parallel axis: parameters and optimizer state sharded over it
    tensor: int = 1  # tensor-parallel axis: heads and MLP widths split over it

    def resolve(self, num_devices: int) -> dict[str, int]:
        """Axis name -> size for `num_devices` devices, -1 filled in; raises ConfigError when they do not fit."""
        sizes = {axis: getattr(self, axis) for axis in self.AXES}
        fixed = math.prod(size for size in sizes.values() if size != -1)
        free = [axis for axis, size in sizes.items() if size == -1]
        shown = " ".join(f"mesh.{axis}={size}" for axis, size in sizes.items())
        if num_devices < 1 or (num_devices % fixed if free else fixed != num_devices):
            raise ConfigError(
                f"{shown} does not fit {num_devices} devices: the sized axes multiply to {fixed}; make that product "
                "equal the device count, or divide it with one axis at -1 (e.g. mesh.fsdp=-1)"
            )
        return {axis: num_devices // fixed if size == -1 else size for axis, size in sizes.items()}

    def _check(self) -> Iterator[tuple[str, str]]:
        free = [axis for axis in self.AXES if getattr(self, axis) == -1]
        for axis in self.AXES:
            if getattr(self, axis) != -1 and getattr(self, axis) < 1:
                yield axis, "must be a positive axis size or -1 (= the devices left over)"
        for axis in free[1:]:
            yield axis, f"only one axis may be -1 (mesh.{free[0]} already is); give this one a size"


@dataclass(frozen=True)
class Config(_Section):
    data: DataConfig = field(default_factory=DataConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)

    def _derive(self) -> None:
        # EasyR1's PPOConfig.post_init: the rollout lengths always follow data.*, whatever the file says.
        rollout = dataclasses.replace(
            self.worker.rollout,
            prompt_length=self.data.max_prompt_length,
            response_length=self.data.max_response_length,
        )
        object.__setattr__(self, "worker", dataclasses.replace(self.worker, rollout=rollout))

    def _check(self) -> Iterator[tuple[str, str]]:
        actor, n, prompts = self.worker.actor, self.worker.rollout.n, self.data.rollout_batch_size
        if self.algorithm.adv_estimator in GROUP_ESTIMATORS and n < 2:
            yield "worker.rollout.n", f"{self.algorithm.adv_estimator} compares responses within a group: set >= 2"
        if prompts % actor.global_batch_size:
            yield "worker.actor.global_batch_size", f"must divide data.rollout_batch_size={prompts}"
        if prompts * n % actor.micro_batch_size_per_device_for_experience:
            yield (
                "worker.actor.micro_batch_size_per_device_for_experience",
                f"must divide data.rollout_batch_size * worker.rollout.n = {prompts * n}",
            )
        if actor.global_batch_size * n % actor.micro_batch_size_per_device_for_update:
            yield (
                "worker.actor.micro_batch_size_per_device_for_update",
                f"must divide worker.actor.global_batch_size * worker.rollout.n = {actor.global_batch_size * n}",
            )


def batch_per_device(cfg: Config, data_parallel_size: int) -> int:
    """Responses per device per optimizer step (EasyR1's global_batch_size_per_device), checked against micro."""
    actor = cfg.worker.actor
    total = actor.global_batch_size * cfg.worker.rollout.n
    if total % data_parallel_size:
        raise ConfigError(
            f"worker.actor.global_batch_size * worker.rollout.n = {total} responses do not split over "
            f"{data_parallel_size} data-parallel devices; change the batch size or mesh.data / mesh.fsdp"
        )
    per_device = total // data_parallel_size
    if per_device % actor.micro_batch_size_per_device_for_update:
        raise ConfigError(
            f"worker.actor.micro_batch_size_per_device_for_update={actor.micro_batch_size_per_device_for_update}"
            f" must divide the {per_device} responses each of {data_parallel_size} devices updates on"
        )
    return per_device


def get(cfg: Any, key: str) -> Any:
    """The value at a dotted key, e.g. get(cfg, "worker.rollout.n"); "" returns cfg itself."""
    try:
        return functools.reduce(getattr, [part for part in key.split(".") if part], cfg)
    except AttributeError:
        raise KeyError(f"{key}: no such config key{_suggest(key)}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists for tuples), in field order: what `to_yaml` writes and `from_dict` reads."""
    return _plain(cfg)


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML, for checkpoints; `load_config` of it gives an equal Config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults <- YAML at `path` <- dotted `overrides` ("a.b=c"; a "config=PATH" item among them sets the file)."""
    overrides = list(overrides)
    path = _pop_config_path(path, overrides)
    sources = [] if path is None else [_read_yaml(path)]
    return _from_sources([*sources, _parse_overrides(overrides)])


def from_dict(values: Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """Like `load_config` for an in-memory nested mapping (e.g. `to_dict` output restored from a checkpoint)."""
    return _from_sources([_plain(values), _parse_overrides(list(overrides))])


# ----- loading -----


def _from_sources(sources: list[dict[str, Any]]) -> Config:
    """Merge defaults <- sources with OmegaConf, sort keys into fields / engine keys / errors, then construct."""
    try:
        user = [OmegaConf.create(_apply_aliases(source, "")) for source in sources]
        raw = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(_defaults(Config)), *user), resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"could not read the config: {err}") from err
    ignored: dict[str, Any] = {}
    errors: list[str] = []
    tree = _sort_keys(Config, raw, "", ignored, errors)
    if errors:
        raise ConfigError("config keys not accepted:\n  " + "\n  ".join(errors))
    if ignored:
        listed = ", ".join(f"{key}={value!r}" for key, value in ignored.items())
        message = f"ignoring {len(ignored)} EasyR1 engine keys (vLLM, FSDP/torch, Ray, critic) that mean nothing "
        warnings.warn(
            message + f"in vrsjax (parallelism comes from mesh.*): {listed}", IgnoredKeysWarning, stacklevel=3
        )
    return _construct(Config, tree)


def _pop_config_path(path: str | os.PathLike | None, overrides: list[str]) -> str | os.PathLike | None:
    given = [item for item in overrides if item.startswith("config=")]
    for item in given:
        overrides.remove(item)
    if len(given) > 1 or (given and path is not None):
        raise ConfigError(f"the config file is given more than once ({path=}, {given}); give one")
    return given[0].partition("=")[2] if given else path


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError(f"config file {os.fspath(path)!r} not found")
    try:
        loaded = OmegaConf.load(path)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(f"{os.fspath(path)}: not valid YAML: {err}") from err
    if not OmegaConf.is_dict(loaded):
        raise ConfigError(f"{os.fspath(path)}: the top level must be a mapping of sections (data:, worker:, ...)")
    return OmegaConf.to_container(loaded, resolve=False)


def _parse_overrides(overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not key=value, e.g. worker.rollout.n=8")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(overrides), resolve=False)
    except OmegaConfBaseException as err:
        raise ConfigError(f"could not parse the overrides {overrides}: {err}") from err


def _apply_aliases(node: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Rename EasyR1 HEAD keys to the fork's, per source, so that a HEAD key overrides a default or file key."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            value = _apply_aliases(value, dotted + ".")
        if dotted in ALIASES:
            key, translate = ALIASES[dotted]
            value = translate.get(value, value) if isinstance(value, str) else value
            if key in node and node[key] != value:
                raise ConfigError(f"{dotted}={value!r} (EasyR1 HEAD name) conflicts with {prefix}{key}={node[key]!r}")
        out[key] = value
    return out


def _sort_keys(cls: type, raw: dict[str, Any], prefix: str, ignored: dict[str, Any], errors: list[str]) -> dict:
    """Field values of `cls` from `raw` (sections as nested dicts); engine keys go to `ignored`, others to errors."""
    types_ = _field_types(cls)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        tp = types_.get(key)
        if dotted in ENGINE_KEYS:
            _flatten(value, dotted, ignored)
        elif tp is None:
            errors.append(f"{dotted}: unknown key{_suggest(dotted)}")
        elif not _is_section(tp):
            out[key] = value
        elif isinstance(value, dict):
            out[key] = _sort_keys(tp, value, dotted + ".", ignored, errors)
        else:
            errors.append(f"{dotted}={value!r}: is a section; give a mapping of its keys")
    return out


def _construct(cls: type, tree: dict[str, Any]) -> Any:
    types_ = _field_types(cls)
    return cls(**{key: _construct(types_[key], v) if _is_section(types_[key]) else v for key, v in tree.items()})


def _flatten(value: Any, dotted: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, sub in value.items():
            _flatten(sub, f"{dotted}.{key}", out)
    else:
        out[dotted] = value


def _suggest(dotted: str) -> str:
    """'; did you mean X?' from the same section, else from a same-named key elsewhere; else the valid keys."""
    if dotted in MOVED:
        return f" (an EasyR1 HEAD key); in this schema use {MOVED[dotted]}"
    parent, _, leaf = dotted.rpartition(".")
    siblings = sorted({key.rpartition(".")[2] for key in _all_keys() if key.rpartition(".")[0] == parent})
    close = [f"{parent}.{m}" if parent else m for m in difflib.get_close_matches(leaf, siblings, n=1)]
    close = close or [key for key in _all_keys() if key.endswith("." + leaf)][:1]
    close = close or difflib.get_close_matches(dotted, _all_keys(), n=1, cutoff=0.8)
    if close:
        return f"; did you mean {close[0]}?"
    return f"; valid keys under {parent or 'the top level'}: {', '.join(siblings)}" if siblings else ""


@functools.cache
def _all_keys() -> tuple[str, ...]:
    """Every accepted dotted key: sections and fields of Config, engine keys and aliases."""
    return tuple(sorted({*_schema_keys(Config, ""), *ENGINE_KEYS, *ALIASES}))


def _schema_keys(cls: type, prefix: str) -> Iterator[str]:
    for key, tp in _field_types(cls).items():
        yield prefix + key
        if _is_section(tp):
            yield from _schema_keys(tp, f"{prefix}{key}.")


def _defaults(cls: type) -> dict[str, Any]:
    """Declared field defaults, before any derivation, so that auto keys stay unset until the merge is done."""
    out = {}
    for f in dataclasses.fields(cls):
        tp = _field_types(cls)[f.name]
        value = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out[f.name] = _defaults(tp) if _is_section(tp) else _plain(value)
    return out


# ----- types -----

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, _Section)


def _coerce_fields(obj: _Section) -> list[str]:
    errors = []
    for key, tp in _field_types(type(obj)).items():
        value = getattr(obj, key)
        if _is_section(tp):
            if not isinstance(value, tp):
                errors.append(f"{obj._PREFIX}{key}: expected a {tp.__name__}, got {type(value).__name__}")
            continue
        try:
            object.__setattr__(obj, key, _coerce(value, tp))
        except ValueError as err:
            errors.append(f"{obj._PREFIX}{key}={value!r}: {err}")
    return errors


def _coerce(value: Any, tp: Any) -> Any:
    """`value` as type `tp`, converting strings and numbers the way OmegaConf's typed nodes do."""
    origin, args = get_origin(tp), get_args(tp)
    null = value is None or value == "None"  # OmegaConf reads `key=None` as the string 'None'
    if origin in (Union, types.UnionType):
        return None if null else _coerce(value, next(arg for arg in args if arg is not type(None)))
    if null and tp is str:
        return ""  # `data.val_files=None` in the recipes means "no file"
    if null:
        raise ValueError("must not be null")
    if tp is bool:
        return _to_bool(value)
    if tp in (int, float):
        return _to_number(value, tp)
    if tp is str:
        if isinstance(value, (str, int, float)):
            return str(value)
        raise ValueError("expected a string")
    if origin is tuple:
        return _to_tuple(value, args)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError("expected a mapping")
        return dict(value)
    raise TypeError(f"unsupported config field type {tp}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, int)) and str(value).lower() in _TRUE | _FALSE:
        return str(value).lower() in _TRUE
    raise ValueError("expected true or false")


def _to_number(value: Any, tp: type) -> int | float:
    expected = "expected an integer" if tp is int else "expected a number"
    if isinstance(value, bool):  # bool is an int subclass, but `true` as a size is a mistake
        raise ValueError(expected)
    if isinstance(value, str):
        try:
            value = tp(value.strip())
        except ValueError:
            raise ValueError(expected) from None
    if tp is float and isinstance(value, (int, float)) and not math.isnan(value):
        return float(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    raise ValueError(expected)


def _to_tuple(value: Any, args: tuple) -> tuple:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError("expected a list")
    if args[-1] is Ellipsis:
        return tuple(_coerce(item, args[0]) for item in items)
    if len(items) != len(args):
        raise ValueError(f"expected a list of {len(args)} values")
    return tuple(_coerce(item, arg) for item, arg in zip(items, args, strict=True))


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {key: _plain(sub) for key, sub in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(sub) for sub in value]
    return value


# ----- checks -----


def _positive(obj: _Section, *keys: str) -> Iterator[tuple[str, str]]:
    for key in keys:
        if getattr(obj, key) < 1:
            yield key, "must be a positive integer"


def _in_range(obj: _Section, key: str, lo: float, hi: float, hi_open: bool = False) -> Iterator[tuple[str, str]]:
    value = getattr(obj, key)
    if not (lo <= value < hi if hi_open else lo <= value <= hi):
        yield key, f"must be >= {lo}" if hi == math.inf else f"must be in [{lo}, {hi}{')' if hi_open else ']'}"


def _one_of(obj: _Section, key: str, choices: Sequence[str]) -> Iterator[tuple[str, str]]:
    value = getattr(obj, key)
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        yield key, f"must be one of {', '.join(choices)}" + (f"; did you mean {close[0]}?" if close else "")
