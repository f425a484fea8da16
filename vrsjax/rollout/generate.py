"""Group sampling: prefill each prompt once, then decode `n` responses per prompt in one compiled loop.

The prompt's keys and values stay un-replicated (`[B, K, L, Dh]`); each decode step (`vrsjax.rollout.decode`)
attends to them with the queries of all `n` group members at once and to the member's own response cache
(`[B, n, K, T, Dh]`), so the
prompt — thousands of vision tokens in Veason-R1 — is neither recomputed nor copied `n` times. Decoding is one
`lax.while_loop` that stops as soon as every sequence has emitted a stop token. Shapes are bucketed (prompt
length, cache capacity), so batches of similar size reuse one compilation.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from vrsjax.models.qwen2_5_vl.inputs import ModelInputs, prepare_inputs
from vrsjax.models.qwen2_5_vl.rows import is_per_row, per_row_vision, take_rows
from vrsjax.models.qwen2_5_vl.vision import bucket
from vrsjax.parallel.data import batch_ways, group_copies, to_host
from vrsjax.parallel.rules import spec
from vrsjax.processing.processor import MODEL_KEYS
from vrsjax.rollout.decode import decode_step, prompt_cache, response_cache
from vrsjax.rollout.sampling import sample

QWEN_STOP_TOKENS = (151645, 151643)  # <|im_end|>, <|endoftext|>


def _default_stop(processor) -> tuple[int, ...]:
    """<|im_end|> and <|endoftext|> as the processor's tokenizer numbers them (a small or retrained vocabulary puts
    them elsewhere), else Qwen2.5's ids."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        return QWEN_STOP_TOKENS
    ids = tuple(tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>"))
    return ids if all(i is not None for i in ids) else QWEN_STOP_TOKENS


@dataclasses.dataclass
class RolloutOutput:
    """Row b*n + j is the j-th response to prompt b. tokens: int32[B*n, T]; logprobs: float32[B*n, T] (0 after the
    end); mask: int32[B*n, T] (1 for response tokens, the stop token included); lengths: int32[B*n]."""

    tokens: np.ndarray
    logprobs: np.ndarray
    mask: np.ndarray
    lengths: np.ndarray
    texts: list[str] | None = None


def generate(
    model,
    batch: dict,
    n: int = 1,
    max_new_tokens: int = 1024,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    *,
    min_new_tokens: int = 0,
    stop_token_ids: tuple[int, ...] | None = None,
    pad_token_id: int | None = None,
    processor=None,
    kv_dtype: str | None = None,
    mesh: Mesh | None = None,
) -> RolloutOutput:
    """`n` responses for each prompt of `batch` (HF processor keys, left-padded). Reproducible by `seed`."""
    stop = tuple(_default_stop(processor) if stop_token_ids is None else stop_token_ids)
    pad = (stop[-1] if stop else 0) if pad_token_id is None else pad_token_id
    inputs = prepare_inputs(model.config, **{k: v for k, v in batch.items() if k in MODEL_KEYS})
    next_pos = _validate(model.config, inputs, n, max_new_tokens, min_new_tokens, temperature, top_p, top_k)
    inputs, next_pos = _pad_prompt(inputs, next_pos)
    per_row = n
    if mesh is not None:
        inputs, next_pos, per_row = _split_groups(model.config, inputs, next_pos, n, mesh, batch)
        inputs, next_pos = _shard_batch((inputs, next_pos), mesh)
    graphdef, state = nnx.split(model)
    out = _rollout(
        graphdef,
        state,
        inputs,
        next_pos,
        jax.random.key(seed),
        n=per_row,
        max_new_tokens=max_new_tokens,
        capacity=bucket(max_new_tokens, 8),
        temperature=float(temperature),
        top_p=float(top_p),
        top_k=int(top_k),
        min_new_tokens=min_new_tokens,
        stop=stop,
        pad=pad,
        kv_dtype=kv_dtype or model.config.dtype,
    )
    tokens, logprobs, mask = (to_host(a).reshape(-1, max_new_tokens) for a in out)  # rows of every process
    result = RolloutOutput(tokens, logprobs, mask.astype(np.int32), mask.sum(axis=1).astype(np.int32))
    if processor is not None:
        result.texts = [
            processor.decode(t[m > 0].tolist(), skip_special_tokens=True) for t, m in zip(tokens, mask, strict=True)
        ]
    return result


def _validate(config, inputs: ModelInputs, n, max_new_tokens, min_new_tokens, temperature, top_p, top_k):
    """Clear errors before anything compiles; returns int32[B] the first response position of each row."""
    if n < 1:
        raise ValueError(f"n={n}: need at least one response per prompt")
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] and top_k={top_k} >= 0 (0 = off)")
    if max_new_tokens < 1 or not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(
            f"need 1 <= max_new_tokens ({max_new_tokens}) and 0 <= min_new_tokens ({min_new_tokens}) <= max_new_tokens"
        )
    lengths = inputs.attention_mask.sum(axis=1)
    if inputs.input_ids.shape[1] == 0 or (lengths == 0).any():
        raise ValueError(
            f"empty prompt in rows {np.flatnonzero(lengths == 0).tolist() or 'all'}: every prompt needs "
            f"at least one token"
        )
    positions = np.where(inputs.attention_mask[None] > 0, inputs.position_ids, 0)
    next_pos = positions.max(axis=(0, 2)).astype(np.int32) + 1
    limit = config.text.max_position_embeddings
    worst = int(next_pos.max()) + max_new_tokens
    if worst > limit:
        row = int(next_pos.argmax())
        raise ValueError(
            f"prompt {row} reaches position {int(next_pos[row])}; with max_new_tokens={max_new_tokens} "
            f"the last position {worst} exceeds max_position_embeddings={limit}; shorten the prompt or "
            f"max_new_tokens"
        )
    return next_pos


def _pad_prompt(inputs: ModelInputs, next_pos: np.ndarray) -> tuple[ModelInputs, np.ndarray]:
    """Left-pad the prompt length to a bucket so similar batches share one compilation."""
    length = inputs.input_ids.shape[1]
    extra = bucket(length, 8) - length
    if extra == 0:
        return inputs, next_pos

    def left(a, value, axis=-1):
        widths = [(0, 0)] * a.ndim
        widths[axis] = (extra, 0)
        return np.pad(a, widths, constant_values=value)

    padded = dataclasses.replace(
        inputs,
        input_ids=left(inputs.input_ids, 0),
        attention_mask=left(inputs.attention_mask, 0),
        position_ids=left(inputs.position_ids, 0),
        vision_src=left(inputs.vision_src, -1),
    )
    return padded, next_pos


def _split_groups(config, inputs: ModelInputs, next_pos, n: int, mesh: Mesh, batch: dict):
    """Rows for the mesh: each prompt with its own vision (`rows.per_row_vision`) and, when the prompts do not split
    over the batch shards, repeated on k rows that sample n / k of its responses each (`group_copies`), so no
    device decodes another's responses. Rows stay prompt-major, so the B * n outputs (and, by the same [B * n, V]
    draw, the samples) come out as without a mesh. -> (inputs, next_pos, responses per row)."""
    kinds = (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw"))  # prepare_inputs' order
    grids = [np.asarray(batch[g]).reshape(-1, 3) for p, g in kinds if batch.get(p) is not None]
    inputs = per_row_vision(config, inputs, np.concatenate(grids) if grids else None)
    b = inputs.input_ids.shape[0]
    k = group_copies(b, n, batch_ways(mesh))
    rows = np.repeat(np.arange(b), k)
    return take_rows(inputs, rows), next_pos[rows], n // k


def _shard_batch(tree, mesh: Mesh):
    """Place batch-leading arrays over the data axes (position ids lead with their 3 rows, so shard axis 1; per-row
    patches and vision layouts lead with the rows, flat ones are whole on every device)."""
    per_row = is_per_row(tree[0])

    def place(path, x):
        if x is None:
            return None
        names = ["length"] * np.ndim(x)
        key = jax.tree_util.keystr(path)
        if "position_ids" in key:
            names[1] = "batch"
        elif per_row or ("patches" not in key and "layout" not in key):
            names[0] = "batch"
        return jax.device_put(x, NamedSharding(mesh, spec(tuple(names), np.shape(x), mesh)))

    return jax.tree_util.tree_map_with_path(place, tree)


@functools.partial(
    jax.jit,
    static_argnames=(
        "graphdef",
        "n",
        "max_new_tokens",
        "capacity",
        "temperature",
        "top_p",
        "top_k",
        "min_new_tokens",
        "stop",
        "pad",
        "kv_dtype",
    ),
)
def _rollout(
    graphdef,
    state,
    inputs,
    next_pos,
    key,
    *,
    n,
    max_new_tokens,
    capacity,
    temperature,
    top_p,
    top_k,
    min_new_tokens,
    stop,
    pad,
    kv_dtype,
):
    model = nnx.merge(graphdef, state)
    text = model.model.language_model
    kv_dtype = jnp.dtype(kv_dtype)
    hidden, kvs = text(model.embed(inputs), inputs.position_ids, inputs.attention_mask, return_kv=True)
    prompt_kv = [prompt_cache(k, v, kv_dtype) for k, v in kvs]
    prompt_mask = inputs.attention_mask > 0
    b, length = inputs.input_ids.shape
    kv_heads, head_dim = text.config.num_key_value_heads, text.config.head_dim
    own = [response_cache(b, n, kv_heads, capacity, head_dim, kv_dtype) for _ in prompt_kv]
    logits = jnp.broadcast_to(model.logits(hidden[:, -1])[:, None], (b, n, model.config.text.vocab_size))
    stop_ids = jnp.asarray(stop or (-1,), jnp.int32)

    def body(carry):
        step, logits, own, tokens, logps, finished, key = carry
        key, sub = jax.random.split(key)
        if min_new_tokens and stop:  # no stop token before min_new_tokens
            logits = logits.at[..., stop_ids].min(jnp.where(step < min_new_tokens, -jnp.inf, jnp.inf))
        token, logp = sample(logits.reshape(b * n, -1), sub, temperature, top_k, top_p)
        token, logp = token.reshape(b, n), logp.reshape(b, n)
        token = jnp.where(finished, pad, token)
        tokens = tokens.at[:, :, step].set(token)
        logps = logps.at[:, :, step].set(jnp.where(finished, 0.0, logp))
        finished_now = finished | jnp.isin(token, stop_ids)
        logits, own = decode_step(
            model,
            token,
            jnp.broadcast_to(next_pos[:, None] + step, (b, n)),
            step,
            prompt_kv,
            prompt_mask,
            own,
            kv_dtype,
        )
        return step + 1, logits, own, tokens, logps, finished_now, key

    def cond(carry):
        step, *_, finished, _ = carry
        return (step < max_new_tokens) & ~jnp.all(finished)

    tokens = jnp.full((b, n, max_new_tokens), pad, jnp.int32)
    logps = jnp.zeros((b, n, max_new_tokens), jnp.float32)
    finished = jnp.zeros((b, n), bool)
    carry = (jnp.int32(0), logits, own, tokens, logps, finished, key)
    step, _, _, tokens, logps, _, _ = jax.lax.while_loop(cond, body, carry)
    is_stop = jnp.isin(tokens, stop_ids)
    # response mask: every token up to and including the first stop token
    before_stop = jnp.cumsum(is_stop, axis=-1) - is_stop == 0
    mask = before_stop & (jnp.arange(max_new_tokens) < step)
    return tokens, logps, mask
