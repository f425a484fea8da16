"""Segmentation metrics of the video and image reasoning-segmentation benchmarks, in pure numpy.

Region similarity J, boundary F and ReVOS robustness R are the DAVIS 2017 definitions
(`davis2017/metrics.py`: `db_eval_iou`, `db_eval_boundary`, `f_measure`, `_seg2bmap`) and VISA's
(`tools/metrics.py`: `get_r2vos_robustness`, `get_r2vos_accuracy`), computed per frame for `[T, H, W]`
or `[H, W]` masks and equal to them bit for bit on any mask: any nonzero value is foreground, J of an
empty union is 1, the boundary map keeps DAVIS's last-row/last-column rule, and F matches boundaries with
`skimage.morphology.disk(bound_pix)` exactly as `cv2.dilate` applies it. All frames are handled at once:
masks are packed to 64 pixels per word, boundaries are found with word shifts, and boundary pixels are
matched by searching sorted pixel keys row by row of the disk instead of dilating whole frames. gIoU and
cIoU follow LISA's `validate` (the default) or Seg-Zero's `calculate_iou.py`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

RConvention = Literal["binary", "visa"]
IoUConvention = Literal["lisa", "seg_zero"]

_WORD = np.dtype("<u8")  # little-endian words: pixel x of a row is bit x of the row's bit string
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


# ----------------------------------------------------------------------------- inputs


def _frames(gt: ArrayLike, pred: ArrayLike, **others: ArrayLike | None) -> tuple[list[np.ndarray | None], bool]:
    """Validates mask shapes; returns the arrays as [T, H, W] (None kept) and whether the input was [H, W]."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.ndim not in (2, 3) or pred.ndim not in (2, 3):
        raise ValueError(f"masks must be [T, H, W] or [H, W]; got gt shape {gt.shape} and pred shape {pred.shape}")
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} and pred shape {pred.shape} differ; pass masks of one shape")
    arrays: list[np.ndarray | None] = [gt, pred]
    for name, value in others.items():
        if value is not None:
            value = np.asarray(value)
            if value.shape != gt.shape:
                raise ValueError(
                    f"{name} shape {value.shape} differs from gt shape {gt.shape} and pred shape {pred.shape}"
                )
        arrays.append(value)
    squeeze = gt.ndim == 2
    return [a[None] if (a is not None and squeeze) else a for a in arrays], squeeze


def _output(values: np.ndarray, squeeze: bool) -> float | np.ndarray:
    """float64[T] -> the array, or its only value for an [H, W] input."""
    return values[0] if squeeze else values


def _pack(mask: np.ndarray) -> np.ndarray:
    """any[T, H, W] -> uint64[T, H, ceil(W / 64)]: bit x % 64 of word x // 64 is `mask[..., x] != 0`."""
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)  # packbits is faster on bytes; bools are 0/1 bytes
    elif not np.issubdtype(mask.dtype, np.integer):
        mask = mask != 0  # packbits takes integers only; this is DAVIS's astype(bool) for floats
    packed = np.packbits(mask, axis=-1, bitorder="little")
    pad = -packed.shape[-1] % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(_WORD)


def _pack_all(*masks: np.ndarray | None, void: np.ndarray | None = None) -> list[np.ndarray]:
    """Packs each mask and removes the void pixels from it."""
    packed = [_pack(m) for m in masks]
    if void is not None:
        keep = ~_pack(void)  # also sets pad bits, which the masks' zero pad bits cancel
        packed = [p & keep for p in packed]
    return packed


def _popcount(words: np.ndarray) -> np.ndarray:
    """uint64[T, H, N] -> int64[T]: set bits per frame."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        counts = np.bitwise_count(words)
    else:
        counts = _BYTE_POPCOUNT[words.view(np.uint8)]
    return counts.reshape(len(words), -1).sum(axis=1, dtype=np.int64)


# ----------------------------------------------------------------------------- J


def _intersection_union(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """any[T, H, W] x2 (+ void) -> int64[T] x2 intersection and union counts outside the void."""
    wg, wp = _pack_all(gt, pred, void=void)
    return _popcount(wg & wp), _popcount(wg | wp)


def intersection_union(
    gt: ArrayLike, pred: ArrayLike, void: ArrayLike | None = None
) -> tuple[np.ndarray | np.int64, np.ndarray | np.int64]:
    """any[T, H, W] x2 -> (int64[T], int64[T]) intersection and union pixel counts, void pixels excluded.

    LISA's `ignore_index=255` is `void=(gt == 255)`. For an [H, W] input both are scalars.
    """
    (g, p, v), squeeze = _frames(gt, pred, void=void)
    inter, union = _intersection_union(g, p, v)
    return (inter[0], union[0]) if squeeze else (inter, union)


def jaccard(gt: ArrayLike, pred: ArrayLike, void: ArrayLike | None = None) -> float | np.ndarray:
    """any[T, H, W] x2 -> float64[T] region similarity |G & P| / |G | P| (DAVIS `db_eval_iou`).

    Nonzero is foreground; void pixels (optional) count in neither set; an empty union gives 1.
    """
    (g, p, v), squeeze = _frames(gt, pred, void=void)
    inter, union = _intersection_union(g, p, v)
    j = np.divide(inter, union, out=np.ones(len(union)), where=union > 0)
    return _output(j, squeeze)


# ----------------------------------------------------------------------------- F


def boundary_radius(shape: tuple[int, int], bound_th: float = 0.008) -> float:
    """The DAVIS `bound_pix`: `bound_th` itself when >= 1, else ceil(bound_th * ||(H, W)||)."""
    if not bound_th >= 0:
        raise ValueError(f"bound_th must be >= 0 (a fraction of the diagonal, or pixels when >= 1); got {bound_th}")
    return bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(shape))


def disk_rows(radius: float, height: int, width: int) -> list[tuple[int, int, int]]:
    """The rows (dy, dx_lo, dx_hi) of `skimage.morphology.disk(radius)` as offsets from cv2's anchor.

    `cv2.dilate(b, k)` sets p when b is set at some p + (i - a, j - a) with k[i, j] != 0 and a = len(k) // 2
    (its default anchor), ignoring pixels outside the image. disk builds k on `np.arange(-radius,
    radius + 1)`, which is not centred for a non-integer radius, so the offsets are derived the same way.
    A disk row is one interval (x^2 <= c is convex). Rows and columns that cannot reach another pixel of an
    H x W frame are dropped or clipped; rows come sorted by |dy| so that most pixels match early.
    """
    coords = np.arange(-radius, radius + 1)
    inside = coords[:, None] ** 2 + coords[None, :] ** 2 <= radius**2
    anchor = len(coords) // 2
    rows = []
    for i in np.flatnonzero(inside.any(axis=1)):
        cols = np.flatnonzero(inside[i]) - anchor
        dy, lo, hi = int(i - anchor), max(int(cols[0]), 1 - width), min(int(cols[-1]), width - 1)
        if abs(dy) < height and lo <= hi:
            rows.append((dy, lo, hi))
    return sorted(rows, key=lambda row: abs(row[0]))


def _boundary_words(words: np.ndarray, width: int) -> np.ndarray:
    """uint64[T, H, N] packed mask -> the same packing of its DAVIS `_seg2bmap` boundary.

    A pixel is on the boundary when its east, south or south-east neighbour differs; on the last row only
    the east one counts, on the last column only the south one, and the bottom-right corner never is.
    """
    diff_e = words >> np.uint64(1)  # the east neighbours; past the last column 0, like DAVIS's zero fill
    diff_e[..., :-1] |= words[..., 1:] << np.uint64(63)
    diff_e ^= words
    out = np.empty_like(words)
    np.bitwise_xor(words[:, :-1], words[:, 1:], out=out[:, :-1])  # the south neighbour differs
    word, bit = divmod(width - 1, 64)
    last = np.uint64(1 << bit)
    south_last = out[:, :-1, word] & last
    # seg ^ se == (seg ^ s) ^ (s ^ se), so "s or se differs" is "s differs or the next row's east differs"
    out[:, :-1] |= diff_e[:, :-1]
    out[:, :-1] |= diff_e[:, 1:]
    out[:, -1] = diff_e[:, -1]
    out[:, :, word] &= ~last
    out[:, :-1, word] |= south_last
    return out


def boundary_map(mask: ArrayLike) -> np.ndarray:
    """any[T, H, W] or [H, W] -> bool of the same shape: the DAVIS `_seg2bmap` boundary of `mask != 0`."""
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3) or 0 in mask.shape[-2:]:
        raise ValueError(f"mask must be [T, H, W] or [H, W] with H, W >= 1; got shape {mask.shape}")
    frames = mask[None] if mask.ndim == 2 else mask
    words = _boundary_words(_pack(frames), frames.shape[-1])
    bits = np.unpackbits(words.view(np.uint8), axis=-1, count=frames.shape[-1], bitorder="little")
    return bits.astype(bool).reshape(mask.shape)


def _boundary_keys(words: np.ndarray, height: int, width: int, pad: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """uint64[T, H, N] boundary -> (int64[n] sorted pixel keys, int64[n] frame of each).

    key = ((t * (H + 2 pad_y) + y + pad_y) * (W + 2 pad_x) + x + pad_x): shifting a key by an offset within
    the pads never lands in another row or frame.
    """
    # Boundaries are sparse: find the nonzero words, then their nonzero bytes, and unpack only those.
    flat = words.reshape(-1)
    word_index = np.flatnonzero(flat)
    sub_bytes = flat[word_index].view(np.uint8)
    byte_in_sub = np.flatnonzero(sub_bytes)
    byte_index = word_index[byte_in_sub // 8] * 8 + byte_in_sub % 8
    j, k = np.nonzero(np.unpackbits(sub_bytes[byte_in_sub, None], axis=1, bitorder="little"))
    row, x = np.divmod(byte_index[j] * 8 + k, words.shape[-1] * 64)
    frame, y = np.divmod(row, height)
    pad_y, pad_x = pad
    keys = (frame * (height + 2 * pad_y) + y + pad_y) * (width + 2 * pad_x) + x + pad_x
    return keys, frame


def _near(query: np.ndarray, target: np.ndarray, stride: int, reach: int) -> np.ndarray:
    """int64[n], int64[m] keys -> bool[n]: a target lies in the 3x3 cells of side reach + 1 around the query.

    A cheap superset of the matches (every disk offset is within `reach` in y and x), so that far-off
    pixels of a poor prediction skip the per-row searches.
    """
    side = reach + 1
    cols = stride // side + 3  # one empty cell column on each side: no neighbour wraps into a real cell

    def cell(keys: np.ndarray) -> np.ndarray:
        row, x = np.divmod(keys, stride)
        return (row // side + 1) * cols + x // side + 1

    occupied = np.zeros((int(max(query[-1], target[-1])) // stride // side + 3) * cols, dtype=bool)
    occupied[cell(target)] = True
    near = occupied.copy()
    for shift in (1, cols - 1, cols, cols + 1):
        near[shift:] |= occupied[:-shift]
        near[:-shift] |= occupied[shift:]
    return near[cell(query)]


def _matched(query: np.ndarray, target: np.ndarray, rows: list[tuple[int, int, int]], stride: int) -> np.ndarray:
    """int64[n], int64[m] sorted keys -> bool[n]: a target key lies at some disk offset from the query key.

    This is the dilated target map read at the query pixels, one binary search per disk row.
    """
    hit = np.zeros(len(query), dtype=bool)
    if len(target) == 0 or len(query) == 0:
        return hit
    reach = max(max(abs(dy), -lo, hi) for dy, lo, hi in rows)
    padded = np.append(target, np.iinfo(np.int64).max)
    pending = np.flatnonzero(_near(query, target, stride, reach))
    for dy, lo, hi in rows:
        if len(pending) == 0:
            break
        start = query[pending] + dy * stride
        found = padded[np.searchsorted(target, start + lo)] <= start + hi
        hit[pending[found]] = True
        pending = pending[~found]
    return hit


def _f_measure(n_fg: np.ndarray, n_gt: np.ndarray, m_fg: np.ndarray, m_gt: np.ndarray) -> np.ndarray:
    """Boundary pixel counts and matched counts, int64[T] each -> float64[T] F, DAVIS's empty cases included.

    No predicted boundary: P = 1 (and R = 0 unless the GT has none, then 1); no GT boundary: R = 1.
    """
    precision = np.divide(m_fg, n_fg, out=np.ones(len(n_fg)), where=n_fg > 0)
    recall = np.divide(m_gt, n_gt, out=np.ones(len(n_gt)), where=n_gt > 0)
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros(len(total)), where=total != 0)


def boundary_f(
    gt: ArrayLike, pred: ArrayLike, bound_th: float = 0.008, void: ArrayLike | None = None
) -> float | np.ndarray:
    """any[T, H, W] x2 -> float64[T] boundary F-measure (DAVIS `db_eval_boundary`).

    Boundaries of `mask != 0` outside the void pixels (`_seg2bmap`) match within `disk(bound_pix)`,
    bound_pix = `boundary_radius((H, W), bound_th)`; precision is over predicted boundary pixels.
    """
    (g, p, v), squeeze = _frames(gt, pred, void=void)
    frames, height, width = g.shape
    if height == 0 or width == 0:
        raise ValueError(f"boundary_f needs frames of at least 1x1 pixels; got shape {np.shape(gt)}")
    rows = disk_rows(boundary_radius((height, width), bound_th), height, width)
    pad = (max(abs(dy) for dy, _, _ in rows), max(max(-lo, hi) for _, lo, hi in rows))
    wg, wp = _pack_all(g, p, void=v)
    key_gt, t_gt = _boundary_keys(_boundary_words(wg, width), height, width, pad)
    key_fg, t_fg = _boundary_keys(_boundary_words(wp, width), height, width, pad)
    stride = width + 2 * pad[1]
    fg_hit, gt_hit = _matched(key_fg, key_gt, rows, stride), _matched(key_gt, key_fg, rows, stride)
    n_fg, n_gt, m_fg, m_gt = (np.bincount(t, minlength=frames) for t in (t_fg, t_gt, t_fg[fg_hit], t_gt[gt_hit]))
    return _output(_f_measure(n_fg, n_gt, m_fg, m_gt), squeeze)


# ----------------------------------------------------------------------------- R and accuracy


def _visa_uint8(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """VISA's arrays: GT as the uint8 it decodes, prediction as the 0/255 uint8 PNG it reads back."""
    return gt.astype(np.uint8), (pred != 0).astype(np.uint8) * np.uint8(255)


def robustness(
    gt: ArrayLike, pred: ArrayLike, foreground: ArrayLike, convention: RConvention = "binary"
) -> float | np.ndarray:
    """any[T, H, W] x3 -> float64[T] ReVOS robustness max(1 - sum((1 - G) P) / (sum(Fg) + 1e-6), 0).

    `foreground` is the union of all annotated objects of the video. "binary" uses 0/1 masks (nonzero is 1).
    "visa" reproduces VISA's `get_r2vos_robustness` as its ReVOS evaluation calls it: GT and foreground as
    uint8 values, prediction as 0/255, uint8 arithmetic, so each false positive counts 255 (and a GT value
    of 2, from overlapping objects, wraps to count 1).
    """
    (g, p, fg), squeeze = _frames(gt, pred, foreground=foreground)
    if convention == "binary":
        wg, wp, wf = _pack_all(g, p, fg)
        negative, positive = _popcount(wp & ~wg), _popcount(wf)
    elif convention == "visa":
        g8, p8 = _visa_uint8(g, p)
        negative = ((1 - g8) * p8).reshape(len(g8), -1).sum(axis=1, dtype=np.int64)
        positive = fg.astype(np.uint8).reshape(len(g8), -1).sum(axis=1, dtype=np.int64)
    else:
        raise ValueError(f"convention must be 'binary' or 'visa'; got {convention!r}")
    return _output(np.maximum(1 - negative / (positive + 1e-6), 0.0), squeeze)


def pixel_accuracy(gt: ArrayLike, pred: ArrayLike, convention: RConvention = "binary") -> float | np.ndarray:
    """any[T, H, W] x2 -> float64[T] fraction of pixels where GT equals the prediction (VISA's A).

    "binary" compares `!= 0` masks. "visa" compares VISA's arrays (see `robustness`), where a 0/255
    prediction never equals a GT of 1, so only background agreement counts.
    """
    (g, p), squeeze = _frames(gt, pred)
    pixels = g.shape[1] * g.shape[2]
    if convention == "binary":
        wg, wp = _pack_all(g, p)
        equal = pixels - _popcount(wg ^ wp)
    elif convention == "visa":
        g8, p8 = _visa_uint8(g, p)
        equal = (g8 == p8).reshape(len(g8), -1).sum(axis=1, dtype=np.int64)
    else:
        raise ValueError(f"convention must be 'binary' or 'visa'; got {convention!r}")
    return _output(equal / pixels, squeeze)


# ----------------------------------------------------------------------------- gIoU and cIoU


def _counts(intersection: ArrayLike, union: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    inter, union = np.asarray(intersection, dtype=np.float64).ravel(), np.asarray(union, dtype=np.float64).ravel()
    if inter.shape != union.shape:
        raise ValueError(f"intersection shape {inter.shape} and union shape {union.shape} differ")
    return inter, union


def giou(intersection: ArrayLike, union: ArrayLike, convention: IoUConvention = "lisa") -> float:
    """float[N] per-mask intersection and union counts -> gIoU, the mean per-mask IoU.

    "lisa" (LISA `train_ds.py` `validate`): IoU = I / (U + 1e-5), 1 for an empty union, averaged as
    sum / (N + 1e-5) (its `AverageMeter.all_reduce`); LISA accumulates in float32, this in float64.
    "seg_zero" (Seg-Zero `calculate_iou.py`): IoU = I / U, 0 for an empty union, plain mean (nan if N = 0).
    Seg-Zero's `evaluation.py` skips samples whose predicted and GT masks are both empty before this.
    """
    inter, union = _counts(intersection, union)
    if convention == "lisa":
        iou = inter / (union + 1e-5) + (union == 0)
        return float(iou.sum() / (len(iou) + 1e-5))
    if convention == "seg_zero":
        iou = np.divide(inter, union, out=np.zeros(len(union)), where=union > 0)
        return float(iou.mean()) if len(iou) else float("nan")
    raise ValueError(f"convention must be 'lisa' or 'seg_zero'; got {convention!r}")


def ciou(intersection: ArrayLike, union: ArrayLike, convention: IoUConvention = "lisa") -> float:
    """float[N] per-mask intersection and union counts -> cIoU, total intersection / total union.

    "lisa": sum(I) / (sum(U) + 1e-10). "seg_zero": sum(I) / sum(U), 0 when the total union is 0 (the first
    `calculate_iou.py`, commit c45d603; later versions print gIoU only).
    """
    inter, union = _counts(intersection, union)
    if convention == "lisa":
        return float(inter.sum() / (union.sum() + 1e-10))
    if convention == "seg_zero":
        return float(inter.sum() / union.sum()) if union.sum() > 0 else 0.0
    raise ValueError(f"convention must be 'lisa' or 'seg_zero'; got {convention!r}")
