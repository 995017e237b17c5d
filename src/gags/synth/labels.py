"""Exact masks -> LERF-OVS polygon labels.

A LERF-OVS label holds one simple polygon per object entry, while an exact mask may have several components and
holes (a mug handle seen from the side is a ring). Every connected component becomes one entry; its holes are joined
to its outline through a zero-width cut ("keyhole"), so that filling the one polygon (``cv2.fillPoly``) gives back the
component, holes included, up to the pixels on the cut.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_COMPONENT_PIXELS = 1
"""Components smaller than this get no polygon. Outlines of fewer than 3 points (1-2 pixel components) are padded by
repeating their last point, which ``cv2.fillPoly`` fills as those pixels."""
MAX_KEYHOLE_POINTS = 4000
"""Contours longer than this are subsampled when searching the nearest outline point of a hole (cost bound)."""


def _keyhole(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Join ``hole`` [M, 2] into ``outer`` [N, 2] at their closest pair of points: one closed polygon."""
    step_o = max(1, len(outer) // MAX_KEYHOLE_POINTS)
    step_h = max(1, len(hole) // MAX_KEYHOLE_POINTS)
    a, b = outer[::step_o].astype(np.int64), hole[::step_h].astype(np.int64)
    dist = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(dist.argmin()), dist.shape)
    i, j = i * step_o, j * step_h
    return np.concatenate([outer[: i + 1], hole[j:], hole[: j + 1], outer[i:]], axis=0)


def mask_to_polygons(mask: np.ndarray) -> list[tuple[np.ndarray, int, tuple[int, int, int, int]]]:
    """Polygons of a binary mask, one per 8-connected component.

    Args:
        mask: [H, W] bool.
    Returns:
        (polygon [K, 2] int (x, y) pixel coordinates, component area in pixels, bbox (x1, y1, x2, y2) inclusive)
        per component of at least ``MIN_COMPONENT_PIXELS`` pixels, largest first.
    """
    m = np.ascontiguousarray(mask.astype(np.uint8))
    _, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    out = []
    for k in np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1:
        area = int(stats[k, cv2.CC_STAT_AREA])
        if area < MIN_COMPONENT_PIXELS:
            continue
        x, y, w, h = (int(stats[k, c]) for c in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                  cv2.CC_STAT_HEIGHT))
        comp = (labels[y:y + h, x:x + w] == k).astype(np.uint8)
        comp = np.pad(comp, 1)  # so the outline never runs along the crop border
        contours, hierarchy = cv2.findContours(comp, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        hierarchy = hierarchy[0]
        outers = [c for c, hrc in zip(contours, hierarchy, strict=True) if hrc[3] < 0]
        outer = max(outers, key=len)[:, 0, :]
        for c, hrc in zip(contours, hierarchy, strict=True):
            if hrc[3] >= 0 and len(c) >= 1:
                outer = _keyhole(outer, c[:, 0, :])
        polygon = outer + np.array([x - 1, y - 1])
        if len(polygon) < 3:
            polygon = np.concatenate([polygon, np.repeat(polygon[-1:], 3 - len(polygon), axis=0)])
        out.append((polygon.astype(np.int64), area, (x, y, x + w - 1, y + h - 1)))
    return out


def polygons_to_mask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """[H, W] bool union of filled polygons ([K, 2] (x, y) each), as LERF-OVS evaluation rasterises them."""
    canvas = np.zeros((height, width), np.uint8)
    for poly in polygons:
        cv2.fillPoly(canvas, [np.round(np.asarray(poly)).astype(np.int32).reshape(-1, 1, 2)], 1)
    return canvas.astype(bool)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
