"""`vrsjax data cot`: Veason-R1's chain-of-thought SFT data, written by a teacher VLM, as LLaMA-Factory ShareGPT.

Per sample, as Veason-R1's `training_data_construction/seed_cot_generation.py`: the keyframe is a random choice
among the 5 frames with the largest union-mask area, `num_frames` (8 there) frames are stride-sampled through it
(`vrsjax.data.transforms.veason_train_frame_ids`), timestamps are frame indices (1 fps), each object's GT box is
drawn in red on every sampled frame, and the frames go to the teacher, each after its timestamp, followed by a
3-step prompt (video summary, keyframe justification, target localization) that names the keyframe and appends one
of three worked examples chosen at random. The randomness is seeded per sample (`seed` and the sample key), so a
rerun sends the same requests and resumes from the cache. The wording of the prompt and examples is ours.

Unlike the reference, which trusts any reply, the teacher must answer `<think>...</think>` then
`<answer>{"keyframe_timestamp": T, "bbox_2d_list": [[x1, y1, x2, y2], ...]}</answer>` with T the given keyframe and
boxes in the 560x560 frame (and, with `min_iou`, matching the GT boxes: Veason's spatial reward >= min_iou); other
replies are asked again, then dropped and counted. As in the reference, the written answer is the ground truth
(keyframe and its GT boxes in the 560x560 frame, 2 decimals) and the teacher supplies only the thinking. The human
turn is Veason-R1's GRPO prompt (`vrsjax.processing.prompts.veason_user_prompt`), so SFT and RL see one prompt; the
reference's SFT prompt differs and its LLaMA-Factory conversion is not published. Reference quirk not reproduced:
its per-object masks accumulate (object k's box is the box of objects 0..k); we use each object's own box.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from vrsjax.data import transforms as T
from vrsjax.data.samples import ExpressionSample
from vrsjax.processing.chat import DEFAULT_SYSTEM_PROMPT
from vrsjax.processing.prompts import veason_user_prompt
from vrsjax.rewards.veason import spatial_reward
from vrsjax.teacher import media
from vrsjax.teacher.jobs import InvalidReply

THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)

# Our wording; three worked examples, one appended per request (Veason-R1 picks one of three at random).
EXAMPLES = (
    "Example. Expression: 'the dog that jumps over the fence'. Keyframe timestamp: 5.\n"
    "<think>Step 1: A backyard with a wooden fence; a brown dog runs toward the fence and leaps over it while a "
    "second dog stays on the grass. Step 2: At timestamp 5 the brown dog is in mid-air above the fence, which is "
    "exactly the jumping the expression describes. Step 3: In frame 5 the jumping dog is in the upper centre of the "
    "image, body stretched, front legs past the top of the fence.</think>",
    "Example. Expression: 'the cup the woman picks up last'. Keyframe timestamp: 12.\n"
    "<think>Step 1: A woman at a kitchen table lifts a red mug, puts it down, then reaches for a white cup. "
    "Step 2: Timestamp 12 shows her hand closing around the white cup after the red mug is back on the table, so "
    "this cup is the last one she picks up. Step 3: In frame 12 the white cup is on the right side of the table, "
    "held by her right hand, just above the saucer.</think>",
    "Example. Expression: 'which vehicle could carry the most passengers?'. Keyframe timestamp: 3.\n"
    "<think>Step 1: A street where a bus passes two cars and a bicycle, moving from left to right. Step 2: Of these "
    "vehicles the bus carries the most people; at timestamp 3 it is fully inside the frame and unoccluded. "
    "Step 3: In frame 3 the bus fills the lower left half of the image, its front facing right.</think>",
)
INSTRUCTIONS = (
    "The frames above are sampled from a video at 1 frame per second; each is preceded by its timestamp in seconds. "
    "The target object(s) of the expression are marked with red boxes to help you; do not mention the boxes.\n"
    "Expression: '{expression}'\n"
    "Keyframe timestamp: {keyframe}\n"
    "The frame at timestamp {keyframe} has been chosen as the keyframe; reason about it and do not pick another.\n"
    "Reason in three steps:\n"
    "Step 1: summarize what happens across all frames.\n"
    "Step 2: justify why the frame at timestamp {keyframe} shows the target best.\n"
    "Step 3: describe what the target does and exactly where it is in that frame.\n"
    "Write your reasoning naturally inside <think> </think>, then give the answer as "
    '<answer>{{"keyframe_timestamp": {keyframe}, "bbox_2d_list": [[x1, y1, x2, y2], ...]}}</answer> with one box '
    "per target ({targets} target(s)) in pixel coordinates of the frame resized to {size}x{size}.\n"
)


@dataclass(frozen=True)
class CotJob:
    """One sample's plan: sampled frame ids (timestamps), the keyframe, the template, the GT boxes per sampled frame
    in the 560x560 frame."""

    sample: ExpressionSample
    frame_ids: tuple[int, ...]
    keyframe: int
    template: int
    gt_boxes: tuple

    @property
    def keyframe_boxes(self) -> list[list[float]]:
        return [[round(float(v), 2) for v in box] for box in self.gt_boxes[self.frame_ids.index(self.keyframe)]]


def plan_job(sample: ExpressionSample, num_frames: int = 8, seed: int = 0) -> CotJob | None:
    """The sample's keyframe, frames and template (None when its masks are empty on every frame)."""
    rng = random.Random(f"{seed}/{sample.key}")
    areas = T.union_areas(sample.union_masks())
    if not areas.any():
        return None
    frame_ids, keyframe = T.veason_train_frame_ids(areas, num_frames, rng)
    extents = T.object_extents(sample.object_masks(frame_ids))
    boxes = T.veason_gt_boxes(extents, sample.width, sample.height)
    return CotJob(sample, tuple(frame_ids), keyframe, rng.randrange(len(EXAMPLES)), tuple(map(tuple, boxes)))


def prompt_text(job: CotJob) -> str:
    text = INSTRUCTIONS.format(
        expression=job.sample.expression, keyframe=job.keyframe, targets=len(job.sample.obj_ids), size=T.VEASON_SIZE
    )
    return text + EXAMPLES[job.template]


def build_messages(job: CotJob, fit: tuple[int, int] = media.FIT) -> list[dict]:
    """The teacher request: timestamped frames with GT boxes drawn, then the instructions and one example."""
    frames = job.sample.read_frames(job.frame_ids)
    extents = T.object_extents(job.sample.object_masks(job.frame_ids))
    drawn = [media.draw_boxes(f, e) for f, e in zip(frames, extents, strict=True)]
    parts = media.timestamped_parts(drawn, job.frame_ids, fit)
    return [{"role": "user", "content": [*parts, {"type": "text", "text": prompt_text(job)}]}]


def _boxes_in_frame(boxes, size: int = T.VEASON_SIZE) -> bool:
    def ok(b) -> bool:
        numbers = isinstance(b, list) and len(b) == 4 and all(isinstance(v, int | float) for v in b)
        return numbers and 0 <= b[0] <= b[2] <= size and 0 <= b[1] <= b[3] <= size

    return isinstance(boxes, list) and len(boxes) > 0 and all(ok(b) for b in boxes)


def validate_reply(job: CotJob, text: str, min_iou: float = 0.0) -> str:
    """The reply's thinking, or InvalidReply("reason: detail")."""
    think = THINK.search(text or "")
    if think is None or not think.group(1).strip():
        raise InvalidReply("no_think: the reply has no non-empty <think>...</think>")
    answer = ANSWER.search(text[think.end() :])
    if answer is None:
        raise InvalidReply("no_answer: no <answer>...</answer> after </think>")
    try:
        data = json.loads(answer.group(1))
    except json.JSONDecodeError as error:
        raise InvalidReply(f"bad_json: {error}") from error
    if not isinstance(data, dict) or data.get("keyframe_timestamp") != job.keyframe:
        raise InvalidReply(f"wrong_keyframe: expected keyframe_timestamp {job.keyframe}")
    if not _boxes_in_frame(data.get("bbox_2d_list")):
        raise InvalidReply(
            f"bad_boxes: bbox_2d_list must hold [x1, y1, x2, y2] boxes inside {T.VEASON_SIZE}x{T.VEASON_SIZE}"
        )
    if min_iou > 0 and spatial_reward(text, job.gt_boxes, job.frame_ids) < min_iou:
        raise InvalidReply(f"low_iou: the boxes match the ground truth below {min_iou}")
    return think.group(1).strip()


def conversation(job: CotJob, thinking: str, out_dir: Path) -> dict:
    """The ShareGPT record: Veason-R1's system and user prompt, `<think>` + the GT answer, the frame paths relative
    to out_dir (LLaMA-Factory's media_dir)."""
    answer = json.dumps({"keyframe_timestamp": job.keyframe, "bbox_2d_list": job.keyframe_boxes})
    sample = job.sample
    return {
        "id": sample.key,
        "system": DEFAULT_SYSTEM_PROMPT,
        "conversations": [
            {"from": "human", "value": veason_user_prompt(sample.expression, job.frame_ids)},
            {"from": "gpt", "value": f"<think>{thinking}</think>\n<answer>{answer}</answer>"},
        ],
        "images": [os.path.relpath(sample.frame_paths[t], out_dir) for t in job.frame_ids],
        "keyframe": job.keyframe,
        "frame_ids": list(job.frame_ids),
        "template": job.template,
    }


def dataset_info(out: Path, name: str) -> Path:
    """Add the file's entry to dataset_info.json next to it (LLaMA-Factory's dataset registry)."""
    path = out.parent / "dataset_info.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info[name] = {
        "file_name": out.name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images", "system": "system"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }
    path.write_text(json.dumps(info, indent=2))
    return path
