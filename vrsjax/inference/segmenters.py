"""How the inference pipelines build their PyTorch segmenters: one small frozen dataclass shared by `vrsjax infer`,
`vrsjax predict`, the demo and the notebooks.

`SegmenterOptions` names a SAM2 (an official config + checkpoint, or seeded random weights with a small
`sam2_image_size` for tests and demos) and, for VideoSeg-R1, an XMem (the official checkpoint, or random weights).
Random weights must be asked for explicitly, so a forgotten checkpoint never silently yields meaningless masks.
Building imports torch (through `vrsjax.services`), so it happens only when a pipeline needs a segmenter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SegmenterOptions:
    """sam2_config: alias (hiera_t, hiera_s, hiera_b+, hiera_l) or sam2 config name; sam2_checkpoint: the official
    `.pt`; sam2_random: random weights instead (tests, demos); sam2_image_size: the model's input size (1024 unless
    overridden; small values make random-weight runs fast); xmem_checkpoint / xmem_random likewise for XMem;
    device: cpu, cuda, cuda:N or auto; seed: of the random weights."""

    sam2_config: str = "hiera_l"
    sam2_checkpoint: str | None = None
    sam2_random: bool = False
    sam2_image_size: int | None = None
    xmem_checkpoint: str | None = None
    xmem_random: bool = False
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sam2_checkpoint is not None and self.sam2_random:
            raise ValueError("give either sam2_checkpoint or sam2_random, not both")
        if self.xmem_checkpoint is not None and self.xmem_random:
            raise ValueError("give either xmem_checkpoint or xmem_random, not both")
        for name in ("sam2_checkpoint", "xmem_checkpoint"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise FileNotFoundError(f"{name} {value} does not exist; give the official checkpoint file")
        if self.sam2_image_size is not None and (self.sam2_image_size < 32 or self.sam2_image_size % 16):
            raise ValueError(f"sam2_image_size must be a multiple of 16 and >= 32, got {self.sam2_image_size}")

    @property
    def has_sam2(self) -> bool:
        return self.sam2_checkpoint is not None or self.sam2_random

    @property
    def has_xmem(self) -> bool:
        return self.xmem_checkpoint is not None or self.xmem_random

    def build_sam2(self):
        """A `vrsjax.services.sam2.SAM2Service` (imports torch)."""
        if not self.has_sam2:
            raise ValueError(
                "no SAM2 weights: give sam2_checkpoint (--sam2-checkpoint sam2.1_hiera_large.pt with --sam2-config "
                "hiera_l) or ask for random weights with sam2_random (--sam2-random, tests and demos only)"
            )
        from vrsjax.services.sam2 import SAM2Service

        return SAM2Service(self.sam2_config, self.sam2_checkpoint, self.device, self.sam2_image_size, seed=self.seed)

    def build_xmem(self):
        """A `vrsjax.services.xmem.XMem` in eval mode (imports torch)."""
        if not self.has_xmem:
            raise ValueError(
                "no XMem weights: give xmem_checkpoint (--xmem-checkpoint XMem.pth), ask for random weights with "
                "xmem_random (--xmem-random, tests and demos only), or propagate with SAM2 (--propagator sam2)"
            )
        from vrsjax.services.xmem import XMem

        if self.xmem_checkpoint is not None:
            return XMem.from_checkpoint(self.xmem_checkpoint, device=self.device)
        return XMem.random(seed=self.seed, device=self.device).eval()
