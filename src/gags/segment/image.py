"""Steps 4-6 of ``gags segment`` on one image: ask the segmenter, filter its masks into three levels, paint LangSplat's
``_s`` maps, crop and encode every mask (:func:`segment_image`). The stage (:mod:`gags.segment.extract`) runs it on
every image, in this process or in workers (:mod:`gags.segment.parallel`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision

from gags.config import SegmentConfig
from gags.levels import SEGMENT_ROWS
from gags.timing import StepTimer

PREDICT_CHUNK_ELEMENTS = 1 << 26
"""Mask elements ([points, 3, H, W] booleans) asked of the segmenter at once: 64 MB, about 340 points at 256 x 256."""
STEPS = ("load", "segmenter_image", "predict", "filter", "paint", "crop", "encode", "write")
"""Per-image steps timed in timings.json (global steps: depth, visibility, prompts)."""


@dataclass
class Candidates:
    """Quality-passing masks of one image, bit-packed row by row.

    packed: [C, H, ceil(W / 8)] uint8 (``np.packbits`` along each image row); boxes: [C, 4] float32 (x0, y0, x1, y1,
    inclusive); predicted_iou, stability: [C] float32; granularity: [C] int64 (0 sub-part, 1 part, 2 whole);
    height, width: the image size; asked: points given to the segmenter (after removing identical points).
    """

    packed: np.ndarray
    boxes: torch.Tensor
    predicted_iou: torch.Tensor
    stability: torch.Tensor
    granularity: torch.Tensor
    height: int
    width: int
    asked: int

    def unpack(self, rows: torch.Tensor) -> torch.Tensor:
        """[K] rows -> [K, H, W] bool masks."""
        bits = np.unpackbits(self.packed[rows.numpy()], axis=2, count=self.width)
        return torch.from_numpy(bits.view(bool))


def packed_boxes(packed: np.ndarray, width: int) -> torch.Tensor:
    """Boxes of row-packed masks: [K, H, ceil(W / 8)] uint8 -> [K, 4] int64 (x0, y0, x1, y1), inclusive, as
    ``gags.segment.masks.masks_to_boxes`` ([0, 0, 0, 0] for an empty mask)."""
    k, height, _ = packed.shape
    rows = np.any(packed, axis=2)  # [K, H]
    cols = np.unpackbits(np.bitwise_or.reduce(packed, axis=1), axis=1, count=width).view(bool)  # [K, W]
    nonempty = rows.any(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = height - 1 - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = width - 1 - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1) * nonempty[:, None]
    return torch.from_numpy(boxes.astype(np.int64))


def candidate_masks(segmenter, points: torch.Tensor, height: int, width: int, pred_iou_thresh: float,
                    stability_thresh: float, chunk_elements: int = PREDICT_CHUNK_ELEMENTS) -> Candidates:
    """Ask the segmenter (``set_image`` already called) for 3 masks per point; keep those passing the quality test.

    points: [P, 2] pixel (x, y). Identical points are asked once (a segmenter's answer depends on the point only).
    Candidates keep SAM's order: point-major, then sub-part, part, whole (``masks.flatten(0, 1)``).
    """
    first = np.unique(points.detach().cpu().numpy().astype(np.float32).reshape(-1, 2), axis=0, return_index=True)[1]
    pts = points.detach().cpu().float().reshape(-1, 2)[np.sort(first)]
    per_call = max(1, chunk_elements // (3 * height * width))
    packed, ious, stabs, grans = [], [], [], []
    for start in range(0, len(pts), per_call):
        pred = segmenter.predict(pts[start:start + per_call])
        iou, stab = pred.scores.detach().cpu().float(), pred.stability.detach().cpu().float()
        keep = (iou > pred_iou_thresh) & (stab >= stability_thresh)  # [p, 3]
        if not keep.any():
            continue
        masks = pred.masks.detach().cpu().numpy().reshape(-1, height, width)  # [3p, H, W]
        # packing everything then selecting rows is ~5x cheaper than selecting the full masks first
        packed.append(np.packbits(masks, axis=2)[np.flatnonzero(keep.reshape(-1).numpy())])
        ious.append(iou[keep])
        stabs.append(stab[keep])
        grans.append(torch.nonzero(keep, as_tuple=True)[1])
    if not packed:
        return Candidates(np.zeros((0, height, (width + 7) // 8), np.uint8), torch.zeros((0, 4)), torch.zeros(0),
                          torch.zeros(0), torch.zeros(0, dtype=torch.int64), height, width, len(pts))
    all_packed = np.concatenate(packed)
    return Candidates(all_packed, packed_boxes(all_packed, width).float(), torch.cat(ious), torch.cat(stabs),
                      torch.cat(grans), height, width, len(pts))


def box_nms_survivors(cand: Candidates, box_nms_thresh: float) -> torch.Tensor:
    """Sorted rows of ``cand`` that survive box NMS in at least one level (default = all, s, m, l)."""
    keep = []
    everything = torch.arange(len(cand.boxes))
    groups = [everything] + [everything[cand.granularity == k] for k in range(3)]
    for rows in groups:
        if len(rows):
            keep.append(rows[torchvision.ops.nms(cand.boxes[rows], cand.predicted_iou[rows], box_nms_thresh)])
    if not keep:
        return torch.zeros(0, dtype=torch.int64)
    return torch.unique(torch.cat(keep))


@dataclass
class ImageResult:
    """features: [M, D] float16; segments: [4, H, W] int32 (LangSplat's _s); masks: masks per level."""

    features: np.ndarray
    segments: np.ndarray
    masks: dict[str, int]
    candidates: int
    points: int


def segment_image(rgb: np.ndarray, depth: np.ndarray | None, points: torch.Tensor, segmenter, encoder,
                  config: SegmentConfig, timer: StepTimer | None = None) -> ImageResult:
    """Steps 4-6 on one image.

    rgb: [H, W, 3] uint8; depth: [H, W] float32 rendered depth (0 = unknown) or None; points: [P, 2] pixel (x, y).
    """
    from gags.models.crops import crop_masks
    from gags.segment.masks import granularity_levels, langsplat_segment_maps, min_region_area_for

    timer = timer if timer is not None else StepTimer()
    height, width = rgb.shape[:2]
    with timer.step("segmenter_image"):
        segmenter.set_image(rgb, depth)
    with timer.step("predict"):
        cand = candidate_masks(segmenter, points, height, width, config.pred_iou_thresh, config.stability_thresh)
    with timer.step("filter"):
        rows = box_nms_survivors(cand, config.box_nms_thresh)
        levels = granularity_levels(
            cand.unpack(rows), cand.predicted_iou[rows], cand.stability[rows], cand.granularity[rows],
            pred_iou_thresh=config.pred_iou_thresh, stability_thresh=config.stability_thresh,
            box_nms_thresh=config.box_nms_thresh, min_region_area=min_region_area_for(height, width)
            if config.min_region_area is None else config.min_region_area,
            nms_iou=config.mask_nms_iou, nms_score=config.mask_nms_score, nms_inner=config.mask_nms_inner,
        )
    per_level = [levels[name].masks for name in SEGMENT_ROWS]
    with timer.step("paint"):
        segments = langsplat_segment_maps(per_level, config.paint_order).to(torch.int32).numpy()
    with timer.step("crop"):
        source = torch.cat([levels[name].source for name in SEGMENT_ROWS])  # [M] candidate row of every _f row
        unique, row_of = torch.unique(source, return_inverse=True)  # the same candidate = the same cleaned mask
        first = torch.full((len(unique),), len(source), dtype=torch.int64)
        first.scatter_reduce_(0, row_of, torch.arange(len(source)), reduce="amin")
        all_masks = torch.cat(per_level) if len(source) else torch.zeros((0, height, width), dtype=torch.bool)
        crops = crop_masks(torch.from_numpy(np.require(rgb, requirements=['C', 'W'])), all_masks[first],
                           encoder.input_size)
    with timer.step("encode"):
        unique_features = encoder.encode_images(crops) if len(crops) else torch.zeros((0, encoder.dim))
        features = unique_features[row_of].to(torch.float16).numpy()
    return ImageResult(features, segments, {n: len(levels[n].masks) for n in SEGMENT_ROWS}, len(cand.boxes),
                       cand.asked)


__all__ = ["Candidates", "ImageResult", "box_nms_survivors", "candidate_masks", "packed_boxes", "segment_image"]
