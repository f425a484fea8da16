"""The OpenAI chat-completions wire format as `vrsjax serve` reads and writes it: request validation, media decoding,
the response and error JSON.

A request body is `{"model", "messages", "temperature", "top_p", "max_tokens" (or "max_completion_tokens"), "n",
"seed", "stop"}`; fields that would change the reply and are not implemented (`top_k`, `logprobs`, `tools`,
`response_format`, penalties, ... see UNSUPPORTED) are refused with 422 unless they hold their no-op value, as is
`"stream": true`; other OpenAI fields (`user`, `metadata`, ...) are accepted and ignored. Message content is a
string or a list of parts: `{"type": "text", "text"}`, `{"type": "image_url", "image_url": {"url": DATA_URL}}` (one
image), and, since OpenAI has no video part, the qwen-vl-utils convention `{"type": "video", "video": [DATA_URL,
...], "fps": 2.0}` (a list of frames that the model sees as one video; fps defaults to 2). Only base64 `data:image/...`
URLs are accepted: the server never fetches a URL. Bad input raises `RequestError`, which carries the HTTP status and
the OpenAI error shape `{"error": {"message", "type", "param", "code"}}`: 400 unparseable JSON or a prompt that does
not fit the context, 404 an unknown model, 413 a body over the size limit, 422 a well-formed request with an invalid
field. Nothing here imports JAX.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_TOKENS = 256
DEFAULT_VIDEO_FPS = 2.0  # qwen-vl-utils' FPS default
ROLES = ("system", "user", "assistant")

# Request fields that would change the reply and that vrsjax serve does not implement, with the values that mean
# "off" (what clients send by default); any other value is a 422 rather than a silently different reply.
UNSUPPORTED = {
    "top_k": (None, -1, 0),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "logit_bias": (None, {}),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "repetition_penalty": (None, 1),
    "min_p": (None, 0),
}


class RequestError(Exception):
    """A request the server refuses: HTTP `status` and the OpenAI error fields."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None, kind: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.kind = kind or ("server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return error_body(self.message, self.kind, self.code, self.param)


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict:
    """The OpenAI error JSON."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class Limits:
    """Per-request limits (the body size is checked before parsing, in the HTTP layer)."""

    max_request_bytes: int = 32 * 2**20
    max_images: int = 64  # images + video frames per request
    max_pixels: int = 4096 * 4096  # per decoded image
    max_n: int = 16
    max_tokens: int = 4096
    max_stop: int = 4


@dataclass
class ChatRequest:
    """A validated request: chat messages in the processor's format (image/video parts are placeholders) and
    the decoded media in order of appearance. images: uint8[H, W, 3] each; videos: uint8[T, H, W, 3] each."""

    model: str
    messages: list[dict]
    images: list[np.ndarray] = field(default_factory=list)
    videos: list[np.ndarray] = field(default_factory=list)
    video_fps: list[float] = field(default_factory=list)
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()


def _invalid(message: str, param: str, code: str = "invalid_value") -> RequestError:
    return RequestError(422, message, code, param)


def _number(body: dict, key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"'{key}' must be a number, got {value!r}", key, "invalid_type")
    if not low <= value <= high:
        raise _invalid(f"'{key}' must be in [{low}, {high}], got {value}", key)
    return float(value)


def _integer(body: dict, key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"'{key}' must be an integer, got {value!r}", key, "invalid_type")
    if not low <= value <= high:
        raise _invalid(f"'{key}' must be in [{low}, {high}], got {value}", key)
    return value


def decode_data_url(url: Any, param: str, limits: Limits) -> np.ndarray:
    """`data:image/<fmt>;base64,<payload>` -> uint8[H, W, 3] RGB."""
    if not isinstance(url, str) or not url.startswith("data:image/") or ";base64," not in url:
        shown = url[:40] + "..." if isinstance(url, str) and len(url) > 40 else url
        raise _invalid(
            f"{param}: only base64 data URLs ('data:image/jpeg;base64,...') are accepted, got {shown!r}",
            param,
            "invalid_image_url",
        )
    try:
        raw = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            if image.width * image.height > limits.max_pixels:
                raise _invalid(
                    f"{param}: image of {image.width}x{image.height} pixels exceeds the limit of {limits.max_pixels}",
                    param,
                    "image_too_large",
                )
            return np.asarray(image.convert("RGB"))
    except (binascii.Error, ValueError) as error:
        raise _invalid(f"{param}: the base64 payload does not decode ({error})", param, "invalid_image") from error
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        raise _invalid(f"{param}: not a readable image ({error})", param, "invalid_image") from error


def _part(part: Any, where: str, request: ChatRequest, limits: Limits) -> dict:
    """One content part -> the processor's part; decoded media are appended to request."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise _invalid(f"{where} must be an object with a 'type'", where, "invalid_type")
    kind = part["type"]
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise _invalid(f"{where}.text must be a string", f"{where}.text", "invalid_type")
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        request.images.append(decode_data_url(url, f"{where}.image_url.url", limits))
        return {"type": "image"}
    if kind == "video":
        frames = part.get("video")
        if not isinstance(frames, list) or not frames:
            raise _invalid(f"{where}.video must be a non-empty list of frame data URLs", f"{where}.video")
        decoded = [decode_data_url(u, f"{where}.video[{i}]", limits) for i, u in enumerate(frames)]
        if len({f.shape for f in decoded}) != 1:
            raise _invalid(f"{where}.video: all frames must have the same size", f"{where}.video")
        request.videos.append(np.stack(decoded))
        request.video_fps.append(_number(part, "fps", DEFAULT_VIDEO_FPS, 1e-3, 1e3))
        return {"type": "video"}
    raise _invalid(f"{where}: unsupported content part type {kind!r} (text, image_url, video)", f"{where}.type")


def _message(message: Any, index: int, request: ChatRequest, limits: Limits) -> dict:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise _invalid(f"{where} must be an object", where, "invalid_type")
    role = message.get("role")
    if role not in ROLES:
        raise _invalid(f"{where}.role must be one of {ROLES}, got {role!r}", f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _invalid(f"{where}.content must be a string or a list of parts", f"{where}.content", "invalid_type")
    parts = [_part(p, f"{where}.content[{i}]", request, limits) for i, p in enumerate(content)]
    if len(request.images) + sum(len(v) for v in request.videos) > limits.max_images:
        raise _invalid(
            f"more than {limits.max_images} images and video frames in one request", where, "too_many_images"
        )
    return {"role": role, "content": parts}


def _stop(value: Any, limits: Limits) -> tuple[str, ...]:
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _invalid("'stop' must be a non-empty string or a list of them", "stop", "invalid_type")
    if len(stops) > limits.max_stop:
        raise _invalid(f"at most {limits.max_stop} stop sequences", "stop")
    return tuple(stops)


def _same(value: Any, off: Any) -> bool:
    """value == off with types kept apart (False is not 0, 1.0 is 1)."""
    return value is off or (type(value) is not bool and type(off) is not bool and value == off)


def parse_request(body: Any, model_name: str, limits: Limits = Limits()) -> ChatRequest:
    """A decoded JSON body -> ChatRequest, or RequestError naming the field."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object", "invalid_json")
    if body.get("stream"):
        raise _invalid("streaming is not supported; send 'stream': false", "stream", "unsupported")
    for key, off in UNSUPPORTED.items():
        if key in body and not any(_same(body[key], value) for value in off):
            raise _invalid(f"'{key}' is not supported by vrsjax serve; leave it out", key, "unsupported")
    model = body.get("model", model_name)
    if model != model_name:
        raise RequestError(404, f"model {model!r} does not exist; this server serves {model_name!r}", "model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("'messages' must be a non-empty list", "messages", "invalid_type")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    request = ChatRequest(
        model=model,
        messages=[],
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 1e-6, 1.0),
        max_tokens=_integer({"max_tokens": max_tokens}, "max_tokens", DEFAULT_MAX_TOKENS, 1, limits.max_tokens),
        n=_integer(body, "n", 1, 1, limits.max_n),
        seed=_integer(body, "seed", None, -(2**63), 2**63 - 1),
        stop=_stop(body.get("stop"), limits),
    )
    request.messages = [_message(m, i, request, limits) for i, m in enumerate(messages)]
    if request.messages[-1]["role"] == "assistant":
        raise _invalid("the last message must not be an assistant message", "messages")
    return request


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: str  # "stop" or "length"
    completion_tokens: int


def completion_body(model: str, choices: list[Choice], prompt_tokens: int) -> dict:
    """The OpenAI chat.completion response JSON, with usage counts."""
    completion = sum(c.completion_tokens for c in choices)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
            for i, c in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        },
    }


def model_body(model: str, created: int) -> dict:
    """The OpenAI model object (GET /v1/models/{id})."""
    return {"id": model, "object": "model", "created": created, "owned_by": "vrsjax"}


def models_body(model: str, created: int) -> dict:
    return {"object": "list", "data": [model_body(model, created)]}
