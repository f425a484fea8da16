"""SAM2 service: the official `sam2` 1.1.0 predictors behind an in-memory API, with per-group feature caching.

`SAM2Service` builds the official video predictor from a config name and an official `.pt` checkpoint (or seeded
random weights, with an `image_size` override for fast tests) and answers two questions. `segment_image` runs the
official `SAM2ImagePredictor` once per object and keeps its best-scoring mask, objects OR-ed (Veason-R1's image mode).
`propagate` runs the official video predictor as Veason-R1's reward does: every object prompted on the keyframe, then
tracked forward and backward from it; objects OR-ed or kept apart. Frames come from memory (numpy, torch or JAX
uint8) and are preprocessed exactly as `init_state` preprocesses a JPEG folder, so the masks equal the official ones.
Group caching: `prepare(frames)` computes each frame's backbone features once, and every response's propagation of
the group reuses them. SAM2 tracks each object on its own (a batch of one with its own memory), so a masklet is a
function of (frames, keyframe, prompt) alone: one already computed in the group is reused as is. `propagate_group`
answers all responses of a group in one call, every object tracked through a frame in one batch
(`vrsjax.services.sam2_group`), equal to the per-object path up to float rounding. Calls run under
`torch.inference_mode`, with bfloat16 autocast on CUDA and float32 on CPU.
"""

from __future__ import annotations

import collections
import contextlib
import operator
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sam2
import torch
from PIL import Image

from vrsjax.services import sam2_group

CONFIGS = {
    "hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
DEFAULT_CONFIG = CONFIGS["hiera_t"]
# sam2.utils.misc.load_video_frames normalizes [0, 1] RGB with the ImageNet statistics.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

Prompt = tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]
"""One object's prompt: (box float32[4] | None, points float32[P, 2] | None, labels int32[P] | None)."""


def config_names() -> list[str]:
    """The config names the installed sam2 package ships (hydra names relative to the package)."""
    root = Path(sam2.__file__).parent
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*.yaml"))


def resolve_config(config: str) -> str:
    """An alias ("hiera_t"), a sam2 config name ("configs/sam2.1/sam2.1_hiera_t.yaml"), or a path or file name
    ending in one ("/sam2/configs/sam2/sam2_hiera_l.yaml", "sam2.1_hiera_l") -> the sam2 config name."""
    names = config_names()
    key = config.lstrip("/")
    if key in CONFIGS:
        return CONFIGS[key]
    if key in names:
        return key
    matches = [name for name in names if _stem(name) == _stem(key)]
    if not matches:
        raise ValueError(
            f"unknown SAM2 config {config!r}: use an alias ({', '.join(CONFIGS)}) or one of the names the sam2 "
            f"package ships: {', '.join(n for n in names if n.startswith('configs/sam2'))}"
        )
    return sorted(matches, key=lambda name: (not name.startswith("configs/"), name))[0]


def _stem(name: str) -> str:
    """The file name without ".yaml" ("sam2.1_hiera_t"; Path.stem would cut at ".1")."""
    name = Path(name).name
    return name[: -len(".yaml")] if name.endswith(".yaml") else name


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device from its name, checked to exist; "auto" is cuda when available, else cpu."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"SAM2 device {device} requested but torch sees no CUDA device; use device='cpu' or 'auto'")
    return device


def _host_array(value: Any) -> np.ndarray:
    """numpy, torch (any device) or JAX array, or nested sequences -> numpy on the host."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def as_frames(frames: Any) -> np.ndarray:
    """numpy, torch or JAX uint8[T, H, W, 3] -> C-contiguous numpy uint8[T, H, W, 3]."""
    array = _host_array(frames)
    if array.dtype != np.uint8:
        raise TypeError(
            f"SAM2 frames must be uint8 RGB in 0..255, got dtype {array.dtype}; "
            "convert floats in [0, 1] with (x * 255).round().astype(np.uint8)"
        )
    if array.ndim != 4 or array.shape[-1] != 3 or 0 in array.shape:
        raise ValueError(f"SAM2 frames must be uint8[T, H, W, 3] with T, H, W > 0, got shape {array.shape}")
    return np.ascontiguousarray(array)


def object_prompts(boxes: Any = None, points: Any = None, labels: Any = None) -> list[Prompt]:
    """Splits the prompts of K objects into one `Prompt` each.

    boxes: [K, 4] (or [4] for one object) x1, y1, x2, y2 in frame pixels; points: [K, P, 2] (or [P, 2]) x, y in
    pixels; labels: [K, P] (or [P]), 1 positive, 0 negative. K comes from whichever is given; both must agree.
    """
    if (points is None) != (labels is None):
        raise ValueError("SAM2 points and labels go together: give both or neither")
    box_array = None if boxes is None else _batched(boxes, np.float32, 2, "boxes", "[K, 4]")
    if box_array is not None and box_array.shape[1] != 4:
        raise ValueError(f"SAM2 boxes must be [K, 4] (x1, y1, x2, y2), got shape {box_array.shape}")
    point_array = label_array = None
    if points is not None:
        point_array = _batched(points, np.float32, 3, "points", "[K, P, 2]")
        label_array = _batched(labels, np.int32, 2, "labels", "[K, P]")
        if point_array.shape[2] != 2 or label_array.shape != point_array.shape[:2]:
            raise ValueError(
                f"SAM2 points must be [K, P, 2] with labels [K, P], got {point_array.shape} and {label_array.shape}"
            )
    counts = {len(a) for a in (box_array, point_array) if a is not None}
    if len(counts) > 1:
        raise ValueError(f"SAM2 boxes and points give different object counts: {box_array.shape}, {point_array.shape}")
    count = counts.pop() if counts else 0
    if count == 0:
        raise ValueError("SAM2 needs at least one object prompt (a box or points); got none")
    prompts = []
    for k in range(count):
        box = None if box_array is None else box_array[k]
        pts, lbl = (None, None) if point_array is None else (point_array[k], label_array[k])
        if box is None and len(pts) == 0:
            raise ValueError(f"SAM2 object {k} has neither a box nor a point")
        prompts.append((box, pts, lbl))
    return prompts


def _masklet_key(keyframe: int, prompt: Prompt) -> tuple:
    """What a masklet is a function of, besides the frames: the keyframe and the object's prompt."""
    return (keyframe, *(None if a is None else (a.shape, a.tobytes()) for a in prompt))


def _stacked(arrays: list[np.ndarray | None]) -> np.ndarray | None:
    return None if arrays[0] is None else np.stack(arrays)


def _batched(value: Any, dtype: type, ndim: int, name: str, shape: str) -> np.ndarray:
    array = _host_array(value).astype(dtype)
    if array.ndim == ndim - 1:
        array = array[None]
    if array.ndim != ndim:
        raise ValueError(f"SAM2 {name} must be {shape}, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"SAM2 {name} must be finite, got {array.tolist()}")
    return array


@dataclass
class Video:
    """Frames prepared once for a group of responses.

    images: float32[T, 3, S, S], resized and normalized as sam2's JPEG loader does, on the service's device.
    height, width: the frames' size, the size of every mask returned.
    features: frame -> (image float32[1, 3, S, S], backbone output), for every frame: what the official predictor's
    feature cache holds for its most recent frame.
    masklets: (keyframe, prompt) -> float32[T, H, W] mask logits on the device, the masklets tracked so far.
    """

    images: torch.Tensor
    height: int
    width: int
    features: dict[int, tuple[torch.Tensor, dict[str, Any]]]
    masklets: dict[tuple, torch.Tensor] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.images)


class SAM2Service:
    """The official SAM2 image and video predictors (one model) with in-memory frames and a per-group cache.

    config: alias or sam2 config name (see `resolve_config`); checkpoint: an official `.pt` (`{"model": state_dict}`,
    loaded strictly) or None for random weights drawn with `seed`; device: "cpu", "cuda", "cuda:1" or "auto";
    image_size: overrides the model's input size (1024), for fast tests; autocast: bfloat16 autocast, default on CUDA.
    Thread-safe: calls are serialized.
    """

    def __init__(
        self,
        config: str = DEFAULT_CONFIG,
        checkpoint: str | Path | None = None,
        device: str | torch.device = "cpu",
        image_size: int | None = None,
        *,
        seed: int = 0,
        autocast: bool | None = None,
    ) -> None:
        from sam2.build_sam import build_sam2_video_predictor
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.config = resolve_config(config)
        self.device = resolve_device(device)
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"SAM2 checkpoint {checkpoint} not found; give an official .pt file or None")
        overrides = [] if image_size is None else [f"++model.image_size={int(image_size)}"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                self.predictor = build_sam2_video_predictor(
                    self.config,
                    None if checkpoint is None else str(checkpoint),
                    self.device,
                    hydra_overrides_extra=overrides,
                )
            except RuntimeError as error:  # sam2 raises a bare RuntimeError after logging missing/unexpected keys
                if checkpoint is None:
                    raise
                raise RuntimeError(
                    f"SAM2 checkpoint {checkpoint} does not fit config {self.config} (missing or unexpected keys, "
                    "logged above): pass the config the checkpoint was trained with"
                ) from error
        if self.predictor.clear_non_cond_mem_around_input:
            raise NotImplementedError(f"{self.config}: clear_non_cond_mem_around_input is not supported")
        self.image_size = int(self.predictor.image_size)
        self.image_predictor = SAM2ImagePredictor(self.predictor)
        # The image predictor hard-codes the feature sizes of a 1024 model: follow the model's own size.
        size = self.image_size
        self.image_predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
        self.autocast = self.device.type == "cuda" if autocast is None else autocast
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SAM2Service({self.config!r}, device={self.device}, image_size={self.image_size})"

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(self._lock)
            stack.enter_context(torch.inference_mode())
            if self.autocast:
                stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            yield

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8[T, H, W, 3] -> float32[T, 3, S, S] on the device, step for step as sam2's JPEG folder loader:
        PIL resize to S x S (its default filter), / 255 in float64, cast to float32, then (x - mean) / std."""
        images = torch.zeros(len(frames), 3, self.image_size, self.image_size, dtype=torch.float32)
        for t, frame in enumerate(frames):
            resized = np.array(Image.fromarray(frame).convert("RGB").resize((self.image_size, self.image_size)))
            images[t] = torch.from_numpy(resized / 255.0).permute(2, 0, 1)
        images = images.to(self.device)
        images -= torch.tensor(IMAGE_MEAN, dtype=torch.float32, device=self.device)[:, None, None]
        images /= torch.tensor(IMAGE_STD, dtype=torch.float32, device=self.device)[:, None, None]
        return images

    def prepare(self, frames: Any) -> Video:
        """uint8[T, H, W, 3] (numpy, torch or JAX) -> a `Video` with every frame's backbone features computed once."""
        array = as_frames(frames)
        with self._running():
            images = self.preprocess(array)
            features = {}
            for t in range(len(images)):
                # The same call as the predictor's `_get_image_feature` on a cache miss, hence the same features.
                image = images[t].to(self.device).float().unsqueeze(0)
                features[t] = (image, self.predictor.forward_image(image))
        return Video(images, array.shape[1], array.shape[2], features)

    def propagate(
        self,
        frames: Any,
        keyframe: int,
        boxes: Any = None,
        points: Any = None,
        labels: Any = None,
        per_object: bool = False,
        logits: bool = False,
    ) -> np.ndarray:
        """Prompts each object on `keyframe`, tracks it forward to the last frame, then backward to the first.

        frames: uint8[T, H, W, 3] or a `Video` from `prepare` (reuse one for all responses on the same frames);
        keyframe: index in [0, T); boxes/points/labels: see `object_prompts`, in frame pixels.
        Returns bool[T, H, W], the union of the objects (mask logits > 0), or bool[T, K, H, W] with per_object; with
        logits, the float32 mask logits at frame size instead (the union is their maximum over objects).
        """
        video = frames if isinstance(frames, Video) else self.prepare(frames)
        self._check_video(video)
        keyframe = operator.index(keyframe)
        if not 0 <= keyframe < video.num_frames:
            raise ValueError(f"SAM2 keyframe {keyframe} is outside the {video.num_frames} frames")
        prompts = object_prompts(boxes, points, labels)
        with self._running():
            scores = torch.stack([self._object_logits(video, keyframe, prompt) for prompt in prompts], dim=1)
            if logits:
                return (scores if per_object else scores.amax(dim=1)).cpu().numpy()
            masks = scores > 0
            return (masks if per_object else masks.any(dim=1)).cpu().numpy()

    def propagate_group(
        self,
        video: Video,
        requests: list[dict[str, Any]],
        per_object: bool = False,
        logits: bool = False,
        exact: bool = False,
    ) -> list[np.ndarray]:
        """`propagate` for many requests on one prepared video (one per response of a GRPO group, say), batched.

        video: from `prepare(frames)`; requests: dicts with `keyframe` and `boxes` and/or `points` + `labels` (as
        `propagate` takes them). Returns one array per request, shaped as `propagate` returns it. Every object of
        every request is prompted on its keyframe alone, then all objects tracked through a frame go through memory
        attention, the mask decoder and the memory encoder as one batch, each with its own memories
        (`vrsjax.services.sam2_group`), forward over the video then backward; an object asked for twice is tracked
        once. The logits equal the per-object official path's up to float rounding; exact=True runs that path
        instead (`propagate`, bit-identical to the official predictor).
        """
        self._check_video(video)
        parsed = [self._request(video, index, request) for index, request in enumerate(requests)]
        with self._running():
            if exact or sam2_group.unsupported(self.predictor) is not None:
                scores = [torch.stack([self._object_logits(video, k, p) for p in prompts], 1) for k, prompts in parsed]
            else:
                masklets = self._group_masklets(video, [(k, p) for k, prompts in parsed for p in prompts])
                scores = [torch.stack([masklets[_masklet_key(k, p)] for p in prompts], 1) for k, prompts in parsed]
            if logits:
                return [(s if per_object else s.amax(dim=1)).cpu().numpy() for s in scores]
            return [(s > 0 if per_object else (s > 0).any(dim=1)).cpu().numpy() for s in scores]

    def _request(self, video: Video, index: int, request: dict[str, Any]) -> tuple[int, list[Prompt]]:
        unknown = set(request) - {"keyframe", "boxes", "points", "labels"}
        if "keyframe" not in request or unknown:
            raise ValueError(
                f"SAM2 request {index} needs a keyframe and boxes and/or points + labels, got keys {sorted(request)}"
            )
        keyframe = operator.index(request["keyframe"])
        if not 0 <= keyframe < video.num_frames:
            raise ValueError(f"SAM2 request {index}: keyframe {keyframe} is outside the {video.num_frames} frames")
        prompts = object_prompts(request.get("boxes"), request.get("points"), request.get("labels"))
        return keyframe, prompts

    def _group_masklets(self, video: Video, objects: list[tuple[int, Prompt]]) -> dict[tuple, torch.Tensor]:
        """(keyframe, prompt) -> float32[T, H, W] logits of every object, the new ones tracked in one batch; kept in
        `video.masklets` under ("group", key), apart from the exact path's."""
        found: dict[tuple, torch.Tensor] = {}
        tracks, keys = [], []
        for keyframe, prompt in objects:
            key = _masklet_key(keyframe, prompt)
            if key in found or (key in keys):
                continue
            if ("group", *key) in video.masklets:
                found[key] = video.masklets[("group", *key)]
                continue
            tracks.append(self._conditioned(video, keyframe, prompt))
            keys.append(key)
        features = self._frame_features(video)
        sam2_group.track(self.predictor, tracks, video.num_frames, features, (video.height, video.width))
        for key, track in zip(keys, tracks, strict=True):
            video.masklets[("group", *key)] = found[key] = track.logits
        return found

    def _conditioned(self, video: Video, keyframe: int, prompt: Prompt) -> sam2_group.Track:
        """One object prompted on its keyframe by the official predictor (its decoder, then its memory encoder as
        `propagate_in_video` runs it first): a `Track` holding that conditioning output and the keyframe's logits."""
        state = self._new_state(video)
        box, points, labels = prompt
        self.predictor.add_new_points_or_box(state, frame_idx=keyframe, obj_id=0, points=points, labels=labels, box=box)
        self.predictor.propagate_in_video_preflight(state)
        outputs = state["output_dict_per_obj"][0]
        scores = torch.zeros(video.num_frames, video.height, video.width, dtype=torch.float32, device=self.device)
        pred_masks = outputs["cond_frame_outputs"][keyframe]["pred_masks"]
        scores[keyframe] = self.predictor._get_orig_video_res_output(state, pred_masks)[1][0, 0]
        return sam2_group.Track(keyframe, outputs, scores)

    def _frame_features(self, video: Video) -> sam2_group.FrameFeatures:
        """frame -> its flattened backbone features: from the video's cache, or computed and kept until the next
        frame is asked for (a video prepared without features, as the official predictor keeps one frame)."""
        latest: dict[int, dict[str, Any]] = {}

        def features(t: int):
            if t in video.features:
                backbone = video.features[t][1]
            else:
                if t not in latest:
                    latest.clear()
                    latest[t] = self.predictor.forward_image(video.images[t].to(self.device).float().unsqueeze(0))
                backbone = latest[t]
            _, vision_feats, vision_pos, feat_sizes = self.predictor._prepare_backbone_features(backbone)
            return vision_feats, vision_pos, feat_sizes

        return features

    def _check_video(self, video: Video) -> None:
        if video.images.shape[-1] != self.image_size:
            raise ValueError(f"this Video was prepared at image_size {video.images.shape[-1]}, not {self.image_size}")

    def segment_image(
        self,
        image: Any,
        boxes: Any = None,
        points: Any = None,
        labels: Any = None,
        per_object: bool = False,
        multimask_output: bool = True,
        exact: bool = False,
    ) -> np.ndarray:
        """The official image predictor on uint8[H, W, 3]; with multimask_output the mask with the highest predicted
        IoU is kept per object (the first of the descending argsort, as Veason-R1 picks it).

        All objects with as many prompt points go through the predictor as one batch (one `predict` call); their
        masks equal one `predict` per object (Veason-R1's call) up to float rounding, and exactly with exact=True.
        Returns bool[H, W], the union of the objects, or bool[K, H, W] with per_object.
        """
        array = as_frames(_host_array(image)[None])[0]
        prompts = object_prompts(boxes, points, labels)
        with self._running():
            self.image_predictor.set_image(array)
            masks = self._image_logits(prompts, multimask_output, exact) > 0
        return masks if per_object else masks.any(axis=0)

    def _image_logits(self, prompts: list[Prompt], multimask_output: bool, exact: bool) -> np.ndarray:
        """float32[K, H, W]: each object's chosen mask logits on the image set in the image predictor."""
        batches: dict[tuple, list[int]] = {}
        for k, (box, pts, _) in enumerate(prompts):
            key = (k,) if exact else (box is None, None if pts is None else len(pts))
            batches.setdefault(key, []).append(k)
        logits: list[np.ndarray] = [np.empty(0)] * len(prompts)
        for rows in batches.values():
            if len(rows) == 1:  # the very call Veason-R1 makes for one object
                box, pts, lbl = prompts[rows[0]]
            else:
                box, pts, lbl = (_stacked([prompts[k][i] for k in rows]) for i in range(3))
            candidates, scores, _ = self.image_predictor.predict(
                point_coords=pts, point_labels=lbl, box=box, multimask_output=multimask_output, return_logits=True
            )
            candidates = candidates.reshape(len(rows), -1, *candidates.shape[-2:])
            scores = scores.reshape(len(rows), -1)
            for row, k in enumerate(rows):
                logits[k] = candidates[row, np.argsort(scores[row])[::-1][0]]
        return np.stack(logits)

    def _object_logits(self, video: Video, keyframe: int, prompt: Prompt) -> torch.Tensor:
        """float32[T, H, W] mask logits on the device: one object prompted on `keyframe`, tracked forward then
        backward (a later frame of the backward pass overwrites nothing but the keyframe, with the same value)."""
        key = _masklet_key(keyframe, prompt)
        if key in video.masklets:
            return video.masklets[key]
        state = self._new_state(video)
        box, points, labels = prompt
        self.predictor.add_new_points_or_box(state, frame_idx=keyframe, obj_id=0, points=points, labels=labels, box=box)
        scores = torch.zeros(video.num_frames, video.height, video.width, dtype=torch.float32, device=self.device)
        for reverse in (False, True):
            for t, frame_logits in self._track(state, keyframe, reverse):
                scores[t] = frame_logits[0, 0]
        video.masklets[key] = scores
        return scores

    def _new_state(self, video: Video) -> dict[str, Any]:
        """A fresh inference state as the video predictor's `init_state` builds it (same keys), over in-memory
        frames whose features are all cached, so `_get_image_feature` never computes or evicts one."""
        device = self.predictor.device
        return {
            "images": video.images,
            "num_frames": video.num_frames,
            "offload_video_to_cpu": False,
            "offload_state_to_cpu": False,
            "video_height": video.height,
            "video_width": video.width,
            "device": device,
            "storage_device": device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": dict(video.features),
            "constants": {},
            "obj_id_to_idx": collections.OrderedDict(),
            "obj_idx_to_id": collections.OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }

    def _track(self, state: dict[str, Any], keyframe: int, reverse: bool) -> Iterator[tuple[int, torch.Tensor]]:
        """(frame, mask logits float[1, 1, H, W]) for the single object of `state`: the steps and frame order of the
        official `propagate_in_video(state, start_frame_idx=keyframe, reverse=reverse)`, without its progress bar."""
        predictor = self.predictor
        predictor.propagate_in_video_preflight(state)
        if reverse:
            order = range(keyframe, -1, -1) if keyframe > 0 else range(0)  # sam2 skips reverse tracking from frame 0
        else:
            order = range(keyframe, state["num_frames"])
        outputs = state["output_dict_per_obj"][0]
        for t in order:
            if t in outputs["cond_frame_outputs"]:
                logits = outputs["cond_frame_outputs"][t]["pred_masks"].to(state["device"], non_blocking=True)
            else:
                current, logits = predictor._run_single_frame_inference(
                    inference_state=state,
                    output_dict=outputs,
                    frame_idx=t,
                    batch_size=1,
                    is_init_cond_frame=False,
                    point_inputs=None,
                    mask_inputs=None,
                    reverse=reverse,
                    run_mem_encoder=True,
                )
                outputs["non_cond_frame_outputs"][t] = current
            state["frames_tracked_per_obj"][0][t] = {"reverse": reverse}
            yield t, predictor._get_orig_video_res_output(state, logits)[1]
