"""SFT conversations -> token batches, as LLaMA-Factory's `qwen2_vl` template and multimodal plugin build them.

A conversation (`vrsjax.data.sft.ConversationSample`, read from ShareGPT files) becomes segments: the first user
turn carries `<|im_start|>system\\n{system}<|im_end|>\\n` (the default system prompt when the record has none), each
user turn is `<|im_start|>user\\n{content}<|im_end|>\\n<|im_start|>assistant\\n` and is not trained on, each assistant
turn is `{content}<|im_end|>\\n` and is (every assistant turn, LLaMA-Factory's default). Each `<image>` becomes
`<|vision_start|>` + one `<|image_pad|>` per merged vision token + `<|vision_end|>`; images are read (square-resized
to `image_resize` when set), shrunk into [image_min_pixels, image_max_pixels] like LLaMA-Factory, then patchified
by the checkpoint's processor. LLaMA-Factory truncates sequences over `cutoff_len`, which would cut vision tokens
out of the prompt; here such a sample is an error naming it (or a counted skip with `skip_bad_samples`).
`collate` left-pads a micro-batch into `ModelInputs` with next-token targets and the response-token weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from vrsjax.data.errors import DataError, SkipLog, data_error, raise_or_skip
from vrsjax.data.samples import read_frame
from vrsjax.data.sft import IMAGE_PLACEHOLDER, ConversationSample, label_segments, read_sharegpt
from vrsjax.errors import UserError
from vrsjax.models.qwen2_5_vl.inputs import ModelInputs, prepare_inputs
from vrsjax.processing.chat import DEFAULT_SYSTEM_PROMPT
from vrsjax.processing.frames import fit_pixels

VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"


@dataclasses.dataclass
class SFTExample:
    """One tokenized conversation. input_ids int32[L]; response_mask bool[L] (True on trained tokens);
    pixel_values float32[P, C*tp*p*p] and image_grid_thw int64[N, 3], or None without images."""

    id: str
    input_ids: np.ndarray
    response_mask: np.ndarray
    pixel_values: np.ndarray | None = None
    image_grid_thw: np.ndarray | None = None

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum())


def conversation_segments(sample: ConversationSample, default_system: str = DEFAULT_SYSTEM_PROMPT) -> list:
    """[(text, is_response), ...] of the qwen2_vl template, `<image>` placeholders still in the text."""
    system = sample.system or default_system
    segments = []
    for i in range(0, len(sample.turns), 2):
        user, answer = sample.turns[i], sample.turns[i + 1]
        prefix = f"<|im_start|>system\n{system}<|im_end|>\n" if i == 0 else ""
        segments.append((f"{prefix}<|im_start|>user\n{user.content}<|im_end|>\n<|im_start|>assistant\n", False))
        segments.append((f"{answer.content}<|im_end|>\n", True))
    return segments


def encode_conversation(
    processor,
    sample: ConversationSample,
    images: list[np.ndarray] | None = None,
    *,
    cutoff_len: int | None = None,
    default_system: str = DEFAULT_SYSTEM_PROMPT,
) -> SFTExample:
    """A conversation and its images (uint8[H, W, 3] each, already resized) -> SFTExample."""
    images = list(images or [])
    vision = processor.process_images(images) if images else {}
    grids = vision.get("image_grid_thw")
    merge = processor.image.merge_size
    runs = iter([] if grids is None else [int(np.prod(g)) // (merge * merge) for g in grids])
    pieces = []
    for text, train in conversation_segments(sample, default_system):
        parts = text.split(IMAGE_PLACEHOLDER)
        text = parts[0] + "".join(f"{VISION_START}{IMAGE_PAD * next(runs)}{VISION_END}{p}" for p in parts[1:])
        pieces.append((processor.tokenizer.encode(text), train))
    ids, _, mask = label_segments(pieces)
    if cutoff_len is not None and len(ids) > cutoff_len:
        raise data_error(
            f"{len(ids)} tokens exceed cutoff_len={cutoff_len}; truncating would cut vision tokens or the answer",
            dataset="sft",
            video=sample.id,
            fix="raise cutoff_len, lower image_max_pixels, or set skip_bad_samples: true",
            reason="too_long",
        )
    return SFTExample(sample.id, ids, mask, vision.get("pixel_values"), grids)


def read_images(sample: ConversationSample, resize: int | None, min_pixels: int, max_pixels: int) -> list[np.ndarray]:
    """The sample's images: square-resized (Veason's 560 frames) when `resize`, then fit into the pixel budget."""
    out = []
    for path in sample.images:
        try:
            image = read_frame(path, resize)
        except OSError as e:
            raise data_error(f"cannot read the image: {e}", dataset="sft", video=sample.id, file=path) from e
        out.append(fit_pixels(image, min_pixels, max_pixels))
    return out


def dataset_files(cfg) -> list[tuple[str, Path, str, str]]:
    """(name, file, messages column, images column) of each `dataset` entry: a name in
    <dataset_dir>/dataset_info.json (LLaMA-Factory) or a direct .json/.jsonl path."""
    out = []
    info_path = Path(cfg.dataset_dir) / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    for name in cfg.datasets:
        if name in info:
            entry = info[name]
            if entry.get("formatting", "alpaca") != "sharegpt":
                raise UserError(f"{info_path}: dataset {name!r} is not in the sharegpt format (alpaca is unsupported)")
            tags = entry.get("tags", {})
            expected = {"role_tag": "from", "content_tag": "value"}
            if any(tags.get(k, v) != v for k, v in expected.items()):
                raise UserError(f"{info_path}: dataset {name!r} uses tags {tags}; vrsjax reads from/value tags")
            columns = entry.get("columns", {})
            out.append(
                (
                    name,
                    Path(cfg.dataset_dir) / entry["file_name"],
                    columns.get("messages", "conversations"),
                    columns.get("images", "images"),
                )
            )
        elif Path(name).suffix in (".json", ".jsonl") and Path(name).exists():
            out.append((name, Path(name), "conversations", "images"))
        else:
            known = ", ".join(info) or "none"
            raise FileNotFoundError(
                f"dataset {name!r}: not in {info_path} (datasets there: {known}) and not a .json/.jsonl file"
            )
    if not out:
        raise UserError("dataset is empty: name datasets from dataset_info.json or give .json/.jsonl paths")
    return out


def load_examples(cfg, processor) -> tuple[list[SFTExample], SkipLog]:
    """Every conversation of the config's datasets, tokenized (max_samples per dataset), and what was skipped."""
    from vrsjax.progress import progress_bar

    examples, skipped = [], SkipLog("sft")
    for name, path, messages_key, images_key in dataset_files(cfg):
        samples, log = read_sharegpt(
            path, cfg.media_dir, messages_key=messages_key, images_key=images_key, skip_bad_samples=cfg.skip_bad_samples
        )
        skipped.merge(log)
        if cfg.max_samples:
            samples = samples[: cfg.max_samples]
        for sample in progress_bar(samples, desc=f"tokenize {name}", leave=False):
            try:
                images = read_images(sample, cfg.image_resize, cfg.image_min_pixels, cfg.image_max_pixels)
                examples.append(encode_conversation(processor, sample, images, cutoff_len=cfg.cutoff_len))
            except DataError as error:
                raise_or_skip(error, skipped if cfg.skip_bad_samples else None)
    if not examples:
        raise UserError(f"no usable SFT samples in {cfg.dataset!r}\n{skipped.report()}")
    return examples, skipped


def collate(model_config, examples: list[SFTExample], multiple: int = 32) -> tuple[ModelInputs, np.ndarray, np.ndarray]:
    """-> (ModelInputs [B, L], targets int32[B, L-1], weights float32[B, L-1]): left-padded to a multiple of
    `multiple` tokens; position t predicts targets[:, t] = input_ids[:, t+1], weighted 1 on response tokens."""
    length = -(-max(len(e.input_ids) for e in examples) // multiple) * multiple
    ids = np.zeros((len(examples), length), np.int32)
    att = np.zeros((len(examples), length), np.int32)
    mask = np.zeros((len(examples), length), np.float32)
    for i, e in enumerate(examples):
        ids[i, length - len(e.input_ids) :] = e.input_ids
        att[i, length - len(e.input_ids) :] = 1
        mask[i, length - len(e.input_ids) :] = e.response_mask
    with_images = [e for e in examples if e.pixel_values is not None]
    pixels = np.concatenate([e.pixel_values for e in with_images]) if with_images else None
    grids = np.concatenate([e.image_grid_thw for e in with_images]) if with_images else None
    inputs = prepare_inputs(model_config, ids, att, pixels, grids)
    return inputs, ids[:, 1:], mask[:, 1:]
