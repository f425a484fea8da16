"""Reading and validating the official XMem checkpoints (`XMem.pth`, `XMem-s012.pth`).

The official files are flat state dicts of 412 tensors named after the official modules, saved with `torch.save`;
they load with `weights_only=True`. The key, value and hidden widths are read from the tensors as the official
`XMem.init_hyperparameters` does (a checkpoint without `decoder.hidden_update.transform.weight` has no hidden
state). Validation compares every name and shape with the network built from those widths and reports all
mismatches at once. As the official loader does, a single-object checkpoint (4 input channels in
`value_encoder.conv1.weight`) is widened with a zero channel for the other objects' masks, and BatchNorm's
`num_batches_tracked` counters (unused at inference) may be absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

KEY_DIM = "key_proj.key_proj.weight"
VALUE_DIM = "value_encoder.fuser.block2.conv2.weight"
HIDDEN_DIM = "decoder.hidden_update.transform.weight"
VALUE_CONV = "value_encoder.conv1.weight"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat state dict stored at `path` (tensors on the CPU), or a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"XMem checkpoint {path} does not exist: download the official XMem.pth (or XMem-s012.pth) from the "
            "hkchengrex/XMem releases and pass its path"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"cannot read XMem checkpoint {path} ({type(error).__name__}: {error}); expected the official flat "
            "state dict saved with torch.save (XMem.pth / XMem-s012.pth)"
        ) from error
    return check_flat(state, str(path))


def check_flat(state, source: str) -> dict[str, torch.Tensor]:
    """`state` as a dict of tensors, or an error saying what `source` holds instead."""
    if not isinstance(state, Mapping):
        raise ValueError(f"XMem checkpoint {source} holds a {type(state).__name__}, not a state dict of tensors")
    if "network" in state and isinstance(state["network"], Mapping):
        raise ValueError(
            f"XMem checkpoint {source} is a training checkpoint (keys {sorted(state)[:6]}): save its 'network' "
            "entry with torch.save and load that file"
        )
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"XMem checkpoint {source} has entries that are not named tensors: {bad[:10]}")
    return dict(state)


def read_dims(state: Mapping[str, torch.Tensor], source: str = "state dict") -> tuple[int, int, int]:
    """(key_dim, value_dim, hidden_dim) from the tensors; hidden_dim is 0 when the checkpoint has no hidden state."""
    missing = [name for name in (KEY_DIM, VALUE_DIM) if name not in state]
    if missing:
        raise ValueError(
            f"XMem checkpoint {source} lacks {missing}, which give the key and value widths: is it an XMem "
            f"checkpoint? It has {len(state)} tensors, e.g. {sorted(state)[:5]}"
        )
    hidden = _width(state, HIDDEN_DIM, source) // 3 if HIDDEN_DIM in state else 0
    return _width(state, KEY_DIM, source), _width(state, VALUE_DIM, source), hidden


def _width(state: Mapping[str, torch.Tensor], name: str, source: str) -> int:
    """The output width of a convolution weight float[out, in, kh, kw]."""
    if state[name].ndim != 4:
        raise ValueError(
            f"XMem checkpoint {source}: {name} has shape {tuple(state[name].shape)}, expected a 4-D conv weight"
        )
    return state[name].shape[0]


def widen_single_object(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Single-object weights (image + mask) -> multi-object (image + mask + other objects' masks): a zero channel."""
    conv = state.get(VALUE_CONV)
    if conv is not None and conv.ndim == 4 and conv.shape[1] == 4:
        pad = torch.zeros((conv.shape[0], 1, *conv.shape[2:]), dtype=conv.dtype)
        state = {**state, VALUE_CONV: torch.cat([conv, pad], 1)}
    return state


def validate(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], source: str) -> None:
    """Raise one error listing every missing key, unexpected key and shape mismatch of `state` vs `expected`."""
    optional = {name for name in expected if name.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{name}: checkpoint {tuple(state[name].shape)}, expected {tuple(expected[name])}"
        for name in sorted(set(state) & set(expected))
        if tuple(state[name].shape) != tuple(expected[name])
    ]
    if not (missing or unexpected or shapes):
        return
    lines = [f"XMem checkpoint {source} does not match the XMem network ({len(expected)} tensors):"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
    if shapes:
        lines.append(f"  wrong shapes ({len(shapes)}):\n    " + "\n    ".join(shapes))
    lines.append("  Use the official XMem.pth or XMem-s012.pth (a flat state dict with the official module names).")
    raise ValueError("\n".join(lines))
