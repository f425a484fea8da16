"""The GRPO loop (EasyR1 step semantics): rollout -> rewards -> advantages -> old/ref log-probs -> update.

One `step()` takes `data.rollout_batch_size` prompts, samples `worker.rollout.n` responses each (one prefill per
prompt), scores them, normalises scores within each group, recomputes the old log-probs with the current policy
and the reference log-probs with a frozen copy of the initial policy, then runs `ppo_epochs` passes over
mini-batches of `global_batch_size * n` responses, accumulating exact token-mean gradients over micro-batches of
`micro_batch_size_per_device_for_update * data-parallel devices`. A step whose gradient is not finite is skipped
and counted; `max_consecutive_skips` in a row stop training with a clear message. Checkpoints (orbax) hold the
parameters, optimizer state, step, data position and config, so `resume=True` continues with the next step
exactly as an uninterrupted run would.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

from vrsjax import rollout
from vrsjax.config import Config, batch_per_device, to_dict
from vrsjax.layers.lora import LoRAParam, add_lora
from vrsjax.parallel.rules import shard_model
from vrsjax.processing.prompts import veason_prompt
from vrsjax.rewards import veason
from vrsjax.rl import grpo
from vrsjax.rl.plots import plot_history
from vrsjax.rl.sequences import prompt_data, sequence_inputs
from vrsjax.rl.update import (
    apply_grads,
    log_probs,
    make_optimizer,
    micro_grads,
    shared_log_probs,
    shared_micro_grads,
)


@dataclasses.dataclass
class GRPOSample:
    """One training prompt (Veason-R1): frames uint8[N, S, S, 3] at the sampled `frame_ids`; gt_masks bool[N, H, W]
    and gt_boxes (per sampled frame, [x1, y1, x2, y2] boxes in the S x S frame) for the rewards."""

    sample_id: str
    expression: str
    frames: np.ndarray
    frame_ids: list[int]
    gt_masks: np.ndarray
    gt_boxes: list


RewardFn = Callable[[str, GRPOSample], dict[str, float]]


def veason_reward(propagate_for: Callable[[GRPOSample], Callable] | None = None, **weights: float) -> RewardFn:
    """The Veason-R1 reward per response -> its components; without SAM2 the consistency term is 0 (ablation)."""

    def score(response: str, sample: GRPOSample) -> dict[str, float]:
        propagate = propagate_for(sample) if propagate_for else None
        parts = veason.score_components(
            response,
            sample.gt_masks,
            sample.gt_boxes,
            sample.frame_ids,
            propagate,
            use_consistency=propagate is not None,
        )
        return {k: v * weights.get(f"{k}_weight", 1.0) for k, v in parts.items()}

    return score


def sam2_propagate_for(service, cache_size: int = 64) -> Callable[[GRPOSample], Callable]:
    """Per sample, a `propagate(keyframe_position, boxes)` over the sample's frames with SAM2. The frames are
    encoded once per sample and reused by all n responses of its group (`SAM2Service.prepare`)."""
    prepared: dict[str, Any] = {}

    def for_sample(sample: GRPOSample) -> Callable:
        if sample.sample_id not in prepared:
            if len(prepared) >= cache_size:
                prepared.pop(next(iter(prepared)))
            prepared[sample.sample_id] = service.prepare(sample.frames)
        video = prepared[sample.sample_id]
        return lambda keyframe, boxes: service.propagate(video, keyframe, boxes=np.asarray(boxes, np.float32))

    return for_sample


def xmem_propagate_for(sam, xmem, masks_from_probs) -> Callable[[GRPOSample], Callable]:
    """VideoSeg-R1's propagation: SAM2 segments the keyframe from the boxes (one mask per box), XMem carries the
    masks forward and backward through the sample's frames; objects OR-ed -> bool[T, H, W]. (`masks_from_probs`
    comes from `vrsjax.services.xmem`, passed in so this module never imports torch.)"""

    def for_sample(sample: GRPOSample) -> Callable:
        def propagate(keyframe: int, boxes) -> np.ndarray:
            frames = np.asarray(sample.frames)
            masks = sam.segment_image(frames[keyframe], boxes=np.asarray(boxes, np.float32), per_object=True)
            probs = xmem.propagate(frames, masks.reshape(-1, *frames.shape[1:3]), keyframe)
            return masks_from_probs(probs, union=True)

        return propagate

    return for_sample


class NonFiniteError(RuntimeError):
    pass


class GRPOTrainer:
    def __init__(
        self,
        config: Config,
        model,
        processor,
        samples: Sequence[GRPOSample],
        *,
        reward_fn: RewardFn | None = None,
        out_dir: str | Path | None = None,
        max_consecutive_skips: int = 5,
        mesh=None,
    ):
        self.cfg, self.model, self.processor, self.samples = config, model, processor, samples
        self.reward_fn = reward_fn or veason_reward()
        self.out_dir = Path(out_dir or config.trainer.save_checkpoint_path)
        self.max_consecutive_skips = max_consecutive_skips
        actor = config.worker.actor
        self.n = config.worker.rollout.n
        # data-parallel width: micro-batches hold micro_batch_size_per_device rows per data-parallel device
        self.devices = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
        self.per_device = batch_per_device(config, self.devices)
        self.total_steps = config.trainer.max_steps if config.trainer.max_steps > 0 else 1
        self.optimizer = make_optimizer(actor.optim, actor.max_grad_norm, self.total_steps)
        if mesh is not None:  # parameters (and so gradients and optimizer state) placed by the logical-axis rules
            model = shard_model(model, mesh)
        self.mesh = mesh
        if actor.lora_rank > 0:  # LoRA: only the adapters train; the reference is the base (adapters disabled)
            add_lora(model, actor.lora_rank, actor.lora_alpha, actor.lora_target, seed=config.data.seed)
            self.graphdef, self.params, self.frozen = nnx.split(model, LoRAParam, ...)
            disable = lambda path, x: jnp.zeros_like(x) if "lora_b" in jax.tree_util.keystr(path) else jnp.copy(x)  # noqa: E731
            self.ref_params = jax.tree_util.tree_map_with_path(disable, self.params) if actor.use_kl_loss else None
        else:
            self.graphdef, self.params, self.frozen = nnx.split(model, nnx.Param, ...)
            self.ref_params = jax.tree.map(jnp.copy, self.params) if actor.use_kl_loss else None
        self.opt_state = self.optimizer.init(self.params)
        self.loss_config = grpo.LossConfig(
            clip_low=actor.clip_low,
            clip_high=actor.clip_high,
            clip_c=actor.clip_ratio_dual,
            agg_mode=actor.loss_agg_mode,
            entropy_coeff=actor.entropy_coeff,
            kl_coef=actor.kl_loss_coef if actor.use_kl_loss else 0.0,
            kl_kind=actor.kl_loss_type,
        )
        self.step_count, self.data_position, self.skips_in_a_row, self.skipped = 0, 0, 0, 0

    # ------------------------------------------------------------------------------------------------- data

    def _next_prompts(self) -> list[GRPOSample]:
        """rollout_batch_size samples, reshuffled every epoch by data.seed (the position is checkpointed)."""
        out = []
        for _ in range(self.cfg.data.rollout_batch_size):
            epoch, index = divmod(self.data_position, len(self.samples))
            order = np.random.default_rng([self.cfg.data.seed, epoch]).permutation(len(self.samples))
            out.append(self.samples[int(order[index]) if self.cfg.data.shuffle else index])
            self.data_position += 1
        return out

    def _prompt_text(self, sample: GRPOSample) -> str:
        return veason_prompt(
            sample.expression, sample.frame_ids, self.cfg.data.system_prompt, template=self.processor.chat_template
        )

    # ------------------------------------------------------------------------------------------------- step

    def step(self) -> dict[str, Any]:
        cfg, n, times = self.cfg, self.n, {}
        t0 = time.perf_counter()
        samples = self._next_prompts()
        texts = [self._prompt_text(s) for s in samples]
        frames = [f for s in samples for f in s.frames]
        batch = self.processor(
            text=texts, images=frames, padding="bucket", max_prompt_length=cfg.data.max_prompt_length
        )
        prompts = [
            prompt_data(self.model.config, self.processor(text=[t], images=list(s.frames)))
            for t, s in zip(texts, samples, strict=True)
        ]
        model = nnx.merge(self.graphdef, self.params, self.frozen)
        ro = cfg.worker.rollout
        out = rollout.generate(
            model,
            batch,
            n=n,
            max_new_tokens=cfg.data.max_response_length,
            temperature=ro.temperature,
            top_p=ro.top_p,
            top_k=max(ro.top_k, 0),
            seed=ro.seed * 1_000_003 + self.step_count,
            processor=self.processor,
        )
        times["rollout"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        parts = [self.reward_fn(text, samples[i // n]) for i, text in enumerate(out.texts)]
        scores = np.array([sum(p.values()) for p in parts], np.float32)
        rows = np.repeat(np.arange(len(samples)), n)
        adv = np.asarray(grpo.group_advantages(scores, rows, norm_by_std=cfg.algorithm.norm_adv_by_std_in_grpo))
        times["reward"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        micro = cfg.worker.actor.micro_batch_size_per_device_for_experience * self.devices
        old, ref = self._log_probs(self.params, prompts, rows, out, micro), None
        if self.ref_params is not None:
            ref = self._log_probs(self.ref_params, prompts, rows, out, micro)
        times["log_probs"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        update = self._update(prompts, rows, out, old, ref, adv)
        times["update"] = time.perf_counter() - t0
        self.step_count += 1
        return self._metrics(parts, scores, adv, out, update, times)

    def _log_probs(self, params, prompts, rows, out, micro) -> np.ndarray:
        temperature = self.cfg.worker.rollout.temperature or 1.0
        if self._shared(micro):
            chunks = []
            for s in range(0, len(rows), micro):
                group_rows, tokens, mask, shared, next_pos = self._groups(prompts, rows, out, slice(s, s + micro))
                logp, _ = shared_log_probs(
                    self.graphdef, params, self.frozen, shared, tokens, mask, next_pos, temperature=temperature
                )
                chunks.append(np.asarray(logp).reshape(-1, tokens.shape[-1]))
            return np.concatenate(chunks)
        chunks = []
        for s in range(0, len(rows), micro):
            sl = slice(s, s + micro)
            inputs = sequence_inputs(self.model.config, prompts, rows[sl], out.tokens[sl], out.mask[sl])
            logp, _ = log_probs(
                self.graphdef,
                params,
                self.frozen,
                inputs,
                out.tokens[sl],
                prompt_len=_prompt_len(inputs, out),
                temperature=self.cfg.worker.rollout.temperature or 1.0,
            )
            chunks.append(np.asarray(logp))
        return np.concatenate(chunks)

    def _update(self, prompts, rows, out, old, ref, adv) -> dict[str, Any]:
        actor = self.cfg.worker.actor
        mini = actor.global_batch_size * self.n
        micro = actor.micro_batch_size_per_device_for_update * self.devices
        metrics: dict[str, list] = {}
        for _ in range(actor.ppo_epochs):
            for m0 in range(0, len(rows), mini):
                ms = slice(m0, m0 + mini)
                num_tokens = float(out.mask[ms].sum())
                num_seqs = float((out.mask[ms].sum(axis=1) > 0).sum())
                grads, acc = None, {}
                for u0 in range(m0, min(m0 + mini, len(rows)), micro):
                    us = slice(u0, u0 + micro)
                    g, loss, mm = self._micro_grads(prompts, rows, out, us, old, ref, adv, num_tokens, num_seqs, micro)
                    grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
                    share = float(out.mask[us].sum()) / max(num_tokens, 1.0)
                    for k, v in {"loss": loss, **mm}.items():  # loss terms are already shares of the mini-batch
                        acc[k] = acc.get(k, 0.0) + float(v) * (1.0 if k in _SHARES else share)
                for k, v in acc.items():
                    metrics.setdefault(k, []).append(v)
                self.params, self.opt_state, norm, finite = apply_grads(
                    self.params, self.opt_state, grads, optimizer=self.optimizer
                )
                metrics.setdefault("grad_norm", []).append(float(norm))
                self._count_skip(bool(finite))
        return metrics

    def _micro_grads(self, prompts, rows, out, us, old, ref, adv, num_tokens, num_seqs, micro):
        temperature = self.cfg.worker.rollout.temperature or 1.0
        ref_us = ref[us] if ref is not None else old[us]
        common = dict(temperature=temperature, loss_config=self.loss_config)
        if self._shared(micro):
            _, tokens, mask, shared, next_pos = self._groups(prompts, rows, out, us)
            return shared_micro_grads(
                self.graphdef,
                self.params,
                self.frozen,
                shared,
                tokens,
                mask,
                next_pos,
                old[us],
                ref_us,
                jnp.asarray(adv[us]),
                num_tokens,
                num_seqs,
                **common,
            )
        inputs = sequence_inputs(self.model.config, prompts, rows[us], out.tokens[us], out.mask[us])
        return micro_grads(
            self.graphdef,
            self.params,
            self.frozen,
            inputs,
            out.tokens[us],
            out.mask[us],
            old[us],
            ref_us,
            jnp.asarray(adv[us]),
            num_tokens,
            num_seqs,
            prompt_len=_prompt_len(inputs, out),
            **common,
        )

    def _shared(self, micro: int) -> bool:
        """Shared-prompt passes need whole groups in each micro-batch (and one response token to predict)."""
        return self.cfg.worker.actor.shared_prompt and micro % self.n == 0

    def _groups(self, prompts, rows, out, sl: slice):
        """Rows `sl` (whole groups) -> (prompt ids, tokens int[G, n, T], mask, prompt-only ModelInputs, next_pos)."""
        group_rows = rows[sl][:: self.n]
        t = out.tokens.shape[1]
        shared = sequence_inputs(
            self.model.config,
            prompts,
            group_rows,
            np.zeros((len(group_rows), 0), np.int32),
            np.zeros((len(group_rows), 0), np.int32),
        )
        next_pos = np.array([prompts[r].next_pos for r in group_rows], np.int32)
        tokens = out.tokens[sl].reshape(-1, self.n, t)
        return group_rows, tokens, out.mask[sl].reshape(-1, self.n, t), shared, next_pos

    def _count_skip(self, finite: bool) -> None:
        if finite:
            self.skips_in_a_row = 0
            return
        self.skipped += 1
        self.skips_in_a_row += 1
        if self.skips_in_a_row >= self.max_consecutive_skips:
            raise NonFiniteError(
                f"{self.skips_in_a_row} updates in a row had non-finite gradients (step {self.step_count}); "
                "lower worker.actor.optim.lr, check the rewards for NaN, or train in float32"
            )

    def _metrics(self, parts, scores, adv, out, update, times) -> dict[str, Any]:
        lengths = out.lengths
        tokens = float(out.mask.sum())
        m: dict[str, Any] = {
            "step": self.step_count,
            "reward/score_mean": float(scores.mean()),
            "reward/score_std": float(scores.std()),
        }
        for key in parts[0]:
            values = np.array([p[key] for p in parts])
            m[f"reward/{key}_mean"], m[f"reward/{key}_std"] = float(values.mean()), float(values.std())
        m |= {
            "adv/mean": float(adv.mean()),
            "adv/std": float(adv.std()),
            "response/length_mean": float(lengths.mean()),
            "response/length_max": int(lengths.max()),
            "response/truncated_frac": float((lengths == self.cfg.data.max_response_length).mean()),
            "train/skipped_updates": self.skipped,
        }
        for k, v in update.items():
            m[f"actor/{k}"] = float(np.mean(v))
        m |= {f"time/{k}": v for k, v in times.items()}
        m["perf/tokens_per_s"] = tokens / max(sum(times.values()), 1e-9)
        return m

    # ------------------------------------------------------------------------------------------------- loop

    def train(self, steps: int | None = None, *, resume: bool = False, save_every: int | None = None) -> list[dict]:
        """Run `steps` (default trainer.max_steps) steps, logging JSONL to out_dir/metrics.jsonl."""
        if resume:
            self.restore()
        steps = steps or self.cfg.trainer.max_steps
        save_every = save_every or (self.cfg.trainer.save_freq if self.cfg.trainer.save_freq > 0 else None)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        history = []
        log = self.out_dir / "metrics.jsonl"
        with tqdm(total=steps, desc="GRPO", disable=jax.process_index() != 0) as bar:
            while self.step_count < steps:
                m = self.step()
                history.append(m)
                if jax.process_index() == 0:
                    with log.open("a") as f:
                        f.write(json.dumps(m) + "\n")
                bar.set_postfix(score=f"{m['reward/score_mean']:.3f}", kl=f"{m.get('actor/kl_loss', 0):.4f}")
                bar.update(1)
                if save_every and self.step_count % save_every == 0:
                    self.save()
        if history and jax.process_index() == 0:
            plot_history(history, self.out_dir / "curves.png")
        return history

    def _manager(self) -> ocp.CheckpointManager:
        keep = None if not self.cfg.trainer.remove_previous_ckpt else 1
        return ocp.CheckpointManager(
            self.out_dir.absolute() / "checkpoints", options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        )

    def save(self) -> None:
        """Params, optimizer state, the reference copy, step, data position and config (atomic, orbax)."""
        state = {"params": self.params, "opt_state": self.opt_state}
        if self.ref_params is not None:
            state["ref_params"] = self.ref_params
        meta = {
            "step": self.step_count,
            "data_position": self.data_position,
            "skipped": self.skipped,
            "config": to_dict(self.cfg),
        }
        with self._manager() as manager:
            manager.save(
                self.step_count,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            )
            manager.wait_until_finished()

    def restore(self) -> bool:
        """Continue from the latest checkpoint in out_dir; False when there is none."""
        with self._manager() as manager:
            step = manager.latest_step()
            if step is None:
                return False
            target = {"params": self.params, "opt_state": self.opt_state}
            if self.ref_params is not None:
                target["ref_params"] = self.ref_params
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
            )
        self.params, self.opt_state = restored["state"]["params"], restored["state"]["opt_state"]
        self.ref_params = restored["state"].get("ref_params", self.ref_params)
        meta = restored["meta"]
        self.step_count, self.data_position, self.skipped = meta["step"], meta["data_position"], meta["skipped"]
        return True

    def policy(self):
        """The current policy as a model (e.g. to `save_pretrained` at the end)."""
        return nnx.merge(self.graphdef, self.params, self.frozen)


_SHARES = ("loss", "pg_loss", "kl_loss", "entropy")


def _prompt_len(inputs, out) -> int:
    return inputs.input_ids.shape[1] - out.tokens.shape[1]
