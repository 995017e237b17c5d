"""The image crop an encoder sees for a mask: background black, cropped to the mask's box, padded to a square,
resized. The segment stage and the tiny CLIP's training use this one function, so they crop the same way."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import roi_align

MAX_CHUNK_BYTES = 64 << 20
"""Bound on the masked float windows held at once (sets how many masks are cropped per batch)."""
MIN_WINDOW_LOG2 = 4
"""Smallest window side is 16 pixels (2^4)."""


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """masks: [M, H, W] bool -> boxes [M, 4] float (x0, y0, x1, y1) in pixel-edge coordinates (x1, y1 exclusive).

    An empty mask gets the box (0, 0, 0, 0).
    """
    m, height, width = masks.shape
    rows = masks.any(dim=2)  # [M, H]
    cols = masks.any(dim=1)  # [M, W]
    y0 = rows.float().argmax(dim=1)
    y1 = height - rows.flip(1).float().argmax(dim=1)
    x0 = cols.float().argmax(dim=1)
    x1 = width - cols.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    boxes[~rows.any(dim=1)] = 0.0
    return boxes


def crop_masks(rgb: np.ndarray | torch.Tensor, masks: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Crops of an image under each mask, as CLIP sees them (LangSplat's and GAGS's preprocessing).

    rgb: [H, W, 3] uint8; masks: [M, H, W] bool; size: output side (the encoder's ``input_size``).
    Returns [M, size, size, 3] uint8 (on the masks' device): pixels outside the mask are black; the square of side
    max(box width, box height) centred on the mask's box is resized to ``size`` x ``size`` with area-averaged
    bilinear sampling (``roi_align``), so the box fills the crop along its longer side and the rest is black
    padding. An empty mask gives a black crop.
    """
    masks_t = torch.as_tensor(masks)
    image = torch.as_tensor(rgb).to(masks_t.device)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"rgb must be uint8 [H, W, 3]; got {image.dtype} {list(image.shape)}")
    if masks_t.ndim != 3 or masks_t.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks must be [M, H, W] with the image's H, W; got {list(masks_t.shape)}")
    masks_t = masks_t.bool()
    m, height, width = masks_t.shape
    out = torch.zeros((m, size, size, 3), dtype=torch.uint8, device=masks_t.device)
    if m == 0:
        return out
    boxes = mask_boxes(masks_t)
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    squares = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1)  # [M, 4]
    # Each mask is cut out of a window around its square (one pixel of margin, zero outside the image), so the
    # cost follows the masks' sizes, not M full images. Windows share a side per size class (powers of two).
    origin = torch.floor(squares[:, :2]).long() - 1  # [M, 2] window corner (x, y)
    need = torch.ceil(squares[:, 2:]).long() + 1 - origin  # [M, 2] window extent that holds every sample corner
    bucket = torch.clamp(torch.ceil(torch.log2(need.max(dim=1).values.float().clamp(min=1))), min=MIN_WINDOW_LOG2)
    image_f = image.permute(2, 0, 1).float()  # [3, H, W]
    for log2 in torch.unique(bucket).tolist():
        window = 1 << int(log2)
        members = torch.nonzero((bucket == log2) & (side > 0)).flatten()
        chunk = max(1, MAX_CHUNK_BYTES // (4 * 4 * window * window))
        for start in range(0, len(members), chunk):
            sel = members[start : start + chunk]  # [C]
            steps = torch.arange(window, device=masks_t.device)
            rows = origin[sel, 1, None] + steps  # [C, L]
            cols = origin[sel, 0, None] + steps  # [C, L]
            inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
            r, c = rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]
            keep = masks_t[sel[:, None, None], r, c] & inside  # [C, L, L]
            windows = image_f[:, r, c].permute(1, 0, 2, 3) * keep[:, None]  # [C, 3, L, L]
            index = torch.arange(len(sel), dtype=torch.float32, device=masks_t.device)[:, None]
            rois = torch.cat([index, squares[sel] - origin[sel].repeat(1, 2).float()], dim=1)  # [C, 5]
            crops = roi_align(windows, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1,
                              aligned=True)
            out[sel] = crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out
