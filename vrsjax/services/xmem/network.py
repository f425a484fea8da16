"""The XMem network (Cheng & Schwing, ECCV 2022) as one PyTorch module that loads the official checkpoints.

`XMem` holds the four official sub-modules under their official names (`key_encoder`, `value_encoder`,
`key_proj`, `decoder`), so `XMem.pth` loads key for key, and exposes the three operations inference needs:
`encode_key` (ResNet-50 features, key, shrinkage, selection), `encode_value` (mask-conditioned value features and
the deep hidden-state update) and `segment` (decoder + soft aggregation over background and objects).
`XMem.from_checkpoint(path, device)` reads an official file with `weights_only=True`, takes the widths from the
tensors and validates every name and shape; `XMem.propagate` runs the official inference (see `inference.py`).
No pretrained ImageNet weights are ever downloaded: the trunks are built empty and filled from the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vrsjax.services.xmem.checkpoint import check_flat, read_dims, read_state_dict, validate, widen_single_object
from vrsjax.services.xmem.inference import propagate
from vrsjax.services.xmem.modules import Decoder, KeyEncoder, KeyProjection, ValueEncoder, aggregate


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device from its name, checked to exist; "auto" is cuda when available, else cpu."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for but torch sees no CUDA device: use device='cpu'")
    return device


class XMem(nn.Module):
    """XMem with the official parameter names; widths default to the official checkpoints' (64, 512, 64)."""

    def __init__(self, key_dim: int = 64, value_dim: int = 512, hidden_dim: int = 64):
        super().__init__()
        self.key_dim, self.value_dim, self.hidden_dim = key_dim, value_dim, hidden_dim
        self.key_encoder = KeyEncoder()
        self.value_encoder = ValueEncoder(value_dim, hidden_dim)
        self.key_proj = KeyProjection(1024, key_dim)
        self.decoder = Decoder(value_dim, hidden_dim)
        # None: float16 autocast on CUDA (as the official eval.py), float32 on CPU.
        self.amp: bool | None = None
        self.eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", amp: bool | None = None) -> XMem:
        """The network of an official checkpoint file (XMem.pth, XMem-s012.pth), in eval mode on `device`."""
        return cls._build(read_state_dict(path), device, amp, str(path))

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], device: str | torch.device = "cpu", amp: bool | None = None
    ) -> XMem:
        """The network of an official-format state dict already in memory (copied, never shared)."""
        state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in check_flat(state, "state dict").items()}
        return cls._build(state, device, amp, "state dict")

    @classmethod
    def random(cls, seed: int = 0, device: str | torch.device = "cpu", **widths) -> XMem:
        """PyTorch-default random weights from `seed` (benchmarks, demos); real use loads a checkpoint."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(**widths)
        return model.to(resolve_device(device))

    @classmethod
    def _build(cls, state: dict[str, torch.Tensor], device, amp, source: str) -> XMem:
        state = widen_single_object(state)
        with torch.device("meta"):
            model = cls(*read_dims(state, source))
        expected = model.state_dict()
        validate(state, {name: t.shape for name, t in expected.items()}, source)
        device = resolve_device(device)
        loaded = {}
        for name, template in expected.items():
            tensor = state.get(name, torch.zeros((), dtype=torch.long))  # an absent num_batches_tracked
            loaded[name] = tensor.to(device=device, dtype=template.dtype)
        model.load_state_dict(loaded, strict=True, assign=True)
        model.amp = amp
        return model.eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_key(self, image: torch.Tensor, need_shrinkage: bool, need_selection: bool):
        """image float[1, 3, H, W] -> (key float[1, CK, h, w], shrinkage float[1, 1, h, w] | None,
        selection float[1, CK, h, w] | None, f16, f8, f4) with h, w = H/16, W/16."""
        f16, f8, f4 = self.key_encoder(image)
        key, shrinkage, selection = self.key_proj(f16, need_shrinkage, need_selection)
        return key, shrinkage, selection, f16, f8, f4

    def encode_value(self, image, f16, hidden, masks: torch.Tensor, deep_update: bool):
        """masks float[1, K, H, W] (each object's probability) -> (value float[1, K, CV, h, w], hidden)."""
        objects = masks.shape[1]
        if objects == 1:
            others = torch.zeros_like(masks)
        else:
            # Summed in index order, as the official code does, so that the float rounding is the same.
            others = torch.cat(
                [
                    torch.sum(masks[:, [j for j in range(objects) if j != i]], dim=1, keepdim=True)
                    for i in range(objects)
                ],
                1,
            )
        return self.value_encoder(image, f16, hidden, masks, others, deep_update)

    def segment(self, features, readout: torch.Tensor, hidden, h_out: bool):
        """features (f16, f8, f4), readout float[1, K, CV, h, w] -> (new hidden or None, float[1, K+1, H, W])."""
        hidden, logits = self.decoder(*features, hidden, readout, h_out=h_out)
        return hidden, aggregate(torch.sigmoid(logits), dim=1)[1]

    def propagate(self, frames, masks, keyframe: int, direction: str = "both", progress: bool = False, **config):
        """Propagate the keyframe's object masks through the video with the official XMem inference.

        frames uint8[T, H, W, 3] (numpy, torch, JAX or a list of frames); masks of frame `keyframe`, [H, W] (one
        object) or [K, H, W], or every frame's [T, K, H, W] (bool or integer: nonzero is the object; float: a
        probability in [0, 1]);
        `direction` "both" (a fresh forward run from the keyframe and one over the reversed frames), "forward" or
        "backward"; `config`: official option overrides (`XMemConfig`).
        Returns float32[T, K+1, H, W] probabilities, background first; frames a run does not reach (before the
        keyframe going forward, after it going backward) and objects with an empty mask are background.
        """
        return propagate(self, frames, masks, keyframe, direction=direction, progress=progress, **config)


def masks_from_probs(probs, union: bool = False) -> np.ndarray:
    """float[T, K+1, H, W] probabilities -> bool[T, K, H, W] (each pixel to its most likely channel, as the official
    eval.py's argmax), or bool[T, H, W] (any object) when `union`."""
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[1] < 1:
        raise ValueError(f"expected probabilities float[T, K+1, H, W], got shape {probs.shape}")
    labels = probs.argmax(axis=1)
    if union:
        return labels > 0
    return labels[:, None] == np.arange(1, probs.shape[1])[None, :, None, None]
