"""Reference implementations of GaD's distillation target and loss on whole maps, kept for the tests that check the
training loop against them: the loop (``gags.distill.train``) computes the same numbers on the rows of the counted
pixels only. Nothing in the pipeline calls them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gags.levels import ROWS


def level_feature_maps(features: Tensor, seg: Tensor, levels: tuple[int, ...] = ROWS) -> tuple[Tensor, Tensor]:
    """Per-level feature maps from LangSplat ``_f`` / ``_s`` data already at the training resolution.

    Gathers ``features[seg[k]]`` for each level k (the release gathers at the resolution of the resized ``_s`` map, so
    its subsequent bilinear resize to the same size is the identity). Uncovered pixels get a zero vector.

    features: [M, C] (e.g. 512-d CLIP features, or 3-d LangSplat codes); seg: [4, h, w] int (-1 = none).
    Returns (maps [len(levels), C, h, w] float32, covered [len(levels), h, w] bool).
    """
    ids = seg[list(levels)].long()  # [K, h, w]
    covered = ids >= 0
    m, c = features.shape
    h, w = ids.shape[-2:]
    # channel-first table [C, M + 1] whose last column is the zero vector of uncovered pixels; gathering columns
    # writes the channel-first maps directly (twice as fast as gathering rows and permuting)
    table = torch.cat([features.float(), features.new_zeros(1, c, dtype=torch.float32)]).T.contiguous()
    idx = torch.where(covered, ids, m)
    maps = torch.stack([table.index_select(1, idx[k].reshape(-1)).view(c, h, w) for k in range(len(levels))])
    return maps, covered


def mix_target(level_maps: Tensor, g: Tensor) -> Tensor:
    """GaD target ``F = sum_k g_k f_k`` (GAGS ``read_sam_clip_feature``).

    level_maps: [3, C, H, W]; g: [3, H, W] granularity weights -> [C, H, W].
    """
    return (level_maps * g[:, None]).sum(0)


# ------------------------------------------------------------------------------------------- per-pixel losses


def weighted_l2_map(pred: Tensor, level_maps: Tensor, g: Tensor) -> Tensor:
    """The paper's per-pixel distillation loss ``sum_k g_k ||f - f_k||^2`` (squared L2 norm over channels).

    pred: [C, H, W]; level_maps: [3, C, H, W]; g: [3, H, W] -> [H, W].
    """
    return (g * (pred[None] - level_maps).pow(2).sum(1)).sum(0)
