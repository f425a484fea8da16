"""`vrsjax lower`: the policy's production steps exported for a TPU or an NVIDIA GPU from any host, shapes only.

Each artifact is a `jax.export` of the function the trainer, rollout or SFT loop jits (`forward`: the policy
forward of a video prompt; `decode`: one rollout decode step against the shared-prefix KV cache of a group of n;
`grpo_update`: one GRPO micro-step — the shared-prompt reference pass, loss and gradients, the optimizer update;
`sft_update`: one CoT SFT micro-step and its update), traced from `jax.ShapeDtypeStruct`s that carry the
production shardings (parameters by the logical-axis rules, rows over data x fsdp) on a mesh of the host's CPU
devices standing in for the target's, so nothing is allocated and 3B/7B widths lower on a laptop. `auto` attention
is resolved for the target, not the host (`vrsjax.layers.attention.for_platform`): the splash Pallas kernel
compiled by Mosaic for 128-wide text heads on TPU, cuDNN on CUDA where this JAX can lower it, XLA otherwise, and
each artifact says which it got. What this proves: the programs trace, shard and lower for the target with the
intended kernels. What it does not: XLA's target-specific compilation (fusion, layout, the SPMD partitioner's
collectives) and memory at run time — `bytes_per_device` is `vrsjax plan`'s estimate for the same settings.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vrsjax.errors import UserError
from vrsjax.layers.attention import cudnn_export_checks, cudnn_lowering_error, for_platform, resolve_implementation

PLATFORMS = ("tpu", "cuda", "cpu")  # cpu: the same artifacts for this host, to call them and compare
MODELS = ("tiny", "small", "3b", "7b")
ARTIFACTS = ("forward", "decode", "grpo_update", "sft_update")
# calls only a CPU runtime can serve: host Python callbacks and LAPACK kernels
CPU_ONLY_CALLS = re.compile(r"callback|lapack_", re.IGNORECASE)
# the plan's device decides only where SAM2 would sit (not planned here) and a verdict (not reported)
_PLAN_DEVICE = {"tpu": "v5p", "cuda": "h100", "cpu": "h100"}
_VIDEO_FRAMES = 4  # frames per prompt: temporal patches of 2, so a vision grid of t=2


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to lower. `seq`: prompt tokens, padded to the length bucket (a 4-frame video filling up to half of
    them, then text); `batch`: prompts (groups), default one per data-parallel device; `n`: responses per prompt;
    `response`: their tokens."""

    platform: str
    model: str = "tiny"
    mesh: tuple[tuple[str, int], ...] = (("data", 1), ("fsdp", 1), ("tensor", 1))
    layers: int | None = None
    seq: int = 1024
    batch: int | None = None
    n: int = 8
    response: int = 128
    dtype: str = "bfloat16"

    @property
    def mesh_shape(self) -> dict[str, int]:
        return dict(self.mesh)

    @property
    def prompt_len(self) -> int:
        """`seq` padded to the length bucket the processor and rollout pad prompts to."""
        from vrsjax.models.qwen2_5_vl.vision import bucket

        return bucket(self.seq, 8)

    @property
    def prompts(self) -> int:
        shape = self.mesh_shape
        return self.batch or shape["data"] * shape["fsdp"]


def parse_mesh(text: str) -> tuple[tuple[str, int], ...]:
    """'data=2,fsdp=2' -> (('data', 2), ('fsdp', 2), ('tensor', 1)); every axis a positive size."""
    from vrsjax.parallel.mesh import AXES

    sizes = {a: 1 for a in AXES}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in AXES or not value.isdigit() or int(value) < 1:
            raise UserError(f"--mesh {text!r}: {part!r} is not AXIS=SIZE with AXIS in {AXES} and SIZE >= 1")
        sizes[name] = int(value)
    return tuple(sizes.items())


def model_config(name: str, layers: int | None = None, dtype: str = "bfloat16"):
    """The Qwen2_5_VLConfig of a named model, `auto` attention. `tiny` has 128-wide text heads (the TPU lane
    width, so the TPU choice is the real one), `small` is the benchmarks' model, `3b`/`7b` the released widths;
    `layers` keeps only that many decoder layers."""
    from vrsjax.models.qwen2_5_vl.config import Qwen2_5_VLConfig
    from vrsjax.parallel.plan import preset_config
    from vrsjax.testing import tiny_config_dict

    if name not in MODELS:
        raise UserError(f"--model {name!r}: choose one of {', '.join(MODELS)}")
    if name == "tiny":
        d = tiny_config_dict(hidden_size=512)  # 4 heads of 128, 2 KV heads, M-RoPE [16, 24, 24]
    elif name == "small":
        sizes = dict(hidden_size=512, text_layers=8, vision_hidden=256, vision_depth=4, vocab_size=32000)
        d = tiny_config_dict(**sizes, tie_word_embeddings=False)
        d["text_config"] |= {"num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 1408}
        d["text_config"]["rope_parameters"]["mrope_section"] = [8, 12, 12]
        d["vision_config"] |= {"num_heads": 4, "intermediate_size": 1024, "fullatt_block_indexes": [1, 3]}
    else:
        d = preset_config(name)
    if layers is not None:
        if layers < 1:
            raise UserError(f"--layers {layers}: need at least one decoder layer")
        d.get("text_config", d)["num_hidden_layers"] = layers
    return Qwen2_5_VLConfig.from_hf_dict(d, source=f"--model {name}", dtype=dtype, param_dtype=dtype, attention="auto")


def host_mesh(mesh_shape: dict[str, int]):
    """A mesh of this host's CPU devices standing in for the target's. Asks JAX for enough CPU devices when it has
    not started yet (`jax_num_cpu_devices`, the --xla_force_host_platform_device_count of the config)."""
    from vrsjax.parallel.mesh import make_mesh

    count = math.prod(mesh_shape.values())
    flag = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    if count > max(jax.config.jax_num_cpu_devices, int(flag.group(1)) if flag else 1):  # never fewer than asked for
        try:
            jax.config.update("jax_num_cpu_devices", count)
        except RuntimeError:  # JAX has started: the devices it has must do
            pass
    devices = jax.devices("cpu")
    if len(devices) < count:
        raise UserError(
            f"--mesh {mesh_shape} needs {count} devices but this process has {len(devices)} CPU devices; run it in "
            f"a fresh process or set XLA_FLAGS=--xla_force_host_platform_device_count={count}"
        )
    return make_mesh(**mesh_shape, devices=devices[:count])


def run(settings: Settings, out_dir: str | Path, names: tuple[str, ...] = ARTIFACTS) -> dict:
    """Lower `names` for `settings`, write DIR/<name>.<platform>.bin and DIR/summary.json; returns the summary.
    Raises UserError naming the artifact when one does not lower."""
    s = settings
    if s.platform not in PLATFORMS:
        raise UserError(f"--platform {s.platform!r}: choose one of {', '.join(PLATFORMS)}")
    if s.seq < 64 or s.response < 2:
        raise UserError(f"--seq {s.seq}, --response {s.response}: need a prompt of >= 64 tokens, responses of >= 2")
    if s.n < 1 or s.prompts < 1:
        raise UserError(f"--n {s.n}, --batch {s.prompts}: need at least one prompt and one response each")
    dp = s.mesh_shape["data"] * s.mesh_shape["fsdp"]
    if s.prompts % dp:  # whole groups on every batch shard: the placement the trainer and rollout use then
        raise UserError(f"--batch {s.prompts}: use a multiple of data x fsdp = {dp}, so the groups split evenly")
    config = model_config(s.model, s.layers, s.dtype)
    mesh = host_mesh(s.mesh_shape)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = []
    with jax.set_mesh(mesh):  # a context mesh: the Pallas kernel runs per shard (`vrsjax.layers.splash`)
        for name in names:
            fn, args, attention = _BUILDERS[name](s, config, mesh)
            data = _export(name, s.platform, fn, args).serialize()
            file = out / f"{name}.{s.platform}.bin"
            file.write_bytes(data)
            # described from the bytes as written: the round trip is checked and the input shardings are the
            # module's own (the freshly exported object leaves them to the module under Shardy)
            exported = jax.export.deserialize(data)
            artifacts.append(_describe(name, file, exported, attention, _plan_bytes(name, s, config, attention)))
    summary = {
        "platform": s.platform,
        "mesh": s.mesh_shape,
        "model": s.model,
        "dtype": s.dtype,
        "shapes": {"prompts": s.prompts, "n": s.n, "prompt_tokens": s.prompt_len, "response_tokens": s.response},
        "artifacts": artifacts,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _export(name: str, platform: str, fn, args):
    """`fn(*args)` exported with flat inputs and outputs (the leaves, in `jax.tree.flatten` order): the model's
    pytree types (nnx State, ModelInputs, optax states) have no serialization, and a flat artifact deserializes
    anywhere without vrsjax."""
    leaves, tree = jax.tree.flatten(args)
    flat = jax.jit(lambda *xs: jax.tree.leaves(fn(*jax.tree.unflatten(tree, xs))))
    checks = cudnn_export_checks() if platform == "cuda" else []
    try:
        return jax.export.export(flat, platforms=[platform], disabled_checks=checks)(*leaves)
    except Exception as err:  # noqa: BLE001 - any failure is reported naming the artifact, --debug shows the trace
        cause = f"{type(err).__name__}: {err}".strip().splitlines()[0]
        raise UserError(f"artifact {name!r} does not lower for {platform}: {cause}") from err


def custom_calls(exported) -> list[str]:
    """The sorted custom-call targets of an export (Mosaic kernels, cuDNN, sharding markers, callbacks)."""
    pattern = r'custom_call @([\w$.\-]+)|call_target_name = "([^"]+)"'  # pretty and generic printed forms
    return sorted({a or b for a, b in re.findall(pattern, exported.mlir_module())})


def _describe(name, file, exported, attention, bytes_per_device) -> dict:
    shardings = [None if sh is None else str(sh) for sh in exported.in_shardings_hlo]
    return {
        "name": name,
        "file": file.name,
        "attention": attention,
        "devices": exported.nr_devices,
        "in_shardings": shardings,
        "custom_calls": custom_calls(exported),
        "bytes_per_device": bytes_per_device,
    }


# ----- attention as the target runs it -----


def _attention_choice(platform: str, dtype, head_dim: int, length: int) -> str:
    """`auto` for the target, with the reason when a flash kernel was wanted but not taken."""
    chosen = resolve_implementation(dtype, head_dim, length, length, platform=platform)
    if chosen == "splash":
        return "splash (Pallas TPU kernel, compiled by Mosaic)"
    if chosen == "cudnn":
        return "cudnn (flash attention; its custom call ties the artifact to this JAX version)"
    wanted = resolve_implementation(dtype, head_dim, length, length, platform="gpu", platform_version="cuda")
    if platform == "cuda" and wanted == "cudnn":
        return f"xla (cuDNN cannot be lowered from this host: {cudnn_lowering_error()})"
    if platform == "tpu" and head_dim % 128:
        return f"xla (head dim {head_dim} is not a multiple of 128, the TPU lane width)"
    if platform == "cuda":
        return "xla (cuDNN flash attention needs bf16/fp16, a head dim <= 128 and a multiple of 8, even lengths)"
    return "xla"


def _attention(platform: str, config, text_length: int | None, vision: bool, own: str | None = None) -> str:
    """'text: ...; vision: ...' for an artifact: its text attention over `text_length` tokens (None: not through
    the backend switch), the shared-prefix einsum (`own`) where a pass attends to a group's prompt."""
    dtype, parts = jnp.dtype(config.dtype), []
    if text_length is not None:
        parts.append(f"text: {_attention_choice(platform, dtype, config.text.head_dim, text_length)}")
    if own is not None:
        parts.append(f"{own}: shared-prefix einsum (vrsjax.layers.attention.shared_prefix_attention)")
    if vision:
        window = (config.vision.window_size // config.vision.patch_size) ** 2  # patches per window block
        parts.append(f"vision: {_attention_choice(platform, dtype, config.vision.head_dim, window)}")
    return "; ".join(parts)


# ----- abstract values with the production shardings -----


def _abstract_model(config, platform: str, lora=None):
    """The model built from shapes only, `auto` attention targeted at `platform` (the choice is part of the
    graphdef, a static jit argument, so one process lowering for two platforms never reuses a trace)."""

    def build():
        from vrsjax.models.qwen2_5_vl.model import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration(config, rngs=nnx.Rngs(0))
        if lora is not None:
            lora(model)
        return model

    model = nnx.eval_shape(build)
    for _, module in nnx.iter_graph(model):
        if isinstance(getattr(module, "implementation", None), str):
            module.implementation = for_platform(module.implementation, platform)
    return model


def _placed(state, mesh):
    """An nnx.State of abstract Variables -> the same State of ShapeDtypeStructs with their rules shardings."""
    from vrsjax.parallel.rules import param_shardings

    def place(variable, sharding):
        return variable.replace(jax.ShapeDtypeStruct(variable.shape, variable.dtype, sharding=sharding))

    is_variable = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    return jax.tree.map(place, state, param_shardings(state, mesh), is_leaf=is_variable)


def _like_params(tree, params, mesh):
    """Optimizer state: subtrees shaped like the parameters (AdamW's mu, nu) sharded like them, the rest
    (step counts) replicated — what `optimizer.init` gives on placed parameters."""
    structure = jax.tree.structure(params)

    def one(sub):
        if jax.tree.structure(sub) == structure:
            return jax.tree.map(lambda a, p: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=p.sharding), sub, params)
        return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=NamedSharding(mesh, P())), sub)

    return jax.tree.map(one, tree, is_leaf=lambda x: jax.tree.structure(x) == structure)


def _value(shape, dtype, mesh, names=()) -> jax.ShapeDtypeStruct:
    """An abstract array placed by logical names (rows `batch` over data x fsdp where they divide)."""
    from vrsjax.parallel.rules import spec

    partition = spec(tuple(names), tuple(shape), mesh) if names else P()
    return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=NamedSharding(mesh, partition))


def video_grid(config, seq: int) -> tuple[int, int, int]:
    """(t, h, w) patches of the 4-frame video in each prompt of `seq` tokens: square frames, the largest side whose
    merged tokens fill at most half the prompt, at most 32 patches (448 px)."""
    t, m = _VIDEO_FRAMES // config.vision.temporal_patch_size, config.vision.spatial_merge_size
    side = m
    while side + m <= 32 and t * (side + m) ** 2 // m**2 <= seq // 2:
        side += m
    return t, side, side


def video_inputs(config, mesh, rows: int, length: int, seq: int):
    """ModelInputs of `rows` sequences of `length` tokens, each with the video of a `seq`-token prompt
    (`video_grid`), as ShapeDtypeStructs placed like the trainer places them (rows over data x fsdp, positions
    [3, B, L] by their rows, patches and the vision layout whole on every device)."""
    from vrsjax.models.qwen2_5_vl.inputs import ModelInputs
    from vrsjax.models.qwen2_5_vl.vision import vision_layout

    layout = vision_layout(np.tile([video_grid(config, seq)], (rows, 1)), config.vision)
    layout = jax.tree.map(lambda a: _value(a.shape, a.dtype, mesh), layout)
    tokens = ("batch", "length")
    return ModelInputs(
        input_ids=_value((rows, length), jnp.int32, mesh, tokens),
        attention_mask=_value((rows, length), jnp.int32, mesh, tokens),
        position_ids=_value((3, rows, length), jnp.int32, mesh, (None, *tokens)),
        vision_src=_value((rows, length), jnp.int32, mesh, tokens),
        patches=_value((layout.pos_hw.shape[0], config.vision.patch_dim), jnp.float32, mesh),
        layout=layout,
    )


# ----- the artifacts -----


def _forward(s: Settings, config, mesh):
    """The policy forward (vision tower + text) of `prompts` video prompts -> logits."""
    graphdef, state = nnx.split(_abstract_model(config, s.platform))
    inputs = video_inputs(config, mesh, s.prompts, s.prompt_len, s.prompt_len)
    fn = jax.jit(functools.partial(_forward_logits, graphdef))
    return fn, (_placed(state, mesh), inputs), _attention(s.platform, config, s.prompt_len, vision=True)


def _forward_logits(graphdef, state, inputs):
    return nnx.merge(graphdef, state).forward(inputs)  # what `Qwen2_5_VLForConditionalGeneration.__call__` jits


def _decode(s: Settings, config, mesh):
    """One step of the rollout's decode loop (`vrsjax.rollout.decode.decode_step`, the body of its jitted
    while loop): a token for each of the n members of every group against the group's prompt KV cache (once per
    group) and the members' own caches."""
    from vrsjax.models.qwen2_5_vl.vision import bucket

    graphdef, state = nnx.split(_abstract_model(config, s.platform))
    t, b, dt = config.text, s.prompts, s.dtype
    capacity = bucket(s.response, 8)
    kv = ("batch", "act_heads", "length", None)  # the rollout's cache layouts: [B, K, L, Dh] and [B, n, K, S, Dh]
    prompt_shape = (b, t.num_key_value_heads, s.prompt_len, t.head_dim)
    prompt_kv = [(_value(prompt_shape, dt, mesh, kv),) * 2] * t.num_hidden_layers
    own_shape = (b, s.n, t.num_key_value_heads, capacity, t.head_dim)
    own = [(_value(own_shape, dt, mesh, ("batch", None, *kv[1:])),) * 2] * t.num_hidden_layers
    group = ("batch", None)
    args = (
        _placed(state, mesh),
        _value((b, s.n), jnp.int32, mesh, group),  # this step's tokens
        _value((b, s.n), jnp.int32, mesh, group),  # their positions
        _value((), jnp.int32, mesh),  # the step
        prompt_kv,
        _value((b, s.prompt_len), jnp.bool_, mesh, ("batch", "length")),
        own,
    )
    fn = jax.jit(functools.partial(_decode_step, graphdef, kv_dtype=jnp.dtype(dt)))
    return fn, args, _attention(s.platform, config, None, vision=False, own="text")


def _decode_step(graphdef, state, token, position, step, prompt_kv, prompt_mask, own, *, kv_dtype):
    from vrsjax.rollout.decode import decode_step

    model = nnx.merge(graphdef, state)
    return decode_step(model, token, position, step, prompt_kv, prompt_mask, own, kv_dtype)


def _grpo_update(s: Settings, config, mesh):
    """A GRPO micro-step as the trainer runs it with whole groups per micro-batch: the reference log-probs and the
    actor's gradients through the shared-prompt passes (`vrsjax.rl.update.shared_log_probs`,
    `shared_micro_grads`), then the optimizer step (`vrsjax.rl.update.optimizer_step`, sharding-preserving)."""
    from vrsjax.config import load_config
    from vrsjax.rl.update import make_optimizer, optimizer_step

    cfg = load_config(None, [])
    actor = cfg.worker.actor
    graphdef, params, frozen = nnx.split(_abstract_model(config, s.platform), nnx.Param, ...)
    params, frozen = _placed(params, mesh), _placed(frozen, mesh)
    optimizer = make_optimizer(actor.optim, actor.max_grad_norm, total_steps=1000)
    opt_state = _like_params(jax.eval_shape(optimizer.init, params), params, mesh)
    step, _, _ = optimizer_step(params, opt_state, optimizer=optimizer)
    b, n, t = s.prompts, s.n, s.response
    prompts = video_inputs(config, mesh, b, s.prompt_len, s.prompt_len)
    rows = ("batch", None)
    from vrsjax.rl.trainer import actor_loss_config

    loss_config = actor_loss_config(actor)
    fn = jax.jit(
        functools.partial(
            _grpo_micro_step,
            graphdef,
            apply=step,
            temperature=cfg.worker.rollout.temperature or 1.0,
            loss_config=loss_config,
            remat=actor.model.enable_gradient_checkpointing,
        )
    )
    args = (
        params,
        opt_state,
        params,  # the reference policy, placed like the actor
        frozen,
        prompts,
        _value((b, n, t), jnp.int32, mesh, ("batch", None, None)),  # response tokens
        _value((b, n, t), jnp.int32, mesh, ("batch", None, None)),  # response mask
        _value((b,), jnp.int32, mesh, ("batch",)),  # next position after each prompt
        _value((b * n, t), jnp.float32, mesh, rows),  # old log-probs (from the rollout)
        _value((b * n,), jnp.float32, mesh, ("batch",)),  # advantages
        _value((), jnp.float32, mesh),  # tokens in the mini-batch
        _value((), jnp.float32, mesh),  # sequences in the mini-batch
    )
    return fn, args, _attention(s.platform, config, s.prompt_len, vision=True, own="text responses")


def _grpo_micro_step(
    graphdef,
    params,
    opt_state,
    ref_params,
    frozen,
    prompts,
    tokens,
    mask,
    next_pos,
    old_logp,
    advantages,
    num_tokens,
    num_seqs,
    *,
    apply,
    temperature,
    loss_config,
    remat,
):
    from vrsjax.rl.update import shared_log_probs, shared_micro_grads

    ref_logp, _ = shared_log_probs(
        graphdef, ref_params, frozen, prompts, tokens, mask, next_pos, temperature=temperature
    )
    grads, loss, metrics = shared_micro_grads(
        graphdef,
        params,
        frozen,
        prompts,
        tokens,
        mask,
        next_pos,
        old_logp,
        ref_logp.reshape(old_logp.shape),
        advantages,
        num_tokens,
        num_seqs,
        temperature=temperature,
        loss_config=loss_config,
        remat=remat,
    )
    params, opt_state, norm, finite = apply(params, opt_state, grads)
    return params, opt_state, loss, metrics, norm, finite


def _sft_update(s: Settings, config, mesh):
    """A CoT SFT micro-step as `vrsjax.sft.trainer` runs it with the SFT defaults (LoRA on the language model,
    frozen vision tower): `sft_micro_grads` on prompt + response sequences, then the optimizer step."""
    from vrsjax.layers.linear import Linear
    from vrsjax.layers.lora import LoRAParam, add_lora
    from vrsjax.rl.update import optimizer_step
    from vrsjax.sft.config import SFTConfig
    from vrsjax.sft.trainer import make_sft_optimizer, sft_micro_grads, trainable_filter

    cfg = SFTConfig()

    def lora(model):  # as SFTTrainer.__init__ attaches it
        options = dict(seed=cfg.seed, use_rslora=cfg.use_rslora, include_vision=not cfg.freeze_vision_tower)
        add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_target, **options)
        for _, layer in nnx.iter_graph(model):
            if isinstance(layer, Linear) and layer.lora_a is not None:
                layer.lora_dropout = cfg.lora_dropout

    model = _abstract_model(config, s.platform, lora=lora if cfg.finetuning_type == "lora" else None)
    trainable = LoRAParam if cfg.finetuning_type == "lora" else trainable_filter(cfg)
    graphdef, params, frozen = nnx.split(model, trainable, ...)
    params, frozen = _placed(params, mesh), _placed(frozen, mesh)
    optimizer = make_sft_optimizer(cfg, total_steps=1000)
    opt_state = _like_params(jax.eval_shape(optimizer.init, params), params, mesh)
    step, _, _ = optimizer_step(params, opt_state, optimizer=optimizer)
    rows, length = s.prompts, s.prompt_len + s.response
    inputs = video_inputs(config, mesh, rows, length, s.prompt_len)
    key = jax.eval_shape(lambda: jax.random.key(0))
    args = (
        params,
        opt_state,
        frozen,
        inputs,
        _value((rows, length - 1), jnp.int32, mesh, ("batch", "length")),  # next-token targets
        _value((rows, length - 1), jnp.float32, mesh, ("batch", "length")),  # response-token weights
        _value((), jnp.float32, mesh),  # response tokens in the step
        jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=NamedSharding(mesh, P())),  # LoRA dropout key
    )
    fn = jax.jit(functools.partial(_sft_micro_step, graphdef, apply=step, micro_grads=sft_micro_grads))
    return fn, args, _attention(s.platform, config, length, vision=True)


def _sft_micro_step(
    graphdef, params, opt_state, frozen, inputs, targets, weights, num_tokens, key, *, apply, micro_grads
):
    grads, loss, correct = micro_grads(graphdef, params, frozen, inputs, targets, weights, num_tokens, key)
    params, opt_state, norm, finite = apply(params, opt_state, grads)
    return params, opt_state, loss, correct, norm, finite


_BUILDERS = {"forward": _forward, "decode": _decode, "grpo_update": _grpo_update, "sft_update": _sft_update}


# ----- memory: `vrsjax plan` for the same settings -----

_PLAN_PHASES = {"forward": ("log-probs",), "decode": ("rollout",), "grpo_update": ("update", "optimizer step")}
_PLAN_PHASES["sft_update"] = _PLAN_PHASES["grpo_update"]


def _plan_bytes(name: str, s: Settings, config, attention: str) -> int:
    """Bytes per device `vrsjax plan` estimates for the phase this artifact runs (resident state included)."""
    from vrsjax.parallel import plan

    mesh = s.mesh_shape
    dp = mesh["data"] * mesh["fsdp"]
    sft = name == "sft_update"
    n = 1 if sft else s.n
    rows = s.prompts * n
    text = attention.split(";")[0]
    inputs = plan.PlanInputs(
        model=config,
        model_name=s.model,
        mesh=mesh,
        device=plan.DEVICES[_PLAN_DEVICE[s.platform]],
        prompts=s.prompts,
        n=n,
        prompt_len=s.prompt_len,
        response_len=s.response,
        global_batch=s.prompts,
        micro_update=rows // dp if rows % dp == 0 else rows,
        micro_experience=rows // dp if rows % dp == 0 else rows,
        param_dtype=s.dtype,
        compute_dtype=s.dtype,
        kv_dtype=s.dtype,
        use_kl=not sft,
        shared_prompt=not sft,
        attention=next((k for k in ("splash", "cudnn") if f"text: {k}" in text), "xla"),
        vision_tokens=math.prod(video_grid(config, s.prompt_len)) // config.vision.spatial_merge_size**2,
        sam2=None,
    )
    phases = plan.make_plan(inputs, knobs=False).phases
    return max(phases[p] for p in _PLAN_PHASES[name])
