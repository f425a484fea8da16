"""Supervised fine-tuning data in LLaMA-Factory's ShareGPT format, the format Veason-R1's CoT data is used in:
a JSON list (or JSON Lines) of {"conversations": [{"from": "human"|"gpt"|"system"|..., "value": str}, ...],
"system": optional str, "images": [paths]}, with one `<image>` placeholder in the text per image.

The checks are LLaMA-Factory's (`data/converter.py` and the multimodal plugin): an optional leading system turn,
then user-side turns ("human", "observation") at odd positions and assistant-side turns ("gpt", "function_call")
at even ones, an even number of turns, and as many `<image>` placeholders as images; a broken record is an
error, or a counted skip with skip_bad_samples (LLaMA-Factory drops it with a warning). Image paths resolve
against media_dir (default: the JSON file's folder). `label_segments` turns the rendered, tokenized turns into
input ids, labels and the response mask (every assistant turn is trained on, LLaMA-Factory's default); rendering
the turns with the chat template is the processing room's job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vrsjax.data.errors import DataError, SkipLog, data_error, raise_or_skip
from vrsjax.data.files import load_json
from vrsjax.data.samples import read_frame

USER_TAGS = ("human", "user", "observation")
ASSISTANT_TAGS = ("gpt", "assistant", "function_call")
SYSTEM_TAGS = ("system",)
IMAGE_PLACEHOLDER = "<image>"
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True)
class ConversationSample:
    """One SFT conversation: turns alternate user/assistant, starting with the user and ending with the assistant."""

    id: str
    system: str | None
    turns: tuple[Turn, ...]
    images: tuple[str, ...]

    def read_images(self, size: int | None = 560) -> np.ndarray:
        """uint8[N, S, S, 3]: the images, resized like Veason-R1's frames (560x560 PIL bilinear) unless size=None."""
        return np.stack([read_frame(path, size) for path in self.images])


def read_sharegpt(
    path: str | Path,
    media_dir: str | Path | None = None,
    *,
    messages_key: str = "conversations",
    images_key: str = "images",
    skip_bad_samples: bool = False,
    check_files: bool = True,
) -> tuple[list[ConversationSample], SkipLog]:
    """The conversations of a ShareGPT .json/.jsonl file, and what was skipped."""
    path = Path(path)
    media = Path(media_dir) if media_dir is not None else path.parent
    records = _records(path)
    skip_log = SkipLog(f"sharegpt/{path.name}")
    samples = []
    for index, record in enumerate(records):
        try:
            samples.append(_conversation(path, media, index, record, messages_key, images_key, check_files))
        except DataError as error:
            raise_or_skip(error, skip_log if skip_bad_samples else None)
    return samples, skip_log


def _records(path: Path) -> list:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            try:
                return [json.loads(line) for line in f if line.strip()]
            except json.JSONDecodeError as e:
                raise data_error(
                    f"malformed JSON Lines: {e.msg}", dataset="sharegpt", file=str(path), reason="malformed_json"
                ) from e
    records = load_json(path, "sharegpt", "conversation")
    if not isinstance(records, list):
        raise data_error(
            "expected a JSON list of conversations", dataset="sharegpt", file=str(path), reason="malformed_json"
        )
    return records


def _conversation(path: Path, media: Path, index: int, record, messages_key, images_key, check_files):  # noqa: ANN001
    sample_id = str(record.get("id", index)) if isinstance(record, dict) else str(index)
    where = dict(dataset="sharegpt", video=sample_id, file=str(path))
    messages = record.get(messages_key) if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise data_error(f"record {index} has no '{messages_key}' list", **where, reason="malformed_json")
    system = record.get("system")
    if _tag(messages[0]) in SYSTEM_TAGS:
        system, messages = messages[0].get("value"), messages[1:]
    turns = []
    for position, message in enumerate(messages):
        expected = USER_TAGS if position % 2 == 0 else ASSISTANT_TAGS
        if _tag(message) not in expected or not isinstance(message.get("value"), str):
            raise data_error(
                f"turn {position} has role {_tag(message)!r}, expected one of {expected}",
                **where,
                reason="bad_conversation",
                fix="turns must alternate user/assistant",
            )
        turns.append(Turn("user" if position % 2 == 0 else "assistant", message["value"]))
    if len(turns) % 2:
        raise data_error("the conversation does not end with an assistant turn", **where, reason="bad_conversation")
    images = tuple(str(media / p) for p in record.get(images_key) or [])
    placeholders = sum(t.content.count(IMAGE_PLACEHOLDER) for t in turns)
    if placeholders != len(images):
        raise data_error(
            f"{placeholders} {IMAGE_PLACEHOLDER} placeholders for {len(images)} images",
            **where,
            reason="bad_conversation",
        )
    missing = [p for p in images if check_files and not Path(p).is_file()]
    if missing:
        raise data_error("image file is missing", **{**where, "file": missing[0]}, reason="missing_frame")
    return ConversationSample(sample_id, system, tuple(turns), images)


def _tag(message) -> str | None:  # noqa: ANN001
    return message.get("from") if isinstance(message, dict) else None


def label_segments(
    segments: Sequence[tuple[Sequence[int], bool]], ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[(token ids, is_response), ...] in order -> (input_ids int32[L], labels int32[L], response_mask bool[L]).

    labels equal input_ids on response tokens and ignore_index elsewhere (prompt, system, template tokens).
    """
    ids = [int(t) for tokens, _ in segments for t in tokens]
    mask = [bool(train) for tokens, train in segments for _ in tokens]
    input_ids = np.asarray(ids, np.int32)
    response_mask = np.asarray(mask, bool)
    labels = np.where(response_mask, input_ids, ignore_index).astype(np.int32)
    return input_ids, labels, response_mask
