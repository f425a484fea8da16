"""`Processor`: text + images + videos -> the model's inputs, identical to transformers 5.23's `Qwen2_5_VLProcessor`.

`Processor.from_pretrained(dir)` reads the checkpoint's tokenizer, chat template, `preprocessor_config.json` (images)
and `video_preprocessor_config.json` (videos; transformers falls back to the image file, and so do we). A call
returns numpy arrays under the Hugging Face names. Images follow the PIL image processor by default
(`image_backend="pil"`, bit-identical to `Qwen2VLImageProcessorPil`; "torch" matches the torchvision processor that
`AutoProcessor` picks when torchvision is installed); videos follow `Qwen2VLVideoProcessor`, whose only backend is
torchvision. Each image/video pad token in the text becomes `t*h*w/merge**2` pad tokens, in order of appearance
across the batch. `second_per_grid_ts = temporal_patch_size / fps`, with `fps` the frame rate of the frames given:
pass `fps=` (transformers reads the same number from `video_metadata=[{"fps": ...}]`; its bare `fps=` argument only
drives frame sampling) or `video_metadata`; without either transformers assumes 24 fps, and so do we.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image

from vrsjax.processing import batching
from vrsjax.processing.chat import load_chat_template, render_chat, response_mask
from vrsjax.processing.patchify import (
    CLIP_MEAN,
    CLIP_STD,
    normalize_patches,
    normalize_plan,
    patchify_uint8,
    resize_frames,
    smart_resize,
)
from vrsjax.processing.sampling import hf_frame_indices
from vrsjax.processing.tokenizer import QwenTokenizer

IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
MODEL_KEYS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
    "position_ids",
)


@dataclasses.dataclass(frozen=True)
class VisionSettings:
    """One preprocessor config (transformers' keys and defaults); `min_pixels`/`max_pixels` are `size`'s edges."""

    min_pixels: int
    max_pixels: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    do_resize: bool = True
    resample: int = 3
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD
    do_sample_frames: bool = False  # videos only, from here on
    fps: float | None = None
    num_frames: int | None = None
    min_frames: int = 4
    max_frames: int = 768
    cap_pixels_per_frame: bool = False
    max_video_tokens: int = 128000

    @classmethod
    def from_dict(cls, cfg: dict, min_pixels: int, max_pixels: int) -> VisionSettings:
        """transformers' rules: `size` edges (or the class defaults), overridden by `min_pixels`/`max_pixels`."""
        size = dict(cfg.get("size") or {})
        lo = size.get("shortest_edge", size.get("min_pixels", min_pixels))
        hi = size.get("longest_edge", size.get("max_pixels", max_pixels))
        lo = cfg["min_pixels"] if cfg.get("min_pixels") is not None else lo
        hi = cfg["max_pixels"] if cfg.get("max_pixels") is not None else hi
        names = {f.name for f in dataclasses.fields(cls)} - {"min_pixels", "max_pixels"}
        known = {k: v for k, v in cfg.items() if k in names and v is not None}
        for key in ("image_mean", "image_std"):
            if key in known:
                value = known[key]
                known[key] = tuple(value) if isinstance(value, (list, tuple)) else (float(value),) * 3
        return cls(min_pixels=int(lo), max_pixels=int(hi), **known)

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def normalizer(self, backend: str) -> tuple:
        return normalize_plan(
            backend, self.image_mean, self.image_std, self.rescale_factor, self.do_rescale, self.do_normalize
        )


class BatchFeature(dict):
    """The processor's output: a dict of numpy arrays (HF key names) plus `length_report` (skipped prompts)."""

    length_report: batching.LengthReport | None = None

    def model_inputs(self) -> dict:
        """Only the keys `Qwen2_5_VLForConditionalGeneration.__call__` accepts (drops rope_deltas etc.)."""
        return {k: v for k, v in self.items() if k in MODEL_KEYS}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-download it") from err


def _load_settings(path: Path, kind: str, min_pixels: int, max_pixels: int) -> VisionSettings:
    """kind 'image' or 'video': processor_config.json section, else its own file, else (videos) the image file."""
    files = {
        "image": ["preprocessor_config.json"],
        "video": ["video_preprocessor_config.json", "preprocessor_config.json"],
    }
    processor_file = path / "processor_config.json"
    if processor_file.exists() and f"{kind}_processor" in (sections := _read_json(processor_file)):
        return VisionSettings.from_dict(sections[f"{kind}_processor"], min_pixels, max_pixels)
    for name in files[kind]:
        if (path / name).exists():
            return VisionSettings.from_dict(_read_json(path / name), min_pixels, max_pixels)
    return VisionSettings(min_pixels=min_pixels, max_pixels=max_pixels)


def _to_hwc(x: np.ndarray, what: str) -> np.ndarray:
    """uint8 image array in either channel layout (transformers' inference: channels first wins) -> [H, W, C]."""
    if x.ndim == 2:
        return x[..., None]
    if x.ndim != 3:
        raise ValueError(f"{what}: expected an [H, W, C] image, got shape {list(x.shape)}")
    if x.shape[0] in (1, 3, 4):
        return np.moveaxis(x, 0, -1)
    if x.shape[-1] in (1, 3, 4):
        return x
    raise ValueError(f"{what}: cannot tell the channel axis of shape {list(x.shape)} (need 1, 3 or 4 channels)")


def image_to_rgb(image, what: str = "image") -> np.ndarray:
    """PIL image or uint8 array -> uint8[H, W, 3]; transparency composited onto white as transformers does."""
    if isinstance(image, Image.Image):
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(image.convert("RGB"))
    x = np.asarray(image)
    if x.dtype != np.uint8:
        raise ValueError(f"{what}: expected uint8 pixels (0-255), got {x.dtype}; convert with (x * 255).round()")
    x = _to_hwc(x, what)
    if x.shape[-1] == 1:
        return np.repeat(x, 3, axis=-1)
    if x.shape[-1] == 4:
        alpha = x[..., 3:4] / 255
        return np.round(alpha * x[..., :3] + (1 - alpha) * 255).astype(np.uint8)
    return x


def video_to_rgb(video, what: str = "video") -> np.ndarray:
    """uint8[T, H, W, 3|1], a list of frames (PIL or arrays) -> uint8[T, H, W, 3]."""
    if isinstance(video, (list, tuple)):
        if len(video) == 0:
            raise ValueError(f"{what} has zero frames")
        video = np.stack([np.asarray(f) for f in video])
    x = np.asarray(video)
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ValueError(f"{what}: expected uint8[T, H, W, C] frames, got {x.dtype}{list(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} has zero frames")
    if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):  # [T, C, H, W]
        x = np.moveaxis(x, 1, -1)
    if x.shape[-1] == 1:
        return np.repeat(x, 3, axis=-1)
    if x.shape[-1] == 4:
        if (x[..., 3] < 255).any():
            raise ValueError(f"{what}: frames with transparency are not supported; composite them onto a background")
        return np.ascontiguousarray(x[..., :3])
    if x.shape[-1] != 3:
        raise ValueError(f"{what}: expected 1, 3 or 4 channels, got shape {list(x.shape)}")
    return x


def _flat_images(images) -> list:
    if images is None:
        return []
    if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim <= 3):
        return [images]
    if isinstance(images, np.ndarray):
        return list(images)
    return [img for item in images for img in (_flat_images(item) if isinstance(item, (list, tuple)) else [item])]


def _is_frame(x) -> bool:
    return isinstance(x, Image.Image) or (isinstance(x, np.ndarray) and x.ndim in (2, 3))


def _is_video(x) -> bool:
    return (isinstance(x, np.ndarray) and x.ndim == 4) or (
        isinstance(x, (list, tuple)) and len(x) > 0 and all(_is_frame(f) for f in x)
    )


def _flat_videos(videos) -> list:
    """transformers' `make_batched_videos`: one array/list of frames is one video; lists of them are a batch."""
    if videos is None:
        return []
    if isinstance(videos, np.ndarray) and videos.ndim == 5:
        return list(videos)
    if _is_video(videos):
        return [videos]
    return [v for item in videos for v in ([item] if _is_video(item) else _flat_videos(item))]


class Processor:
    """Qwen2.5-VL processor: chat template, tokenizer, image and video preprocessing, batching."""

    def __init__(
        self,
        tokenizer: QwenTokenizer,
        image: VisionSettings,
        video: VisionSettings,
        chat_template: str | None = None,
        *,
        image_backend: str = "pil",
        tokens_per_second: float = 2,
        padding_side: str = "left",
    ):
        if image_backend not in ("pil", "torch"):
            raise ValueError(f"image_backend must be 'pil' or 'torch', got {image_backend!r}")
        self.tokenizer, self.image, self.video = tokenizer, image, video
        self.chat_template, self.image_backend = chat_template, image_backend
        self.tokens_per_second, self.padding_side = tokens_per_second, padding_side
        self.image_token_id = tokenizer.token_to_id(IMAGE_TOKEN)
        self.video_token_id = tokenizer.token_to_id(VIDEO_TOKEN)
        if self.image_token_id is None or self.video_token_id is None:
            raise ValueError(
                f"the tokenizer has no {IMAGE_TOKEN} / {VIDEO_TOKEN} token; is this a Qwen2.5-VL tokenizer?"
            )

    @classmethod
    def from_pretrained(cls, path: str | Path, image_backend: str = "pil", **kwargs) -> Processor:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a checkpoint directory")
        image = _load_settings(path, "image", 56 * 56, 28 * 28 * 1280)
        video = _load_settings(path, "video", 128 * 28 * 28, 28 * 28 * 768)
        tokens_per_second = 2
        if (path / "config.json").exists():
            config = _read_json(path / "config.json")
            tokens_per_second = config.get("vision_config", {}).get("tokens_per_second", 2)
        kwargs.setdefault("tokens_per_second", tokens_per_second)
        tokenizer = QwenTokenizer.from_pretrained(path)
        return cls(tokenizer, image, video, load_chat_template(path), image_backend=image_backend, **kwargs)

    # --- text ---------------------------------------------------------------------------------------------------

    def apply_chat_template(self, conversation: list, add_generation_prompt: bool = False, **kwargs) -> str | list[str]:
        """One conversation (list of messages) -> str; a list of conversations -> list[str]. Not tokenized."""
        if conversation and isinstance(conversation[0], list):
            return [self.apply_chat_template(c, add_generation_prompt, **kwargs) for c in conversation]
        return render_chat(conversation, self.chat_template, add_generation_prompt, **kwargs)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens)

    def batch_decode(self, rows, skip_special_tokens: bool = True) -> list[str]:
        return self.tokenizer.batch_decode(rows, skip_special_tokens)

    # --- vision -------------------------------------------------------------------------------------------------

    def _patches(self, frames: np.ndarray, settings: VisionSettings, backend: str, max_pixels: int, what: str):
        """uint8[T, H, W, 3] -> (uint8[rows, C, K] patches, (t, h, w) grid, temporal repeat); a single image is cut
        with a temporal patch of 1 and repeated when normalised (the same values as repeating the frame)."""
        height, width = frames.shape[1:3]
        try:
            new_h, new_w = smart_resize(height, width, settings.factor, settings.min_pixels, max_pixels)
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from err
        if settings.do_resize:
            frames, layout = resize_frames(frames, new_h, new_w, backend, settings.resample)
        elif height % settings.factor or width % settings.factor:
            raise ValueError(f"{what}: {height}x{width} is not a multiple of {settings.factor} and do_resize is off")
        else:
            layout = "thwc"
        repeat = settings.temporal_patch_size if len(frames) == 1 else 1
        patches, grid = patchify_uint8(
            frames, settings.patch_size, settings.temporal_patch_size // repeat, settings.merge_size, layout
        )
        return patches, grid, repeat

    @staticmethod
    def _normalize_all(items: list, plan: tuple) -> np.ndarray:
        """[(patches, grid, repeat)] -> one float32[total rows, C*tp*p*p] array, each item written in place."""
        rows = [len(p) for p, _, _ in items]
        width = items[0][0].shape[1] * items[0][0].shape[2] * items[0][2]
        out = np.empty((sum(rows), width), np.float32)
        for (patches, _, repeat), start in zip(items, np.cumsum([0, *rows[:-1]]), strict=True):
            normalize_patches(patches, plan, repeat, out[start : start + len(patches)])
        return out

    def process_images(self, images) -> dict:
        """Images (PIL or uint8 arrays) -> {"pixel_values": float32[N, 1176], "image_grid_thw": int64[n, 3]}."""
        items = []
        for i, image in enumerate(_flat_images(images)):
            rgb = image_to_rgb(image, f"image {i}")
            items.append(self._patches(rgb[None], self.image, self.image_backend, self.image.max_pixels, f"image {i}"))
        if not items:
            return {}
        grids = np.array([(1, *grid[1:]) for _, grid, _ in items], np.int64)
        return {
            "pixel_values": self._normalize_all(items, self.image.normalizer(self.image_backend)),
            "image_grid_thw": grids,
        }

    def process_videos(self, videos, fps=None, video_metadata=None) -> dict:
        """Videos -> {"pixel_values_videos", "video_grid_thw", "second_per_grid_ts"} (see the module doc for fps)."""
        videos = _flat_videos(videos)
        if not videos:
            return {}
        fps = self._per_video(fps, len(videos), "fps")
        metadata = self._per_video(video_metadata, len(videos), "video_metadata")
        items, seconds = [], []
        for i, (video, rate, meta) in enumerate(zip(videos, fps, metadata, strict=True)):
            frames = video_to_rgb(video, f"video {i}")
            meta = dict(meta or {})
            if self.video.do_sample_frames:
                frames, meta = self._sample(frames, meta, f"video {i}")
            max_pixels = self._video_max_pixels(len(frames))
            items.append(self._patches(frames, self.video, "torch", max_pixels, f"video {i}"))
            seconds.append(self.video.temporal_patch_size / (rate if rate is not None else _sampled_fps(meta, frames)))
        return {
            "pixel_values_videos": self._normalize_all(items, self.video.normalizer("torch")),
            "video_grid_thw": np.array([grid for _, grid, _ in items], np.int64),
            "second_per_grid_ts": np.array(seconds, np.float64),
        }

    @staticmethod
    def _per_video(value, n: int, name: str) -> list:
        if value is None or isinstance(value, (int, float, dict)):
            return [value] * n
        value = list(value)
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} entries for {n} videos; give one per video")
        return value

    def _sample(self, frames: np.ndarray, meta: dict, what: str) -> tuple[np.ndarray, dict]:
        s = self.video
        idx = hf_frame_indices(
            len(frames),
            meta.get("fps"),
            s.fps if s.num_frames is None else None,
            s.num_frames,
            s.temporal_patch_size,
            s.min_frames,
            s.max_frames,
            what,
        )
        return frames[idx], {
            **meta,
            "total_num_frames": meta.get("total_num_frames", len(frames)),
            "frames_indices": idx.tolist(),
        }

    def _video_max_pixels(self, num_frames: int) -> int:
        s = self.video
        if not s.cap_pixels_per_frame:
            return s.max_pixels
        total = int(s.max_video_tokens * s.factor * s.factor * 0.9)
        return max(min(s.max_pixels, total * s.temporal_patch_size // num_frames), int(s.min_pixels * 1.05))

    # --- the call -----------------------------------------------------------------------------------------------

    def __call__(
        self,
        text: str | list[str] | None = None,
        images=None,
        videos=None,
        *,
        fps=None,
        video_metadata=None,
        padding: bool | str = "longest",
        buckets: str | list[int] = "pow2",
        max_prompt_length: int | None = None,
        overflow: str = "error",
        sample_ids: list | None = None,
        return_position_ids: bool = False,
        return_mm_token_type_ids: bool = False,
    ) -> BatchFeature:
        """Text (with `<|image_pad|>`/`<|video_pad|>` where each image/video goes) + vision -> model inputs.

        padding: "longest" / True (pad to the longest prompt), "bucket" (to `bucket_length(longest, buckets)`),
        False (a single or equal-length prompts only). Padding side is `padding_side` ("left"). With
        `max_prompt_length`, longer prompts raise `PromptTooLongError` or, with overflow="skip", are dropped
        (with their images and videos) and listed in `result.length_report`.
        """
        texts = [text] if isinstance(text, str) else list(text or [])
        sample_ids = [str(s) for s in (sample_ids or range(len(texts)))]
        out = BatchFeature()
        out.update(self.process_images(images))
        out.update(self.process_videos(videos, fps, video_metadata))
        if not texts:
            return out
        image_tokens = self._tokens_per_item(out.get("image_grid_thw"))
        video_tokens = self._tokens_per_item(out.get("video_grid_thw"))
        ids, owners = self._expand_and_tokenize(texts, image_tokens, video_tokens, sample_ids)
        keep, report = batching.check_lengths([len(r) for r in ids], max_prompt_length, sample_ids, overflow)
        if len(keep) < len(texts):
            self._drop_vision(out, owners, keep)
        out.length_report = report
        rows = [ids[i] for i in keep]
        if rows:
            out["input_ids"], out["attention_mask"] = self._pad(rows, padding, buckets)
        if return_mm_token_type_ids and rows:
            token_ids = out["input_ids"]
            out["mm_token_type_ids"] = (token_ids == self.image_token_id) * 1 + (token_ids == self.video_token_id) * 2
        if return_position_ids and rows:
            out["position_ids"], out["rope_deltas"] = self.position_ids(out)
        return out

    def _tokens_per_item(self, grids) -> list[int]:
        m = self.image.merge_size
        return [] if grids is None else [int(np.prod(g)) // (m * m) for g in grids]

    def _expand_and_tokenize(self, texts, image_tokens, video_tokens, sample_ids):
        """Replace the k-th image/video pad of the batch by its token run, then tokenize -> (ids, vision owners)."""
        n_img = [t.count(IMAGE_TOKEN) for t in texts]
        n_vid = [t.count(VIDEO_TOKEN) for t in texts]
        for name, counts, items in (("image", n_img, image_tokens), ("video", n_vid, video_tokens)):
            if sum(counts) != len(items):
                per_sample = dict(zip(sample_ids, counts, strict=True))
                raise ValueError(
                    f"the text holds {sum(counts)} <|{name}_pad|> tokens (per sample: {per_sample}) but "
                    f"{len(items)} {name}s were given; put one <|{name}_pad|> where each {name} goes"
                )
        img_iter, vid_iter = iter(image_tokens), iter(video_tokens)
        expanded = []
        for t in texts:
            parts = t.split(IMAGE_TOKEN)
            t = parts[0] + "".join(IMAGE_TOKEN * next(img_iter) + p for p in parts[1:])
            parts = t.split(VIDEO_TOKEN)
            expanded.append(parts[0] + "".join(VIDEO_TOKEN * next(vid_iter) + p for p in parts[1:]))
        owners = {"image": np.repeat(np.arange(len(texts)), n_img), "video": np.repeat(np.arange(len(texts)), n_vid)}
        return self.tokenizer.encode_batch(expanded), owners

    def _drop_vision(self, out: dict, owners: dict, keep: list[int]) -> None:
        """Remove the images/videos of dropped samples (pixel rows follow the grids in order)."""
        for kind, pixel_key, grid_key in (
            ("image", "pixel_values", "image_grid_thw"),
            ("video", "pixel_values_videos", "video_grid_thw"),
        ):
            if grid_key not in out:
                continue
            kept = np.isin(owners[kind], keep)
            rows = np.repeat(kept, np.prod(out[grid_key], axis=1))
            out[pixel_key], out[grid_key] = out[pixel_key][rows], out[grid_key][kept]
            if kind == "video":
                out["second_per_grid_ts"] = out["second_per_grid_ts"][kept]
            if not kept.any():
                for key in (pixel_key, grid_key, "second_per_grid_ts" if kind == "video" else None):
                    out.pop(key, None)

    def _pad(self, rows: list[list[int]], padding, buckets) -> tuple[np.ndarray, np.ndarray]:
        longest = max(len(r) for r in rows)
        if padding is False:
            if any(len(r) != longest for r in rows):
                raise ValueError("prompts differ in length; pass padding='longest' or 'bucket'")
            length = longest
        elif padding in (True, "longest"):
            length = longest
        elif padding == "bucket":
            length = batching.bucket_length(longest, buckets)
        else:
            raise ValueError(f"padding must be True/'longest', 'bucket' or False, got {padding!r}")
        pad = batching.pad_left if self.padding_side == "left" else batching.pad_right
        return pad(rows, length, self.tokenizer.pad_token_id)

    def position_ids(self, batch: dict) -> tuple[np.ndarray, np.ndarray]:
        """-> (int32[3, B, L] M-RoPE positions, int32[B] rope deltas) for a batch from this processor."""
        return batching.batch_positions(
            batch, self.image_token_id, self.video_token_id, self.image.merge_size, self.tokens_per_second
        )

    def sft(self, messages: list[dict], images=None, videos=None, *, fps=None, video_metadata=None) -> BatchFeature:
        """One conversation ending in the assistant answer -> inputs + `response_mask` (1 on the answer tokens)."""
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError("an SFT conversation must end with the assistant message to learn")
        texts = [
            self.apply_chat_template(messages[:-1], add_generation_prompt=True),
            self.apply_chat_template(messages),
        ]
        out = BatchFeature(self.process_images(images))
        out.update(self.process_videos(videos, fps, video_metadata))
        image_tokens = self._tokens_per_item(out.get("image_grid_thw"))
        video_tokens = self._tokens_per_item(out.get("video_grid_thw"))
        (prompt_ids,), _ = self._expand_and_tokenize(texts[:1], image_tokens, video_tokens, ["sft"])
        (full_ids,), _ = self._expand_and_tokenize(texts[1:], image_tokens, video_tokens, ["sft"])
        out["input_ids"] = np.array([full_ids], np.int64)
        out["attention_mask"] = np.ones_like(out["input_ids"])
        out["response_mask"] = np.array([response_mask(prompt_ids, full_ids)], np.int64)
        return out


def _sampled_fps(meta: dict, frames: np.ndarray) -> float:
    """transformers' `VideoMetadata.sampled_fps`: len(frames_indices) / total * fps, else fps, else 24."""
    rate, indices, total = meta.get("fps"), meta.get("frames_indices"), meta.get("total_num_frames")
    if indices is None or total is None or rate is None:
        return rate or 24
    return len(indices) / total * rate
