"""Shared inputs of the XMem tests: the official checkpoint layout written out independently, random weights in it,
and a small synthetic video.

`official_layout` lists the 412 tensors of the official `XMem.pth` (hkchengrex/XMem, `model/network.py` with
`resnet50` / `resnet18` trunks cut after layer3) from the architecture, not from vrsjax's modules, so that loading
it checks vrsjax's names and shapes. `random_official_state` fills it with seeded weights scaled to keep
activations and memory similarities in a useful range (probabilities neither saturated nor NaN).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

Shapes = dict[str, tuple[int, ...]]


def _bn(shapes: Shapes, prefix: str, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{name}"] = (channels,)
    shapes[f"{prefix}.num_batches_tracked"] = ()


def _conv(shapes: Shapes, prefix: str, out_dim: int, in_dim: int, kernel: int, bias: bool = True) -> None:
    shapes[f"{prefix}.weight"] = (out_dim, in_dim, kernel, kernel)
    if bias:
        shapes[f"{prefix}.bias"] = (out_dim,)


def _resnet(shapes: Shapes, prefix: str, bottleneck: bool, counts, in_dim: int, first: str) -> None:
    """torchvision-style ResNet stem + layer1..layer3 (layer1 named `first`)."""
    _conv(shapes, f"{prefix}.conv1", 64, in_dim, 7, bias=False)
    _bn(shapes, f"{prefix}.bn1", 64)
    inplanes = 64
    for name, planes, blocks, stride in zip(
        (first, "layer2", "layer3"), (64, 128, 256), counts, (1, 2, 2), strict=True
    ):
        for b in range(blocks):
            p = f"{prefix}.{name}.{b}"
            out = planes * 4 if bottleneck else planes
            if bottleneck:
                _conv(shapes, f"{p}.conv1", planes, inplanes, 1, bias=False)
                _bn(shapes, f"{p}.bn1", planes)
                _conv(shapes, f"{p}.conv2", planes, planes, 3, bias=False)
                _bn(shapes, f"{p}.bn2", planes)
                _conv(shapes, f"{p}.conv3", out, planes, 1, bias=False)
                _bn(shapes, f"{p}.bn3", out)
            else:
                _conv(shapes, f"{p}.conv1", planes, inplanes, 3, bias=False)
                _bn(shapes, f"{p}.bn1", planes)
                _conv(shapes, f"{p}.conv2", planes, planes, 3, bias=False)
                _bn(shapes, f"{p}.bn2", planes)
            if b == 0 and (stride != 1 or inplanes != out):
                _conv(shapes, f"{p}.downsample.0", out, inplanes, 1, bias=False)
                _bn(shapes, f"{p}.downsample.1", out)
            inplanes = out


def _group_res(shapes: Shapes, prefix: str, in_dim: int, out_dim: int) -> None:
    if in_dim != out_dim:
        _conv(shapes, f"{prefix}.downsample", out_dim, in_dim, 3)
    _conv(shapes, f"{prefix}.conv1", out_dim, in_dim, 3)
    _conv(shapes, f"{prefix}.conv2", out_dim, out_dim, 3)


def _fusion(shapes: Shapes, prefix: str, x_dim: int, g_dim: int, mid: int, out: int) -> None:
    _group_res(shapes, f"{prefix}.block1", x_dim + g_dim, mid)
    gate = f"{prefix}.attention.ChannelGate.mlp"
    shapes[f"{gate}.1.weight"], shapes[f"{gate}.1.bias"] = (mid // 16, mid), (mid // 16,)
    shapes[f"{gate}.3.weight"], shapes[f"{gate}.3.bias"] = (mid, mid // 16), (mid,)
    _conv(shapes, f"{prefix}.attention.SpatialGate.spatial.conv", 1, 2, 7)
    _group_res(shapes, f"{prefix}.block2", mid, out)


def official_layout(key_dim: int = 64, value_dim: int = 512, hidden_dim: int = 64, mask_channels: int = 2) -> Shapes:
    """Name -> shape of every tensor of an official XMem checkpoint (412 with the default widths)."""
    shapes: Shapes = {}
    _resnet(shapes, "key_encoder", True, (3, 4, 6), 3, "res2")
    _resnet(shapes, "value_encoder", False, (2, 2, 2), 3 + mask_channels, "layer1")
    _fusion(shapes, "value_encoder.fuser", 1024, 256, value_dim, value_dim)
    if hidden_dim:
        _conv(shapes, "value_encoder.hidden_reinforce.transform", hidden_dim * 3, value_dim + hidden_dim, 3)
    for name, out in (("key_proj", key_dim), ("d_proj", 1), ("e_proj", key_dim)):
        _conv(shapes, f"key_proj.{name}", out, 1024, 3)
    _fusion(shapes, "decoder.fuser", 1024, value_dim + hidden_dim, 512, 512)
    if hidden_dim:
        for name, in_dim in (("g16_conv", 512), ("g8_conv", 256), ("g4_conv", 257)):
            _conv(shapes, f"decoder.hidden_update.{name}", 256, in_dim, 1)
        _conv(shapes, "decoder.hidden_update.transform", hidden_dim * 3, 256 + hidden_dim, 3)
    _conv(shapes, "decoder.up_16_8.skip_conv", 512, 512, 3)
    _group_res(shapes, "decoder.up_16_8.out_conv", 512, 256)
    _conv(shapes, "decoder.up_8_4.skip_conv", 256, 256, 3)
    _group_res(shapes, "decoder.up_8_4.out_conv", 256, 256)
    _conv(shapes, "decoder.pred", 1, 256, 3)
    return shapes


# Weight gains over N(0, 1/fan_in): a small shrinkage keeps similarities finite, larger keys make the top-k
# selection matter (similarities spread over a few units), a larger head spreads the logits.
GAINS = {"key_proj.d_proj": 0.1, "key_proj.key_proj": 3.0, "decoder.pred": 3.0}


def random_official_state(seed: int = 0, **widths) -> dict[str, torch.Tensor]:
    """Seeded float32 weights in the official layout: convs/linears N(0, gain^2/fan_in) (`GAINS`), BatchNorm with
    non-trivial statistics."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in official_layout(**widths).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0, dtype=torch.long)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        elif name.endswith(("running_mean", "bias")):
            state[name] = torch.randn(shape, generator=gen) * 0.1
        elif len(shape) == 1:  # BatchNorm scale
            state[name] = torch.rand(shape, generator=gen) * 0.5 + 0.5
        else:
            gain = GAINS.get(name.rsplit(".", 1)[0], 1.0)
            state[name] = torch.randn(shape, generator=gen) * gain / np.sqrt(np.prod(shape[1:]))
    # Logits around 0 rather than all positive, so that background and objects all win somewhere.
    state["decoder.pred.bias"].fill_(-2.0)
    return state


def synthetic_video(frames: int = 8, height: int = 90, width: int = 120, seed: int = 0):
    """(uint8[T, H, W, 3] frames with two moving blobs on a textured background, bool[T, 2, H, W] their masks)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    base = np.stack([np.sin(xx / 7 + yy / 11), np.cos(yy / 5 - xx / 13), np.sin((xx + yy) / 9)], -1) * 50 + 110
    video, masks = [], []
    for t in range(frames):
        frame = base + rng.normal(0, 8, base.shape)
        objects = []
        for k, color in enumerate(((230, 50, 40), (40, 190, 235))):
            cy = height * (0.35 + 0.3 * k) + 2 * t * (1 - 2 * k)
            cx = width * (0.3 + 0.4 * k) + 3 * t
            inside = ((yy - cy) / (height * 0.16)) ** 2 + ((xx - cx) / (width * 0.12)) ** 2 <= 1
            frame[inside] = color
            objects.append(inside)
        video.append(np.clip(frame, 0, 255).astype(np.uint8))
        masks.append(np.stack(objects))
    return np.stack(video), np.stack(masks)


@functools.lru_cache(maxsize=1)
def random_xmem():
    """vrsjax's XMem loaded from `random_official_state(0)` (built once per test session)."""
    from vrsjax.services.xmem import XMem

    return XMem.from_state_dict(random_official_state(0))
