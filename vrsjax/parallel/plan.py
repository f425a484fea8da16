"""Memory planner: bytes per device of a GRPO run before launching it (`vrsjax plan config=...`).

Parameters, gradients and optimizer state are exact: the model is built abstractly (no memory), each parameter's
logical axes go through the same rules table as the real placement (`rules.spec`) on an abstract mesh, and the
per-device shard shapes are summed — the test checks this against the real sharded arrays. Everything that lives
inside a jitted step is an estimate, written out below as bytes per token per layer of what the backward pass
keeps: activations with and without per-layer rematerialization, the response logits in float32, the rollout's KV
cache exactly as `vrsjax.rollout.generate` allocates it (the prompt's keys and values once per group, [B, L, K, Dh]
per layer, plus [B, n, T_cap, K, Dh] per response), and SAM2's share when the reward service runs on the same
accelerator. Phases (rollout, log-probs, update, optimizer step) are summed separately; the peak decides the
verdict for a named device, and single changes of the recipe (remat, flash attention, micro-batch, mesh, dtype) are
re-planned to say which knob makes it fit.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from pathlib import Path

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
FLASH = ("cudnn", "splash")  # backends that never materialize the [N, T, S] scores


@dataclasses.dataclass(frozen=True)
class Device:
    name: str
    hbm_gib: float
    platform: str  # "gpu" runs SAM2 beside the policy; on "tpu" torch runs SAM2 on the host CPU


DEVICES = {
    "h100": Device("NVIDIA H100 80GB", 80.0, "gpu"),
    "h200": Device("NVIDIA H200 141GB", 141.0, "gpu"),
    "v5p": Device("TPU v5p (95 GB HBM)", 95.0, "tpu"),
    "v6e": Device("TPU v6e (32 GB HBM)", 32.0, "tpu"),
}

# SAM2.1 parameter counts of the models sam2 1.1.0 builds (counted with random weights; the README's 38.9M .. 224.4M).
SAM2_PARAMS = {"hiera_t": 38_962_498, "hiera_s": 46_060_354, "hiera_b+": 80_850_178, "hiera_l": 224_446_642}
# Per frame at image_size 1024, measured on `SAM2Service.prepare` (distinct storages): the float32 input image
# (12 MiB) and the cached backbone features (FPN 256^2 x 32, 128^2 x 64, 64^2 x 256 and their 256-channel position
# encodings: 100 MiB), the same for every model size; per tracked object and frame, the mask memory (64^2 x 64 and
# its position encoding) and 256^2 mask logits, ~2.3 MiB.
SAM2_FRAME_BYTES = 112 * 2**20
SAM2_OBJECT_FRAME_BYTES = int(2.3 * 2**20)
SAM2_WORKSPACE_GIB = {"hiera_t": 0.5, "hiera_s": 0.5, "hiera_b+": 0.75, "hiera_l": 1.0}

_PRESETS = {
    "3b": dict(hidden=2048, inter=11008, layers=36, heads=16, kv=2, vocab=151936, tied=True),
    "7b": dict(hidden=3584, inter=18944, layers=28, heads=28, kv=4, vocab=152064, tied=False),
}


def preset_config(name: str) -> dict:
    """The HF config.json dict of Qwen2.5-VL-3B / 7B-Instruct (REFERENCE.md section 2)."""
    p = _PRESETS[name.lower()]
    return {
        "model_type": "qwen2_5_vl",
        "tie_word_embeddings": p["tied"],
        "vocab_size": p["vocab"],
        "hidden_size": p["hidden"],
        "intermediate_size": p["inter"],
        "num_hidden_layers": p["layers"],
        "num_attention_heads": p["heads"],
        "num_key_value_heads": p["kv"],
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 128000,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vision_config": {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": p["hidden"],
            "fullatt_block_indexes": [7, 15, 23, 31],
            "window_size": 112,
            "tokens_per_second": 2,
        },
    }


def resolve_model(model: str | None):
    """'3b', '7b' (or a hub id naming one) or an HF directory -> (Qwen2_5_VLConfig, display name)."""
    from vrsjax.models.qwen2_5_vl.config import Qwen2_5_VLConfig

    if not model:
        raise ValueError("no model: set worker.actor.model.model_path to an HF directory, or pass --model 3b|7b")
    if Path(model).is_dir() or Path(model).name == "config.json":
        return Qwen2_5_VLConfig.from_pretrained(model), str(model)
    words = re.split(r"[^0-9a-z]+", Path(model).name.lower())  # "Qwen2.5-VL-3B-Instruct" names 3b, "13b" nothing
    key = next((k for k in _PRESETS if k in words), None)
    if key is None:
        presets = ", ".join(f"{k} (Qwen2.5-VL-{k.upper()})" for k in _PRESETS)
        raise ValueError(
            f"--model {model!r}: not a directory with config.json and not a preset; the presets are {presets}, "
            "or pass a Hugging Face checkpoint directory"
        )
    return Qwen2_5_VLConfig.from_hf_dict(preset_config(key), source=f"preset {key}"), f"Qwen2.5-VL-{key.upper()} preset"


@dataclasses.dataclass(frozen=True)
class PlanInputs:
    """Everything the plan depends on; `inputs_from_config` fills it from a vrsjax Config."""

    model: object  # Qwen2_5_VLConfig
    model_name: str
    mesh: dict  # {"data", "fsdp", "tensor"} -> size
    device: Device
    prompts: int  # data.rollout_batch_size
    n: int  # worker.rollout.n
    prompt_len: int
    response_len: int
    global_batch: int  # prompts per optimizer step
    micro_update: int  # responses per device per backward pass
    micro_experience: int  # responses per device per log-prob pass
    param_dtype: str = "float32"
    compute_dtype: str = "bfloat16"
    kv_dtype: str = "bfloat16"
    use_kl: bool = True
    shared_prompt: bool = True
    remat: bool = True
    freeze_vision: bool = False
    attention: str = "reference"
    vision_tokens: int = 2400
    sam2: str | None = "hiera_l"
    sam2_frames: int = 6
    headroom: float = 0.9  # usable fraction of HBM (runtime reservations, fragmentation, collective buffers)

    @property
    def num_devices(self) -> int:
        return math.prod(self.mesh.values())

    @property
    def dp(self) -> int:
        return self.mesh["data"] * self.mesh["fsdp"]


@dataclasses.dataclass
class Plan:
    inputs: PlanInputs
    components: dict  # name -> bytes per device
    phases: dict  # phase -> bytes per device (SAM2 included)
    notes: list
    knobs: list = dataclasses.field(default_factory=list)

    @property
    def peak(self) -> int:
        return max(self.phases.values())

    @property
    def usable(self) -> int:
        return int(self.inputs.device.hbm_gib * GIB * self.inputs.headroom)

    @property
    def fits(self) -> bool:
        return self.peak <= self.usable

    def to_dict(self) -> dict:
        i = self.inputs
        return {
            "model": i.model_name,
            "device": i.device.name,
            "devices": i.num_devices,
            "mesh": i.mesh,
            "components_gib": {k: v / GIB for k, v in self.components.items()},
            "phases_gib": {k: v / GIB for k, v in self.phases.items()},
            "peak_gib": self.peak / GIB,
            "usable_gib": self.usable / GIB,
            "fits": self.fits,
            "knobs": self.knobs,
            "work_per_device": work_per_device(i),
            "step_efficiency": step_efficiency(i),
            "notes": self.notes,
        }


# ----- exact: parameters and optimizer state -----


def param_bytes_per_device(model_config, mesh_shape: dict, dtype: str) -> tuple[int, int]:
    """(bytes on the most loaded device, total parameter count) for the model's parameters in `dtype` placed by the
    logical-axis rules on a mesh of `mesh_shape`; no memory is allocated."""
    import jax

    from vrsjax.parallel.rules import spec

    mesh = jax.sharding.AbstractMesh(tuple(mesh_shape.values()), tuple(mesh_shape))
    total_bytes, count = 0, 0
    for shape, names in param_table(model_config):
        total_bytes += shard_elements(shape, spec(names, shape, mesh), mesh_shape) * DTYPE_BYTES[dtype]
        count += math.prod(shape)
    return total_bytes, count


@functools.lru_cache(maxsize=8)
def param_table(model_config) -> tuple[tuple[tuple[int, ...], tuple[str, ...]], ...]:
    """(shape, logical axis names) of every parameter, from the model built abstractly (shapes only)."""
    from flax import nnx

    from vrsjax.models.qwen2_5_vl.model import Qwen2_5_VLForConditionalGeneration

    abstract = nnx.eval_shape(lambda: Qwen2_5_VLForConditionalGeneration(model_config, rngs=nnx.Rngs(0)))
    return tuple(
        (tuple(var.shape), tuple(var.get_metadata().get("axes", ())))
        for _, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    )


def shard_elements(shape: tuple, partition, mesh_shape: dict) -> int:
    """Elements of one device's shard: each dimension divided by the mesh axes its PartitionSpec entry names."""
    out = 1
    for i, dim in enumerate(shape):
        entry = partition[i] if i < len(partition) else None
        axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        out *= -(-dim // math.prod(mesh_shape[a] for a in axes))
    return out


# ----- estimates: activations, logits, KV cache, SAM2 -----


def _split(dim: int, ways: int) -> int:
    """A dimension sharded `ways` ways when it divides, else replicated (the rules table's behaviour)."""
    return dim // ways if dim % ways == 0 else dim


def text_layer_bytes(i: PlanInputs, kv_len: int, train: bool = True) -> float:
    """Bytes per token of one decoder layer. Training: what the backward pass keeps (two RMSNorms' float32 inputs
    and outputs, rotated q/k and v, the attention output, the MLP's gate, up, silu(gate) and product, and the
    softmax: float32 probabilities plus their cast copy, or only the log-sum-exp with a flash backend). Inference:
    the largest live set (scores and probabilities in float32, three MLP intermediates)."""
    t, c, tp = i.model.text, DTYPE_BYTES[i.compute_dtype], i.mesh["tensor"]
    d, dh, inter = t.hidden_size, t.head_dim, _split(t.intermediate_size, tp)
    heads, kv = _split(t.num_attention_heads, tp), _split(t.num_key_value_heads, tp)
    flash = i.attention in FLASH
    if not train:
        return (4 * heads if flash else 8 * heads * kv_len) + 3 * c * inter + 4 * d
    probs = 4 * heads if flash else (4 + c) * heads * kv_len
    return 2 * (4 * d + c * d) + c * (heads + 2 * kv) * dh + c * heads * dh + 4 * c * inter + probs


def vision_bytes(i: PlanInputs, prompts: float, train: bool) -> float:
    """Vision tower for `prompts` prompts of `vision_tokens` merged tokens (4 patches each): per patch and block like
    `text_layer_bytes` with 8x8-patch windows, or whole frames in the full-attention blocks; plus the merger."""
    v, c, tp = i.model.vision, DTYPE_BYTES[i.compute_dtype], i.mesh["tensor"]
    if i.vision_tokens == 0 or prompts == 0:
        return 0.0
    patches = 4 * i.vision_tokens * prompts
    window = (v.window_size // v.patch_size) ** 2
    per_frame = 4 * i.vision_tokens / max(i.sam2_frames, 1)
    d, heads, inter = v.hidden_size, _split(v.num_heads, tp), _split(v.intermediate_size, tp)
    flash = i.attention in FLASH

    def block(kv_len):
        if not train:
            return (8 * heads * kv_len) + 3 * c * inter + 4 * d
        probs = 4 * heads if flash else (4 + c) * heads * kv_len
        return 2 * (4 * d + c * d) + 4 * c * _split(d, tp) + 4 * c * inter + probs

    full = len(v.fullatt_block_indexes)
    per_patch = [block(per_frame)] * full + [block(window)] * (v.depth - full)
    if not train:
        return patches * max(per_patch)
    merger = c * (4 * d * 2 + v.out_hidden_size) / 4
    if i.remat:
        return patches * (v.depth * c * d + max(per_patch)) + patches * merger
    return patches * (sum(per_patch) + merger)


def micro_batch_layout(i: PlanInputs, per_device: int) -> tuple[list, int, int]:
    """A micro-batch of `per_device` responses per device as the trainer runs it -> ([(tokens, keys each attends
    to), ...], prompts, responses) on one device. With the shared prompt (whole groups in the micro-batch) a group's
    prompt runs once per device that holds its responses and they attend to it: G groups over D = data x fsdp
    shards are G * k prompt rows of n / k responses each (k = `group_copies`), split evenly over the shards."""
    p, r = i.prompt_len, i.response_len
    rows = per_device * i.dp
    if i.shared_prompt and rows % i.n == 0:
        prompts, per_prompt = split_groups(rows // i.n, i.n, i.dp)
        return [(prompts * p, p), (prompts * per_prompt * r, p + r)], prompts, prompts * per_prompt
    return [(per_device * (p + r), p + r)], per_device, per_device


def split_groups(groups: int, n: int, ways: int) -> tuple[int, int]:
    """`groups` groups of `n` responses on `ways` batch shards, as the trainer and rollout place them -> (prompt
    rows, responses per prompt row) on one device: each prompt repeated on k = `group_copies` rows of n / k
    responses, the rows split over the shards (whole on every shard only if they cannot split)."""
    from vrsjax.parallel.data import group_copies

    k = group_copies(groups, n, ways)
    return _per_device(groups * k, ways), n // k


def update_activation_bytes(i: PlanInputs, remat: bool) -> float:
    """Activations of one backward pass on `micro_update` responses per device, with the float32 logits."""
    t, c = i.model.text, DTYPE_BYTES[i.compute_dtype]
    segments, prompts, responses = micro_batch_layout(i, i.micro_update)
    layers = t.num_hidden_layers
    if remat:  # layer inputs kept, one layer recomputed at a time
        saved = sum(tokens * layers * c * t.hidden_size for tokens, _ in segments)
        text = saved + sum(tokens * text_layer_bytes(i, kv) for tokens, kv in segments)
    else:
        text = sum(tokens * layers * text_layer_bytes(i, kv) for tokens, kv in segments)
    vision = 0.0 if i.freeze_vision else vision_bytes(dataclasses.replace(i, remat=remat), prompts, train=True)
    return text + vision + logits_bytes(i, responses, copies=3)


def logits_bytes(i: PlanInputs, responses: int, copies: int) -> float:
    """float32 [responses, T, V] response logits (vocab over `tensor`): the logits, their log-softmax/softmax and,
    in the update, their gradient."""
    return copies * 4 * responses * i.response_len * _split(i.model.text.vocab_size, i.mesh["tensor"])


def experience_bytes(i: PlanInputs) -> float:
    """A log-prob pass (old or reference) on `micro_experience` responses per device: forward only, one layer live
    beside the residual stream, and the logits."""
    segments, prompts, responses = micro_batch_layout(i, i.micro_experience)
    hidden = sum(tokens for tokens, _ in segments) * i.model.text.hidden_size * DTYPE_BYTES[i.compute_dtype] * 2
    live = sum(tokens * text_layer_bytes(i, kv, train=False) for tokens, kv in segments)
    return hidden + live + vision_bytes(i, prompts, train=False) + logits_bytes(i, responses, copies=2)


def _per_device(rows: int, ways: int) -> int:
    """Rows of a batch dimension on one device: split when they divide, else replicated (the rules table)."""
    return rows // ways if rows % ways == 0 else rows


def kv_cache_bytes(i: PlanInputs) -> tuple[float, float]:
    """(prompt KV, response KV) per device as `rollout.generate` allocates them: per layer k and v of
    [B, bucket(L), K, Dh] once per prompt and [B, n, bucket(T), K, Dh] per response, in the rollout dtype, with
    the prompts split over the data-parallel devices and the KV heads over `tensor`."""
    from vrsjax.models.qwen2_5_vl.vision import bucket

    t = i.model.text
    b, per_prompt = split_groups(i.prompts, i.n, i.dp)
    per_token = 2 * t.num_hidden_layers * _split(t.num_key_value_heads, i.mesh["tensor"]) * t.head_dim
    per_token *= DTYPE_BYTES[i.kv_dtype]
    return b * bucket(i.prompt_len, 8) * per_token, b * per_prompt * bucket(i.response_len, 8) * per_token


def rollout_work_bytes(i: PlanInputs) -> float:
    """Prefill of the device's prompts (one layer live, hidden states, the vision tower) and the decode loop's
    float32 [B, n, V] logits with the sampling copies (top-p sorts them)."""
    b, per_prompt = split_groups(i.prompts, i.n, i.dp)
    t, c = i.model.text, DTYPE_BYTES[i.compute_dtype]
    tokens = b * i.prompt_len
    prefill = tokens * (text_layer_bytes(i, i.prompt_len, train=False) + 2 * c * t.hidden_size)
    prefill += vision_bytes(i, b, train=False)
    decode = 3 * 4 * b * per_prompt * t.vocab_size
    return max(prefill, decode)


def sam2_bytes(i: PlanInputs) -> tuple[float, str]:
    """SAM2's resident share of a device that also hosts the reward service, and how it was counted."""
    if not i.sam2:
        return 0.0, "SAM2: not on this device (--sam2 none)"
    if i.device.platform != "gpu":
        return 0.0, f"SAM2 ({i.sam2}) runs on the host CPU on {i.device.platform.upper()} (torch has no TPU backend)"
    frames = i.sam2_frames
    weights = SAM2_PARAMS[i.sam2] * 4  # float32 weights, bf16 autocast computes
    # the group's frames once; one tracked object at a time, its masklet (float32 at the 560 x 560 frame size)
    # kept for each of the n responses
    cache = frames * SAM2_FRAME_BYTES + frames * SAM2_OBJECT_FRAME_BYTES + i.n * frames * 560 * 560 * 4
    total = weights + cache + SAM2_WORKSPACE_GIB[i.sam2] * GIB
    note = (
        f"SAM2 {i.sam2}: {weights / GIB:.2f} GiB weights + {cache / GIB:.2f} GiB for a {frames}-frame group + "
        f"{SAM2_WORKSPACE_GIB[i.sam2]:.2f} GiB encoder workspace (estimate), kept reserved by torch's caching "
        "allocator; counted on every device that hosts a reward worker"
    )
    return total, note


def work_per_device(i: PlanInputs) -> dict:
    """What one device computes, as the trainer places it: {phase: {"prompt_tokens", "response_tokens", "flops"}}
    for the rollout, one log-prob micro-batch, one update micro-batch (forward + backward: 3x) and the whole step
    (rollout, old and reference passes, one PPO epoch of updates), model FLOPs counted as `vrsjax.rl.flops` does;
    `step_efficiency` = 1-device step FLOPs / (devices x this device's), 1.0 when no work is repeated."""
    from vrsjax.rl.flops import ModelFlops, forward_flops

    mf, p, r, patches = ModelFlops.from_config(i.model), i.prompt_len, i.response_len, 4 * i.vision_tokens

    def shared(prompts: int, responses: int, passes: int = 1) -> dict:
        f = forward_flops(mf, [p] * prompts, 0, prompts * patches) + forward_flops(mf, [r] * responses, p)
        return {"prompt_tokens": prompts * p, "response_tokens": responses * r, "flops": passes * f}

    def micro(per_device: int, passes: int) -> dict:
        segments, prompts, responses = micro_batch_layout(i, per_device)
        if len(segments) == 2:
            return shared(prompts, responses, passes)
        distinct = max(per_device * i.dp // i.n, 1)  # per-sequence passes: vision once per prompt, on every device
        f = forward_flops(mf, [p + r] * per_device, 0, distinct * patches)
        return {"prompt_tokens": per_device * p, "response_tokens": per_device * r, "flops": passes * f}

    b, per_prompt = split_groups(i.prompts, i.n, i.dp)
    work = {"rollout": shared(b, b * per_prompt), "log-prob micro-batch": micro(i.micro_experience, 1)}
    work["update micro-batch"] = micro(i.micro_update, 3)
    rows = i.prompts * i.n
    passes = 1 + int(i.use_kl)  # old and reference log-probs
    counts = {
        "rollout": 1,
        "log-prob micro-batch": passes * -(-rows // (i.micro_experience * i.dp)),
        "update micro-batch": -(-rows // (i.micro_update * i.dp)),
    }
    work["step"] = {k: sum(counts[ph] * work[ph][k] for ph in counts) for k in work["rollout"]}
    return work


def step_efficiency(i: PlanInputs) -> float:
    """FLOPs of the same step (same global micro-batches) on 1 device / (devices x this device's step FLOPs): 1.0
    when the devices divide all the work; below 1 by the prompts repeated on the devices that split a group."""
    one = dataclasses.replace(
        i,
        mesh={"data": 1, "fsdp": 1, "tensor": 1},
        micro_update=i.micro_update * i.dp,
        micro_experience=i.micro_experience * i.dp,
    )
    return work_per_device(one)["step"]["flops"] / (i.dp * work_per_device(i)["step"]["flops"])


def _uses_shared_prompt(i: PlanInputs) -> bool:
    """The trainer runs a group's prompt once when each update micro-batch holds whole groups."""
    return i.shared_prompt and (i.micro_update * i.dp) % i.n == 0


# ----- the plan -----


def make_plan(i: PlanInputs, *, knobs: bool = True) -> Plan:
    """Components and phase peaks per device for `i`; with `knobs`, which single changes make it fit."""
    params, count = param_bytes_per_device(i.model, i.mesh, i.param_dtype)
    u = i.micro_update * i.dp
    accumulating = i.global_batch * i.n > u
    comp = {
        "parameters (actor)": params,
        "parameters (reference, KL loss)": params if i.use_kl else 0,
        "optimizer state (AdamW mu, nu)": 2 * params,
        "gradients": params * (2 if accumulating else 1),
        "activations, update (remat)": update_activation_bytes(i, remat=True),
        "activations, update (no remat)": update_activation_bytes(i, remat=False),
        "log-prob pass": experience_bytes(i),
    }
    prompt_kv, own_kv = kv_cache_bytes(i)
    comp["KV cache: prompts (shared per group)"] = prompt_kv
    comp["KV cache: responses (n per prompt)"] = own_kv
    comp["rollout prefill / decode work"] = rollout_work_bytes(i)
    sam2, sam2_note = sam2_bytes(i)
    comp["SAM2 (reward service)"] = sam2
    resident = params + comp["parameters (reference, KL loss)"] + comp["optimizer state (AdamW mu, nu)"] + sam2
    update_act = comp["activations, update (remat)" if i.remat else "activations, update (no remat)"]
    phases = {
        "rollout": resident + prompt_kv + own_kv + comp["rollout prefill / decode work"],
        "log-probs": resident + comp["log-prob pass"],
        "update": resident + comp["gradients"] + update_act,
        "optimizer step": resident + comp["gradients"] + params,  # + the updates tree
    }
    comp = {k: int(v) for k, v in comp.items()}
    phases = {k: int(v) for k, v in phases.items()}
    plan = Plan(i, comp, phases, _notes(i, params, count, accumulating, sam2_note))
    if knobs:
        plan.knobs = _knobs(plan)
    return plan


def _notes(i: PlanInputs, params: int, count: int, accumulating: bool, sam2_note: str) -> list:
    notes = [
        f"{count / 1e9:.2f}B parameters; {params / GIB:.2f} GiB of them per device in {i.param_dtype}",
        "optimizer: optax AdamW moments in the parameter dtype, sharded like the parameters",
        "gradients: the running sum and the micro-batch's gradient (accumulation)"
        if accumulating
        else "gradients: one copy (one micro-batch per optimizer step)",
        "update: " + ("shared prompt (each group's prompt once)" if _uses_shared_prompt(i) else "prompt per response"),
        "batches: rows split over data x fsdp, as the `batch` rule places them; a micro-batch (or rollout) with fewer "
        "groups than shards repeats each prompt on k = shards / gcd(groups, shards) rows of n / k responses, so "
        "every device holds its own responses and computes their prompt once (the repeated prompt cost)",
        f"attention: {i.attention}"
        + (" (no [N, T, S] scores kept)" if i.attention in FLASH else " (float32 [N, T, S] scores per layer)"),
        f"vision: {i.vision_tokens} tokens per prompt" + (" (tower frozen)" if i.freeze_vision else ""),
        "remat: planned per decoder layer (enable_gradient_checkpointing=true); the training passes must apply it"
        if i.remat
        else "remat: off (enable_gradient_checkpointing=false)",
        sam2_note,
    ]
    if DTYPE_BYTES[i.param_dtype] == 2:
        extra = params * (1 + 2 * 2) // 2  # fp32 master (4 B) + fp32 moments (2 x 4 B) instead of 2 x 2 B
        notes.append(
            f"{i.param_dtype} parameters: updated in place, no float32 master copy; a float32 master with float32 "
            f"moments would add {extra / GIB:.2f} GiB per device"
        )
    return notes


def _knobs(plan: Plan) -> list:
    """Single changes of the recipe, re-planned; those that fit first, each with its peak."""
    i = plan.inputs
    candidates = []
    if not i.remat:
        candidates.append(("worker.actor.model.enable_gradient_checkpointing=true (remat)", {"remat": True}))
    if i.attention not in FLASH and i.device.platform in ("gpu", "tpu"):
        best = "cudnn" if i.device.platform == "gpu" else "splash"
        candidates.append((f"attention='auto' (= {best} on {i.device.platform.upper()})", {"attention": best}))
    if i.micro_update > 1:
        candidates.append(("worker.actor.micro_batch_size_per_device_for_update=1", {"micro_update": 1}))
    if i.micro_experience > 1:
        candidates.append(("worker.actor.micro_batch_size_per_device_for_experience=1", {"micro_experience": 1}))
    if _uses_shared_prompt(i):
        candidates.append(("worker.actor.shared_prompt=false", {"shared_prompt": False}))
    whole_groups = i.n * i.dp  # one group per device per micro-batch: the shared prompt splits evenly
    if i.shared_prompt and i.micro_update != i.n and (i.global_batch * i.n) % whole_groups == 0:
        change = f"worker.actor.micro_batch_size_per_device_for_update={i.n} (a whole group per device)"
        candidates.append((change, {"micro_update": i.n}))
    if i.param_dtype == "float32":
        candidates.append(("worker.actor.fsdp.torch_dtype=bfloat16", {"param_dtype": "bfloat16"}))
    if i.kv_dtype == "float32":
        candidates.append(("worker.rollout.dtype=bfloat16", {"kv_dtype": "bfloat16"}))
    if i.mesh["data"] > 1:
        fsdp = {"data": 1, "fsdp": i.mesh["data"] * i.mesh["fsdp"], "tensor": i.mesh["tensor"]}
        candidates.append(
            (f"mesh.data=1 mesh.fsdp={fsdp['fsdp']} (shard the states over all replicas)", {"mesh": fsdp})
        )
    kv_heads = i.model.text.num_key_value_heads
    if i.mesh["fsdp"] % 2 == 0 and kv_heads % (2 * i.mesh["tensor"]) == 0:
        tp = {"data": i.mesh["data"], "fsdp": i.mesh["fsdp"] // 2, "tensor": i.mesh["tensor"] * 2}
        candidates.append((f"mesh.tensor={tp['tensor']} mesh.fsdp={tp['fsdp']}", {"mesh": tp}))
    if i.sam2 and i.device.platform == "gpu":
        candidates.append(("SAM2 on its own device or server (vrsjax.services.server)", {"sam2": None}))
        if i.sam2 != "hiera_t":
            candidates.append(("SAM2 hiera_t instead of " + i.sam2, {"sam2": "hiera_t"}))
    results = []
    for label, change in candidates:
        other = make_plan(dataclasses.replace(i, **change), knobs=False)
        results.append({"change": label, "peak_gib": round(other.peak / GIB, 2), "fits": other.fits})
    return sorted(results, key=lambda r: (not r["fits"], r["peak_gib"]))


def inputs_from_config(
    cfg,
    *,
    devices: int,
    device: str = "h100",
    model: str | None = None,
    attention: str = "reference",
    vision_tokens: int | None = None,
    sam2: str | None = "hiera_l",
    headroom: float = 0.9,
) -> PlanInputs:
    """PlanInputs from a vrsjax Config (`vrsjax.config.load_config`) for `devices` devices of kind `device`."""
    if device not in DEVICES:
        raise ValueError(f"device {device!r}: choose one of {', '.join(DEVICES)}")
    if sam2 and sam2 not in SAM2_PARAMS:
        raise ValueError(f"sam2 {sam2!r}: choose one of {', '.join(SAM2_PARAMS)} or none")
    actor = cfg.worker.actor
    model_config, name = resolve_model(model or actor.model.model_path)
    mesh = cfg.mesh.resolve(devices)
    p = cfg.data.max_prompt_length
    frames = cfg.data.sampled_frames
    return PlanInputs(
        model=model_config,
        model_name=name,
        mesh=mesh,
        device=DEVICES[device],
        prompts=cfg.data.rollout_batch_size,
        n=cfg.worker.rollout.n,
        prompt_len=p,
        response_len=cfg.data.max_response_length,
        global_batch=actor.global_batch_size,
        micro_update=actor.micro_batch_size_per_device_for_update,
        micro_experience=actor.micro_batch_size_per_device_for_experience,
        param_dtype=actor.fsdp.param_dtype("actor"),
        compute_dtype=actor.fsdp.mp_param_dtype,
        kv_dtype=cfg.worker.rollout.dtype,
        use_kl=actor.use_kl_loss,
        shared_prompt=actor.shared_prompt,
        remat=actor.model.enable_gradient_checkpointing,
        freeze_vision=actor.model.freeze_vision_tower,
        attention=attention,
        # Veason-R1 frames are 560 x 560: 400 merged tokens each; never more than the prompt holds
        vision_tokens=min(p, frames * 400) if vision_tokens is None else vision_tokens,
        sam2=sam2 or None,
        sam2_frames=frames,
        headroom=headroom,
    )


def format_plan(plan: Plan) -> str:
    """The plan as the table `vrsjax plan` prints."""
    i = plan.inputs
    mesh = " ".join(f"{k}={v}" for k, v in i.mesh.items())
    lines = [
        f"vrsjax plan: {i.model_name} on {i.num_devices} x {i.device.name} (mesh {mesh})",
        f"  batch: {i.prompts} prompts x {i.n} responses; prompt {i.prompt_len} + response {i.response_len} tokens; "
        f"micro-batches {i.micro_update} (update), {i.micro_experience} (log-probs) per device",
        f"  dtypes: parameters {i.param_dtype}, compute {i.compute_dtype}, KV cache {i.kv_dtype}; "
        f"remat {'on' if i.remat else 'off'}",
        "",
        f"  {'per device':<46}{'GiB':>9}",
    ]
    lines += [f"  {name:<46}{value / GIB:>9.2f}" for name, value in plan.components.items()]
    lines += ["", f"  {'phase peaks (resident + working)':<46}{'GiB':>9}"]
    lines += [f"  {name:<46}{value / GIB:>9.2f}" for name, value in plan.phases.items()]
    verdict = "fits" if plan.fits else "does NOT fit"
    lines += [
        "",
        f"  peak {plan.peak / GIB:.2f} GiB of {plan.usable / GIB:.2f} GiB usable "
        f"({i.device.hbm_gib:g} GiB x {i.headroom:g}): {verdict}",
    ]
    lines += ["", f"  {'work per device':<26}{'prompt tokens':>14}{'response tokens':>16}{'TFLOPs':>10}"]
    for name, w in work_per_device(i).items():
        lines.append(f"  {name:<26}{w['prompt_tokens']:>14,}{w['response_tokens']:>16,}{w['flops'] / 1e12:>10.2f}")
    lines.append(
        f"  step FLOPs efficiency: {step_efficiency(i):.2f} (the same step on 1 device / {i.dp} x this device's; "
        "below 1 by the prompts repeated where a group's responses are split)"
    )
    if plan.knobs:
        lines.append("  knobs (one change each, re-planned):")
        lines += [
            f"    {'fits' if k['fits'] else '    '}  {k['peak_gib']:>8.2f} GiB  {k['change']}" for k in plan.knobs
        ]
    lines.append("  notes:")
    lines += [f"    - {note}" for note in plan.notes]
    return "\n".join(lines)


def run(
    overrides: list[str],
    *,
    devices: int = 8,
    device: str = "h100",
    model: str | None = None,
    attention: str = "reference",
    vision_tokens: int | None = None,
    sam2: str | None = "hiera_l",
    headroom: float = 0.9,
    as_json: bool = False,
) -> tuple[str, Plan]:
    """`vrsjax plan`: load the config (`config=PATH` among `overrides`), plan, and render text or JSON."""
    from vrsjax.config import load_config

    cfg = load_config(None, overrides)
    inputs = inputs_from_config(
        cfg,
        devices=devices,
        device=device,
        model=model,
        attention=attention,
        vision_tokens=vision_tokens,
        sam2=None if sam2 in (None, "", "none") else sam2,
        headroom=headroom,
    )
    plan = make_plan(inputs)
    text = json.dumps(plan.to_dict(), indent=2) if as_json else format_plan(plan)
    return text, plan


__all__ = [
    "DEVICES",
    "Device",
    "Plan",
    "PlanInputs",
    "format_plan",
    "inputs_from_config",
    "make_plan",
    "param_bytes_per_device",
    "preset_config",
    "resolve_model",
    "run",
    "shard_elements",
]
