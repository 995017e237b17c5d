"""Figures of relevancy maps and masks, shared by ``gags query``, ``gags eval``, the viewer, the report and the PLY
colours.

- :func:`colormap`: relevancy -> RGB on one colour scale; :func:`normalized`: min-max to [0, 1];
- :func:`heatmap_figure`: the relevancy over the image, with the localization point and ground-truth boxes;
- :func:`mask_figure`: the predicted mask with the ground-truth outline;
- :func:`write_png`, :func:`write_npy`: atomic writers of the images and maps.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gags.errors import GagsError
from gags.io import atomic_path

COLORMAP = cv2.COLORMAP_TURBO
"""Colour scale of relevancy figures and PLYs (blue = low, red = high)."""
HEATMAP_BLEND = 0.6
"""Weight of the colour-mapped relevancy over the image in heatmap figures (the rest is the image)."""
MASK_DIM = 0.35
"""Brightness kept outside the predicted mask in mask figures."""
MASK_TINT = (255, 210, 0)
"""RGB tint blended (at 40 %) into the predicted mask."""
GT_OUTLINE = (0, 255, 0)
"""RGB colour of the ground-truth outline in mask figures."""
POINT_COLOR = (255, 255, 255)
"""RGB colour of the localization marker (with a black rim)."""


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB [..., 3] on the ``COLORMAP`` scale (clipped)."""
    values = np.asarray(values, dtype=np.float32)
    levels = np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8).reshape(-1, 1)
    bgr = cv2.applyColorMap(levels, COLORMAP).reshape(*values.shape, 3)
    return np.ascontiguousarray(bgr[..., ::-1])


def normalized(values: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] (a constant map gives zeros)."""
    values = np.asarray(values, dtype=np.float32)
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def _draw_point(image: np.ndarray, point: tuple[int, int]) -> None:
    size = max(3, round(min(image.shape[:2]) / 40))
    x, y = int(point[0]), int(point[1])
    cv2.drawMarker(image, (x, y), (0, 0, 0), cv2.MARKER_CROSS, size * 2 + 2, max(2, size // 2 + 1))
    cv2.drawMarker(image, (x, y), POINT_COLOR, cv2.MARKER_CROSS, size * 2, max(1, size // 2))


def heatmap_figure(image: np.ndarray, rel: np.ndarray, point: tuple[int, int] | None = None,
                   boxes: np.ndarray | None = None) -> np.ndarray:
    """The relevancy over the image: colour-mapped min-max-normalised relevancy blended over the image.

    Args:
        image: [H, W, 3] uint8 RGB; rel: [H, W] relevancy; point: (x, y) localization, drawn as a cross;
        boxes: [B, 4] (x1, y1, x2, y2) ground-truth boxes, drawn as thin outlines.
    Returns:
        [H, W, 3] uint8 RGB.
    """
    heat = colormap(normalized(rel)).astype(np.float32)
    out = np.round(HEATMAP_BLEND * heat + (1 - HEATMAP_BLEND) * image.astype(np.float32)).astype(np.uint8)
    if boxes is not None:
        for x1, y1, x2, y2 in np.asarray(boxes).reshape(-1, 4):
            cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), GT_OUTLINE, 1)
    if point is not None:
        _draw_point(out, point)
    return out


def mask_figure(image: np.ndarray, mask: np.ndarray, gt: np.ndarray | None = None,
                point: tuple[int, int] | None = None) -> np.ndarray:
    """The predicted mask over the image (outside dimmed, inside tinted), with the ground-truth mask's outline.

    Args:
        image: [H, W, 3] uint8 RGB; mask: bool [H, W] predicted; gt: bool [H, W] ground truth or None.
    Returns:
        [H, W, 3] uint8 RGB.
    """
    img = image.astype(np.float32)
    tinted = 0.6 * img + 0.4 * np.asarray(MASK_TINT, np.float32)
    out = np.where(mask[..., None], tinted, MASK_DIM * img).round().astype(np.uint8)
    if gt is not None:
        contours, _ = cv2.findContours(gt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, GT_OUTLINE, 1)
    if point is not None:
        _draw_point(out, point)
    return out


def write_png(path: Path, image: np.ndarray) -> None:
    """Write [H, W, 3] RGB or [H, W] grey uint8 as PNG, atomically."""
    data = image[..., ::-1] if image.ndim == 3 else image
    with atomic_path(Path(path)) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(data)):
            raise GagsError(f"could not write {path}. Check that the folder is writable.")


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write an array as .npy, atomically."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


__all__ = ["colormap", "heatmap_figure", "mask_figure", "normalized", "write_npy", "write_png"]
