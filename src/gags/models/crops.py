"""The image crop an encoder sees for a mask: background black, cropped to the mask's box, padded to a square,
resized. The segment stage and the tiny CLIP's training use this one function, so they crop the same way."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import roi_align

MAX_CHUNK_BYTES = 64 << 20
"""Bound on the masked float copies of the image held at once (sets how many masks are cropped per batch)."""


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
    # +1: the masked images below carry one black pixel of border, so samples beyond the image read black
    squares = torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], dim=1) + 1.0
    image_f = image.permute(2, 0, 1).float()  # [3, H, W]
    chunk = max(1, MAX_CHUNK_BYTES // (3 * (height + 2) * (width + 2) * 4))
    for start in range(0, m, chunk):
        sel = masks_t[start : start + chunk]  # [C, H, W]
        masked = torch.nn.functional.pad(image_f[None] * sel[:, None], (1, 1, 1, 1))  # [C, 3, H+2, W+2]
        index = torch.arange(len(sel), dtype=torch.float32, device=masks_t.device)[:, None]
        rois = torch.cat([index, squares[start : start + chunk]], dim=1)  # [C, 5]
        crops = roi_align(masked, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        out[start : start + chunk] = crops.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    out[side <= 0] = 0
    return out
