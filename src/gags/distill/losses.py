"""Granularity-aware distillation (GaD) losses, and the LangSplat baseline's, as pure functions of tensors.

Maps are channel-first, one image at a time: features ``[C, H, W]``, granularity ``[3, H, W]`` (sub-part, part, whole),
segment-id maps ``[H, W]`` (int, -1 = no segment). The rules follow the official GAGS release (``train.py``,
``utils/loss_utils.py``, ``scene/dataset_readers.py``, ``utils/camera_utils.py``); where a rule is an implementation
detail of the release (e.g. uncovered pixels counting as zero loss), the docstring says so.

Segment ids are indices into the image's ``_f`` features (LangSplat format), so they are distinct across levels and a
region id names one segment of one level.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

ENTROPY_EPS = 1e-6
"""Added inside the log of the entropy (GAGS ``scale_regulation_loss``)."""


# --------------------------------------------------------------------------------------------------- targets


def resize_segment_maps(seg: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of segment-index maps to the training resolution.

    As the release resizes ``_s`` when it loads a camera (``torch.nn.functional.interpolate(..., mode='nearest')``).

    seg: [L, H, W] integer indices (-1 = none) -> [L, h, w] int64.
    """
    if tuple(seg.shape[-2:]) == tuple(size):
        return seg.long()
    resized = F.interpolate(seg[None].double(), size=size, mode="nearest")[0]
    return resized.round().long()


def l1_map(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel L1, mean over channels (GAGS ``l1_loss_map``).

    pred, target: [C, H, W] -> [H, W].
    """
    return (pred - target).abs().mean(0)


def masked_mean(loss_map: Tensor, valid: Tensor) -> Tensor:
    """Mean over all pixels of ``loss_map * valid``: uncovered pixels count as zero loss in the denominator.

    This is the release's ``l1_loss(pred * mask, gt * mask)`` (GAGS without region awareness; LangSplat).

    loss_map: [H, W]; valid: [H, W] bool -> scalar.
    """
    return (loss_map * valid).mean()


def region_mean(values: Tensor, regions: Tensor) -> Tensor:
    """Average ``values`` inside each region, then over regions: every region counts equally.

    GAGS ``Scale_balance_loss`` (mix_seg=True), vectorised with ``index_add``. Pixels with region -1 are ignored. With
    no
    region at all the result is a zero that keeps the graph.

    values: [H, W]; regions: [H, W] int -> scalar.
    """
    ids = regions.reshape(-1)
    keep = ids >= 0
    if not bool(keep.any()):
        return values.sum() * 0.0
    _, inverse = torch.unique(ids[keep], return_inverse=True)
    n_regions = int(inverse.max()) + 1
    sums = values.new_zeros(n_regions).index_add(0, inverse, values.reshape(-1)[keep])
    counts = torch.bincount(inverse, minlength=n_regions).to(values.dtype)
    return (sums / counts).mean()


def region_aware_loss(loss_map: Tensor, valid: Tensor, regions: Tensor) -> Tensor:
    """Region-aware distillation loss: ``region_mean(loss_map * valid, regions)``.

    As the release, pixels of a region that are not covered at all three levels count with zero loss (its
    ``l1_loss_map(pred * mask, gt * mask)`` followed by ``Scale_balance_loss``).

    loss_map: [H, W]; valid: [H, W] bool; regions: [H, W] int (-1 = none) -> scalar.
    """
    return region_mean(loss_map * valid, regions)


def langsplat_l1(rendered: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """LangSplat's loss on one level: L1 between the rendered 3-d code and the encoded target, uncovered pixels zeroed.

    LangSplat ``train.py``: ``l1_loss(language_feature * mask, gt_language_feature * mask)``.

    rendered, target: [C, H, W]; valid: [H, W] bool -> scalar.
    """
    return masked_mean(l1_map(rendered, target), valid)


def cosine_loss(pred: Tensor, target: Tensor, pixels: int) -> Tensor:
    """LangSplatV2's loss on one level: 1 - the mean cosine similarity between the decoded and the target features
    over all ``pixels`` of the view, uncovered pixels counting with cosine 0.

    LangSplatV2 ``train.py``: ``cos_loss(language_feature * mask, gt_language_feature * mask)``, i.e.
    ``1 - cosine_similarity(..., dim=0).mean()`` over the whole map (a zeroed pixel's cosine is 0).

    pred, target: [P, D] at the P covered pixels; pixels: H x W -> scalar.
    """
    return 1.0 - F.cosine_similarity(pred, target, dim=-1).sum() / max(1, pixels)


# ----------------------------------------------------------------------------------------------- regions


def granularity_regions(level_ids: Tensor, g: Tensor, kernel_size: int) -> Tensor:
    """Per pixel, the segment of the level chosen by the argmax of the box-smoothed granularity map.

    GAGS ``get_trained_seg``: a ``kernel_size`` x ``kernel_size`` mean filter with zero padding (a depthwise convolution
    with weights 1/k^2, padding k//2, i.e. ``avg_pool2d`` with ``count_include_pad=True``), argmax over the levels
    (first level on ties), then that level's segment id.

    level_ids: [3, H, W] int (rows s, m, l of ``_s``, -1 = none); g: [3, H, W] -> [H, W] int64 (-1 = none).
    """
    smooth = F.avg_pool2d(
        g.detach()[None], kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=True
    )[0]
    choice = smooth.argmax(0)  # [H, W]
    return level_ids.long().gather(0, choice[None])[0]


# --------------------------------------------------------------------------------------------- regularisers


def granularity_entropy(g: Tensor) -> Tensor:
    """Entropy regulariser ``mean(-g log(g + 1e-6))`` over every pixel and level (GAGS ``scale_regulation_loss``).

    g: [3, H, W] -> scalar.
    """
    return (-g * torch.log(g + ENTROPY_EPS)).mean()


def feature_consistency(features: Tensor, regions: Tensor) -> Tensor:
    """Feature consistency ``sum_r n_r * mean_c Var_r(x_c) / (H W)`` (GAGS ``scale_region_regulation_loss``).

    ``Var_r`` is the unbiased variance (``torch.var``) over the n_r pixels of region r; regions with fewer than 2
    pixels and pixels with region -1 are left out. Vectorised in two passes (per-region means, then squared deviations
    from them), which is exact in float32 where the one-pass ``E[x^2] - E[x]^2`` would cancel.

    features: [C, H, W] rendered (low-dimensional) features; regions: [H, W] int -> scalar.
    """
    c, h, w = features.shape
    ids = regions.reshape(-1)
    keep = ids >= 0
    if not bool(keep.any()):
        return features.sum() * 0.0
    x = features.reshape(c, -1)[:, keep].T  # [P, C]
    _, inverse = torch.unique(ids[keep], return_inverse=True)
    n_regions = int(inverse.max()) + 1
    counts = torch.bincount(inverse, minlength=n_regions).to(x.dtype)  # [R]
    means = x.new_zeros(n_regions, c).index_add(0, inverse, x) / counts[:, None]
    squares = x.new_zeros(n_regions, c).index_add(0, inverse, (x - means[inverse]).pow(2))  # [R, C]
    big = counts > 1
    var = squares[big] / (counts[big, None] - 1)
    return (counts[big] * var.mean(1)).sum() / (h * w)


# --------------------------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class LossWeights:
    """Weights of the regularisers at one iteration (the distillation loss has weight 1)."""

    entropy: float
    consistency: float


def loss_weights(
    iteration: int,
    iterations: int,
    *,
    entropy_early: float,
    entropy_late: float,
    consistency_late: float,
    late_start: float,
) -> LossWeights:
    """Regulariser weights at a 1-based ``iteration`` of ``iterations``.

    The late phase starts after ``floor(late_start * iterations)`` iterations: GAGS ``train.py`` switches at
    ``--scale_regulation_iteration 15001`` of 30,000 (``late_start`` 0.5) from entropy 0.001 and no consistency term to
    entropy 0.002 and consistency 0.1.
    """
    late = iteration > int(late_start * iterations)
    return LossWeights(
        entropy=entropy_late if late else entropy_early,
        consistency=consistency_late if late else 0.0,
    )
