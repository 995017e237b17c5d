"""LangSplatV2's codebooks: their initialisation by k-means of the segment features (the ``langsplat-v2`` method).

LangSplatV2 (Li et al. 2025) keeps the CLIP features in a small learned codebook per level and gives each Gaussian
sparse coefficients over it (:class:`gags.field.SparseCodebook`). Its release initialises a level's codebook with the
centres of a k-means (scikit-learn's MiniBatchKMeans) of every ``_f`` feature of the scene, then trains codebook and
per-Gaussian logits together (:mod:`gags.distill.train`, space ``"sparse"``). Here one k-means of the same features
(Lloyd's algorithm, seeded, vectorised) initialises the three levels' codebooks alike; training then separates them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gags.distill.views import TrainView
from gags.field import SparseCodebook
from gags.methods import SPARSE_TOP_K

KMEANS_ITERATIONS = 30
"""Lloyd iterations of the codebook initialisation (enough for a few thousand features to settle)."""


def kmeans(x: Tensor, k: int, iterations: int = KMEANS_ITERATIONS, seed: int = 0) -> Tensor:
    """Centres of a k-means of the rows of ``x`` [M, D] -> [k, D].

    Initial centres: k rows drawn without replacement (with replacement when M < k), seeded; a centre that loses all
    its rows keeps its place.
    """
    generator = torch.Generator().manual_seed(seed)
    m = x.shape[0]
    if m == 0:
        raise ValueError("k-means of no features")
    picks = torch.randperm(m, generator=generator)[:k] if m >= k else torch.randint(m, (k,), generator=generator)
    centres = x[picks.to(x.device)].clone()
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(dim=1)  # [M]
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)[:, None]
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    return centres


def init_codebook(views: Sequence[TrainView], levels: int, size: int, seed: int) -> SparseCodebook:
    """A :class:`SparseCodebook` of ``levels`` x ``size`` entries whose every level starts at the k-means centres of
    the features of ``views`` (every view's ``_f`` table, each row once)."""
    features = torch.cat([v.table.float().cpu() for v in views])
    centres = kmeans(features, size, seed=seed)
    codebook = SparseCodebook(levels, size, features.shape[1], SPARSE_TOP_K)
    with torch.no_grad():
        codebook.codebooks.copy_(centres[None].expand(levels, -1, -1))
    return codebook


__all__ = ["KMEANS_ITERATIONS", "init_codebook", "kmeans"]
