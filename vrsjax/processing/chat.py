"""Chat template rendering, as transformers' `apply_chat_template(..., tokenize=False)` renders it.

The checkpoint's Jinja template is used when it ships one (`chat_template.jinja`, `chat_template.json`, or the
`chat_template` key of `tokenizer_config.json`, in that order), Qwen2.5-VL's otherwise. The Jinja environment is
the one transformers builds (sandboxed, `trim_blocks`, `lstrip_blocks`, loop controls, a `tojson` that does not
escape HTML, `raise_exception`, `strftime_now`). `response_mask` marks the tokens an SFT loss trains on: everything
after the generation prompt of the last assistant turn.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Qwen2.5-VL's template (chat_template.json of the Qwen2.5-VL-*-Instruct checkpoints).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


def load_chat_template(path: str | Path) -> str | None:
    """The chat template shipped in a checkpoint dir, or None."""
    path = Path(path)
    if (path / "chat_template.jinja").exists():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "processor_config.json", "tokenizer_config.json"):
        if (path / name).exists():
            template = json.loads((path / name).read_text(encoding="utf-8")).get("chat_template")
            if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
                template = {t["name"]: t["template"] for t in template}.get("default")
            if template:
                return template
    return None


@functools.lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _plain(value):
    """What the template may see: JSON-like data; media objects (arrays, images) become inert placeholders."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return f"<{type(value).__name__}>"


def render_chat(
    messages: list[dict],
    template: str | None = None,
    add_generation_prompt: bool = False,
    **kwargs,
) -> str:
    """A conversation (list of {"role", "content"}; content a string or a list of {"type": "text"|"image"|"video"})
    -> the prompt string. `add_vision_id=True` numbers the pictures/videos, like transformers."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise TypeError("messages must be a list of dicts with a 'role' and a 'content'")
    return _compile(template or QWEN2_5_VL_CHAT_TEMPLATE).render(
        messages=_plain(messages), add_generation_prompt=add_generation_prompt, **_plain(kwargs)
    )


def response_mask(prompt_ids: list[int], full_ids: list[int], where: str = "") -> list[int]:
    """1 for the tokens of `full_ids` after the prompt (the trained response), 0 before; the prompt must be a prefix."""
    n = len(prompt_ids)
    if list(full_ids[:n]) != list(prompt_ids):
        raise ValueError(
            f"{where or 'sample'}: the rendered prompt is not a token prefix of the rendered conversation, so the "
            f"response cannot be masked; does the template change earlier turns when the answer is appended?"
        )
    return [0] * n + [1] * (len(full_ids) - n)
