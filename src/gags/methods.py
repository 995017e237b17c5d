"""The registry of language-field methods: one entry per ``gags distill --method NAME``.

Every place that lists methods (the CLI's choices, the demo's ``--baselines``, the ablation's rows and labels, the
report's tables, the query code) reads them from :data:`METHODS`; adding a method is an entry here plus what it trains.

A method trained by the shared distillation loop (:mod:`gags.distill.train`) is a list of *heads*: each a slice of the
per-Gaussian feature that is rendered, decoded and compared with a target built from the three granularity levels
(sub-part s, part m, whole l) of the LangSplat ``_f``/``_s`` data:

=============  =====================================================================================================
``gags``       one 16-d head; level weights g from the granularity decoder; target ``sum_k g_k f_k`` (GaD)
``avg``        one 16-d head; fixed weights (1/3, 1/3, 1/3); target the normalised mean of the three levels
               (the GAGS paper's Model 1/7; the release's ``--single_scale mix``)
``level-s|m|l``  one 16-d head; one level as target (Models 4-6; the release's ``--single_scale s|m|l``)
``langsplat``  three 3-d heads, one per level, rendered together; targets are the level features encoded by LangSplat's
               autoencoder; LangSplat's masked L1 on the rendered 3-d code (no decoder is trained)
``n2f2``       three 16-d heads sharing one feature decoder, one per level; after training the three per-Gaussian
               features are fused with weights from each level's relevancy to generic phrases
               (:func:`gags.distill.baselines.n2f2_fuse`)
``langsplat-v2``  three 64-d heads, one per level: per-Gaussian logits whose top-4 softmax (renormalised) is rendered
               and decoded by the level's learned 64-entry codebook of CLIP features (LangSplatV2's sparse coefficient
               field); cosine loss to the level's feature at the pixels covered at that level
=============  =====================================================================================================

Pixels that count: as the GAGS release, a head whose target mixes levels, or takes one level in the GAGS ablations,
uses the pixels covered at all three levels (``read_sam_clip_feature``'s mask); a LangSplat head uses the pixels
covered at its own level (LangSplat ``train.py``). Regions (region-aware loss, feature consistency) come from the argmax
of the smoothed level weights for every head, as the release computes them with ``--single_scale`` too: a one-level
head uses that level's segments, ``avg`` (all weights tie) the sub-part level's. LangSplat heads use LangSplat's plain
masked L1 only.

This module imports nothing heavy: the CLI reads it to list its choices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gags.errors import GagsError
from gags.levels import LEVELS, NUM_LEVELS

LANGSPLAT_CODE_DIM = 3
"""LangSplat's per-level feature size (its autoencoder's code)."""
SPARSE_CODEBOOK_SIZE = 64
"""LangSplatV2's codebook entries per level (train.sh: --codebook_size 64, one layer)."""
SPARSE_TOP_K = 4
"""LangSplatV2's non-zero coefficients per Gaussian and level (train.sh: --topk 4)."""


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


Space = Literal["feature", "codes", "sparse"]


@dataclass(frozen=True)
class MethodSpec:
    """How a method is trained: its heads, and whether the heads' features go through the feature decoder
    (``"feature"``: one decoder shared by every head, 512-d output), are compared with autoencoder codes
    (``"codes"``: LangSplat), or are sparse coefficients over per-level codebooks (``"sparse"``: LangSplatV2; the
    per-Gaussian feature holds logits, rendered as their top-k softmax)."""

    name: str
    heads: tuple[Head, ...]
    space: Space

    @property
    def feature_dim(self) -> int:
        """Channels of the per-Gaussian feature (and of the rendered map)."""
        return sum(h.dim for h in self.heads)

    @property
    def learned_granularity(self) -> bool:
        return any(h.learned for h in self.heads)


def one_hot(index: int) -> tuple[float, float, float]:
    """Fixed level weights that take level ``index`` (0 = sub-part) alone."""
    w = [0.0] * NUM_LEVELS
    w[index] = 1.0
    return (w[0], w[1], w[2])


Build = Literal["distill", "lift"]
"""How ``gags distill`` makes a method's field."""
Query = Literal["one-map", "level-pick"]
"""How a field answers a query: one relevancy map, or one per level of which the evaluation protocol picks one
(LangSplat: the level with the highest smoothed maximum)."""


@dataclass(frozen=True)
class Method:
    """One entry of the registry.

    name: the ``--method`` value and the folder ``OUT/field/NAME``; label: its row in tables;
    description: one line for ``--help`` and the report; paper: where it comes from;
    heads: given the per-head feature size (``--feature-dim``), what the distillation loop trains (None for a method
    that is not trained);
    target: the reading of the segment stage's three levels that the field is trained to reproduce, as
    ``gags bench ladder`` names it (``pick``: per query the level LangSplat's protocol picks; ``avg``: the mean of the
    levels; ``level-s|m|l``: one level), so that the ladder can say how much of it the field keeps;
    query: how the field is queried; needs_encoder: distillation itself embeds text (with the segment stage's encoder);
    build: how ``gags distill`` makes the field: ``distill`` (the training loop of :mod:`gags.distill.train`) or
    ``lift`` (training-free, :mod:`gags.distill.lift`).
    """

    name: str
    label: str
    description: str
    paper: str
    heads: Callable[[int], MethodSpec] | None
    target: str
    query: Query = "one-map"
    needs_encoder: bool = False
    build: Build = "distill"

    def spec(self, feature_dim: int) -> MethodSpec:
        """What this method trains with a ``feature_dim``-d feature per head."""
        if self.heads is None:
            raise GagsError(f"method {self.name!r} is not trained by the distillation loop (built by: {self.build}).")
        if feature_dim < 1:
            raise GagsError(f"--feature-dim must be >= 1, got {feature_dim}.")
        return self.heads(feature_dim)


def _gags(d: int) -> MethodSpec:
    return MethodSpec("gags", (Head(0, d, None),), "feature")


def _avg(d: int) -> MethodSpec:
    third = 1.0 / NUM_LEVELS
    return MethodSpec("avg", (Head(0, d, (third, third, third), normalize_target=True),), "feature")


def _single_level(index: int) -> Callable[[int], MethodSpec]:
    def heads(d: int) -> MethodSpec:
        return MethodSpec(f"level-{LEVELS[index].code}", (Head(0, d, one_hot(index)),), "feature")
    return heads


def _langsplat(_: int) -> MethodSpec:
    d = LANGSPLAT_CODE_DIM
    return MethodSpec("langsplat", tuple(Head(lv.index * d, d, one_hot(lv.index), coverage=lv.index)
                                         for lv in LEVELS), "codes")


def _langsplat_v2(_: int) -> MethodSpec:
    k = SPARSE_CODEBOOK_SIZE
    return MethodSpec("langsplat-v2", tuple(Head(lv.index * k, k, one_hot(lv.index), coverage=lv.index)
                                            for lv in LEVELS), "sparse")


def _n2f2(d: int) -> MethodSpec:
    return MethodSpec("n2f2", tuple(Head(lv.index * d, d, one_hot(lv.index)) for lv in LEVELS), "feature")


GAGS_PAPER = "Peng et al., GAGS: Granularity-Aware Feature Distillation for Language Gaussian Splatting (2024)"
OCCAM_PAPER = "Cheng et al., Occam's LGS: An Efficient Approach for Language Gaussian Splatting (2024)"

_ENTRIES: tuple[Method, ...] = (
    Method("gags", "GaD (gags)", "one 16-d field; a granularity decoder picks the level per pixel (GaD)", GAGS_PAPER,
           _gags, target="pick"),
    Method("avg", "average of the levels", "one 16-d field fitted to the normalised mean of the three levels",
           f"{GAGS_PAPER}, Table 4 (Model 1/7)", _avg, target="avg"),
    *(Method(f"level-{lv.code}", f"{lv.display} level only", f"one 16-d field fitted to the {lv.display} level alone",
             f"{GAGS_PAPER}, Table 4 (Models 4-6)", _single_level(lv.index), target=f"level-{lv.code}")
      for lv in LEVELS),
    Method("langsplat", "LangSplat (3 fields)", "three 3-d fields through LangSplat's autoencoder, one per level",
           "Qin et al., LangSplat: 3D Language Gaussian Splatting (CVPR 2024)", _langsplat, target="pick",
           query="level-pick"),
    Method("n2f2", "N2F2-style fusion", "three 16-d fields fused per Gaussian by their relevancy to generic phrases",
           "Bhalgat et al., N2F2: Hierarchical Scene Understanding with Nested Neural Feature Fields (ECCV 2024); "
           f"as compared in {GAGS_PAPER}", _n2f2, target="pick", needs_encoder=True),
    Method("langsplat-v2", "LangSplatV2 (sparse codes)",
           "three fields of sparse coefficients (top-4 of 64) over learned per-level codebooks of CLIP features",
           "Li et al., LangSplatV2: High-dimensional 3D Language Gaussian Splatting with 450+ FPS (2025)",
           _langsplat_v2, target="pick", query="level-pick"),
    Method("lift", "lifting (3 levels)", "training-free: each Gaussian's blending-weighted mean of the 2D features of "
           "every training view, per level", OCCAM_PAPER, None, target="pick", query="level-pick", build="lift"),
    Method("lift-consistent", "lifting, consistent level",
           "training-free: per Gaussian, the level whose 2D features agree best across the views that see it",
           f"{OCCAM_PAPER}; the level choice follows {GAGS_PAPER}'s claim that the multi-view-consistent granularity "
           "is the right one", None, target="pick", build="lift"),
)

METHODS: dict[str, Method] = {m.name: m for m in _ENTRIES}
"""Every method, by name, in the order tables list them."""
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
"""``gags, avg, level-s, level-m, level-l, langsplat, n2f2, langsplat-v2, lift, lift-consistent``."""
BASELINES: tuple[str, ...] = tuple(n for n in METHOD_NAMES if n != "gags")
"""Every method but GaD: what ``gags demo --baselines`` may add."""
TRAINED: tuple[str, ...] = tuple(n for n in METHOD_NAMES if METHODS[n].build == "distill")
"""The methods the distillation loop trains."""

MethodName = Literal[METHOD_NAMES]  # type: ignore[valid-type]
"""The CLI's choices of ``--method`` (built from the registry)."""
BaselineName = Literal[BASELINES]  # type: ignore[valid-type]
"""The CLI's choices of ``gags demo --baselines``."""


def method(name: str) -> Method:
    """The registry entry of ``name``; GagsError listing the known methods otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise GagsError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}.") from None


def method_spec(name: str, feature_dim: int) -> MethodSpec:
    """What method ``name`` trains with a ``feature_dim``-d feature per head (LangSplat: 3 per level, fixed)."""
    return method(name).spec(feature_dim)


__all__ = ["BASELINES", "LANGSPLAT_CODE_DIM", "METHODS", "METHOD_NAMES", "TRAINED", "BaselineName", "Head", "Method",
           "MethodName", "MethodSpec", "method", "method_spec", "one_hot"]
