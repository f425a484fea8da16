"""The seed systems' prompts, byte for byte, and the parsers of their answers.

Veason-R1 (`verl/utils/revos_keyframe_sft_dataset_mod.py`, `batch_eval_keyframe_sft_dataset_.py`): sampled frames are
shown as `(3s)<image>, (15s)<image>, ...` with raw frame indices as timestamps; the expression is lower-cased and
stripped of '.'; the chat is rendered with a system prompt and the generation prompt, then each `<image>` becomes
`<|vision_start|><|image_pad|><|vision_end|>` (the processor expands the pad). VisionReasoner
(`vision_reasoner/models/vision_reasoner_model.py`): one 840x840 image then the detection template, query
lower-cased and stripped of '."?!', no system message (the template adds the default one). VideoSeg-R1 does not
publish its two hierarchical-sampler prompts; `VIDEOSEG_INTERVAL_TEMPLATE` and `VIDEOSEG_PERCENT_TEMPLATE` are our
wording, overridable, and their parsers accept the usual answer shapes. Parsers never raise.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from vrsjax.processing.chat import DEFAULT_SYSTEM_PROMPT, render_chat
from vrsjax.processing.coords import to_original

IMAGE_PLACEHOLDER = "<image>"
VISION_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"

VEASON_USER_TEMPLATE = (
    "<video> \n"
    "You are given {num} frames uniformly sampled from a 1 FPS video. Each image is preceded by its timestamp.\n"
    "Given the following expression: '{Question}', identify the timestamp where the target is best represented. "
    "Then, locate the target in that frame by predicting the bounding box(es).\n"
    "First, output the thinking process in <think> </think> tags, and then output the result in the following "
    "format within <answer> </answer> tags."
)
VISION_REASONER_TEMPLATE = (
    'Please find "{Question}" with bboxs and points.'
    "Compare the difference between object(s) and find the most closely matched object(s)."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the bbox(es) and point(s) inside the interested object(s) in JSON format."
    "i.e., <think> thinking process here </think>"
    "<answer>{Answer}</answer>"
)
VISION_REASONER_ANSWER = (
    '[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, {"bbox_2d": [225,296,706,786], "point_2d": [302,410]}]'
)
VIDEOSEG_INTERVAL_TEMPLATE = (
    "{frames}\nThese frames are sampled from a video of {duration} seconds; each is preceded by its timestamp.\n"
    "Given the query: '{query}', find the time interval in which the object the query refers to appears.\n"
    "First output the thinking process in <think> </think> tags, then the interval in seconds within "
    "<answer> </answer> tags, i.e., <answer>[start, end]</answer>."
)
VIDEOSEG_PERCENT_TEMPLATE = (
    "{frames}\nThese frames are sampled in order from one segment of a video.\n"
    "Given the query: '{query}', at which position of this segment is the referred object shown best? "
    "Answer with a percentage of the segment length, where 0% is its first frame and 100% its last.\n"
    "First output the thinking process in <think> </think> tags, then the percentage within <answer> </answer> "
    "tags, i.e., <answer>40%</answer>."
)
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def timestamped_images(timestamps) -> str:
    """`(3s)<image>, (15s)<image>, ...`: one image placeholder per frame, preceded by its timestamp."""
    return ", ".join(f"({t}s){IMAGE_PLACEHOLDER}" for t in timestamps)


def veason_question(expression: str) -> str:
    return expression.lower().strip(".")


def veason_user_prompt(expression: str, timestamps) -> str:
    """The Veason-R1 user message, `<image>` placeholders included; `timestamps` are the raw frame indices."""
    timestamps = [int(t) for t in timestamps]
    template = VEASON_USER_TEMPLATE.replace("<video>", timestamped_images(timestamps))
    return template.format(num=str(len(timestamps)), Question=veason_question(expression))


def veason_messages(expression: str, timestamps, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> list[dict]:
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": veason_user_prompt(expression, timestamps)},
    ]


def veason_prompt(
    expression: str, timestamps, system_prompt: str = DEFAULT_SYSTEM_PROMPT, template: str | None = None
) -> str:
    """The full Veason-R1 prompt text for `Processor(text=..., images=frames)`: chat rendered with the generation
    prompt, each `<image>` turned into a vision block holding one image pad."""
    chat = render_chat(veason_messages(expression, timestamps, system_prompt), template, add_generation_prompt=True)
    return chat.replace(IMAGE_PLACEHOLDER, VISION_IMAGE)


def parse_veason_answer(response: str, width: int, height: int, size: int = 560) -> tuple[int, list[list[int]]]:
    """-> (keyframe timestamp, boxes in the width x height frame), as Veason-R1's evaluation reads an answer:
    the JSON in `<answer>` (single quotes allowed), `bbox_2d_list` (or a single `bbox_2d`) mapped back with
    `int(v * W / size + 0.5)`. Anything unreadable, an empty box list or a missing timestamp gives
    (0, [[0, 0, 0, 0]]) (the reference would crash on a missing timestamp)."""
    fallback = 0, [[0, 0, 0, 0]]
    match = _ANSWER.search(response)
    if not match:
        return fallback
    try:
        data = json.loads(match.group(1).replace("'", '"'))
        keyframe = int(data["keyframe_timestamp"])
        boxes = data["bbox_2d_list"] if isinstance(data.get("bbox_2d_list"), list) else [data["bbox_2d"]]
        boxes = [[int(v) for v in to_original(np.asarray(b, np.float64)[:4], width, height, size)] for b in boxes]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return fallback
    if not boxes or any(len(b) != 4 for b in boxes):
        return fallback
    return keyframe, boxes


def vision_reasoner_text(query: str, strip: str = '."?!') -> str:
    """VisionReasoner's detection prompt for one query (Seg-Zero's evaluation strips only '.': pass strip='.')."""
    return VISION_REASONER_TEMPLATE.format(Question=query.lower().strip(strip), Answer=VISION_REASONER_ANSWER)


def vision_reasoner_messages(query: str, strip: str = '."?!') -> list[dict]:
    """One user turn: the (840x840) image, then the prompt; no system message, as in VisionReasoner."""
    content = [{"type": "image"}, {"type": "text", "text": vision_reasoner_text(query, strip)}]
    return [{"role": "user", "content": content}]


def vision_reasoner_prompt(query: str, strip: str = '."?!', template: str | None = None) -> str:
    return render_chat(vision_reasoner_messages(query, strip), template, add_generation_prompt=True)


def parse_vision_reasoner_answer(
    response: str, width: int, height: int, size: int = 840
) -> tuple[list[list[int]], list[list[int]]]:
    """-> (boxes, points) in the width x height frame from the JSON list in `<answer>`; ([], []) when unreadable."""
    match = _ANSWER.search(response)
    if not match:
        return [], []
    try:
        items = json.loads(match.group(1))
        boxes = [
            [int(v) for v in to_original(np.asarray(i["bbox_2d"], np.float64), width, height, size)] for i in items
        ]
        points = [
            [int(v) for v in to_original(np.asarray(i["point_2d"], np.float64), width, height, size)] for i in items
        ]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return [], []
    return boxes, points


def videoseg_interval_text(query: str, timestamps, duration: float, template: str = VIDEOSEG_INTERVAL_TEMPLATE) -> str:
    """Stage 1 of the hierarchical sampler: ask for the time interval relevant to the query (frames as images)."""
    return template.format(frames=timestamped_images(timestamps), duration=duration, query=query.strip())


def videoseg_percent_text(query: str, timestamps, template: str = VIDEOSEG_PERCENT_TEMPLATE) -> str:
    """Stage 2: ask where in the key segment (a percentage of its length) the target is best shown."""
    return template.format(frames=timestamped_images(timestamps), query=query.strip())


def videoseg_prompt(text: str, system_prompt: str = DEFAULT_SYSTEM_PROMPT, template: str | None = None) -> str:
    """Render a sampler question as a chat with the generation prompt; `<image>` placeholders become vision blocks."""
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": text}]
    return render_chat(messages, template, add_generation_prompt=True).replace(IMAGE_PLACEHOLDER, VISION_IMAGE)


def _answer_numbers(response: str) -> list[float]:
    match = _ANSWER.search(response)
    body = match.group(1) if match else response
    return [float(x) for x in _NUMBER.findall(body) if math.isfinite(float(x))]


def parse_interval(response: str) -> tuple[float, float] | None:
    """(start, end) seconds from `<answer>[s, e]</answer>` (also 's-e', 's to e', a JSON dict); None if not two
    numbers. A reversed interval is put in order."""
    numbers = _answer_numbers(response)
    if len(numbers) != 2 or any(n < 0 for n in numbers):
        return None
    start, end = sorted(numbers)
    return start, end


def parse_percent(response: str) -> float | None:
    """Position in [0, 1] from `<answer>40%</answer>`, `40`, or `0.4` (values above 1 or with '%' are percents)."""
    numbers = _answer_numbers(response)
    if len(numbers) != 1:
        return None
    match = _ANSWER.search(response)
    value = numbers[0] / 100 if numbers[0] > 1 or "%" in (match.group(1) if match else response) else numbers[0]
    return None if not 0.0 <= value <= 1.0 else value


def mean_interval(intervals) -> tuple[float, float] | None:
    """The key segment: mean start and mean end of the parsed intervals (None entries ignored)."""
    valid = [i for i in intervals if i is not None]
    if not valid:
        return None
    return float(np.mean([i[0] for i in valid])), float(np.mean([i[1] for i in valid]))


def target_frame(start: int, length: int, percents, top_m: int | None = None) -> int:
    """`start + floor(length * mean(p))` over the first `top_m` parsed positions (None entries ignored); the
    middle of the segment when none parsed."""
    valid = [p for p in percents if p is not None][:top_m]
    mean = float(np.mean(valid)) if valid else 0.5
    return int(start + min(math.floor(length * mean), max(length - 1, 0)))
