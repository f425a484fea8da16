"""The model side of `vrsjax serve`: one loaded policy and processor, and `Engine.run(requests)`, which answers a list
of validated requests with as few `rollout.generate` calls as their sampling settings allow.

`rollout.generate` takes one temperature, top_p, n, seed and set of stop tokens per call, so requests are grouped by
(n, temperature, top_p, stop); each group is one batched call with `max_new_tokens` = the largest `max_tokens` of the
group (bucketed), and each request keeps only its first `max_tokens` tokens. A request that sets `seed` runs alone
with that seed, so the same request with the same seed gives the same reply whatever else arrives with it. Prompts
that cannot fit the context window fail alone with a 400; batches are padded to a power of two (copies of the last
request, discarded) so that few batch shapes compile; if a batch fails for another reason, its requests are retried
one by one so that one bad request does not fail its neighbours. Stop strings cut the decoded text at their first
occurrence, and `usage.completion_tokens` counts the tokens up to the one that completed the stop string (OpenAI
does too); a stop string that is one token also ends generation there. A longer one cannot stop the compiled decode
loop early: the tokens after it are generated, but neither returned nor counted.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vrsjax.models.qwen2_5_vl.vision import bucket
from vrsjax.serve.protocol import ChatRequest, Choice, RequestError, completion_body

logger = logging.getLogger(__name__)

Result = dict | RequestError  # a response body, or the error to send


class Engine:
    """A loaded checkpoint: `run(requests)` -> one response body or RequestError per request, in order."""

    def __init__(
        self, checkpoint: str | Path, model_name: str | None = None, dtype: str = "float32", pad_batches: bool = True
    ):
        from vrsjax.models import qwen2_5_vl
        from vrsjax.processing import Processor

        self.checkpoint = Path(checkpoint)
        self.model = qwen2_5_vl.from_pretrained(self.checkpoint, dtype=dtype)
        self.processor = Processor.from_pretrained(self.checkpoint)
        self.model_name = model_name or self.checkpoint.name
        self.context = self.model.config.text.max_position_embeddings
        tokenizer = self.processor.tokenizer
        stops = [tokenizer.token_to_id(t) for t in ("<|im_end|>", "<|endoftext|>")]
        self.stop_ids = tuple(t for t in stops if t is not None)
        self._seeds = random.Random()
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant
        self.pad_batches = pad_batches
        self.calls = 0

    def run(self, requests: Sequence[ChatRequest]) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        for indices in group_requests(requests):
            for i, result in zip(indices, self._run_group([requests[i] for i in indices]), strict=True):
                results[i] = result
        return results  # type: ignore[return-value]

    def _run_group(self, group: list[ChatRequest]) -> list[Result]:
        try:
            padded = group + [group[-1]] * (batch_bucket(len(group)) - len(group)) if self.pad_batches else group
            return self._generate(padded)[: len(group)]
        except RequestError as error:
            if len(group) == 1:
                return [error]
        except Exception as error:  # noqa: BLE001 - reported to the client, the server keeps going
            if len(group) == 1:
                logger.exception("request failed")
                status = 422 if isinstance(error, ValueError) else 500
                return [RequestError(status, f"the model could not run this request: {error}", "generation_failed")]
        return [r for request in group for r in self._run_group([request])]

    def prompts(self, group: Sequence[ChatRequest]) -> list[str]:
        return [self.processor.apply_chat_template(r.messages, add_generation_prompt=True) for r in group]

    def _generate(self, group: list[ChatRequest]) -> list[Result]:
        from vrsjax import rollout

        batch = self.processor(
            text=self.prompts(group),
            images=[image for r in group for image in r.images] or None,
            videos=[video for r in group for video in r.videos] or None,
            fps=[fps for r in group for fps in r.video_fps] or None,
        )
        lengths = np.asarray(batch["attention_mask"]).sum(axis=1)
        # bucketed like the prompt length, so that nearby max_tokens values share one compilation
        new_tokens = min(bucket(max(r.max_tokens for r in group), 8), self.context - int(lengths.max()))
        too_long = [i for i, r in enumerate(group) if lengths[i] + r.max_tokens > self.context]
        if too_long:
            if len(group) > 1:
                raise RequestError(400, "a prompt in the batch is too long", "context_length_exceeded")
            raise RequestError(
                400,
                f"the prompt has {int(lengths[0])} tokens; with max_tokens={group[0].max_tokens} it exceeds the "
                f"context of {self.context} tokens: send fewer or smaller images, or a lower max_tokens",
                "context_length_exceeded",
                "messages",
            )
        first = group[0]
        seed = first.seed if first.seed is not None else self._seeds.randrange(2**31)
        stop_ids = self.stop_ids + self.single_token_stops(first.stop)
        with self._lock:
            out = rollout.generate(
                self.model,
                batch,
                n=first.n,
                max_new_tokens=new_tokens,
                temperature=first.temperature,
                top_p=first.top_p,
                seed=seed % 2**32,
                stop_token_ids=stop_ids,
                processor=None,
            )
            self.calls += 1
        rows = np.asarray(out.tokens).reshape(len(group), first.n, -1)
        masks = np.asarray(out.mask).reshape(len(group), first.n, -1)
        return [
            completion_body(
                self.model_name,
                [self._choice(t, m, r) for t, m in zip(rows[i], masks[i], strict=True)],
                int(lengths[i]),
            )
            for i, r in enumerate(group)
        ]

    def single_token_stops(self, stops: Sequence[str]) -> tuple[int, ...]:
        """The ids of the stop strings that are one token: generate can end a row on them."""
        ids = [self.processor.tokenizer.encode(s) for s in stops]
        return tuple(i[0] for i in ids if len(i) == 1 and i[0] not in self.stop_ids)

    def _choice(self, tokens: np.ndarray, mask: np.ndarray, request: ChatRequest) -> Choice:
        """int32[T] tokens, int32[T] mask of one response -> its text cut to max_tokens and the stop strings, and
        the tokens counted: up to the one that completes a stop string (it is not in the text)."""
        ids = tokens[: request.max_tokens][mask[: request.max_tokens] > 0].tolist()
        finished = bool(ids) and ids[-1] in self.stop_ids
        decode = lambda n: self.processor.decode(ids[:n], skip_special_tokens=True)  # noqa: E731
        text, cut = apply_stop(decode(len(ids)), request.stop)
        used = tokens_to_stop(decode, len(ids), request.stop) if cut else len(ids)
        return Choice(text, "stop" if finished or cut else "length", used)


def group_requests(requests: Sequence[ChatRequest]) -> list[list[int]]:
    """Indices of requests that can share one generate call: same (n, temperature, top_p, stop), no seed; a seeded
    request is a group of its own. Groups keep arrival order."""
    groups: dict[object, list[int]] = {}
    counter = itertools.count()
    for i, r in enumerate(requests):
        key = ("seeded", next(counter)) if r.seed is not None else (r.n, r.temperature, r.top_p, r.stop)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def batch_bucket(size: int) -> int:
    """The next power of two: batches are padded (with copies of their last request) to these sizes so that a
    server compiles generate for log2(max_batch) + 1 batch shapes, not one per size."""
    return 1 << max(size - 1, 0).bit_length()


def tokens_to_stop(decode: Callable[[int], str], total: int, stops: Sequence[str]) -> int:
    """The fewest leading tokens (of `total`) whose text `decode(n)` contains a stop string: a stop string, once
    complete, stays in every longer prefix, so a binary search over n finds it."""
    low, high = 1, total  # decode(total) holds a stop string
    while low < high:
        middle = (low + high) // 2
        if apply_stop(decode(middle), stops)[1]:
            high = middle
        else:
            low = middle + 1
    return high


def apply_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut text before the earliest stop string; (text, whether one was found)."""
    hits = [text.find(s) for s in stops if s in text]
    return (text[: min(hits)], True) if hits else (text, False)
