"""An asyncio client for any OpenAI-compatible chat-completions endpoint (a hosted API or `vrsjax serve`), built for
long teacher runs: a concurrency limit, retries with exponential backoff and jitter on 429, 5xx, timeouts and
dropped connections (a `Retry-After` header wins over the computed delay), an on-disk cache keyed by the SHA-256 of
the canonical request so an interrupted run resumes without paying twice, and token and cost counts.

The API key comes from the environment (`api_key_env`, OPENAI_API_KEY by default) and is sent as a Bearer token;
it is never part of the cache key or of anything written. Only successful replies are cached. The cache is one
JSON file per request under `cache_dir/<hash[:2]>/<hash>.json`, written atomically (temp file + rename), so a
killed run leaves no half-written entry.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class TeacherError(RuntimeError):
    """A request that failed for good (a non-retryable status, or retries exhausted)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ClientConfig:
    """endpoint: the API base (`http://127.0.0.1:8000/v1`) or the full `.../chat/completions` URL.
    price_*_per_m: currency per 1M prompt / completion tokens, for the cost summary."""

    endpoint: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    max_retries: int = 5
    timeout: float = 120.0
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    max_backoff: float = 60.0
    cache_dir: str | Path | None = None
    price_input_per_m: float = 0.0
    price_output_per_m: float = 0.0

    @property
    def url(self) -> str:
        base = self.endpoint.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"


@dataclass
class Usage:
    """What a run cost: requests sent and answered from the cache, retries, failures, tokens."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def cost(self, config: ClientConfig) -> float:
        return (
            self.prompt_tokens * config.price_input_per_m + self.completion_tokens * config.price_output_per_m
        ) / 1e6

    def summary(self, config: ClientConfig) -> str:
        saved = (
            self.cached_prompt_tokens * config.price_input_per_m
            + self.cached_completion_tokens * config.price_output_per_m
        ) / 1e6
        return (
            f"teacher {config.model}: {self.requests} requests sent, {self.cache_hits} answered from the cache, "
            f"{self.retries} retries, {self.failures} failed; tokens: {self.prompt_tokens} prompt + "
            f"{self.completion_tokens} completion; cost {self.cost(config):.4f} (saved {saved:.4f} by the cache; "
            f"prices {config.price_input_per_m}/{config.price_output_per_m} per 1M tokens)"
        )


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    finish_reason: str | None = None


def request_key(body: dict) -> str:
    """SHA-256 of the canonical JSON of the request body (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)] (AWS's "full jitter")."""
    return rng.uniform(0, min(cap, base * 2**attempt))


class Cache:
    """Replies on disk by request hash."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.folder is None or not self._path(key).is_file():
            return None
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is asked again and overwritten

    def put(self, key: str, response: dict) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{random.randrange(2**32):08x}.tmp")
        tmp.write_text(json.dumps(response))
        tmp.replace(path)


def _reply(response: dict, cached: bool) -> Reply:
    try:
        choice = response["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as error:
        raise TeacherError(f"the endpoint's reply has no choices[0].message.content: {str(response)[:200]}") from error
    usage = response.get("usage") or {}
    return Reply(
        text if isinstance(text, str) else "",
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        cached,
        choice.get("finish_reason"),
    )


class TeacherClient:
    """`await client.chat(messages, **params)` -> Reply. Use as `async with TeacherClient(config) as client:`."""

    def __init__(self, config: ClientConfig, *, seed: int = 0):
        if config.concurrency < 1 or config.max_retries < 0 or config.timeout <= 0:
            raise ValueError(f"need concurrency >= 1, max_retries >= 0 and timeout > 0, got {config}")
        self.config = config
        self.cache = Cache(config.cache_dir)
        self.usage = Usage()
        self._rng = random.Random(seed)
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._http = None

    async def __aenter__(self) -> TeacherClient:
        import httpx

        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(
            max_connections=self.config.concurrency, max_keepalive_connections=self.config.concurrency
        )
        self._http = httpx.AsyncClient(headers=headers, timeout=self.config.timeout, limits=limits)
        return self

    async def __aexit__(self, *exc) -> None:
        await self._http.aclose()

    def body(self, messages: list[dict], **params: Any) -> dict:
        """The request body sent (and hashed): model, messages, and the params that are not None."""
        return {"model": self.config.model, "messages": messages, **{k: v for k, v in params.items() if v is not None}}

    async def chat(self, messages: list[dict], **params: Any) -> Reply:
        body = self.body(messages, **params)
        key = request_key(body)
        cached = self.cache.get(key)
        if cached is not None:
            reply = _reply(cached, cached=True)
            self.usage.cache_hits += 1
            self.usage.cached_prompt_tokens += reply.prompt_tokens
            self.usage.cached_completion_tokens += reply.completion_tokens
            return reply
        async with self._semaphore:
            response = await self._post(body)
        reply = _reply(response, cached=False)
        self.cache.put(key, response)
        self.usage.prompt_tokens += reply.prompt_tokens
        self.usage.completion_tokens += reply.completion_tokens
        return reply

    def _count(self, status: str) -> None:
        self.usage.statuses[status] = self.usage.statuses.get(status, 0) + 1

    async def _post(self, body: dict) -> dict:
        import httpx

        for attempt in range(self.config.max_retries + 1):
            wait, last = None, ""
            self.usage.requests += 1
            try:
                response = await self._http.post(self.config.url, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                self._count(type(error).__name__)
                last = f"{type(error).__name__}: {error}"
            else:
                self._count(str(response.status_code))
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError as error:
                        raise TeacherError(f"the endpoint returned invalid JSON: {response.text[:200]}") from error
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in RETRY_STATUS:
                    self.usage.failures += 1
                    raise TeacherError(f"{self.config.url} refused the request: {last}", response.status_code)
                wait = retry_after(response.headers.get("Retry-After"))
            if attempt == self.config.max_retries:
                break
            self.usage.retries += 1
            delay = backoff_delay(attempt, self.config.backoff, self.config.max_backoff, self._rng)
            await asyncio.sleep(min(wait, self.config.max_backoff) if wait is not None else delay)
        self.usage.failures += 1
        raise TeacherError(f"{self.config.url}: giving up after {self.config.max_retries + 1} attempts; last: {last}")
