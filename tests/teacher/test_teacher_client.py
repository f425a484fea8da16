"""The OpenAI-compatible client against the scripted loopback teacher: retries (429 with Retry-After, 5xx,
timeouts), non-retryable errors, the on-disk cache, the API key from the environment, usage and cost."""

import asyncio
import random
import time

import pytest
from scripted_teacher import ScriptedTeacher

from vrsjax.teacher.client import (
    Cache,
    ClientConfig,
    TeacherClient,
    TeacherError,
    backoff_delay,
    request_key,
    retry_after,
)

MESSAGES = [{"role": "user", "content": "rate this"}]


def _chat(config, messages=MESSAGES, **params):
    async def go():
        async with TeacherClient(config) as client:
            return await client.chat(messages, **params), client.usage

    return asyncio.run(go())


def test_request_key_is_canonical():
    assert request_key({"a": 1, "b": [1, 2]}) == request_key({"b": [1, 2], "a": 1})
    assert request_key({"a": 1}) != request_key({"a": 2})


def test_retry_after_and_backoff():
    assert retry_after("3") == 3.0 and retry_after(None) is None and retry_after("soon") is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 20 < retry_after(date) <= 31
    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 8.0, rng) for a in range(10)]
    assert all(0 <= d <= min(8.0, 2**a) for a, d in enumerate(delays))


def test_cache_round_trip_and_damaged_entry(tmp_path):
    cache = Cache(tmp_path)
    cache.put("ab12", {"x": 1})
    assert cache.get("ab12") == {"x": 1} and cache.get("cd34") is None
    (tmp_path / "ab" / "ab12.json").write_text("{broken")
    assert cache.get("ab12") is None
    assert Cache(None).get("ab12") is None


def test_retries_429_and_500_then_succeeds(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-test")
    with ScriptedTeacher(lambda body: "fine", failures=[429, 500, 503]) as teacher:
        config = ClientConfig(teacher.url, "t", api_key_env="MY_TEACHER_KEY", backoff=0.01, cache_dir=tmp_path)
        reply, usage = _chat(config)
    assert reply.text == "fine" and not reply.cached
    assert teacher.statuses == [429, 500, 503, 200]
    assert usage.retries == 3 and usage.requests == 4 and usage.failures == 0
    assert usage.statuses == {"429": 1, "500": 1, "503": 1, "200": 1}
    assert set(teacher.authorizations) == {"Bearer sk-test"}
    assert usage.prompt_tokens == 100 and usage.completion_tokens == 20


def test_gives_up_after_max_retries(tmp_path):
    with ScriptedTeacher(lambda body: "never", failures=[500] * 5) as teacher:
        config = ClientConfig(teacher.url, "t", max_retries=2, backoff=0.01, cache_dir=tmp_path)
        with pytest.raises(TeacherError, match="giving up after 3 attempts"):
            _chat(config)
    assert teacher.statuses == [500, 500, 500]
    assert not list(tmp_path.rglob("*.json"))  # failures are not cached


def test_non_retryable_status_fails_at_once(tmp_path):
    with ScriptedTeacher(lambda body: "x", failures=[400]) as teacher:
        config = ClientConfig(teacher.url, "t", backoff=0.01, cache_dir=tmp_path)
        with pytest.raises(TeacherError) as error:
            _chat(config)
    assert error.value.status == 400 and teacher.statuses == [400]


def test_timeout_is_retried(tmp_path):
    with ScriptedTeacher(lambda body: "slow", delay=1.0) as teacher:
        config = ClientConfig(teacher.url, "t", timeout=0.2, max_retries=1, backoff=0.01, cache_dir=tmp_path)
        with pytest.raises(TeacherError, match="ReadTimeout"):
            _chat(config)


def test_cache_answers_repeated_requests_without_sending(tmp_path):
    with ScriptedTeacher(lambda body: f"seed {body.get('seed')}") as teacher:
        config = ClientConfig(teacher.url, "t", cache_dir=tmp_path, price_input_per_m=2.0, price_output_per_m=10.0)
        first, _ = _chat(config, seed=1)
        again, usage = _chat(config, seed=1)
        other, _ = _chat(config, seed=2)
    assert first.text == again.text == "seed 1" and other.text == "seed 2"
    assert again.cached and usage.cache_hits == 1 and usage.requests == 0
    assert len(teacher.answered) == 2
    assert "saved 0.0004" in usage.summary(config)  # 100 * 2 / 1e6 + 20 * 10 / 1e6
