"""The GRPO loop (EasyR1 step semantics): rollout -> rewards -> advantages -> old/ref log-probs -> update.

One `step()` takes `data.rollout_batch_size` prompts, samples `worker.rollout.n` responses each (one prefill per
prompt), scores them, normalises scores within each group, recomputes the old log-probs with the current policy
and the reference log-probs with a frozen copy of the initial policy, then runs `ppo_epochs` passes over
mini-batches of `global_batch_size * n` responses, accumulating exact token-mean gradients over micro-batches of
`micro_batch_size_per_device_for_update * data-parallel devices`. A step whose gradient is not finite is skipped
and counted; `max_consecutive_skips` in a row stop training with a clear message.

EasyR1's options: KL in the loss (`worker.actor.use_kl_loss`) or subtracted from the scores with a fixed or adaptive
coefficient (`algorithm.kl_*`); online filtering of groups by mean score (`algorithm.online_filtering`, sampling
more prompts, at most `trainer.max_try_make_batch` rollouts); old log-probs recomputed or taken from the rollout
(`worker.actor.use_rollout_log_probs`). Rewards are scored in a background thread while the old and reference
log-probs run. Checkpoints (orbax, asynchronous, atomic, the newest `trainer.save_limit` kept) hold the parameters,
optimizer state, reference, step, data position (or a grain iterator's state), the rollout PRNG counter, the KL
coefficient and the config, so a killed run resumes with the next step exactly as an uninterrupted run would.
Metrics per step go to out_dir/metrics.jsonl and, with `tensorboard` in trainer.logger, to out_dir/tensorboard.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vrsjax import checkpoint, rollout
from vrsjax.checkpoint import CheckpointError
from vrsjax.config import Config, batch_per_device, to_dict
from vrsjax.layers.lora import LoRAParam, add_lora
from vrsjax.models.qwen2_5_vl.rows import is_per_row
from vrsjax.parallel.data import batch_sharding, group_copies, to_host
from vrsjax.parallel.rules import shard_model
from vrsjax.processing.prompts import veason_prompt
from vrsjax.progress import progress_bar
from vrsjax.rewards.wiring import (  # noqa: F401 (re-exported: the trainer's reward wiring)
    RewardFn,
    sam2_propagate_for,
    score_groups,
    veason_reward,
    xmem_propagate_for,
)
from vrsjax.rl import flops, grpo, metrics_log
from vrsjax.rl.plots import plot_history
from vrsjax.rl.reward_shaping import KLController, filter_values, kept_groups, kl_penalised_scores
from vrsjax.rl.sequences import prompt_data, prompt_inputs, sequence_inputs
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


class NonFiniteError(RuntimeError):
    pass


def actor_loss_config(actor) -> grpo.LossConfig:
    """The policy loss settings of `worker.actor` (EasyR1 names), as the trainer and `vrsjax lower` use them."""
    return grpo.LossConfig(
        clip_low=actor.clip_low,
        clip_high=actor.clip_high,
        clip_c=actor.clip_ratio_dual,
        agg_mode=actor.loss_agg_mode,
        entropy_coeff=actor.entropy_coeff,
        kl_coef=actor.kl_loss_coef if actor.use_kl_loss else 0.0,
        kl_kind=actor.kl_loss_type,
    )


def sample_from_example(ex: dict) -> GRPOSample:
    """A Veason-R1 training example (`vrsjax.data.examples.train_example`, or one item of the grain pipeline
    `vrsjax.data.pipeline.train_dataset`) -> GRPOSample."""
    return GRPOSample(
        f"{ex['video']}/{ex['exp_id']}",
        ex["expression"],
        ex["frames"],
        [int(i) for i in ex["frame_ids"]],
        ex["gt_masks"],
        ex["gt_boxes"],
    )


@dataclasses.dataclass
class _Batch:
    """The step's training batch: samples [B], the rollout's B * n rows, and the reward components (or the
    future that computes them in the background)."""

    samples: list[GRPOSample]
    out: rollout.RolloutOutput
    parts: list[dict[str, float]] | None = None
    pending: concurrent.futures.Future | None = None
    tries: int = 1
    dropped: int = 0


class GRPOTrainer:
    def __init__(
        self,
        config: Config,
        model,
        processor,
        samples,
        *,
        reward_fn: RewardFn | None = None,
        out_dir: str | Path | None = None,
        max_consecutive_skips: int = 5,
        mesh=None,
        peak_flops: float | None = None,
        scorer=None,
    ):
        """`samples`: a sequence of GRPOSample (indexed by a checkpointed position, reshuffled each epoch by
        data.seed), or an iterator with grain's get_state/set_state (e.g. `iter(train_dataset(...))`) yielding
        GRPOSamples, examples or lists of them. `peak_flops`: one device's peak FLOP/s for the MFU estimate
        (default: `vrsjax.rl.flops.PEAK_FLOPS` for the device kind; MFU is not reported when unknown).
        `scorer`: a `vrsjax.rewards.scorer.RewardScorer` to score with instead of `reward_fn` (its registered reward
        on each group, SAM2 in process or in worker processes); its scores are totals (`reward/overall_*`)."""
        self.cfg, self.model, self.processor = config, model, processor
        self.samples, self.data_iter = samples, None
        if not hasattr(samples, "__getitem__"):
            self.data_iter = samples if hasattr(samples, "get_state") else iter(samples)
        self.reward_fn = reward_fn or veason_reward()
        self.scorer = scorer
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
        # the reference policy serves the KL in the loss, or in the reward (EasyR1: use_kl_loss=false, kl_coef)
        algo = config.algorithm
        kl_in_reward = not actor.use_kl_loss and (algo.kl_coef > 0 or algo.kl_type == "adaptive")
        self.kl_ctrl = KLController.from_config(config.algorithm) if kl_in_reward else None
        need_ref = actor.use_kl_loss or kl_in_reward
        if actor.lora_rank > 0:  # LoRA: only the adapters train; the reference is the base (adapters disabled)
            add_lora(model, actor.lora_rank, actor.lora_alpha, actor.lora_target, seed=config.data.seed)
            self.graphdef, self.params, self.frozen = nnx.split(model, LoRAParam, ...)
            disable = lambda path, x: jnp.zeros_like(x) if "lora_b" in jax.tree_util.keystr(path) else jnp.copy(x)  # noqa: E731
            self.ref_params = jax.tree_util.tree_map_with_path(disable, self.params) if need_ref else None
        else:
            self.graphdef, self.params, self.frozen = nnx.split(model, nnx.Param, ...)
            # EasyR1 keeps the reference in bfloat16 unless worker.actor.fsdp.torch_dtype names a dtype
            ref_dtype = jnp.dtype(actor.fsdp.param_dtype("ref"))
            # a fresh buffer either way: the actor's parameters are donated to the optimizer step
            as_ref = lambda x: jnp.copy(x) if x.dtype == ref_dtype else x.astype(ref_dtype)  # noqa: E731
            self.ref_params = jax.tree.map(as_ref, self.params) if need_ref else None
        self.opt_state = self.optimizer.init(self.params)
        self.loss_config = actor_loss_config(actor)
        self.remat = actor.model.enable_gradient_checkpointing
        self.step_count, self.data_position, self.skips_in_a_row, self.skipped = 0, 0, 0, 0
        self.loaded = 0  # samples this process read from the data (its shard)
        self.rollouts = 0  # rollouts sampled so far: the PRNG state (rollout seed = f(worker.rollout.seed, this))
        self.model_flops = flops.ModelFlops.from_config(self.model.config)
        device = jax.devices()[0]
        self.peak_flops = peak_flops or flops.peak_flops(device.device_kind, actor.fsdp.mp_param_dtype)
        self._checkpoints: ocp.CheckpointManager | None = None
        self._saving: int | None = None  # the step whose asynchronous save may still be running
        self._reward_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._tb = None

    # ------------------------------------------------------------------------------------------------- data

    def _next_prompts(self) -> list[GRPOSample]:
        """rollout_batch_size samples: from the grain iterator, or by position, reshuffled every epoch by
        data.seed (the position, or the iterator's state, is checkpointed). With several processes each loads
        its own share (prompt i on process i % count; an iterator gives each process batch / count) and the
        shares are exchanged, so every process holds the step's prompts in the same order."""
        count, procs = self.cfg.data.rollout_batch_size, jax.process_count()
        if self.data_iter is not None:
            if count % procs:
                raise ValueError(f"data.rollout_batch_size={count} must divide over the {procs} processes")
            local = dict(enumerate(self._from_iterator(count // procs)))
            shares = _exchange(local)
            self.data_position += count - count // procs  # the other processes' draws
            return [shares[p][i] for p in range(procs) for i in range(count // procs)]
        indices = []
        for _ in range(count):
            epoch, index = divmod(self.data_position, len(self.samples))
            order = np.random.default_rng([self.cfg.data.seed, epoch]).permutation(len(self.samples))
            indices.append(int(order[index]) if self.cfg.data.shuffle else index)
            self.data_position += 1
        if procs == 1:
            self.loaded += count
            return [self.samples[i] for i in indices]
        mine = {k: self.samples[i] for k, i in enumerate(indices) if k % procs == jax.process_index()}
        self.loaded += len(mine)
        merged = {k: v for share in _exchange(mine) for k, v in share.items()}
        return [merged[k] for k in range(count)]

    def _from_iterator(self, count: int) -> list[GRPOSample]:
        out: list[GRPOSample] = []
        while len(out) < count:
            item = next(self.data_iter)
            items = item if isinstance(item, list) else [item]
            out += [x if isinstance(x, GRPOSample) else sample_from_example(x) for x in items]
            self.data_position += len(items)
        if len(out) != count:  # a batch was split: its rest would be lost on resume
            raise ValueError(
                f"the data iterator yields batches of {len(items)} that do not add up to data.rollout_batch_size="
                f"{count} (per process); make the pipeline's batch_size divide it (or yield single examples)"
            )
        self.loaded += len(out)
        return out

    def _prompt_text(self, sample: GRPOSample) -> str:
        return veason_prompt(
            sample.expression, sample.frame_ids, self.cfg.data.system_prompt, template=self.processor.chat_template
        )

    # ------------------------------------------------------------------------------------------------- step

    def step(self) -> dict[str, Any]:
        cfg, n, actor = self.cfg, self.n, self.cfg.worker.actor
        times = {"rollout": 0.0, "reward": 0.0}
        t_step = time.perf_counter()
        batch = self._make_batch(times)
        samples, out = batch.samples, batch.out
        prompts = [
            prompt_data(self.model.config, self.processor(text=[self._prompt_text(s)], images=list(s.frames)))
            for s in samples
        ]
        rows = np.repeat(np.arange(len(samples)), n)

        t0 = time.perf_counter()  # the reward runs in the background meanwhile
        micro = actor.micro_batch_size_per_device_for_experience * self.devices
        if actor.use_rollout_log_probs:
            old = np.asarray(out.logprobs, np.float32)
        else:
            old = self._log_probs(self.params, prompts, rows, out, micro)
        ref = None if self.ref_params is None else self._log_probs(self.ref_params, prompts, rows, out, micro)
        times["log_probs"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if batch.pending is not None:
            batch.parts, times["reward"] = batch.pending.result()
        times["reward_wait"] = time.perf_counter() - t0
        parts = batch.parts
        scores = np.array([sum(p.values()) for p in parts], np.float32)
        extra = {"filter/tries": batch.tries, "filter/dropped_groups": batch.dropped}
        shaped = scores
        if self.kl_ctrl is not None:  # KL in the reward (EasyR1's apply_kl_penalty), from the old log-probs
            shaped, kl_metrics = kl_penalised_scores(scores, old, ref, out.mask, self.kl_ctrl, cfg.algorithm.kl_penalty)
            extra |= kl_metrics
        estimator = grpo.get_advantage_estimator(cfg.algorithm.adv_estimator)  # grpo or rloo, float64 on the host
        adv = estimator(shaped, rows, norm_by_std=cfg.algorithm.norm_adv_by_std_in_grpo)

        t0 = time.perf_counter()
        update = self._update(prompts, rows, out, old, ref, adv)
        times["update"] = time.perf_counter() - t0
        times["step"] = time.perf_counter() - t_step
        self.step_count += 1
        return self._metrics(parts, scores, adv, out, update, times, prompts) | extra

    def _make_batch(self, times: dict[str, float]) -> _Batch:
        """Roll out rollout_batch_size prompts. Without online filtering the reward starts in the background;
        with it (EasyR1's _make_batch_data) groups whose mean filter score is outside (filter_low, filter_high) are
        dropped and more prompts rolled out until the batch is full, at most trainer.max_try_make_batch times."""
        cfg, n, algo = self.cfg, self.n, self.cfg.algorithm
        want = cfg.data.rollout_batch_size
        samples, outs, parts, tries, dropped = [], [], [], 0, 0
        while True:
            tries += 1
            new = self._next_prompts()
            t0 = time.perf_counter()
            out = self._rollout(new)
            times["rollout"] += time.perf_counter() - t0
            if not algo.online_filtering:
                return _Batch(new, out, pending=self._submit(out.texts, new))
            new_parts, seconds = self._score(out.texts, new)
            times["reward"] += seconds
            keep = kept_groups(filter_values(new_parts, algo.filter_key), n, algo.filter_low, algo.filter_high)
            if not keep.any():  # as EasyR1: a rollout with no usable group means the data or the range is wrong
                raise RuntimeError(
                    f"online filtering kept no group of rollout {tries} (step {self.step_count}): every group's mean "
                    f"{algo.filter_key} is outside ({algo.filter_low}, {algo.filter_high}); check the data and reward, "
                    "or widen algorithm.filter_low / filter_high"
                )
            dropped += int((~keep).sum())
            rows = np.repeat(keep, n)
            samples += [s for s, k in zip(new, keep, strict=True) if k]
            outs.append(_take_rows(out, rows))
            parts += [p for p, k in zip(new_parts, rows, strict=True) if k]
            if len(samples) >= want:
                out = _concat(outs)
                rows = slice(0, want * n)
                return _Batch(samples[:want], _take_rows(out, rows), parts[: want * n], tries=tries, dropped=dropped)
            limit = cfg.trainer.max_try_make_batch
            if limit > 0 and tries >= limit:
                raise RuntimeError(
                    f"online filtering: {len(samples)} of {want} groups kept after {tries} rollouts "
                    f"(trainer.max_try_make_batch={limit}); check the data and reward, widen "
                    "algorithm.filter_low / filter_high, or raise the limit (-1 = none)"
                )

    def _rollout(self, samples: list[GRPOSample]) -> rollout.RolloutOutput:
        cfg, ro = self.cfg, self.cfg.worker.rollout
        texts = [self._prompt_text(s) for s in samples]
        frames = [f for s in samples for f in s.frames]
        batch = self.processor(
            text=texts, images=frames, padding="bucket", max_prompt_length=cfg.data.max_prompt_length
        )
        model = nnx.merge(self.graphdef, self.params, self.frozen)
        out = rollout.generate(
            model,
            batch,
            n=self.n,
            max_new_tokens=cfg.data.max_response_length,
            temperature=ro.temperature,
            top_p=ro.top_p,
            top_k=max(ro.top_k, 0),
            seed=ro.seed * 1_000_003 + self.rollouts,
            processor=self.processor,
            mesh=self.mesh,  # prompts over the batch axes, a group's responses split when prompts are fewer
        )
        self.rollouts += 1
        return out

    def _score(self, texts: list[str], samples: list[GRPOSample]) -> tuple[list[dict[str, float]], float]:
        """Reward components of every response (row i answers samples[i // n]) and the seconds it took."""
        return self._submit(texts, samples).result()

    def _submit(self, texts: list[str], samples: list[GRPOSample]) -> concurrent.futures.Future:
        """Start scoring in the background (the reward thread, or the RewardScorer's queue); -> a future of
        (components per response, seconds)."""
        t0 = time.perf_counter()
        if self.scorer is None:

            def score() -> tuple[list[dict[str, float]], float]:
                parts = score_groups(self.reward_fn, texts, samples, self.n)  # a group per SAM2 call
                return parts, time.perf_counter() - t0

            return self._pool().submit(score)
        from vrsjax.rewards.scorer import RewardGroup

        groups = [
            RewardGroup(
                texts[g * self.n : (g + 1) * self.n],
                {"gt_masks": s.gt_masks, "gt_boxes": s.gt_boxes, "frame_ids": s.frame_ids},
                frames=s.frames,
            )
            for g, s in enumerate(samples)
        ]
        pending = self.scorer.submit(groups)
        collect = lambda: ([{"overall": float(v)} for v in pending.result().scores], time.perf_counter() - t0)  # noqa: E731
        return self._pool().submit(collect)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._reward_pool is None:
            self._reward_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vrsjax-reward")
        return self._reward_pool

    def _log_probs(self, params, prompts, rows, out, micro) -> np.ndarray:
        """float32[B * n, T] log-probs of the rollout's tokens under `params`, micro-batch by micro-batch."""
        chunks = []
        for s in range(0, len(rows), micro):
            fn, args, kwargs = self._log_prob_call(params, prompts, rows, out, slice(s, s + micro), micro)
            logp, _ = fn(*args, **kwargs)
            chunks.append(to_host(logp).reshape(-1, out.tokens.shape[1]))  # rows of every process
        return np.concatenate(chunks)

    def _log_prob_call(self, params, prompts, rows, out, sl: slice, micro: int):
        """The jitted log-prob pass of rows `sl` and its arguments, placed on the mesh: (fn, args, kwargs)."""
        temperature = self.cfg.worker.rollout.temperature or 1.0
        if self._shared(micro):
            tokens, mask, shared, next_pos = self._groups(prompts, rows, out, sl)
            args = (self.graphdef, params, self.frozen, shared, tokens, mask, next_pos)
            return shared_log_probs, args, dict(temperature=temperature)
        inputs = sequence_inputs(self.model.config, prompts, rows[sl], out.tokens[sl], out.mask[sl])
        prompt_len = _prompt_len(inputs, out)
        (tokens,) = self._place(out.tokens[sl])
        args = (self.graphdef, params, self.frozen, self._place_inputs(inputs), tokens)
        return log_probs, args, dict(prompt_len=prompt_len, temperature=temperature)

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
        fn, args, kwargs = self._micro_call(prompts, rows, out, us, old, ref, adv, num_tokens, num_seqs, micro)
        return fn(*args, **kwargs)

    def _micro_call(self, prompts, rows, out, us, old, ref, adv, num_tokens, num_seqs, micro):
        """The jitted gradient pass of micro-batch `us` and its arguments, placed on the mesh: (fn, args, kwargs)."""
        temperature = self.cfg.worker.rollout.temperature or 1.0
        ref_us = ref[us] if ref is not None else old[us]
        common = dict(temperature=temperature, loss_config=self.loss_config, remat=self.remat)
        if self._shared(micro):
            tokens, mask, shared, next_pos = self._groups(prompts, rows, out, us)
            g = len(next_pos)  # prompt rows: the batch dimension of the shared pass
            old_us, ref_us, adv_us = (
                self._place(a.reshape(g, -1))[0].reshape(a.shape) for a in (old[us], ref_us, adv[us])
            )
            args = (self.graphdef, self.params, self.frozen, shared, tokens, mask, next_pos, old_us, ref_us, adv_us)
            return shared_micro_grads, (*args, num_tokens, num_seqs), common
        inputs = sequence_inputs(self.model.config, prompts, rows[us], out.tokens[us], out.mask[us])
        prompt_len = _prompt_len(inputs, out)
        inputs = self._place_inputs(inputs)
        tokens, mask, old_us, ref_us, adv_us = self._place(out.tokens[us], out.mask[us], old[us], ref_us, adv[us])
        args = (self.graphdef, self.params, self.frozen, inputs, tokens, mask, old_us, ref_us, adv_us)
        return micro_grads, (*args, num_tokens, num_seqs), dict(prompt_len=prompt_len, **common)

    def _place(self, *arrays) -> list:
        """Rows over the mesh's batch axes (data, fsdp) when they split evenly, else replicated (jnp arrays)."""
        out = []
        for a in arrays:
            a = np.asarray(a)
            sharding = self._row_sharding(a.shape[0], a.ndim)
            out.append(jnp.asarray(a) if sharding is None else jax.device_put(a, sharding))
        return out

    def _row_sharding(self, rows: int, ndim: int):
        """Rows over the batch axes; None without a mesh, or when the rows do not split (a last, partial
        micro-batch): the shared passes repeat prompts so that whole micro-batches always split (`_groups`)."""
        if self.mesh is None:
            return None
        try:
            return batch_sharding(self.mesh, rows, ndim)
        except ValueError:
            return None

    def _place_inputs(self, inputs):
        """ModelInputs with the row-indexed arrays placed like the batch: positions ([3, B, L]) on their axis 1, and
        per-row vision (patches [B, P, C], layout [B, ...]) with its rows; flat patches stay whole on every device."""
        ids, att, src = self._place(inputs.input_ids, inputs.attention_mask, inputs.vision_src)
        rows = self._row_sharding(ids.shape[0], 2)
        pos = np.asarray(inputs.position_ids)
        pos = jnp.asarray(pos) if rows is None else jax.device_put(pos, NamedSharding(self.mesh, P(None, *rows.spec)))
        placed = dict(input_ids=ids, attention_mask=att, vision_src=src, position_ids=pos)
        if is_per_row(inputs):
            placed["patches"] = self._place(inputs.patches)[0]
            placed["layout"] = jax.tree.map(lambda a: self._place(a)[0], inputs.layout)
        return dataclasses.replace(inputs, **placed)

    def _shared(self, micro: int) -> bool:
        """Shared-prompt passes need whole groups in each micro-batch (and one response token to predict)."""
        return self.cfg.worker.actor.shared_prompt and micro % self.n == 0

    def _groups(self, prompts, rows, out, sl: slice):
        """Rows `sl` (G whole groups) -> the shared pass's arguments placed on the mesh: tokens, mask int[G * k, n / k,
        T], the prompts as ModelInputs [G * k, L] (vision per row) and next_pos int[G * k]. When the G groups do not
        split over the batch shards, each prompt is repeated on k rows that take n / k of its responses each
        (`group_copies`), so every device attends its own responses to its own copy of the prompt and no response is
        computed twice; the prompt is then computed k times in all (once on each device holding its responses)."""
        group_rows = rows[sl][:: self.n]
        k = group_copies(len(group_rows), self.n, self.devices)
        prompt_rows = np.repeat(group_rows, k)
        t = out.tokens.shape[1]
        shared = self._place_inputs(prompt_inputs(self.model.config, prompts, prompt_rows))
        next_pos = np.array([prompts[r].next_pos for r in prompt_rows], np.int32)
        tokens, mask = (a[sl].reshape(len(prompt_rows), self.n // k, t) for a in (out.tokens, out.mask))
        tokens, mask, next_pos = self._place(tokens, mask, next_pos)
        return tokens, mask, shared, next_pos

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

    def _metrics(self, parts, scores, adv, out, update, times, prompts) -> dict[str, Any]:
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
        m["perf/tokens_per_s"] = tokens / max(times["step"], 1e-9)
        return m | self._flops_metrics(prompts, lengths, times)

    def _flops_metrics(self, prompts, lengths, times) -> dict[str, float]:
        """Estimated model FLOPs per phase (vrsjax.rl.flops) and MFU of the step and of the update."""
        actor = self.cfg.worker.actor
        micro = actor.micro_batch_size_per_device_for_update * self.devices
        patches = sum(0 if p.patches is None else int(np.prod(p.grids, axis=1).sum()) for p in prompts)
        phases = flops.step_flops(
            self.model_flops,
            np.array([len(p.ids) for p in prompts]),
            lengths,
            self.n,
            patches,
            shared_prompt=self._shared(micro),
            forward_passes=int(not actor.use_rollout_log_probs) + int(self.ref_params is not None),
            update_passes=actor.ppo_epochs,
        )
        total = sum(phases.values())
        devices = len(jax.devices())
        m = {"perf/tflops_step": total / 1e12, "perf/tflops_per_s": total / max(times["step"], 1e-9) / 1e12}
        if self.peak_flops:
            m["perf/mfu"] = flops.mfu(total, times["step"], devices, self.peak_flops)
            m["perf/mfu_update"] = flops.mfu(phases["update"], times["update"], devices, self.peak_flops)
        return m

    # ------------------------------------------------------------------------------------------------- loop

    def train(self, steps: int | None = None, *, resume: bool = False, save_every: int | None = None) -> list[dict]:
        """Run up to `steps` (default trainer.max_steps) steps in all, logging to out_dir (metrics.jsonl, and
        tensorboard/ when trainer.logger lists it); process 0 alone writes logs. Checkpoints every
        `save_every` (default trainer.save_freq) steps, asynchronously; all are written when this returns."""
        steps = steps or self.cfg.trainer.max_steps
        save_every = save_every or (self.cfg.trainer.save_freq if self.cfg.trainer.save_freq > 0 else None)
        main = jax.process_index() == 0
        log = self.out_dir / "metrics.jsonl"
        if resume:
            self.restore()
            if main:  # steps after the restored checkpoint were logged but will be trained again
                self._drop_logs_after(self.step_count)
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        history = []
        try:
            with progress_bar(total=steps, initial=min(self.step_count, steps), desc="GRPO", disable=not main) as bar:
                while self.step_count < steps:
                    m = self.step()
                    history.append(m)
                    if main:
                        self._log(log, m)
                    bar.set_postfix(score=f"{m['reward/score_mean']:.3f}", kl=f"{m.get('actor/kl_loss', 0):.4f}")
                    bar.update(1)
                    if save_every and self.step_count % save_every == 0:
                        self.save(block=False)
        finally:
            self.wait()
        if main and (whole_run := metrics_log.read(log)):  # after a resume: the steps before it too
            plot_history(whole_run, self.out_dir / "curves.png")
        return history

    def _drop_logs_after(self, step: int) -> None:
        metrics_log.keep_until(self.out_dir / "metrics.jsonl", step)
        if (self.out_dir / "tensorboard").is_dir():
            from vrsjax.rl.tensorboard import keep_until

            keep_until(self.out_dir / "tensorboard", step)

    def _log(self, path: Path, m: dict[str, Any]) -> None:
        metrics_log.append(path, m)
        if "tensorboard" in self.cfg.trainer.logger:
            if self._tb is None:
                from vrsjax.rl.tensorboard import SummaryWriter

                self._tb = SummaryWriter(self.out_dir / "tensorboard")
            self._tb.add_scalars(m, m["step"])

    def _manager(self, directory: Path | None = None) -> ocp.CheckpointManager:
        if directory is not None:  # another run's checkpoints (trainer.load_checkpoint_path): read once
            return ocp.CheckpointManager(directory.absolute())
        if self._checkpoints is None:
            trainer = self.cfg.trainer
            keep = 1 if trainer.remove_previous_ckpt else (None if trainer.save_limit == -1 else trainer.save_limit)
            options = ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                enable_async_checkpointing=True,
                # the step's folder is made in save() itself: made in the background, a failure (a read-only or
                # full disk) left orbax's writer threads waiting for it forever and the process never exited
                async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
                cleanup_tmp_directories=True,  # a killed run's partial `<step>.orbax-checkpoint-tmp` folders
            )
            self._checkpoints = ocp.CheckpointManager(self.out_dir.absolute() / "checkpoints", options=options)
        return self._checkpoints

    def save(self, block: bool = True) -> None:
        """Checkpoint at the current step: params, optimizer state, the reference copy, and as JSON the step, data
        position or iterator state, rollout counter, skip count, KL coefficient and config. Orbax writes it in
        the background and renames it into place when complete (atomic); `block` waits for that."""
        state = {"params": self.params, "opt_state": self.opt_state}
        if self.ref_params is not None:
            state["ref_params"] = self.ref_params
        meta = {
            "step": self.step_count,
            "data_position": self.data_position,
            "data_iterator": _iterator_states(self.data_iter),
            "rollouts": self.rollouts,
            "skipped": self.skipped,
            "kl_coef": None if self.kl_ctrl is None else self.kl_ctrl.kl_coef,
            "config": to_dict(self.cfg),
        }
        manager = self._manager()
        if self.step_count not in manager.all_steps():
            self.wait()  # orbax would too, inside save(): a failure of the previous save is reported as its own
            try:
                manager.save(
                    self.step_count,
                    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                )
            except Exception as error:
                raise self._save_failed(self.step_count, error) from error
            self._saving = self.step_count
        if block:
            self.wait()

    def wait(self) -> None:
        """Block until every checkpoint started has been written; CheckpointError (step, path, cause) if one failed."""
        if self._checkpoints is None or self._saving is None:
            return
        step, self._saving = self._saving, None
        try:
            self._checkpoints.wait_until_finished()
        except Exception as error:
            raise self._save_failed(step, error) from error

    def _save_failed(self, step: int, error: Exception) -> CheckpointError:
        """The one line for a checkpoint that could not be written; its partial folder is removed."""
        directory = Path(self._checkpoints.directory)
        if jax.process_index() == 0:
            checkpoint.remove_partial(directory, step)
        complete = [s for s in self._checkpoints.all_steps() if s < step]
        rerun = (
            f"it resumes from step {max(complete)} (trainer.find_last_checkpoint)"
            if complete
            else "it starts again from step 0 (no checkpoint was complete)"
        )
        return CheckpointError(
            f"checkpoint step {step} could not be written to {directory / str(step)}: {checkpoint.cause(error)}. "
            f"Training stopped; fix the cause (disk space, permissions) and rerun: {rerun}"
        )

    def restore(self, directory: str | Path | None = None) -> bool:
        """Continue from the newest checkpoint that restores in out_dir/checkpoints (or in `directory`, or
        trainer.load_checkpoint_path's); False when there is none. Newer ones that fail while an older one restores
        are damaged (a crash or a full disk mid-write): one line each, and in this run's own folder they are moved
        aside to `<step>.damaged`, never deleted. When none restores (all damaged, or written by another model or
        config), CheckpointError names the newest and its cause, and nothing is moved."""
        directory = directory or self.cfg.trainer.load_checkpoint_path
        own = directory is None
        if not own:
            directory = Path(directory)
            directory = directory / "checkpoints" if (directory / "checkpoints").is_dir() else directory
            manager = self._manager(directory)
        else:
            manager = self._manager()
            self.wait()
            manager.reload()
        target = {"params": self.params, "opt_state": self.opt_state}
        if self.ref_params is not None:
            target["ref_params"] = self.ref_params
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        failed: list[tuple[int, Exception]] = []
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                restored = manager.restore(step, args=args)
            except Exception as error:  # damaged, or not this model's: decided by whether an older one restores
                failed.append((step, error))
                continue
            self._set_aside(manager, failed, step, own)
            self._apply_restored(restored, Path(manager.directory) / str(step))
            return True
        if failed:
            step, error = failed[0]
            path = Path(manager.directory) / str(step)
            older = f" (nor do the {len(failed) - 1} older ones)" if len(failed) > 1 else ""
            raise CheckpointError(
                f"checkpoint {path} cannot be restored{older}: {checkpoint.cause(error)}. If the model or config "
                f"changed, resume with the ones that wrote it; if it is damaged, move it aside (mv {path} "
                f"{path}.damaged) and rerun"
            ) from error
        return False

    def _set_aside(self, manager, failed: list[tuple[int, Exception]], good: int, own: bool) -> None:
        """One line per checkpoint newer than `good` that failed; this run's own are renamed `<step>.damaged`."""
        for step, error in failed:
            path = Path(manager.directory) / str(step)
            moved = ""
            if own and jax.process_index() == 0:
                moved = f"; moved it aside to {checkpoint.move_aside(path).name}"
            print(
                f"checkpoint {path} cannot be restored ({checkpoint.cause(error)}){moved}; resuming from step {good}",
                file=sys.stderr,
                flush=True,
            )
        if own and failed:
            if jax.process_count() > 1:  # every process sees the renames before it lists the steps again
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("vrsjax checkpoints moved aside")
            manager.reload()

    def _apply_restored(self, restored, path: Path) -> None:
        self.params, self.opt_state = restored["state"]["params"], restored["state"]["opt_state"]
        self.ref_params = restored["state"].get("ref_params", self.ref_params)
        meta = restored["meta"]
        self.step_count, self.data_position, self.skipped = meta["step"], meta["data_position"], meta["skipped"]
        self.rollouts = meta.get("rollouts", self.step_count)
        if self.kl_ctrl is not None and meta.get("kl_coef") is not None:
            self.kl_ctrl.kl_coef = meta["kl_coef"]
        if meta.get("data_iterator") is not None:
            if self.data_iter is None or not hasattr(self.data_iter, "set_state"):
                raise CheckpointError(f"checkpoint {path} holds a data iterator's state; pass the same grain iterator")
            states = meta["data_iterator"]
            if len(states) != jax.process_count():
                raise CheckpointError(
                    f"checkpoint {path} holds data iterator states of {len(states)} processes; resume with as many"
                )
            self.data_iter.set_state(json.loads(states[jax.process_index()]))

    def policy(self):
        """The current policy as a model (e.g. to `save_pretrained` at the end)."""
        return nnx.merge(self.graphdef, self.params, self.frozen)

    def close(self) -> None:
        """Finish pending checkpoints (CheckpointError if one failed) and stop the reward thread and the TensorBoard
        writer, whatever happens."""
        try:
            self.wait()
            if self._checkpoints is not None:
                self._checkpoints.close()
        finally:
            self._checkpoints = None
            if self._reward_pool is not None:
                self._reward_pool.shutdown()
                self._reward_pool = None
            if self._tb is not None:
                self._tb.close()
                self._tb = None


_SHARES = ("loss", "pg_loss", "kl_loss", "entropy")


def _iterator_states(iterator) -> list[str] | None:
    """Every process's iterator state (JSON), in process order: orbax writes the metadata from process 0 only."""
    if iterator is None or not hasattr(iterator, "get_state"):
        return None
    return _exchange(json.dumps(iterator.get_state(), sort_keys=True))


def _exchange(value: Any) -> list[Any]:
    """Every process's `value` (any picklable object), in process order; [value] with one process."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(value), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    return [pickle.loads(row[:size].tobytes()) for row, size in zip(gathered, sizes, strict=True)]  # noqa: S301 - our own processes


def _take_rows(out: rollout.RolloutOutput, rows) -> rollout.RolloutOutput:
    """The rollout's rows `rows` (a bool mask or a slice)."""
    texts = None if out.texts is None else list(np.array(out.texts, dtype=object)[rows])
    return rollout.RolloutOutput(out.tokens[rows], out.logprobs[rows], out.mask[rows], out.lengths[rows], texts)


def _concat(outs: list[rollout.RolloutOutput]) -> rollout.RolloutOutput:
    texts = None if outs[0].texts is None else [t for o in outs for t in o.texts]
    arrays = [np.concatenate([getattr(o, k) for o in outs]) for k in ("tokens", "logprobs", "mask", "lengths")]
    return rollout.RolloutOutput(*arrays, texts)


def _prompt_len(inputs, out) -> int:
    return inputs.input_ids.shape[1] - out.tokens.shape[1]
