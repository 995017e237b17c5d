"""The LERF-OVS protocol on relevancy maps: localization, segmentation masks and IoU, as LangSplat evaluates them.

Everything follows LangSplat's ``eval/evaluate_iou_loc.py`` and ``eval/utils.py`` (which the official GAGS release uses
unchanged, with one level), step by step and in float32 like the original:

- Box filter: ``cv2.filter2D`` with a 30x30 kernel of 1/900, default anchor (the kernel centre, offset 15, so the window
  covers offsets -15..+14) and default border (BORDER_REFLECT_101). OpenCV may filter a kernel that large through the
  DFT; calling the same function keeps the same rounding, which decides ties between maxima.
- Localization: box-filter the raw relevancy; every pixel equal to the maximum is a peak; a query is a hit if any peak
  ``(x, y)`` (integer column, row) lies in any ground-truth box of its label, bounds included.
- Segmentation: ``smoothed = 0.5 * (box(rel) + rel)``; ``(smoothed - min) / (max - min + 1e-9)``, mapped to [-1, 1]
  and clipped to [0, 1]; mask = value > 0.4; then LangSplat's 7x7 majority filter (below); IoU with the label's mask.
- Several levels (LangSplat's three fields): localization takes the level whose box-filtered map has the highest
  maximum, segmentation the level whose smoothed map has the highest maximum (``choose_level``).

Maps are [H, W] (row = y, column = x). Functions take numpy arrays or CPU tensors and compute in float32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

BOX_FILTER_SIZE = 30
"""Side of the mean filter (LangSplat: ``scale = 30; kernel = np.ones((scale, scale)) / scale**2``)."""

SMOOTH_BLEND = 0.5
"""Weight of the box-filtered map in the smoothed map (LangSplat: ``0.5 * (avg_filtered + valid_map)``)."""

NORMALIZE_EPS = 1e-9
"""Added to the range before dividing (LangSplat: ``output / (torch.max(output) + 1e-9)``)."""

MASK_THRESHOLD = 0.4
"""Threshold on the normalised map (LangSplat ``eval.sh``: ``--mask_thresh 0.4``)."""

MAJORITY_RADIUS = 3
"""Half-size of the majority window, 7x7 (LangSplat ``eval/utils.py: smooth``: ``scale = 3``)."""

ArrayLike = np.ndarray | torch.Tensor


def _float32(maps: ArrayLike) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    return np.asarray(maps, dtype=np.float32)


def _check_maps(maps: np.ndarray, name: str = "maps") -> None:
    if maps.ndim < 2 or maps.shape[-1] == 0 or maps.shape[-2] == 0:
        raise ValueError(f"{name} must be [..., H, W] with H, W >= 1, got shape {maps.shape}")


def box_filter(maps: ArrayLike, size: int = BOX_FILTER_SIZE) -> np.ndarray:
    """Mean filter of side ``size`` as LangSplat applies it (``cv2.filter2D``, reflect-101 border, centre anchor).

    Args:
        maps: [..., H, W] relevancy maps.
    Returns:
        [..., H, W] float32.
    """
    maps = _float32(maps)
    _check_maps(maps)
    kernel = np.ones((size, size), dtype=np.float64) / size**2
    flat = maps.reshape(-1, *maps.shape[-2:])
    # One call per map: OpenCV filters channels independently (same result), and single maps are the fastest path.
    out = np.stack([cv2.filter2D(m, -1, kernel) for m in flat])
    return out.reshape(maps.shape)


def smooth_relevancy(maps: ArrayLike, filtered: np.ndarray | None = None) -> np.ndarray:
    """``0.5 * (box_filter(maps) + maps)``: [..., H, W] -> [..., H, W] float32.

    ``filtered``: ``box_filter(maps)`` if already computed.
    """
    maps = _float32(maps)
    if filtered is None:
        filtered = box_filter(maps)
    return np.float32(SMOOTH_BLEND) * (filtered + maps)


def normalize_relevancy(smoothed: ArrayLike) -> np.ndarray:
    """Min-max normalise each map, map [0, 1] to [-1, 1] and clip to [0, 1] (the upper half of the range survives).

    Args:
        smoothed: [..., H, W] smoothed relevancy.
    Returns:
        [..., H, W] float32 in [0, 1].
    """
    out = _float32(smoothed)
    _check_maps(out, "smoothed")
    out = out - out.min(axis=(-2, -1), keepdims=True)
    out = out / (out.max(axis=(-2, -1), keepdims=True) + np.float32(NORMALIZE_EPS))
    out = out * np.float32(2.0) + np.float32(-1.0)
    return np.clip(out, np.float32(0.0), np.float32(1.0))


def majority_filter(mask: ArrayLike, radius: int = MAJORITY_RADIUS) -> np.ndarray:
    """LangSplat's majority filter (``eval/utils.py: smooth``), exactly, vectorised.

    Pixel (i, j) becomes 1 iff strictly more than half of the window rows ``max(0, i - r) .. min(i + r + 1, H - 1) - 1``
    and columns ``max(0, j - r) .. min(j + r + 1, W - 1) - 1`` are 1 (ties -> 0: ``argmax(bincount)`` takes the first).
    Note the ``H - 1``/``W - 1`` upper bounds: the last row and column never count, and windows near the border are
    truncated, not padded. An empty window (H or W = 1) gives 0.

    Args:
        mask: [..., H, W] bool or 0/1.
    Returns:
        [..., H, W] bool.
    """
    ones_mask = np.asarray(mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else mask) != 0
    _check_maps(ones_mask, "mask")
    h, w = ones_mask.shape[-2:]
    # Summed-area table with a zero row and column in front: S[..., a, b] = number of ones in mask[..., :a, :b].
    table = np.zeros((*ones_mask.shape[:-2], h + 1, w + 1), dtype=np.int64)
    table[..., 1:, 1:] = ones_mask.cumsum(axis=-2, dtype=np.int64).cumsum(axis=-1)
    i, j = np.arange(h), np.arange(w)
    r0, r1 = np.maximum(0, i - radius), np.maximum(np.minimum(i + radius + 1, h - 1), 0)
    c0, c1 = np.maximum(0, j - radius), np.maximum(np.minimum(j + radius + 1, w - 1), 0)
    r1, c1 = np.maximum(r1, r0), np.maximum(c1, c0)
    ones = (
        table[..., r1[:, None], c1[None, :]]
        - table[..., r0[:, None], c1[None, :]]
        - table[..., r1[:, None], c0[None, :]]
        + table[..., r0[:, None], c0[None, :]]
    )
    count = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    return 2 * ones > count


def mask_from_smoothed(smoothed: ArrayLike, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Segmentation mask of smoothed relevancy maps: normalise, ``> threshold``, majority filter.

    Args:
        smoothed: [..., H, W] (``smooth_relevancy`` output).
    Returns:
        [..., H, W] bool.
    """
    return majority_filter(normalize_relevancy(smoothed) > np.float32(threshold))


def mask_iou(pred: ArrayLike, gt: ArrayLike) -> np.ndarray:
    """IoU of boolean masks: [..., H, W] x [..., H, W] -> float64 [...], NaN where both are empty."""
    pred, gt = np.asarray(pred) != 0, np.asarray(gt) != 0
    if pred.shape[-2:] != gt.shape[-2:]:
        raise ValueError(f"mask sizes differ: prediction {pred.shape[-2:]}, ground truth {gt.shape[-2:]}")
    inter = np.logical_and(pred, gt).sum(axis=(-2, -1))
    union = np.logical_or(pred, gt).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(inter / union, dtype=np.float64)


def choose_level(maps: ArrayLike) -> np.ndarray:
    """LangSplat's choice among relevancy levels: the level whose map has the highest maximum (first one on ties).

    Pass the smoothed maps to choose the segmentation level, the box-filtered maps to choose the localization level,
    as LangSplat does.

    Args:
        maps: [L, ..., H, W].
    Returns:
        int64 [...] level index.
    """
    maps = _float32(maps)
    if maps.ndim < 3 or maps.shape[0] == 0:
        raise ValueError(f"maps must be [L, ..., H, W] with L >= 1, got shape {maps.shape}")
    return np.argmax(maps.max(axis=(-2, -1)), axis=0)


def localization_peaks(filtered: ArrayLike) -> np.ndarray:
    """Every pixel equal to the maximum of a box-filtered map, as (x, y): [H, W] -> int64 [P, 2], row-major order.

    A constant map (no pixel above another: a view where the field or the segments say nothing) has no peak, so it
    localizes nothing. LangSplat's loop would take every pixel of such a map as a peak and count a hit for any box.
    """
    filtered = _float32(filtered)
    if filtered.ndim != 2:
        raise ValueError(f"filtered must be [H, W], got shape {filtered.shape}")
    if filtered.max() == filtered.min():
        return np.zeros((0, 2), np.int64)
    rows, cols = np.nonzero(filtered == filtered.max())
    return np.stack([cols, rows], axis=1).astype(np.int64)


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> bool:
    """True if any point lies in any box, bounds included, whatever the corner order of the box.

    Args:
        points: [P, 2] (x, y).
        boxes: [B, 4] (x1, y1, x2, y2).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lo = np.minimum(boxes[:, :2], boxes[:, 2:])  # [B, 2]
    hi = np.maximum(boxes[:, :2], boxes[:, 2:])  # [B, 2]
    inside = (points[:, None, :] >= lo[None]) & (points[:, None, :] <= hi[None])  # [P, B, 2]
    return bool(inside.all(axis=-1).any())


def _levels(relevancy: ArrayLike) -> np.ndarray:
    maps = _float32(relevancy)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3 or maps.shape[0] == 0:
        raise ValueError(f"relevancy must be [H, W] or [L, H, W], got shape {maps.shape}")
    _check_maps(maps, "relevancy")
    return maps


@dataclass(frozen=True)
class Localization:
    """Where a query is: the peaks of the box-filtered relevancy of the chosen level."""

    level: int
    peaks: np.ndarray = field(repr=False)
    """int64 [P, 2] (x, y), every pixel at the maximum."""
    score: float
    """The maximum of the box-filtered map."""

    @property
    def point(self) -> tuple[int, int] | None:
        """The first peak (x, y), row-major; None for a constant map."""
        return (int(self.peaks[0, 0]), int(self.peaks[0, 1])) if len(self.peaks) else None


@dataclass(frozen=True)
class Segmentation:
    """The mask of a query and the smoothed relevancy of the chosen level."""

    level: int
    mask: np.ndarray = field(repr=False)
    """bool [H, W]."""
    smoothed: np.ndarray = field(repr=False)
    """float32 [H, W], 0.5 (box + raw) relevancy of the chosen level."""


def localize(relevancy: ArrayLike, filtered: np.ndarray | None = None) -> Localization:
    """Localize one query from its relevancy: [H, W] (one level) or [L, H, W] (``filtered``: its box filter)."""
    maps = _levels(relevancy)
    filtered = box_filter(maps) if filtered is None else _float32(filtered).reshape(maps.shape)
    level = int(choose_level(filtered))
    return Localization(level=level, peaks=localization_peaks(filtered[level]), score=float(filtered[level].max()))


def segment(
    relevancy: ArrayLike, threshold: float = MASK_THRESHOLD, filtered: np.ndarray | None = None
) -> Segmentation:
    """Segment one query from its relevancy: [H, W] (one level) or [L, H, W] (``filtered``: its box filter)."""
    maps = _levels(relevancy)
    filtered = box_filter(maps) if filtered is None else _float32(filtered).reshape(maps.shape)
    smoothed = smooth_relevancy(maps, filtered)
    level = int(choose_level(smoothed))
    return Segmentation(level=level, mask=mask_from_smoothed(smoothed[level], threshold), smoothed=smoothed[level])


@dataclass(frozen=True)
class QueryResult:
    """One (frame, label) pair of the protocol."""

    hit: bool
    iou: float
    localization: Localization
    segmentation: Segmentation


def evaluate_query(
    relevancy: ArrayLike, gt_mask: np.ndarray, boxes: np.ndarray, threshold: float = MASK_THRESHOLD
) -> QueryResult:
    """The LERF-OVS protocol for one query on one frame.

    Args:
        relevancy: [H, W] or [L, H, W] relevancy of the label's text.
        gt_mask: bool [H, W], union of the label's polygons, at the relevancy's resolution.
        boxes: [B, 4] (x1, y1, x2, y2) of the label's objects, in the relevancy's pixels.
    """
    maps = _levels(relevancy)
    if np.shape(gt_mask) != maps.shape[-2:]:
        raise ValueError(f"ground-truth mask is {np.shape(gt_mask)}, relevancy is {maps.shape[-2:]}")
    filtered = box_filter(maps)
    loc = localize(maps, filtered)
    seg = segment(maps, threshold, filtered)
    return QueryResult(
        hit=points_in_boxes(loc.peaks, boxes),
        iou=float(mask_iou(seg.mask, gt_mask)),
        localization=loc,
        segmentation=seg,
    )
