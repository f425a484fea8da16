"""XMem's network blocks: the key and value encoders, the key projection, the decoder and their parts, and the soft
aggregation of object probabilities (used by the decoder's output and by inference, which imports only this module
of the network's, so that imports run one way: network -> inference -> modules).

"Group" tensors carry one slice per object, `float[B, K, C, H, W]`; image features are `float[B, C, H, W]` and are
broadcast over the objects. Attribute names equal the official ones (`key_encoder.res2`, `fuser.block1`,
`attention.ChannelGate.mlp.1`, ...) so the official flat state dict loads as is. Operations follow the official
order one for one (e.g. max-pool before ReLU in the value encoder, the GRU variant that forms the new value before
the forget gate), which keeps outputs equal to the official ones to float32 rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vrsjax.services.xmem.resnet import BasicBlock, Bottleneck, make_layer, max_pool, stem_conv


def aggregate(prob: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft aggregation (STM): per-object probabilities float[..., K, ...] along `dim` -> (logits, probabilities)
    float[..., K+1, ...] with the background `prod(1 - p)` first, clamped to [1e-7, 1 - 1e-7], logit, softmax."""
    new_prob = torch.cat([torch.prod(1 - prob, dim=dim, keepdim=True), prob], dim).clamp(1e-7, 1 - 1e-7)
    logits = torch.log(new_prob / (1 - new_prob))
    return logits, torch.softmax(logits, dim=dim)


def per_object(fn, g: torch.Tensor) -> torch.Tensor:
    """Apply an image op to every object: float[B, K, C, H, W] -> float[B, K, C', H', W']."""
    batch, objects = g.shape[:2]
    out = fn(g.flatten(start_dim=0, end_dim=1))
    return out.view(batch, objects, *out.shape[1:])


def resize_groups(g: torch.Tensor, ratio: float, mode: str) -> torch.Tensor:
    """Bilinear up-sampling (align_corners=False) or area down-sampling of every object's features by `ratio`."""
    align = False if mode == "bilinear" else None
    return per_object(lambda x: F.interpolate(x, scale_factor=ratio, mode=mode, align_corners=align), g)


def broadcast_cat(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Image features first, then each object's: float[B, C, H, W], float[B, K, D, H, W] -> float[B, K, C+D, H, W]."""
    return torch.cat([x.unsqueeze(1).expand(-1, g.shape[1], -1, -1, -1), g], 2)


class GConv2D(nn.Conv2d):
    """A Conv2d applied to every object of a group tensor."""

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return per_object(super().forward, g)


class GroupResBlock(nn.Module):
    """relu -> conv3x3 -> relu -> conv3x3, plus the input (through a 3x3 conv when the width changes)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.downsample = None if in_dim == out_dim else GConv2D(in_dim, out_dim, kernel_size=3, padding=1)
        self.conv1 = GConv2D(in_dim, out_dim, kernel_size=3, padding=1)
        self.conv2 = GConv2D(out_dim, out_dim, kernel_size=3, padding=1)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(g))))
        return out + (g if self.downsample is None else self.downsample(g))


class ChannelGate(nn.Module):
    """CBAM channel attention: a shared MLP over the global average and max pools, summed, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        # Index 0 is the official Flatten and 2 its ReLU: the Linear layers keep the names mlp.1 and mlp.3.
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = (x.size(2), x.size(3))
        attention = self.mlp(F.avg_pool2d(x, window, stride=window)) + self.mlp(F.max_pool2d(x, window, stride=window))
        return x * torch.sigmoid(attention).unsqueeze(2).unsqueeze(3).expand_as(x)


class SpatialConv(nn.Module):
    """The 7x7 convolution of CBAM's spatial gate (wrapped so that its parameters are named `spatial.conv.*`)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    """CBAM spatial attention: [channel max, channel mean] -> 7x7 conv -> sigmoid."""

    def __init__(self):
        super().__init__()
        self.spatial = SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel then spatial attention (Woo et al. 2018), as XMem configures it: reduction 16, avg + max pools."""

    def __init__(self, channels: int):
        super().__init__()
        self.ChannelGate = ChannelGate(channels)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """Fuses image features into every object's features: res block, CBAM residual, res block."""

    def __init__(self, x_dim: int, g_dim: int, mid_dim: int, out_dim: int):
        super().__init__()
        self.block1 = GroupResBlock(x_dim + g_dim, mid_dim)
        self.attention = CBAM(mid_dim)
        self.block2 = GroupResBlock(mid_dim, out_dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """float[B, x_dim, H, W], float[B, K, g_dim, H, W] -> float[B, K, out_dim, H, W]."""
        g = self.block1(broadcast_cat(x, g))
        return self.block2(g + per_object(self.attention, g))


def gru_update(values: torch.Tensor, h: torch.Tensor, hidden_dim: int) -> torch.Tensor:
    """XMem's GRU variant (the candidate is formed before the forget gate is applied):
    `h' = forget * h * (1 - update) + update * tanh(candidate)`, gates from `values` = [forget, update, candidate]."""
    forget = torch.sigmoid(values[:, :, :hidden_dim])
    update = torch.sigmoid(values[:, :, hidden_dim : hidden_dim * 2])
    candidate = torch.tanh(values[:, :, hidden_dim * 2 :])
    return forget * h * (1 - update) + update * candidate


class HiddenReinforcer(nn.Module):
    """Deep update of the hidden state from the value features (a 3x3 conv GRU)."""

    def __init__(self, g_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.transform = GConv2D(g_dim + hidden_dim, hidden_dim * 3, kernel_size=3, padding=1)

    def forward(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return gru_update(self.transform(torch.cat([g, h], 2)), h, self.hidden_dim)


class HiddenUpdater(nn.Module):
    """Update of the hidden state from the decoder's three scales (1x1 convs, area down-sampling, a 3x3 conv GRU)."""

    def __init__(self, g_dims: tuple[int, int, int], mid_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.g16_conv = GConv2D(g_dims[0], mid_dim, kernel_size=1)
        self.g8_conv = GConv2D(g_dims[1], mid_dim, kernel_size=1)
        self.g4_conv = GConv2D(g_dims[2], mid_dim, kernel_size=1)
        self.transform = GConv2D(mid_dim + hidden_dim, hidden_dim * 3, kernel_size=3, padding=1)

    def forward(self, g: list[torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        g16, g8, g4 = g
        fused = (
            self.g16_conv(g16)
            + self.g8_conv(resize_groups(g8, 1 / 2, "area"))
            + self.g4_conv(resize_groups(g4, 1 / 4, "area"))
        )
        return gru_update(self.transform(torch.cat([fused, h], 2)), h, self.hidden_dim)


class KeyEncoder(nn.Module):
    """ResNet-50 up to layer3 on the normalised frame: f16 (1024 ch), f8 (512), f4 (256)."""

    def __init__(self):
        super().__init__()
        self.conv1 = stem_conv(3)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = max_pool()
        self.res2 = make_layer(Bottleneck, 64, 64, 3, stride=1)
        self.layer2 = make_layer(Bottleneck, 256, 128, 4, stride=2)
        self.layer3 = make_layer(Bottleneck, 512, 256, 6, stride=2)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """float[B, 3, H, W] -> (f16 float[B, 1024, H/16, W/16], f8 float[B, 512, H/8, W/8],
        f4 float[B, 256, H/4, W/4])."""
        x = self.maxpool(torch.relu(self.bn1(self.conv1(image))))
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        return self.layer3(f8), f8, f4


class KeyProjection(nn.Module):
    """f16 -> key, shrinkage `d^2 + 1` (float[B, 1, h, w]) and selection `sigmoid(e)` (float[B, CK, h, w])."""

    def __init__(self, in_dim: int, key_dim: int):
        super().__init__()
        self.key_proj = nn.Conv2d(in_dim, key_dim, kernel_size=3, padding=1)
        self.d_proj = nn.Conv2d(in_dim, 1, kernel_size=3, padding=1)
        self.e_proj = nn.Conv2d(in_dim, key_dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, need_shrinkage: bool, need_selection: bool):
        shrinkage = self.d_proj(x) ** 2 + 1 if need_shrinkage else None
        selection = torch.sigmoid(self.e_proj(x)) if need_selection else None
        return self.key_proj(x), shrinkage, selection


class ValueEncoder(nn.Module):
    """ResNet-18 up to layer3 on [image, object mask, other objects' masks], fused with f16, then a deep update."""

    def __init__(self, value_dim: int, hidden_dim: int, in_dim: int = 5):
        super().__init__()
        self.conv1 = stem_conv(in_dim)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = max_pool()
        self.layer1 = make_layer(BasicBlock, 64, 64, 2, stride=1)
        self.layer2 = make_layer(BasicBlock, 64, 128, 2, stride=2)
        self.layer3 = make_layer(BasicBlock, 128, 256, 2, stride=2)
        self.fuser = FeatureFusionBlock(1024, 256, value_dim, value_dim)
        self.hidden_reinforce = HiddenReinforcer(value_dim, hidden_dim) if hidden_dim > 0 else None

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        # The official value encoder pools before its ReLU (the two commute exactly).
        x = torch.relu(self.maxpool(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, image, f16, h, masks, others, deep_update: bool):
        """image float[B, 3, H, W], f16 float[B, 1024, h, w], h float[B, K, CH, h, w] | None,
        masks/others float[B, K, H, W] -> (value float[B, K, CV, h, w], hidden)."""
        g = broadcast_cat(image, torch.stack([masks, others], 2))
        g = self.fuser(f16, per_object(self.trunk, g))
        if deep_update and self.hidden_reinforce is not None:
            h = self.hidden_reinforce(g, h)
        return g, h


class UpsampleBlock(nn.Module):
    """x2 bilinear up-sampling of the objects' features, plus a 3x3 conv of the skip features, then a res block."""

    def __init__(self, skip_dim: int, up_dim: int, out_dim: int):
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_dim, up_dim, kernel_size=3, padding=1)
        self.out_conv = GroupResBlock(up_dim, out_dim)

    def forward(self, skip: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        skip = self.skip_conv(skip)
        g = skip.unsqueeze(1).expand(-1, g.shape[1], -1, -1, -1) + resize_groups(g, 2, "bilinear")
        return self.out_conv(g)


class Decoder(nn.Module):
    """Memory readout + hidden state + f16 -> fused -> x2 -> x2 -> 1-channel logits at stride 4 -> x4 bilinear."""

    def __init__(self, value_dim: int, hidden_dim: int):
        super().__init__()
        self.fuser = FeatureFusionBlock(1024, value_dim + hidden_dim, 512, 512)
        self.hidden_update = HiddenUpdater((512, 256, 256 + 1), 256, hidden_dim) if hidden_dim > 0 else None
        self.up_16_8 = UpsampleBlock(512, 512, 256)
        self.up_8_4 = UpsampleBlock(256, 256, 256)
        self.pred = nn.Conv2d(256, 1, kernel_size=3, padding=1)

    def forward(self, f16, f8, f4, hidden, readout, h_out: bool = True):
        """Image features of one frame, hidden float[B, K, CH, h, w], readout float[B, K, CV, h, w]
        -> (new hidden or None, logits float[B, K, H, W])."""
        batch, objects = readout.shape[:2]
        g16 = self.fuser(f16, readout if self.hidden_update is None else torch.cat([readout, hidden], 2))
        g8 = self.up_16_8(f8, g16)
        g4 = self.up_8_4(f4, g8)
        logits = self.pred(F.relu(g4.flatten(start_dim=0, end_dim=1)))
        if h_out and self.hidden_update is not None:
            g4 = torch.cat([g4, logits.view(batch, objects, 1, *logits.shape[-2:])], 2)
            hidden = self.hidden_update([g16, g8, g4], hidden)
        else:
            hidden = None
        logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
        return hidden, logits.view(batch, objects, *logits.shape[-2:])
