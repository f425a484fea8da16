"""The CoT SFT loop: next-token cross-entropy on response tokens, full fine-tuning or LoRA, on the GRPO trainer's
mesh, optimizer, checkpoints and metrics.

One optimizer step takes `per_device_train_batch_size x data-parallel devices x gradient_accumulation_steps`
conversations (HF Trainer's global batch), split into micro-batches of `per_device_train_batch_size x devices`.
Its loss is the mean over every response token of the whole step (what transformers computes with
`num_items_in_batch`): each micro-batch's summed loss is divided by the step's token count, so the summed
micro-batch gradients are exactly the gradient of the step loss, whatever the split. Trainable parameters are the
LoRA factors (`finetuning_type: lora`) or every parameter outside the frozen vision tower / projector (`full`).
Steps with a non-finite gradient are skipped (`apply_grads`) and counted. Checkpoints (orbax) hold the trained
parameters, optimizer state, step and data position, so `resume` continues exactly. `export` merges LoRA and
writes an HF checkpoint with the tokenizer and processor files.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from vrsjax.config import to_dict
from vrsjax.layers.linear import Linear
from vrsjax.layers.lora import LoRAParam, add_lora, merge_lora
from vrsjax.parallel.rules import shard_model
from vrsjax.progress import progress_bar
from vrsjax.rl import grpo
from vrsjax.rl.update import apply_grads
from vrsjax.sft.config import SFTConfig
from vrsjax.sft.data import SFTExample, collate

# Files that make an exported directory a complete checkpoint (copied from the source when present).
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
)


def sft_loss(model, inputs, targets, weights, num_tokens):
    """Summed response-token cross-entropy / num_tokens (the step's token count) -> (loss, correct tokens).

    targets, weights: [B, L-1] (position t predicts token t+1)."""
    hidden = model.hidden_states(inputs)[:, :-1]
    logits = model.logits(hidden).astype(jnp.float32)
    logp = grpo.token_log_probs(logits, targets)
    correct = ((jnp.argmax(logits, -1) == targets) * weights).sum()
    return -(logp * weights).sum() / num_tokens, correct


def _set_dropout_keys(model, key) -> None:
    for i, (_, layer) in enumerate(nnx.iter_graph(model)):
        if isinstance(layer, Linear) and layer.lora_a is not None and layer.lora_dropout > 0:
            layer.lora_dropout_key = nnx.data(jax.random.fold_in(key, i))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def sft_micro_grads(graphdef, params, frozen, inputs, targets, weights, num_tokens, dropout_key):
    """-> (grads like params, this micro-batch's share of the step loss, correct response tokens)."""

    def loss_fn(p):
        model = nnx.merge(graphdef, p, frozen)
        _set_dropout_keys(model, dropout_key)
        return sft_loss(model, inputs, targets, weights, num_tokens)

    (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, loss, correct


def trainable_filter(cfg: SFTConfig):
    """nnx filter of what full fine-tuning trains: every Param except the frozen vision tower / projector."""

    def keep(path, value) -> bool:
        if not isinstance(value, nnx.Param):
            return False
        names = [str(p) for p in path]
        if "visual" not in names:
            return True
        return not (cfg.freeze_multi_modal_projector if "merger" in names else cfg.freeze_vision_tower)

    return keep


def sft_schedule(cfg: SFTConfig, total_steps: int) -> optax.Schedule:
    """HF Trainer's schedules: linear warmup, then linear or cosine decay to 0 at total_steps, or constant
    (`constant` has no warmup, `constant_with_warmup` has)."""
    lr, kind = cfg.learning_rate, cfg.lr_scheduler_type
    warmup = 0 if kind == "constant" else cfg.warmup_steps or math.ceil(cfg.warmup_ratio * total_steps)
    decay = max(total_steps - warmup, 1)
    if kind == "linear":
        after = optax.linear_schedule(lr, 0.0, decay)
    elif kind == "cosine":
        after = optax.cosine_decay_schedule(lr, decay)
    else:
        after = optax.constant_schedule(lr)
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_sft_optimizer(cfg: SFTConfig, total_steps: int) -> optax.GradientTransformation:
    """The GRPO actor's optimizer chain (`vrsjax.rl.update.make_optimizer`: global-norm clipping, then AdamW with
    decoupled weight decay) on HF's SFT schedules instead of EasyR1's."""
    adamw = optax.adamw(
        sft_schedule(cfg, total_steps), b1=cfg.adam_beta1, b2=cfg.adam_beta2, weight_decay=cfg.weight_decay
    )
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adamw)


class SFTTrainer:
    def __init__(self, cfg: SFTConfig, model, examples: list[SFTExample], *, out_dir=None, mesh=None):
        self.cfg, self.model, self.examples = cfg, model, examples
        self.out_dir = Path(out_dir or cfg.output_dir)
        self.devices = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
        self.micro = cfg.per_device_train_batch_size * self.devices
        self.global_batch = self.micro * cfg.gradient_accumulation_steps
        batches_per_epoch = math.ceil(len(examples) / self.micro)
        self.steps_per_epoch = max(batches_per_epoch // cfg.gradient_accumulation_steps, 1)
        epochs_steps = math.ceil(cfg.num_train_epochs * self.steps_per_epoch)
        self.total_steps = cfg.max_steps if cfg.max_steps > 0 else epochs_steps
        self.schedule = sft_schedule(cfg, self.total_steps)
        self.optimizer = make_sft_optimizer(cfg, self.total_steps)
        if mesh is not None:
            model = shard_model(model, mesh)
        self.mesh = mesh
        if cfg.finetuning_type == "lora":
            add_lora(
                model,
                cfg.lora_rank,
                cfg.lora_alpha,
                cfg.lora_target,
                seed=cfg.seed,
                use_rslora=cfg.use_rslora,
                include_vision=not cfg.freeze_vision_tower,
            )
            for _, layer in nnx.iter_graph(model):
                if isinstance(layer, Linear) and layer.lora_a is not None:
                    layer.lora_dropout = cfg.lora_dropout
            self.graphdef, self.params, self.frozen = nnx.split(model, LoRAParam, ...)
        else:
            self.graphdef, self.params, self.frozen = nnx.split(model, trainable_filter(cfg), ...)
        self.opt_state = self.optimizer.init(self.params)
        self.step_count, self.data_position, self.skipped = 0, 0, 0

    def _next_examples(self, count: int) -> list[SFTExample]:
        """`count` examples, reshuffled every epoch by `seed` (the position is checkpointed)."""
        out = []
        for _ in range(count):
            epoch, index = divmod(self.data_position, len(self.examples))
            order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.examples))
            out.append(self.examples[int(order[index])])
            self.data_position += 1
        return out

    def accumulate(self, batch: list[SFTExample], step: int = 0):
        """-> (grads like params, step loss, correct response tokens, response tokens) of one optimizer step's
        batch, summed over its micro-batches (exactly the gradient of the token-mean loss of the whole batch)."""
        micros = [batch[i : i + self.micro] for i in range(0, len(batch), self.micro)]
        collated = [collate(self.model.config, m) for m in micros]
        num_tokens = float(sum(w.sum() for _, _, w in collated))
        if num_tokens == 0:
            raise ValueError(f"step {step}: no response tokens in {[e.id for e in batch]}")
        grads, loss, correct = None, 0.0, 0.0
        key = jax.random.key(self.cfg.seed)
        for i, (inputs, targets, weights) in enumerate(collated):
            dropout_key = jax.random.fold_in(key, step * len(collated) + i)
            g, part, right = sft_micro_grads(
                self.graphdef, self.params, self.frozen, inputs, targets, weights, num_tokens, dropout_key
            )
            grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
            loss, correct = loss + float(part), correct + float(right)
        return grads, loss, correct, num_tokens

    def step(self) -> dict:
        t0 = time.perf_counter()
        batch = self._next_examples(self.global_batch)
        grads, loss, correct, num_tokens = self.accumulate(batch, self.step_count)
        self.params, self.opt_state, norm, finite = apply_grads(
            self.params, self.opt_state, grads, optimizer=self.optimizer
        )
        self.skipped += 0 if bool(finite) else 1
        self.step_count += 1
        elapsed = time.perf_counter() - t0
        return {
            "step": self.step_count,
            "epoch": self.data_position / len(self.examples),
            "loss": loss,
            "token_accuracy": correct / num_tokens,
            "grad_norm": float(norm),
            "learning_rate": float(self.schedule(self.step_count - 1)),
            "response_tokens": int(num_tokens),
            "skipped_updates": self.skipped,
            "time/step": elapsed,
        }

    def train(self, steps: int | None = None, *, resume: bool = False, desc: str = "SFT") -> list[dict]:
        """Run to `steps` (default: the configured total), logging JSONL to out_dir/metrics.jsonl."""
        if resume:
            self.restore()
        steps = steps or self.total_steps
        self.out_dir.mkdir(parents=True, exist_ok=True)
        history, log = [], self.out_dir / "metrics.jsonl"
        with progress_bar(total=steps, initial=self.step_count, desc=desc, disable=jax.process_index() != 0) as bar:
            while self.step_count < steps:
                m = self.step()
                history.append(m)
                if jax.process_index() == 0:
                    with log.open("a") as f:
                        f.write(json.dumps(m) + "\n")
                bar.set_postfix(loss=f"{m['loss']:.4f}", acc=f"{m['token_accuracy']:.3f}")
                bar.update(1)
                if self.step_count % self.cfg.save_steps == 0:
                    self.save()
        if history and jax.process_index() == 0:
            plot_sft_history(history, self.out_dir / "sft_curves.png")
        return history

    def _manager(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.out_dir.absolute() / "checkpoints", options=ocp.CheckpointManagerOptions(create=True)
        )

    def save(self) -> None:
        """Trained params, optimizer state, step, data position and config (atomic, orbax)."""
        meta = {
            "step": self.step_count,
            "data_position": self.data_position,
            "skipped": self.skipped,
            "config": to_dict(self.cfg),
        }
        with self._manager() as manager:
            if manager.latest_step() == self.step_count:  # already saved at this step (save_steps)
                return
            manager.save(
                self.step_count,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave({"params": self.params, "opt_state": self.opt_state}),
                    meta=ocp.args.JsonSave(meta),
                ),
            )
            manager.wait_until_finished()

    def restore(self) -> bool:
        """Continue from the latest checkpoint in out_dir; False when there is none."""
        with self._manager() as manager:
            step = manager.latest_step()
            if step is None:
                return False
            target = {"params": self.params, "opt_state": self.opt_state}
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
            )
        self.params, self.opt_state = restored["state"]["params"], restored["state"]["opt_state"]
        meta = restored["meta"]
        self.step_count, self.data_position, self.skipped = meta["step"], meta["data_position"], meta["skipped"]
        return True

    def policy(self):
        """The current model (LoRA factors still separate), with its own Variables: changing it in place (e.g.
        `merge_lora`) leaves the trainer's state alone (nnx.merge alone would share the Variable objects)."""
        fresh = lambda state: jax.tree.map(lambda x: x, state)  # noqa: E731
        return nnx.merge(self.graphdef, fresh(self.params), fresh(self.frozen))

    def export(self, out_dir: str | Path, source_dir: str | Path | None = None, **save_kwargs) -> Path:
        """Merge LoRA into the weights and write an HF checkpoint; tokenizer/processor files come from
        `source_dir` (default: model_name_or_path) so the directory loads on its own."""
        model = merge_lora(self.policy())
        out = Path(model.save_pretrained(out_dir, **save_kwargs))
        source = Path(source_dir or self.cfg.model_name_or_path)
        for name in PROCESSOR_FILES:
            if (source / name).exists():
                shutil.copy(source / name, out / name)
        return out


def plot_sft_history(history: list[dict], path: str | Path) -> Path:
    """PNG: loss, response-token accuracy, gradient norm and learning rate over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("loss", "token_accuracy", "grad_norm", "learning_rate")
    steps = [m["step"] for m in history]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4))
    for ax, key in zip(axes, keys, strict=True):
        ax.plot(steps, [m[key] for m in history], marker="o", ms=2)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
