"""The demo's world, built from nothing but a seed: the synthetic ReVOS-format dataset, Veason-R1 training and
held-out prompts drawn from it, a tiny Qwen2.5-VL checkpoint whose BPE tokenizer is trained on the demo's own text,
and chain-of-thought SFT conversations written from the ground truth.

Frames are shown at `size` x `size` (the demo's stand-in for Veason-R1's 560), so answers and GT boxes are in that
frame. A CoT answer is `<think>` one sentence naming the target and its keyframe `</think>` then Veason-R1's JSON
with the GT keyframe (one of the sampled frames among the largest-area ones, as Veason-R1 samples) and the GT boxes
of the target objects in that frame.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from vrsjax.data.sft import ConversationSample, Turn
from vrsjax.processing.chat import DEFAULT_SYSTEM_PROMPT
from vrsjax.processing.prompts import veason_user_prompt
from vrsjax.rl.trainer import GRPOSample


@dataclasses.dataclass
class DemoSample:
    """One expression of a video with its Veason-R1 frames. `sample` is what GRPO trains on; `video_frames`,
    `video_masks` (uint8[T, H, W, 3], bool[T, H, W]) are the whole video for the held-out J&F evaluation."""

    sample: GRPOSample
    keyframe: int
    type_id: int
    video: str
    video_frames: np.ndarray | None = None
    video_masks: np.ndarray | None = None
    video_boxes: np.ndarray | None = None  # int32[T, K, 4] of the K target objects, video pixels, -1 where absent


def build_samples(root: Path, split: str, num_frames: int, size: int, seed: int, whole_video: bool) -> list:
    """Every referring/reasoning expression of the split (no-target ones have no box to learn) as a DemoSample:
    training splits sample frames the Veason-R1 training way (keyframe among the 5 largest), held-out ones
    uniformly (Veason-R1 inference)."""
    from vrsjax.data import open_dataset
    from vrsjax.data.examples import inference_example, train_example
    from vrsjax.data.transforms import object_extents

    dataset = open_dataset("revos", root, split)
    out = []
    for i in range(len(dataset)):
        item = dataset[i]
        if item.type_id == 2:
            continue
        if whole_video:
            ex = inference_example(item, num_frames, size)
        else:
            ex = train_example(item, np.random.default_rng([seed, i]), num_frames, size)
        sample = GRPOSample(
            f"{ex['video']}/{ex['exp_id']}",
            ex["expression"],
            ex["frames"],
            [int(t) for t in ex["frame_ids"]],
            ex["gt_masks"].astype(bool),
            ex["gt_boxes"],
        )
        keyframe = ex["keyframe"] if ex["keyframe"] >= 0 else _largest(sample)
        demo = DemoSample(sample, keyframe, int(ex["type_id"]), ex["video"])
        if whole_video:
            demo.video_frames = item.read_frames()
            objects = item.object_masks()
            demo.video_masks = objects.any(axis=1)
            demo.video_boxes = object_extents(objects)
        out.append(demo)
    return out


def scene(rng: np.random.Generator, width: int, height: int, length: int) -> list:
    """The demo's shapes: 2-3 of them, each its own colour, kind and size (so every name and "the largest" pick one
    object), spread over a 3 x 3 grid of cells with jitter so they do not overlap, drifting slowly: a box drawn on
    the keyframe still covers its object in the other frames, and where an object is can be read from one frame."""
    from vrsjax.data.synthetic import COLORS, SHAPES, Shape

    count = int(rng.integers(2, 4))
    colours = rng.choice(list(COLORS), count, replace=False)
    kinds = rng.choice(SHAPES, count, replace=False)
    radii = rng.choice([0.10, 0.14, 0.18], count, replace=False) * height
    columns, rows = rng.permutation(3)[:count], rng.permutation(3)[:count]
    shapes = []
    for colour, kind, radius, column, row in zip(colours, kinds, radii, columns, rows, strict=True):
        x = np.clip((column + 0.5 + rng.uniform(-0.1, 0.1)) / 3 * width, radius, width - radius)
        y = np.clip((row + 0.5 + rng.uniform(-0.1, 0.1)) / 3 * height, radius, height - radius)
        drift = rng.uniform(-0.06, 0.06, 2) * (width, height) / length
        shapes.append(
            Shape(str(colour), str(kind), float(radius), (float(x), float(y)), (float(drift[0]), float(drift[1])))
        )
    return shapes


def _largest(sample: GRPOSample) -> int:
    areas = sample.gt_masks.reshape(len(sample.frame_ids), -1).sum(axis=1)
    return sample.frame_ids[int(np.argmax(areas))]


ROWS, COLUMNS = ("top", "middle", "bottom"), ("left", "centre", "right")


def cot_answer(demo: DemoSample) -> str:
    """The CoT target: a thought naming the target, its keyframe and where each box sits in a 3 x 3 grid of the
    frame, then Veason-R1's JSON answer (integer boxes in the size x size frame shown)."""
    s = demo.sample
    size = np.asarray(s.frames[0]).shape[1]  # the frames are shown at size x size
    position = s.frame_ids.index(demo.keyframe)
    boxes = [[int(round(v)) for v in box] for box in s.gt_boxes[position] if any(box)]
    question = s.expression.lower().strip(".")
    count = "one object" if len(boxes) == 1 else f"{len(boxes)} objects"
    where = " and ".join(
        f"the {_third(y1 + y2, size, ROWS)} {_third(x1 + x2, size, COLUMNS)}" for x1, y1, x2, y2 in boxes
    )
    think = f"'{question}' means {count}; it is clearest at {demo.keyframe}s, in {where}."
    answer = json.dumps({"keyframe_timestamp": demo.keyframe, "bbox_2d_list": boxes})
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def _third(twice_centre: float, size: int, words: tuple[str, str, str]) -> str:
    return words[min(2, max(0, int(twice_centre / 2 / size * 3)))]


def conversation(demo: DemoSample) -> ConversationSample:
    """The SFT conversation (images in memory: the sample's frames, in order)."""
    prompt = veason_user_prompt(demo.sample.expression, demo.sample.frame_ids)
    return ConversationSample(
        demo.sample.sample_id,
        DEFAULT_SYSTEM_PROMPT,
        (Turn("user", prompt), Turn("assistant", cot_answer(demo))),
        (),
    )


def corpus(samples: list[DemoSample]) -> list[str]:
    """The text the tokenizer learns: the prompts and answers the demo shows, and every coordinate it may write."""
    lines = [DEFAULT_SYSTEM_PROMPT]
    for demo in samples:
        lines += [veason_user_prompt(demo.sample.expression, demo.sample.frame_ids), cot_answer(demo)]
    lines += [" ".join(str(v) for v in range(start, start + 32)) for start in range(0, 600, 32)]
    return lines


def write_checkpoint(out: Path, samples: list[DemoSample], *, bpe_size: int, seed: int, **model) -> Path:
    """A random tiny Qwen2.5-VL (HF format) whose tokenizer is trained on the demo's text; returns the dir."""
    from vrsjax.testing import TINY_BPE_SIZE, tiny_special_ids, write_tiny_checkpoint, write_tiny_tokenizer

    text = corpus(samples)
    bpe_size = _learnable_size(text, bpe_size)
    special = tiny_special_ids(bpe_size)
    ids = {
        "image_token_id": special["<|image_pad|>"],
        "video_token_id": special["<|video_pad|>"],
        "vision_start_token_id": special["<|vision_start|>"],
        "vision_end_token_id": special["<|vision_end|>"],
    }
    vocab = 320 + bpe_size - TINY_BPE_SIZE
    path = write_tiny_checkpoint(out, seed=seed, tokenizer=False, vocab_size=vocab, **ids, **model)
    config = json.loads((path / "config.json").read_text())
    config["text_config"]["bos_token_id"] = special["<|endoftext|>"]
    config["text_config"]["eos_token_id"] = special["<|im_end|>"]
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return write_tiny_tokenizer(path, corpus=text, bpe_size=bpe_size)


def _learnable_size(text: list[str], requested: int) -> int:
    """The BPE size the corpus supports (<= requested): a small corpus runs out of merges, and the added tokens
    must follow the vocabulary without a gap."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from vrsjax.processing.tokenizer import qwen2_pipeline

    bpe = qwen2_pipeline(Tokenizer(models.BPE()))
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe.train_from_iterator(
        text, trainers.BpeTrainer(vocab_size=requested, initial_alphabet=alphabet, show_progress=False)
    )
    return min(requested, bpe.get_vocab_size())
