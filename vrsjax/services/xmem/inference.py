"""XMem's official inference (hkchengrex/XMem `inference/inference_core.py` + `eval.py`) over in-memory frames.

`propagate` checks its inputs, then runs `Run` — one fresh memory, stepping frame by frame as `InferenceCore.step`
does — forward from the keyframe and/or over the reversed frames from the keyframe (VideoSeg-R1 / VISA propagate
the keyframe mask both ways with two independent runs). Per step: frames are ImageNet-normalised and zero-padded
to a multiple of 16; the first frame of a run takes the given masks (soft-aggregated) and every other frame is
segmented from memory; a frame becomes a memory frame every `mem_every` frames (and the mask frame always), the
last frame never; the hidden state gets a deep update on memory frames (or every `deep_update_every` frames) and a
normal update on the others. Objects whose keyframe mask is empty are not tracked and stay empty, as VISA's
evaluation copies an empty keyframe mask to every frame.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from vrsjax.progress import progress_bar
from vrsjax.services.xmem.config import XMemConfig
from vrsjax.services.xmem.memory import MemoryManager
from vrsjax.services.xmem.modules import aggregate

# dataset/range_transform.py: im_normalization.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
DIRECTIONS = ("both", "forward", "backward")


def pad_divide_by(x: torch.Tensor, d: int = 16) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad the last two axes to multiples of d, the odd pixel after: -> (padded, (left, right, top, bottom))."""
    h, w = x.shape[-2:]
    extra_h, extra_w = -h % d, -w % d
    pad = (extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2)
    return F.pad(x, pad), pad


def unpad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo `pad_divide_by` on the last two axes."""
    left, right, top, bottom = pad
    return x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]


def normalize(frame: torch.Tensor) -> torch.Tensor:
    """uint8[H, W, 3] -> float[3, H, W]: to [0, 1], minus the ImageNet mean, over the ImageNet std."""
    x = frame.permute(2, 0, 1).float().div(255)
    mean = torch.as_tensor(IMAGE_MEAN, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(IMAGE_STD, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub(mean).div(std)


class Run:
    """One pass of XMem over a sequence whose first frame carries the masks (one `InferenceCore` with one video)."""

    def __init__(self, net, config: XMemConfig):
        self.net, self.config = net, config
        self.memory = MemoryManager(config, net.hidden_dim)
        self.t = -1
        self.last_mem_t = 0
        self.deep_update_sync = config.deep_update_every < 0
        self.last_deep_update_t = -config.deep_update_every

    def fork(self) -> Run:
        """An independent copy of this run; stored tensors are replaced, never written in place, so they are shared."""
        other = copy.copy(self)
        other.memory = copy.copy(self.memory)
        other.memory.work, other.memory.long = copy.copy(self.memory.work), copy.copy(self.memory.long)
        return other

    def step(self, image: torch.Tensor, mask: torch.Tensor | None = None, end: bool = False) -> torch.Tensor:
        """image float[3, H, W] (normalised), mask float[K, H, W] on the first frame only -> float[K+1, H, W]."""
        self.t += 1
        config, net, memory = self.config, self.net, self.memory
        image, pad = pad_divide_by(image, 16)
        image = image.unsqueeze(0)
        is_mem_frame = (self.t - self.last_mem_t >= config.mem_every or mask is not None) and not end
        need_segment = self.t > 0
        if self.deep_update_sync:
            is_deep_update = is_mem_frame
        else:
            is_deep_update = self.t - self.last_deep_update_t >= config.deep_update_every and not end
        is_normal_update = (not self.deep_update_sync or not is_deep_update) and not end

        key, shrinkage, selection, f16, f8, f4 = net.encode_key(
            image, need_shrinkage=is_mem_frame, need_selection=config.enable_long_term or need_segment
        )
        if need_segment:
            readout = memory.match(key, selection).unsqueeze(0)
            hidden, prob = net.segment((f16, f8, f4), readout, memory.hidden, h_out=is_normal_update)
            prob = prob[0]
            if is_normal_update:
                memory.hidden = hidden
        if mask is not None:
            mask, _ = pad_divide_by(mask, 16)
            prob = aggregate(mask, dim=0)[1]
            memory.create_hidden(mask.shape[0], key)
        if is_mem_frame:
            value, hidden = net.encode_value(image, f16, memory.hidden, prob[1:].unsqueeze(0), is_deep_update)
            memory.add(key, shrinkage, value, selection if config.enable_long_term else None)
            self.last_mem_t = self.t
            if is_deep_update:
                memory.hidden = hidden
                self.last_deep_update_t = self.t
        return unpad(prob, pad)


def as_frames(frames) -> torch.Tensor:
    """uint8[T, H, W, 3] from numpy, torch, JAX or a sequence of frames; clear errors otherwise."""
    if isinstance(frames, list | tuple):
        if not frames:
            raise ValueError("no frames given: expected uint8[T, H, W, 3] with T >= 1")
        shapes = [tuple(np.shape(f)) for f in frames]
        for t, shape in enumerate(shapes):
            if shape != shapes[0]:
                raise ValueError(f"frames differ in size: frame 0 is {shapes[0]}, frame {t} is {shape}; resize them")
        frames = np.stack([np.asarray(f) for f in frames])
    if not isinstance(frames, torch.Tensor):
        array = np.ascontiguousarray(frames)
        frames = torch.from_numpy(array if array.flags.writeable else array.copy())  # JAX arrays are read-only
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected frames uint8[T, H, W, 3] with T >= 1, got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"expected uint8 RGB frames, got {frames.dtype}: convert with (x * 255).round() if in [0, 1]")
    return frames.detach().cpu()


def as_masks(masks, height: int, width: int, keyframe: int) -> torch.Tensor:
    """The keyframe's object masks as float32[K, H, W]: given as [H, W] (one object), [K, H, W], or [T, K, H, W]
    (every frame's masks, of which the keyframe's are used)."""
    masks = masks.detach().cpu() if isinstance(masks, torch.Tensor) else torch.from_numpy(np.array(masks))
    if masks.ndim == 2:
        masks = masks[None]
    elif masks.ndim == 4:
        masks = masks[keyframe]
    if masks.ndim != 3:
        raise ValueError(f"expected keyframe masks [H, W], [K, H, W] or [T, K, H, W], got shape {tuple(masks.shape)}")
    if tuple(masks.shape[1:]) != (height, width):
        raise ValueError(
            f"keyframe masks are {tuple(masks.shape[1:])} but frames are {(height, width)}: resize the masks "
            "to the frames (nearest neighbour)"
        )
    if masks.dtype == torch.bool or not masks.is_floating_point():
        return (masks != 0).float()
    masks = masks.float()
    if not bool(torch.isfinite(masks).all()) or masks.min() < 0 or masks.max() > 1:
        raise ValueError("float keyframe masks must be probabilities in [0, 1]; pass bool masks for hard masks")
    return masks


def check_keyframe(keyframe, frames: int) -> int:
    if isinstance(keyframe, bool) or not isinstance(keyframe, int | np.integer):
        raise TypeError(f"keyframe must be an int frame index, got {keyframe!r}")
    if not 0 <= keyframe < frames:
        raise ValueError(f"keyframe {keyframe} is out of range for {frames} frames (0 .. {frames - 1})")
    return int(keyframe)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Shorter side to `size`, the longer scaled and truncated (torchvision `Resize(size)`, used for frames)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def resized_mask_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """eval.py's own formula for the mask (`VideoReader.resize_mask`), which can be one pixel short of the frame's."""
    short = min(height, width)
    return int(height / short * size), int(width / short * size)


class Video:
    """eval.py's pre- and post-processing of one video: normalise, resize (`size`), flip (`flip`; the mask is
    flipped before it is resized), probabilities resized back (bilinear) and flipped back."""

    def __init__(self, frames: torch.Tensor, config: XMemConfig, device: torch.device):
        self.frames, self.config, self.device = frames, config, device
        self.shape = tuple(frames.shape[1:3])
        self.scaled = resized_shape(*self.shape, config.size) if config.size > 0 else self.shape

    def image(self, t: int) -> torch.Tensor:
        image = normalize(self.frames[t].to(self.device))
        if self.scaled != self.shape:
            image = F.interpolate(image[None], self.scaled, mode="bilinear", align_corners=False, antialias=True)[0]
        return image.flip(-1) if self.config.flip else image

    def mask(self, masks: torch.Tensor) -> torch.Tensor:
        masks = (masks.flip(-1) if self.config.flip else masks).to(self.device)
        if self.scaled == self.shape:
            return masks
        shape = resized_mask_shape(*self.shape, self.config.size)
        if tuple(-(-n // 16) for n in shape) != tuple(-(-n // 16) for n in self.scaled):
            shape = self.scaled  # eval.py would fail on the mismatch; the frame's shape is the evident intent
        return F.interpolate(masks[None], shape, mode="nearest")[0]

    def output(self, prob: torch.Tensor) -> np.ndarray:
        if self.scaled != self.shape:
            prob = F.interpolate(prob[:, None], self.shape, mode="bilinear", align_corners=False)[:, 0]
        return (prob.flip(-1) if self.config.flip else prob).float().cpu().numpy()


def propagate(net, frames, masks, keyframe, direction: str = "both", progress: bool = False, **overrides) -> np.ndarray:
    """See `XMem.propagate`: uint8[T, H, W, 3], masks [K, H, W] or [H, W] of `keyframe` -> float32[T, K+1, H, W]."""
    config = XMemConfig.from_overrides(**overrides)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    frames = as_frames(frames)
    count, height, width = frames.shape[:3]
    keyframe = check_keyframe(keyframe, count)
    masks = as_masks(masks, height, width, keyframe)
    config = config.for_video(count)

    out = np.zeros((count, masks.shape[0] + 1, height, width), dtype=np.float32)
    out[:, 0] = 1
    tracked = [k for k in range(masks.shape[0]) if bool(masks[k].any())]
    if not tracked:
        return out
    channels = [0] + [k + 1 for k in tracked]
    orders = []
    if direction in ("both", "forward"):
        orders.append(list(range(keyframe, count)))
    if direction in ("both", "backward"):
        orders.append(list(range(keyframe, -1, -1)))
    orders = [order[1:] for order in orders if len(order) > 1]
    video = Video(frames, config, net.device)
    amp = net.device.type == "cuda" if net.amp is None else net.amp
    bar = progress_bar(total=1 + sum(map(len, orders)), desc="XMem", unit="frame", disable=not progress)
    with torch.inference_mode(), bar, torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        # Both runs start with the same keyframe step on a fresh memory: it runs once and the runs fork after it.
        # It is the last frame (no memory update) only when no run goes on, as in eval.py.
        first = Run(net, config)
        out[keyframe, channels] = video.output(
            first.step(video.image(keyframe), video.mask(masks[tracked]), not orders)
        )
        bar.update(1)
        for i, order in enumerate(orders):
            run = first if i == len(orders) - 1 else first.fork()
            for j, t in enumerate(order):
                out[t, channels] = video.output(run.step(video.image(t), end=j == len(order) - 1))
                bar.update(1)
    return out
