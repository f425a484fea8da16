"""`vrsjax data difficulty`: VideoSeg-R1's per-sample task difficulty, rated by a teacher MLLM, for the soft length
penalty of `vrsjax.rewards.videoseg`.

The paper (Xu et al. 2025, section "Task Difficulty") asks an MLLM to rate each sample on five 1-10 scales (scene
complexity, segmentation challenge, temporal ambiguity, motion complexity, linguistic ambiguity); D is their mean
and easy/medium/hard follow from two thresholds. It publishes neither the prompt, the frames shown nor the
thresholds, so these are ours: Veason-R1's 8 inference frames (`linspace(0, T-1, 8)`), each after its timestamp,
with the targets' GT boxes drawn in red so the rater judges the right object; the prompt below; a JSON answer
`{"scene_complexity": r1, ..., "linguistic_ambiguity": r5}` with integer or decimal ratings in [1, 10] (other
replies are asked again, then dropped and counted); the thresholds of `videoseg.LengthBudget` (D < 4 easy, D >= 7
hard, else medium), which the reward uses to pick the token budget.

Output: JSON Lines, one record per rated sample, `{"key": "<video>/<exp_id>", "video", "exp_id", "expression",
"ratings": {dimension: r}, "difficulty_ratings": [r1..r5], "difficulty": D, "level"}`. A record is itself what
`videoseg.sample_difficulty` reads (its "difficulty" field), and `read_difficulty(path)` maps sample keys to
records, so a trainer attaches `records[sample.key]` to a sample and passes `sample_difficulty(...)` to
`videoseg.score(..., difficulty=D)`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vrsjax.data import transforms as T
from vrsjax.data.samples import ExpressionSample
from vrsjax.rewards.videoseg import DEFAULT_BUDGET, LengthBudget, difficulty_level, difficulty_score
from vrsjax.teacher import media
from vrsjax.teacher.jobs import InvalidReply

DIMENSIONS = (
    "scene_complexity",
    "segmentation_challenge",
    "temporal_ambiguity",
    "motion_complexity",
    "linguistic_ambiguity",
)
_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)

PROMPT = (
    "The frames above are sampled from a video; each is preceded by its timestamp in seconds. The object(s) that "
    "the expression refers to are marked with red boxes.\n"
    "Expression: '{expression}'\n"
    "Rate how hard it is for a model to find and segment the marked object(s) from this expression, on five "
    "scales from 1 (very easy) to 10 (very hard):\n"
    "- scene_complexity: clutter, number of objects, lighting and background;\n"
    "- segmentation_challenge: small, thin, occluded or low-contrast targets with unclear boundaries;\n"
    "- temporal_ambiguity: how much the expression depends on when things happen and how hard the right moment "
    "is to find;\n"
    "- motion_complexity: fast, erratic or overlapping motion of the target and the camera;\n"
    "- linguistic_ambiguity: vague, indirect or reasoning-heavy wording that could match other objects.\n"
    "Think briefly, then answer with only this JSON inside <answer> </answer> tags: "
    '<answer>{{"scene_complexity": 1-10, "segmentation_challenge": 1-10, "temporal_ambiguity": 1-10, '
    '"motion_complexity": 1-10, "linguistic_ambiguity": 1-10}}</answer>\n'
)


@dataclass(frozen=True)
class DifficultyJob:
    sample: ExpressionSample
    frame_ids: tuple[int, ...]


def plan_job(sample: ExpressionSample, num_frames: int = 8) -> DifficultyJob:
    return DifficultyJob(sample, tuple(T.inference_frame_ids(sample.num_frames, num_frames)))


def build_messages(job: DifficultyJob, fit: tuple[int, int] = media.FIT) -> list[dict]:
    frames = job.sample.read_frames(job.frame_ids)
    extents = T.object_extents(job.sample.object_masks(job.frame_ids))
    drawn = [media.draw_boxes(f, e) for f, e in zip(frames, extents, strict=True)]
    parts = media.timestamped_parts(drawn, job.frame_ids, fit)
    return [
        {"role": "user", "content": [*parts, {"type": "text", "text": PROMPT.format(expression=job.sample.expression)}]}
    ]


def parse_ratings(text: str) -> list[float]:
    """float[5] in DIMENSIONS order from the JSON object in <answer> (else the last JSON object in the reply), or
    InvalidReply("reason: detail")."""
    answer = re.search(r"<answer>(.*?)</answer>", text or "", re.DOTALL)
    objects = _JSON_OBJECT.findall(answer.group(1) if answer else text or "")
    if not objects:
        raise InvalidReply("no_json: no JSON object with the five ratings in the reply")
    try:
        data = json.loads(objects[-1])
    except json.JSONDecodeError as error:
        raise InvalidReply(f"bad_json: {error}") from error
    missing = [d for d in DIMENSIONS if d not in data]
    if missing:
        raise InvalidReply(f"missing_rating: {missing}")
    values = [data[d] for d in DIMENSIONS]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and 1 <= v <= 10 for v in values):
        raise InvalidReply(f"bad_rating: ratings must be numbers in [1, 10], got {values}")
    return [float(v) for v in values]


def record(job: DifficultyJob, ratings: list[float], budget: LengthBudget = DEFAULT_BUDGET) -> dict:
    """The output record of one sample (see the module doc)."""
    d = difficulty_score(ratings)
    sample = job.sample
    return {
        "key": sample.key,
        "video": sample.video,
        "exp_id": sample.exp_id,
        "expression": sample.expression,
        "ratings": dict(zip(DIMENSIONS, ratings, strict=True)),
        "difficulty_ratings": ratings,
        "difficulty": d,
        "level": difficulty_level(d, budget),
    }


def validate_reply(job: DifficultyJob, text: str, budget: LengthBudget = DEFAULT_BUDGET) -> dict:
    return record(job, parse_ratings(text), budget)


def read_difficulty(path: str | Path) -> dict[str, dict]:
    """The records of a `vrsjax data difficulty` JSON Lines file by sample key ('<video>/<exp_id>'); each record
    works as the sample mapping of `videoseg.sample_difficulty`. A malformed line raises ValueError naming it."""
    records = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                records[str(item["key"])] = item
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(
                    f"{path}:{number}: not a difficulty record ({error}); rewrite it with `vrsjax data difficulty`"
                ) from error
    return records


def level_counts(records: list[dict]) -> dict[str, int]:
    counts = {"easy": 0, "medium": 0, "hard": 0}
    for item in records:
        counts[item["level"]] += 1
    return counts
