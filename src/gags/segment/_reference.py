"""Reference implementations of the segment stage's mask filtering, kept for the tests and benchmarks that check the
vectorised code against them (as gsplat keeps ``_torch_impl``); nothing in the pipeline calls them.

- :func:`filter_masks`: SamAutomaticMaskGenerator's filtering of one level's masks (quality, box NMS, small regions)
  with the release's settings, one level at a time; the stage runs ``gags.segment.masks.granularity_levels``.
- :func:`literal_mask_nms`: LangSplat's ``mask_nms`` rules, one pair of masks at a time, written out literally; the
  stage runs the all-pairs ``gags.segment.masks.mask_nms``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision

from gags.segment.masks import (
    BOX_NMS_THRESH,
    MIN_REGION_AREA,
    PRED_IOU_THRESH,
    STABILITY_THRESH,
    masks_to_boxes,
    remove_small_regions,
)


@dataclass
class FilteredMasks:
    """Masks that pass quality, box NMS and the small-region clean-up, in SAM's output order.

    index: [K] int64 rows of the input; masks: [K, H, W] bool (cleaned); boxes: [K, 4] int64 (x0, y0, x1, y1).
    """

    index: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor


def quality_box_nms(
    masks: torch.Tensor,
    predicted_iou: torch.Tensor,
    stability: torch.Tensor,
    pred_iou_thresh: float = PRED_IOU_THRESH,
    stability_thresh: float = STABILITY_THRESH,
    box_nms_thresh: float = BOX_NMS_THRESH,
) -> torch.Tensor:
    """Steps 1-2: [K] int64 rows of ``masks`` [M, H, W] passing the quality filter and box NMS, by decreasing IoU."""
    keep = torch.nonzero((predicted_iou > pred_iou_thresh) & (stability >= stability_thresh), as_tuple=True)[0]
    if len(keep) == 0:
        return keep
    boxes = masks_to_boxes(masks[keep]).float()
    return keep[torchvision.ops.nms(boxes, predicted_iou[keep].float(), box_nms_thresh)]


def small_region_nms(
    masks: torch.Tensor, changed: torch.Tensor, box_nms_thresh: float = BOX_NMS_THRESH
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 3's second NMS: masks [K, H, W] (cleaned), changed [K] -> (kept rows [J], their boxes [J, 4])."""
    boxes = masks_to_boxes(masks)
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=masks.device), boxes
    keep = torchvision.ops.nms(boxes.float(), (~changed).float(), box_nms_thresh)
    return keep, boxes[keep]


def filter_masks(
    masks: torch.Tensor,
    predicted_iou: torch.Tensor,
    stability: torch.Tensor,
    pred_iou_thresh: float = PRED_IOU_THRESH,
    stability_thresh: float = STABILITY_THRESH,
    box_nms_thresh: float = BOX_NMS_THRESH,
    min_region_area: int = MIN_REGION_AREA,
) -> FilteredMasks:
    """Steps 1-3 on one level's masks: SamAutomaticMaskGenerator's filtering with the release's settings.

    Args:
        masks: [M, H, W] bool at full image resolution; predicted_iou, stability: [M].
    """
    index = quality_box_nms(masks, predicted_iou, stability, pred_iou_thresh, stability_thresh, box_nms_thresh)
    kept = masks[index]
    if min_region_area <= 0:
        return FilteredMasks(index, kept, masks_to_boxes(kept))
    cleaned, changed = remove_small_regions(kept, min_region_area)
    keep, boxes = small_region_nms(cleaned, changed, box_nms_thresh)
    return FilteredMasks(index[keep], cleaned[keep], boxes)



def literal_mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_thr: float = 0.8, score_thr: float = 0.7,
                     inner_thr: float = 0.5) -> torch.Tensor:
    """LangSplat preprocess.py ``mask_nms``, pair by pair. masks: [M, H, W] bool, scores: [M] -> keep [M] bool.

    Two deliberate departures, shared with the vectorised version and documented there: the score sort is stable (ties
    keep input order), and the "no mask passes" fallback marks the 3 best-scored masks (LangSplat's ``keep[index, 0]``
    raises on a 1-D tensor).
    """
    scores_sorted, idx = scores.sort(dim=0, descending=True, stable=True)
    num_masks = idx.shape[0]
    masks_ord = masks[idx.view(-1), :]
    masks_area = torch.sum(masks_ord, dim=(1, 2), dtype=torch.float)

    iou_matrix = torch.zeros((num_masks,) * 2, dtype=torch.float)
    inner_iou_matrix = torch.zeros((num_masks,) * 2, dtype=torch.float)
    for i in range(num_masks):
        for j in range(i, num_masks):
            intersection = torch.sum(torch.logical_and(masks_ord[i], masks_ord[j]), dtype=torch.float)
            union = torch.sum(torch.logical_or(masks_ord[i], masks_ord[j]), dtype=torch.float)
            iou = intersection / union
            iou_matrix[i, j] = iou
            if intersection / masks_area[i] < 0.5 and intersection / masks_area[j] >= 0.85:
                inner_iou = 1 - (intersection / masks_area[j]) * (intersection / masks_area[i])
                inner_iou_matrix[i, j] = inner_iou
            if intersection / masks_area[i] >= 0.85 and intersection / masks_area[j] < 0.5:
                inner_iou = 1 - (intersection / masks_area[j]) * (intersection / masks_area[i])
                inner_iou_matrix[j, i] = inner_iou

    iou_matrix.triu_(diagonal=1)
    iou_max, _ = iou_matrix.max(dim=0)
    inner_iou_matrix_u = torch.triu(inner_iou_matrix, diagonal=1)
    inner_iou_max_u, _ = inner_iou_matrix_u.max(dim=0)
    inner_iou_matrix_l = torch.tril(inner_iou_matrix, diagonal=1)
    inner_iou_max_l, _ = inner_iou_matrix_l.max(dim=0)

    keep = iou_max <= iou_thr
    keep_conf = scores_sorted > score_thr
    keep_inner_u = inner_iou_max_u <= 1 - inner_thr
    keep_inner_l = inner_iou_max_l <= 1 - inner_thr
    if keep_conf.sum() == 0:
        keep_conf[:3] = True
    if keep_inner_u.sum() == 0:
        keep_inner_u[:3] = True
    if keep_inner_l.sum() == 0:
        keep_inner_l[:3] = True
    keep *= keep_conf
    keep *= keep_inner_u
    keep *= keep_inner_l

    out = torch.zeros(num_masks, dtype=torch.bool)
    out[idx[keep]] = True
    return out
