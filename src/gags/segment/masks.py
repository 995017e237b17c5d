"""Step 5 of granularity-aware segmentation: from the segmenter's raw masks to three painted segment maps per image.

The rules are those of the official release, which runs segment_anything's ``SamAutomaticMaskGenerator`` (the fork
shipped with LangSplat, which keeps SAM's three outputs per point as levels s, m, l, plus a ``default`` level holding
all three) and then LangSplat's ``masks_update``. Per level, in this order:

1. quality: predicted IoU ``> 0.7`` (strict, as SAM) and stability ``>= 0.85``;
2. box NMS at IoU 0.7 over the masks' boxes, scored by predicted IoU (``torchvision.ops.nms``, as SAM);
3. minimum region 100 px at full resolution, as SAM's ``postprocess_small_regions``: fill holes (connected components of
   the background, 8-connected, including those touching the image border) smaller than 100 px, then remove islands
   smaller than 100 px (a mask whose islands are all small keeps its largest); masks changed by either step score 0,
   unchanged ones 1, and a second box NMS at 0.7 on the new boxes prefers the unchanged;
4. LangSplat's mask NMS (``mask_nms``, below) with ``score = stability * predicted IoU``, IoU 0.8, score 0.7, inner 0.5.

The order of the masks that survive is the order step 3's NMS leaves them in (unchanged masks first, each group by
decreasing predicted IoU); LangSplat's ``filter`` keeps that order, and it is the order of the features in ``_f``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torchvision

from gags.errors import GagsError
from gags.levels import SEGMENT_ROWS as LEVELS

PRED_IOU_THRESH = 0.7
"""Keep masks with predicted IoU > 0.7 (release preprocess.py: ``SamAutomaticMaskGenerator(pred_iou_thresh=0.7)``)."""
STABILITY_THRESH = 0.85
"""Keep masks with stability >= 0.85 (release: ``stability_score_thresh=0.85``)."""
BOX_NMS_THRESH = 0.7
"""Box NMS IoU (release: ``box_nms_thresh=0.7``; SAM's crop NMS default is also 0.7)."""
MIN_REGION_AREA = 100
"""Holes and islands below 100 px are filled / removed (release: ``min_mask_region_area=100``), in pixels of SAM-scale
frames (the release segments LERF-OVS frames about 1000 px wide): see ``min_region_area_for``."""
SAM_INPUT_SIDE = 1024
"""Long side of the images SAM segments, in pixels (segment_anything: ``ImageEncoderViT(img_size=1024)`` and its
``ResizeLongestSide(1024)`` transform): the scale at which ``MIN_REGION_AREA`` counts pixels."""
MASK_NMS_IOU = 0.8
"""LangSplat preprocess.py: ``masks_update(..., iou_thr=0.8, score_thr=0.7, inner_thr=0.5)``."""
MASK_NMS_SCORE = 0.7
MASK_NMS_INNER = 0.5
INNER_SMALL_RATIO = 0.5
"""LangSplat ``mask_nms``: a pair is "one inside the other" when the intersection is < 0.5 of one mask ..."""
INNER_CONTAINED_RATIO = 0.85
"""... and >= 0.85 of the other (literal constants in LangSplat's ``mask_nms``)."""
FALLBACK_TOP_K = 3
"""LangSplat ``mask_nms``: when a criterion rejects every mask, the 3 best-scored pass that criterion."""

"""LangSplat's level order in ``_s.npy``: default (all three granularities together), sub-part, part, whole."""

_BOX_CHUNK = 256
"""Candidate masks per box computation (bounds the temporaries on a large candidate set)."""
_MOSAIC_PIXELS = 1 << 23
"""Pixels per connected-components call (mask windows stacked into one image): bounds its temporaries to ~300 MB."""


# ----------------------------------------------------------------------------------------------------------------------
# boxes, small regions, quality + box NMS


def min_region_area_for(height: int, width: int, area: int = MIN_REGION_AREA) -> int:
    """The release's small-region area for an image of height x width pixels: ``area`` counts pixels of an image whose
    long side is ``SAM_INPUT_SIDE``, so it scales with the square of the long side (100 px at 1024, 25 at 512, 2 at
    128, 0 below 72: no clean-up). At 128 px the release's 100 px would remove every entity smaller than 0.6% of the
    image, most of the sub-parts of the procedural scenes."""
    return round(area * (max(height, width) / SAM_INPUT_SIDE) ** 2)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """[M, H, W] bool -> [M, 4] int64 boxes (x0, y0, x1, y1), inclusive max, [0, 0, 0, 0] for an empty mask (as SAM)."""
    m, h, w = masks.shape
    if m == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    as_bytes = masks.view(torch.uint8) if masks.dtype == torch.bool else (masks != 0).view(torch.uint8)
    rows, cols = as_bytes.amax(dim=2) > 0, as_bytes.amax(dim=1) > 0  # [M, H], [M, W] (amax: faster than any)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y1 = torch.where(rows, ar_h, -1).amax(dim=1)
    y0 = torch.where(rows, ar_h, h).amin(dim=1)
    x1 = torch.where(cols, ar_w, -1).amax(dim=1)
    x0 = torch.where(cols, ar_w, w).amin(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return torch.where(rows.any(dim=1)[:, None], boxes, torch.zeros_like(boxes))


def _labels(mosaic: np.ndarray, row_owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a mosaic: [R, C] bool -> labels [R, C] int32, area [n], owner [n] (label 0:
    background).

    row_owner: [R] the window each mosaic row belongs to (windows are separated by empty rows and columns).
    """
    import cv2

    _, labels, stats, _ = cv2.connectedComponentsWithStats(mosaic.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return labels, stats[:, cv2.CC_STAT_AREA], row_owner[stats[:, cv2.CC_STAT_TOP]]


def _mosaic_index(ids: np.ndarray, y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray, h: int, w: int):
    """Lay windows [y0, y1) x [x0, x1) of masks ``ids`` out one under the other, one empty row after each.

    Returns flat: [R, C] int64 index into the [M * H * W] masks (-1 on padding), and row_owner: [R] window index.
    """
    heights, widths = y1 - y0, x1 - x0
    offsets = np.concatenate([[0], np.cumsum(heights + 1)])
    rows = np.arange(offsets[-1])
    owner = np.searchsorted(offsets, rows, side="right") - 1
    local = rows - offsets[owner]
    cols = np.arange(widths.max())
    valid = (local < heights[owner])[:, None] & (cols[None, :] < widths[owner][:, None])
    flat = ((ids[owner] * h + y0[owner] + local) * w + x0[owner])[:, None] + cols[None, :]
    return np.where(valid, flat, -1), owner


def remove_small_regions(masks: torch.Tensor, min_area: int = MIN_REGION_AREA) -> tuple[torch.Tensor, torch.Tensor]:
    """segment_anything's small-region clean-up (``remove_small_regions``, holes then islands), all masks at once.

    Args:
        masks: [M, H, W] bool.
        min_area: regions with fewer pixels are small.
    Returns:
        masks: [M, H, W] bool, holes < min_area filled, then islands < min_area removed (all small: keep the largest).
        changed: [M] bool, whether either step found a small region (SAM's flag; set even when keeping the largest
            island leaves the mask as it was).

    Each mask is labelled inside its box grown by one pixel (clipped to the image), and all windows go through one
    connected-components call per chunk, stacked with empty rows between them. This is exact: islands lie inside the
    box; a background component inside the window that does not reach the one-pixel ring around the box is entirely
    inside the box, so its size is exact; one that reaches the ring joins a component of the outside of the box, which
    always contains a full image row or column, so it is not small when ``min(H, W) >= min_area`` (otherwise every
    window is the whole image). Holes touching the image border count, as in SAM.
    """
    out = masks.detach().cpu().numpy().astype(bool, copy=True)
    changed = _remove_small_regions_(out, min_area)
    return torch.from_numpy(out).to(masks.device), torch.from_numpy(changed).to(masks.device)


def _remove_small_regions_(out: np.ndarray, min_area: int) -> np.ndarray:
    """``remove_small_regions`` in place on out: [M, H, W] bool (C-contiguous); returns changed: [M] bool."""
    m, h, w = out.shape
    changed = np.zeros(m, dtype=bool)
    if m == 0 or min_area <= 0:
        return changed
    boxes = masks_to_boxes(torch.from_numpy(out)).numpy()
    nonempty = out.reshape(m, -1).max(axis=1)
    if min(h, w) >= min_area:
        ids = np.flatnonzero(nonempty)  # an empty mask has one background component of >= min_area pixels
        bx0, by0, bx1, by1 = boxes[ids].T
        y0, y1 = np.maximum(by0 - 1, 0), np.minimum(by1 + 2, h)
        x0, x1 = np.maximum(bx0 - 1, 0), np.minimum(bx1 + 2, w)
    else:
        ids = np.arange(m)
        bx0 = by0 = y0 = x0 = np.zeros(m, dtype=np.int64)
        bx1, by1 = np.full(m, w - 1), np.full(m, h - 1)
        y1, x1 = np.full(m, h), np.full(m, w)
    if len(ids) == 0:
        return changed

    # chunks of windows of similar width (powers of two), each of at most about _MOSAIC_PIXELS pixels
    widths = x1 - x0
    by_width = np.argsort(widths, kind="stable")
    size = np.cumsum((y1 - y0 + 1)[by_width] * widths[by_width])
    key = np.floor(np.log2(widths[by_width])).astype(np.int64) * (1 << 40) + size // _MOSAIC_PIXELS
    chunks = np.split(by_width, np.flatnonzero(np.diff(key)) + 1)

    flat_out = out.reshape(-1)
    for chunk in chunks:
        n = len(chunk)
        flat, owner = _mosaic_index(ids[chunk], y0[chunk], y1[chunk], x0[chunk], x1[chunk], h, w)
        valid = flat >= 0
        values = np.zeros(flat.shape, dtype=bool)
        values[valid] = flat_out[flat[valid]]
        ys = (flat // w) % h
        xs = flat % w
        in_box = (ys >= by0[chunk][owner][:, None]) & (ys <= by1[chunk][owner][:, None])
        in_box &= (xs >= bx0[chunk][owner][:, None]) & (xs <= bx1[chunk][owner][:, None])
        ring = valid & ~in_box

        # holes: components of the background inside the window; small ones not reaching the ring are filled
        labels, area, comp_owner = _labels(valid & ~values, owner)
        small = area < min_area
        small[0] = False
        small[np.unique(labels[ring])] = False
        changed[ids[chunk]] |= np.bincount(comp_owner[small], minlength=n) > 0
        values |= small[labels]

        # islands: components of the mask; the small ones are removed, unless all are small (keep the largest)
        labels, area, comp_owner = _labels(values, owner)
        small = area < min_area
        small[0] = False
        owner_fg, area_fg = comp_owner[1:], area[1:]
        n_comp = np.bincount(owner_fg, minlength=n)
        n_small = np.bincount(owner_fg[small[1:]], minlength=n)
        changed[ids[chunk]] |= n_small > 0
        keep = ~small
        keep[0] = False
        all_small = (n_comp > 0) & (n_small == n_comp)
        if all_small.any():
            best = np.zeros(n, dtype=area.dtype)
            np.maximum.at(best, owner_fg, area_fg)
            first = np.full(n, len(area), dtype=np.int64)
            label_ids = np.arange(1, len(area))
            is_best = area_fg == best[owner_fg]
            np.minimum.at(first, owner_fg[is_best], label_ids[is_best])  # first label of maximal area, as np.argmax
            keep[first[all_small]] = True
        flat_out[flat[valid]] = keep[labels[valid]]
    return changed


# ----------------------------------------------------------------------------------------------------------------------
# LangSplat's mask NMS, vectorised


def _run_starts(flat: np.ndarray) -> np.ndarray:
    """flat: [M, n] bool -> [R] int64 first pixel of every maximal run of pixels on which every mask is constant."""
    m, n = flat.shape
    change = np.zeros(max(n - 1, 0), dtype=bool)
    step = max(1, _MOSAIC_PIXELS // max(n, 1))  # masks compared at a time: bounds the temporary to ~32 MB
    for start in range(0, m, step):
        block = flat[start:start + step]
        change |= (block[:, 1:] != block[:, :-1]).any(axis=0)
    return np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)


def pairwise_intersections(masks: torch.Tensor) -> torch.Tensor:
    """Exact pixel counts of every pairwise intersection: [M, H, W] bool -> [M, M] int64 (the diagonal = areas).

    The image is first reduced without loss: consecutive pixels (in row-major order) on which every mask has the same
    value form a run; each run becomes one column weighted by its length, and runs covered by no mask are dropped. Every
    mask is constant on a run, so ``sum over runs of length * a * b`` equals the pixel count of ``a AND b`` exactly.
    The matrix product is done in float32, exact because every partial sum is an integer below 2^24 (float64 when the
    image has 2^24 pixels or more, or when float32 matrix products are allowed to lose precision).
    """
    m = masks.shape[0]
    flat = masks.flatten(1)
    n = flat.shape[1]
    if m == 0 or n == 0:
        return torch.zeros((m, m), dtype=torch.int64, device=masks.device)
    flat_np = flat.detach().cpu().numpy()
    starts = _run_starts(flat_np)
    lengths = np.diff(np.append(starts, n))
    signature = np.take(flat_np, starts, axis=1)  # [M, R]
    covered = signature.any(axis=0)
    signature, lengths = signature[:, covered], lengths[covered]
    exact_f32 = n < (1 << 24) and torch.get_float32_matmul_precision() == "highest"
    dtype = torch.float32 if exact_f32 else torch.float64
    sig = torch.from_numpy(signature).to(device=masks.device, dtype=dtype)
    weighted = sig * torch.from_numpy(lengths).to(device=masks.device, dtype=dtype)
    return torch.round(weighted @ sig.T).long()


def mask_nms(
    masks: torch.Tensor,
    scores: torch.Tensor,
    iou_thr: float = MASK_NMS_IOU,
    score_thr: float = MASK_NMS_SCORE,
    inner_thr: float = MASK_NMS_INNER,
) -> torch.Tensor:
    """LangSplat's mask NMS (``preprocess.py: mask_nms``) with all pairs at once. Returns keep: [M] bool, input order.

    The rules, on the masks sorted by decreasing score (ties keep input order), for every pair i < j (i scored higher):
    - IoU = |i & j| / |i | j|; j is dropped when its IoU with ANY higher-scored mask exceeds ``iou_thr`` (a one-pass
      matrix rule: the higher-scored mask counts even when it is itself dropped);
    - with a = |i & j| / |i| and b = |i & j| / |j|: if a < 0.5 and b >= 0.85 (j lies inside the larger i), the pair puts
      ``1 - a b`` on j; if a >= 0.85 and b < 0.5 (i lies inside the larger j), it puts ``1 - a b`` on i; a mask is
      dropped when anything put on it exceeds ``1 - inner_thr``. (LangSplat takes the second maximum over
      ``tril(..., diagonal=1)``, which also reads the first superdiagonal; this is reproduced, it only matters for the
      fallback below.)
    - a mask is dropped unless score > ``score_thr``;
    - when one criterion (score, inner-upper, inner-lower) rejects every mask, the 3 best-scored pass it. (LangSplat's
      code writes ``keep[index, 0] = True`` on a 1-D tensor, which raises; this implements the comment's intent.)
    Every ratio is computed with the same float32 operations as LangSplat on exact integer counts, so the kept set is
    identical to the per-pair loop's (see ``gags bench mask-nms``). Pass float64 scores to compare them exactly as
    LangSplat does (its scores are products of Python floats).

    Args:
        masks: [M, H, W] bool.
        scores: [M] (LangSplat: stability * predicted IoU).
    """
    m = masks.shape[0]
    if m == 0:
        return torch.zeros(0, dtype=torch.bool, device=masks.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_scores = scores[order]
    inter = pairwise_intersections(masks)[order][:, order].float()
    area = torch.diagonal(inter)
    union = area[:, None] + area[None, :] - inter
    iou = torch.triu(inter / union, diagonal=1)
    ratio_i = inter / area[:, None]  # |i & j| / |i|, row i
    ratio_j = inter / area[None, :]  # |i & j| / |j|, column j
    value = 1 - ratio_j * ratio_i
    j_in_i = (ratio_i < INNER_SMALL_RATIO) & (ratio_j >= INNER_CONTAINED_RATIO)
    i_in_j = (ratio_i >= INNER_CONTAINED_RATIO) & (ratio_j < INNER_SMALL_RATIO)
    zero = torch.zeros_like(value)
    upper = torch.triu(torch.where(j_in_i, value, zero), diagonal=1)  # entry [i, j], i < j
    lower = torch.tril(torch.where(i_in_j, value, zero).T, diagonal=-1)  # entry [j, i], i < j
    inner = upper + lower
    iou_max = iou.max(dim=0).values
    inner_u = torch.triu(inner, diagonal=1).max(dim=0).values
    inner_l = torch.tril(inner, diagonal=1).max(dim=0).values
    keep = iou_max <= iou_thr
    criteria = [sorted_scores > score_thr, inner_u <= 1 - inner_thr, inner_l <= 1 - inner_thr]
    for criterion in criteria:
        if not criterion.any():
            criterion[:FALLBACK_TOP_K] = True
        keep &= criterion
    out = torch.zeros(m, dtype=torch.bool, device=masks.device)
    out[order[keep]] = True
    return out


# ----------------------------------------------------------------------------------------------------------------------
# levels


@dataclass
class LevelMasks:
    """One level's final masks, in output order (the order of their features in ``_f``).

    masks: [K, H, W] bool; boxes: [K, 4] int64 (x0, y0, x1, y1), inclusive; predicted_iou, stability: [K];
    source: [K] int64, the row of each mask among the candidates given to ``granularity_levels``.
    """

    masks: torch.Tensor
    boxes: torch.Tensor
    predicted_iou: torch.Tensor
    stability: torch.Tensor
    source: torch.Tensor


def granularity_levels(
    masks: torch.Tensor,
    predicted_iou: torch.Tensor,
    stability: torch.Tensor,
    granularity: torch.Tensor,
    *,
    pred_iou_thresh: float = PRED_IOU_THRESH,
    stability_thresh: float = STABILITY_THRESH,
    box_nms_thresh: float = BOX_NMS_THRESH,
    min_region_area: int = MIN_REGION_AREA,
    nms_iou: float = MASK_NMS_IOU,
    nms_score: float = MASK_NMS_SCORE,
    nms_inner: float = MASK_NMS_INNER,
) -> dict[str, LevelMasks]:
    """Steps 1-4 for the four levels of one image.

    Args:
        masks: [C, H, W] bool candidate masks at full resolution, in the segmenter's order (point-major, then sub-part,
            part, whole, as SAM's ``masks.flatten(0, 1)``); candidates may already be quality-filtered.
        predicted_iou, stability: [C].
        granularity: [C] int64, 0 = sub-part (s), 1 = part (m), 2 = whole (l).
    Returns:
        {"default": all candidates, "s", "m", "l": one granularity each} -> LevelMasks.
    The small-region clean-up of a candidate is the same in every level, so it is computed once.
    """
    c = masks.shape[0]
    if not (predicted_iou.shape == stability.shape == granularity.shape == (c,)):
        raise GagsError(f"granularity_levels: {c} masks need [C] predicted IoU, stability and granularity; got "
                        f"{list(predicted_iou.shape)}, {list(stability.shape)}, {list(granularity.shape)}.")
    device = masks.device
    passing = torch.nonzero((predicted_iou > pred_iou_thresh) & (stability >= stability_thresh), as_tuple=True)[0]
    cand_iou = predicted_iou[passing].float()
    chunks = [masks_to_boxes(masks[i:i + _BOX_CHUNK]) for i in range(0, c, _BOX_CHUNK)]  # views: no copy
    boxes = torch.cat(chunks or [torch.zeros((0, 4), dtype=torch.int64, device=device)])[passing].float()
    rows = {"default": torch.arange(len(passing), device=device)}
    for k, name in enumerate(LEVELS[1:]):
        rows[name] = torch.nonzero(granularity[passing] == k, as_tuple=True)[0]
    first = {}
    for name, r in rows.items():  # step 2 per level; r indexes the passing candidates
        first[name] = r[torchvision.ops.nms(boxes[r], cand_iou[r], box_nms_thresh)] if len(r) else r

    # step 3: every candidate that survived step 2 in some level is cleaned once
    union = torch.unique(torch.cat(list(first.values())))  # sorted rows of the passing candidates
    cleaned_np = np.ascontiguousarray(masks[passing[union]].detach().cpu().numpy())
    changed = torch.from_numpy(_remove_small_regions_(cleaned_np, min_region_area)).to(device)
    cleaned = torch.from_numpy(cleaned_np).to(device)
    cleaned_boxes = masks_to_boxes(cleaned)
    where = torch.full((len(passing),), -1, dtype=torch.int64, device=device)
    where[union] = torch.arange(len(union), device=device)

    levels = {}
    for name, cand in first.items():
        pos = where[cand]
        if len(pos) and min_region_area > 0:  # SAM runs the second NMS only with the clean-up
            pos = pos[torchvision.ops.nms(cleaned_boxes[pos].float(), (~changed[pos]).float(), box_nms_thresh)]
        src = passing[union[pos]]
        scores = stability[src].double() * predicted_iou[src].double()
        final = pos[mask_nms(cleaned[pos], scores, nms_iou, nms_score, nms_inner)]
        src = passing[union[final]]
        levels[name] = LevelMasks(cleaned[final], cleaned_boxes[final], predicted_iou[src], stability[src], src)
    return levels


# ----------------------------------------------------------------------------------------------------------------------
# painting


def paint_segment_map(masks: torch.Tensor, order: Literal["area", "given"] = "area") -> torch.Tensor:
    """[M, H, W] bool -> [H, W] int64: at each pixel the index of the mask painted last there, -1 where none.

    order: ``area`` paints larger masks first and smaller ones over them (equal areas: input order); ``given`` paints in
    input order, later over earlier, as LangSplat's ``mask2segmap`` does with its list.
    """
    m, h, w = masks.shape
    if order not in ("area", "given"):
        raise GagsError(f"unknown painting order {order!r}; use 'area' or 'given'.")
    mask_id, pixel = torch.nonzero(masks.flatten(1), as_tuple=True)
    if order == "area":
        area = torch.bincount(mask_id, minlength=m)
        paint = torch.sort(area, descending=True, stable=True).indices
    else:
        paint = torch.arange(m, device=masks.device)
    rank = torch.empty(m, dtype=torch.int64, device=masks.device)
    rank[paint] = torch.arange(m, device=masks.device)
    best = torch.full((h * w,), -1, dtype=torch.int64, device=masks.device)
    best.scatter_reduce_(0, pixel, rank[mask_id], reduce="amax", include_self=True)
    out = torch.where(best >= 0, paint[best.clamp(min=0)], -1) if m else best
    return out.reshape(h, w)


def paint_segment_maps(
    masks_per_level: Sequence[torch.Tensor], order: Literal["area", "given"] = "area"
) -> torch.Tensor:
    """Levels of [M_k, H, W] bool masks -> [L, H, W] int64 per-level mask index (-1 = none); see paint_segment_map."""
    if not masks_per_level:
        raise GagsError("paint_segment_maps needs at least one level.")
    return torch.stack([paint_segment_map(m, order) for m in masks_per_level])


def langsplat_segment_maps(
    masks_per_level: Sequence[torch.Tensor], order: Literal["area", "given"] = "area"
) -> torch.Tensor:
    """LangSplat's ``_s`` layout: 4 levels (default, s, m, l) -> [4, H, W] int64 indices into the concatenated ``_f``.

    ``_f`` stacks the features of the default level's masks, then s, then m, then l; so level k's indices are offset by
    the number of masks of the levels before it (the default level is not offset). -1 = no mask (a level without masks
    is all -1; LangSplat's own code does not handle that case).
    """
    if len(masks_per_level) != len(LEVELS):
        raise GagsError(f"the _s layout has {len(LEVELS)} levels {LEVELS}; got {len(masks_per_level)}.")
    maps = paint_segment_maps(masks_per_level, order)
    counts = torch.tensor([m.shape[0] for m in masks_per_level], device=maps.device)
    offsets = torch.cumsum(counts, 0) - counts
    return torch.where(maps >= 0, maps + offsets[:, None, None], maps)
