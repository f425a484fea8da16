"""Turning frames and text into Qwen2.5-VL inputs, exactly as transformers 5.23 does, plus the seed systems' prompts.

`Processor` is the entry point (`Processor.from_pretrained(dir)(text=..., images=..., videos=...)`); the pieces it is
built from (pixel math, samplers, chat templates, prompts, coordinates, batching) are importable on their own;
`vrsjax.processing.patchify.patchify(frames)` turns frames into pixel rows and a grid without a checkpoint.
"""

from vrsjax.processing.batching import LengthReport, PromptTooLongError, bucket_length, pad_left
from vrsjax.processing.chat import QWEN2_5_VL_CHAT_TEMPLATE, render_chat, response_mask
from vrsjax.processing.coords import mask_boxes, rescale, to_original, to_square
from vrsjax.processing.frames import fit_pixels, load_frames, load_image, load_video, resize_square
from vrsjax.processing.patchify import smart_resize
from vrsjax.processing.processor import BatchFeature, Processor, VisionSettings
from vrsjax.processing.prompts import (
    parse_interval,
    parse_percent,
    parse_veason_answer,
    parse_vision_reasoner_answer,
    veason_prompt,
    veason_user_prompt,
    videoseg_interval_text,
    videoseg_percent_text,
    videoseg_prompt,
    vision_reasoner_prompt,
    vision_reasoner_text,
)
from vrsjax.processing.sampling import (
    hf_frame_indices,
    qwen_frame_indices,
    qwen_image_frames,
    qwen_nframes,
    qwen_video,
    veason_eval_indices,
    veason_train_indices,
)
from vrsjax.processing.tokenizer import QwenTokenizer

__all__ = [
    "BatchFeature",
    "LengthReport",
    "Processor",
    "PromptTooLongError",
    "QWEN2_5_VL_CHAT_TEMPLATE",
    "QwenTokenizer",
    "VisionSettings",
    "bucket_length",
    "fit_pixels",
    "hf_frame_indices",
    "load_frames",
    "load_image",
    "load_video",
    "mask_boxes",
    "pad_left",
    "parse_interval",
    "parse_percent",
    "parse_veason_answer",
    "parse_vision_reasoner_answer",
    "qwen_frame_indices",
    "qwen_image_frames",
    "qwen_nframes",
    "qwen_video",
    "render_chat",
    "rescale",
    "resize_square",
    "response_mask",
    "smart_resize",
    "to_original",
    "to_square",
    "veason_eval_indices",
    "veason_prompt",
    "veason_train_indices",
    "veason_user_prompt",
    "videoseg_interval_text",
    "videoseg_percent_text",
    "videoseg_prompt",
    "vision_reasoner_prompt",
    "vision_reasoner_text",
]
