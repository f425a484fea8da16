"""XMem (hkchengrex/XMem) in PyTorch: the network that loads the official `XMem.pth` and its official inference.

VideoSeg-R1 propagates a keyframe mask through the video with XMem, forward from the keyframe and over the reversed
frames. `XMem.from_checkpoint(path, device)` loads an official checkpoint (validated, `weights_only=True`, no
ImageNet download); `XMem.propagate(frames, masks, keyframe, direction="both", **options)` returns per-frame
probabilities float32[T, K+1, H, W] (background first) with the official options and defaults (`XMemConfig`);
`masks_from_probs` turns them into bool masks. Importing this package imports torch.
"""

from vrsjax.services.xmem.config import XMemConfig
from vrsjax.services.xmem.network import XMem, masks_from_probs

__all__ = ["XMem", "XMemConfig", "masks_from_probs"]
