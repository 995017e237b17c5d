"""The N2F2-style fusion applied after training the ``n2f2`` method's three per-level fields.

What each method trains is in :mod:`gags.methods` (the registry).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

N2F2_PHRASES: tuple[str, ...] = ("object", "thing", "stuff", "part", "texture")
"""Generic phrases whose relevancy weighs the levels in the N2F2-style fusion (GAGS paper, Eq. 9)."""
N2F2_TEMPERATURE = 10.0
"""Softmax temperature over the levels' mean cosine to the generic phrases (LERF's relevancy temperature, 10)."""
N2F2_CHUNK = 65536
"""Gaussians decoded at once during the fusion (bounds memory: chunk x levels x 512 floats)."""


# ------------------------------------------------------------------------------------------------------------- N2F2


def n2f2_level_weights(decoded: Tensor, phrases: Tensor, temperature: float = N2F2_TEMPERATURE) -> Tensor:
    """Per Gaussian, weights of the levels from their relevancy to generic phrases.

    ``w_k = softmax_k(T * mean_p cos(d_k, t_p))``: a level whose decoded feature looks more like a generic
    "object" / "thing" / "stuff" / "part" / "texture" gets more weight.

    decoded: [N, L, D] decoded CLIP features per level; phrases: [P, D] text embeddings -> [N, L], rows sum to 1.
    """
    if decoded.dim() != 3 or phrases.dim() != 2 or decoded.shape[-1] != phrases.shape[-1]:
        raise ValueError(f"decoded must be [N, L, D] and phrases [P, D], got {tuple(decoded.shape)}, "
                         f"{tuple(phrases.shape)}")
    sims = F.normalize(decoded.float(), dim=-1) @ F.normalize(phrases.float(), dim=-1).T  # [N, L, P]
    return torch.softmax(temperature * sims.mean(-1), dim=-1)


def n2f2_fuse(
    features: Tensor,
    decode: Callable[[Tensor], Tensor],
    phrases: Tensor,
    levels: int = 3,
    temperature: float = N2F2_TEMPERATURE,
    chunk: int = N2F2_CHUNK,
) -> tuple[Tensor, Tensor]:
    """Fuse per-level per-Gaussian features into one: ``f = sum_k w_k f_k`` with :func:`n2f2_level_weights`.

    The levels share one feature decoder, so the fused low-dimensional feature is read by that same decoder (the
    fusion happens where the field is rendered, per Gaussian, before decoding).

    features: [N, levels * F]; decode: [B, F] -> [B, D]; phrases: [P, D].
    Returns (fused [N, F], weights [N, levels]).
    """
    n, total = features.shape
    if total % levels:
        raise ValueError(f"features have {total} channels, not a multiple of {levels} levels")
    per_level = features.reshape(n, levels, total // levels)
    weights = []
    with torch.no_grad():
        for start in range(0, n, chunk):
            part = per_level[start : start + chunk]
            decoded = decode(part.reshape(-1, part.shape[-1])).reshape(part.shape[0], levels, -1)
            weights.append(n2f2_level_weights(decoded, phrases, temperature))
    w = torch.cat(weights) if weights else features.new_zeros(0, levels)
    fused = (per_level * w[..., None]).sum(1)
    return fused, w
