"""What each ``gags distill --method`` trains, and the N2F2-style fusion applied after training.

Every method is one training loop (:mod:`gags.distill.train`) run on a :class:`MethodSpec`: a list of *heads*, each a
slice of the per-Gaussian feature that is rendered, decoded and compared with a target built from the three granularity
levels (sub-part s, part m, whole l) of the LangSplat ``_f``/``_s`` data:

=============  =====================================================================================================
``gags``       one 16-d head; level weights g from the granularity decoder; target ``sum_k g_k f_k`` (GaD)
``avg``        one 16-d head; fixed weights (1/3, 1/3, 1/3); target the normalised mean of the three levels
               (the GAGS paper's Model 1/7; the release's ``--single_scale mix``)
``level-s|m|l``  one 16-d head; one level as target (Models 4-6; the release's ``--single_scale s|m|l``)
``langsplat``  three 3-d heads, one per level, rendered together; targets are the level features encoded by LangSplat's
               autoencoder; LangSplat's masked L1 on the rendered 3-d code (no decoder is trained)
``n2f2``       three 16-d heads sharing one feature decoder, one per level; after training the three per-Gaussian
               features are fused with weights from each level's relevancy to generic phrases (:func:`n2f2_fuse`)
=============  =====================================================================================================

Pixels that count: as the GAGS release, a head whose target mixes levels, or takes one level in the GAGS ablations,
uses the pixels covered at all three levels (``read_sam_clip_feature``'s mask); a LangSplat head uses the pixels
covered at its own level (LangSplat ``train.py``). Regions (region-aware loss, feature consistency) come from the argmax
of the smoothed level weights for every head, as the release computes them with ``--single_scale`` too: a one-level
head uses that level's segments, ``avg`` (all weights tie) the sub-part level's. LangSplat heads use LangSplat's plain
masked L1 only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gags.errors import GagsError

METHODS = ("gags", "avg", "level-s", "level-m", "level-l", "langsplat", "n2f2")
LEVEL_NAMES = ("s", "m", "l")
"""The three granularity levels, in the order of rows 1, 2, 3 of a LangSplat ``_s`` map."""
LANGSPLAT_CODE_DIM = 3
"""LangSplat's per-level feature size (its autoencoder's code)."""

N2F2_PHRASES: tuple[str, ...] = ("object", "thing", "stuff", "part", "texture")
"""Generic phrases whose relevancy weighs the levels in the N2F2-style fusion (GAGS paper, Eq. 9)."""
N2F2_TEMPERATURE = 10.0
"""Softmax temperature over the levels' mean cosine to the generic phrases (LERF's relevancy temperature, 10)."""
N2F2_CHUNK = 65536
"""Gaussians decoded at once during the fusion (bounds memory: chunk x levels x 512 floats)."""


@dataclass(frozen=True)
class Head:
    """One rendered feature slice and its target.

    start, dim: channels ``[start, start + dim)`` of the per-Gaussian feature.
    weights: fixed level weights (s, m, l), or None when the granularity decoder predicts them per pixel (GaD).
    normalize_target: L2-normalise the mixed target (the ``avg`` baseline).
    coverage: None = pixels covered at all three levels count; k = pixels covered at level k (0 = s) count.
    """

    start: int
    dim: int
    weights: tuple[float, float, float] | None
    normalize_target: bool = False
    coverage: int | None = None

    @property
    def channels(self) -> slice:
        return slice(self.start, self.start + self.dim)

    @property
    def learned(self) -> bool:
        return self.weights is None


@dataclass(frozen=True)
class MethodSpec:
    """How a method is trained: its heads, and whether the heads' features go through the feature decoder
    (``"feature"``: one decoder shared by every head, 512-d output) or are compared with autoencoder codes
    (``"codes"``: LangSplat)."""

    name: str
    heads: tuple[Head, ...]
    space: str

    @property
    def feature_dim(self) -> int:
        """Channels of the per-Gaussian feature (and of the rendered map)."""
        return sum(h.dim for h in self.heads)

    @property
    def learned_granularity(self) -> bool:
        return any(h.learned for h in self.heads)


def one_hot(level: int) -> tuple[float, float, float]:
    w = [0.0, 0.0, 0.0]
    w[level] = 1.0
    return (w[0], w[1], w[2])


def method_spec(method: str, feature_dim: int) -> MethodSpec:
    """The heads of ``method`` with a ``feature_dim``-d feature per head (LangSplat: 3 per level, fixed)."""
    if method not in METHODS:
        raise GagsError(f"unknown distillation method {method!r}; choose one of {', '.join(METHODS)}.")
    if feature_dim < 1:
        raise GagsError(f"--feature-dim must be >= 1, got {feature_dim}.")
    if method == "gags":
        heads: tuple[Head, ...] = (Head(0, feature_dim, None),)
    elif method == "avg":
        third = 1.0 / 3.0
        heads = (Head(0, feature_dim, (third, third, third), normalize_target=True),)
    elif method.startswith("level-"):
        heads = (Head(0, feature_dim, one_hot(LEVEL_NAMES.index(method[len("level-"):]))),)
    elif method == "langsplat":
        d = LANGSPLAT_CODE_DIM
        heads = tuple(Head(k * d, d, one_hot(k), coverage=k) for k in range(3))
        return MethodSpec(method, heads, "codes")
    else:  # n2f2
        heads = tuple(Head(k * feature_dim, feature_dim, one_hot(k)) for k in range(3))
    return MethodSpec(method, heads, "feature")


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
