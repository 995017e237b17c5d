"""Reference implementations kept for the tests: GaD's distillation target and loss on whole maps (the training loop,
``gags.distill.train``, computes the same numbers on the rows of the counted pixels only), and the dense per-level
feature maps that lifting's segment channels stand for (``gags.distill.lift``). Nothing in the pipeline calls them.
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


def lift_level_maps(seg: Tensor, table: Tensor) -> Tensor:
    """[h, w, 3 x D + 3]: per level the feature of the pixel's segment (zero where there is none), then the three
    coverage indicators: what lifting's weighted sums weigh, written out densely.

    seg: [3, h, w] int (rows s, m, l; -1 = none); table: [M, D].
    """
    seg = seg.long()
    covered = seg >= 0
    feats = table.float()[seg.clamp_min(0)] * covered[..., None]  # [3, h, w, D]
    h, w = seg.shape[1:]
    return torch.cat([feats.permute(1, 2, 0, 3).reshape(h, w, -1), covered.permute(1, 2, 0).float()], dim=-1)
