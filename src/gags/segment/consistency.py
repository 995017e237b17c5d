"""How consistently segments agree across views, and (on the procedural world) with the true parts.

**Carrying pixels.** Pixel (i, j) of view a, at depth ``D_a(i, j)`` (z along the optical axis), is back-projected from
its centre ``(j + 0.5, i + 0.5)`` to a world point X and projected into view b: X lands in pixel ``q`` of b at depth
``z``. The pixel is *carried* to q when X is in front of b, q lies in b, ``D_b(q) > 0`` and
``|D_b(q) - z| <= rel_tol * D_b(q)`` (X is what b sees at q, not hidden behind something nearer).

**Agreement of two labellings.** For labels ``A`` on pixels and labels ``B`` on the pixels they are paired with
(-1 = unlabelled; pairs where either is -1 are not counted), let ``n(s, t)`` count the pairs with A = s and B = t.
Each label s of A has a most frequent partner ``t*(s) = argmax_t n(s, t)``. The agreement of A with B is

    agreement(A -> B) = sum_s n(s, t*(s)) / sum_s sum_t n(s, t)

the pixel-weighted mean over A's labels of the fraction of their pixels that land in their most frequent partner.
It is 1 when every label of A lies inside one label of B, and it is computed with one ``unique`` over the (s, t) pairs.

**Multi-view consistency** of one level: the agreement of a view's segments with the other view's segments over the
pixels carried from a to b, pooled (counts summed) over every ordered pair (a, b) of overlapping views, so both
directions count:

    consistency = sum over pairs of sum_s n_ab(s, t*(s)) / sum over pairs of sum_s sum_t n_ab(s, t)

A segmentation that splits a surface differently in two views scores below 1. A trivial one (one segment per view)
scores 1, so read it with the number of segments and, on the procedural world, with:

**Purity and completeness against ground truth** (the ids/ maps of ``gags synth``, levels sub-part, part, whole):
purity = agreement(segments -> true parts) (a segment covers one true part), completeness = agreement(true parts ->
segments) (a true part lies in one segment), both per pixel of the same view.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gags.cameras import Camera
from gags.errors import GagsError
from gags.levels import NAMES as GT_LEVELS
from gags.levels import SEGMENT_ROWS as LEVEL_NAMES

CARRY_REL_TOL = 0.05
"""A carried pixel must land within 5% of the depth the other view sees there. Tighter than GaS's visibility test
(0.25, which only needs to tell surfaces apart along a ray): this keeps pixels that land on an occluder's silhouette
out of the count. Rendered depth of a reconstruction is accurate to ~1-2% (median) on the procedural scenes."""
MIN_OVERLAP = 0.1
"""Two views overlap when at least 10% of the first view's pixels (with depth) are carried into the second."""
OVERLAP_STRIDE = 4
"""Every 4th pixel per axis estimates the overlap of a pair (the metric itself uses every pixel)."""
"""Levels of LangSplat's _s maps."""
"""Levels of the procedural world's ids/ maps; level s, m, l of _s are compared with them in this order."""


def carry_pixels(
    depth_a: torch.Tensor, cam_a: Camera, depth_b: torch.Tensor, cam_b: Camera,
    rel_tol: float = CARRY_REL_TOL, stride: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels of view a carried into view b (module docstring).

    Args:
        depth_a: [H_a, W_a] z-depth of view a (0 = unknown); cam_a: its camera (same size).
        depth_b: [H_b, W_b]; cam_b: its camera.
        rel_tol: depth agreement needed in view b.
        stride: use every stride-th pixel of a per axis.
    Returns:
        src: [K] int64 flat pixel indices in a; dst: [K] int64 flat pixel indices in b.
    """
    for depth, cam in ((depth_a, cam_a), (depth_b, cam_b)):
        if tuple(depth.shape) != (cam.height, cam.width):
            raise GagsError(f"depth of view {cam.name!r} is {list(depth.shape)} but its camera is "
                            f"{cam.height}x{cam.width}; pass depth at the camera's size.")
    ha, wa = depth_a.shape
    ys = torch.arange(0, ha, stride)
    xs = torch.arange(0, wa, stride)
    src = (ys[:, None] * wa + xs[None, :]).reshape(-1)
    z = depth_a.reshape(-1)[src].double()
    keep = torch.isfinite(z) & (z > 0)
    src, z = src[keep], z[keep]
    u = (src % wa).double() + 0.5
    v = (src // wa).double() + 0.5
    K = cam_a.K.double()
    y_cam = (v - K[1, 2]) / K[1, 1]
    x_cam = (u - K[0, 2] - K[0, 1] * y_cam) / K[0, 0]
    cam_points = torch.stack([x_cam * z, y_cam * z, z], dim=1)
    R, t = cam_a.world_to_cam[:3, :3].double(), cam_a.world_to_cam[:3, 3].double()
    world = (cam_points - t) @ R  # R^T (p - t), row vectors
    uv, zb = cam_b.project(world)
    pix = torch.floor(uv)
    inside = (zb > 0) & (pix[:, 0] >= 0) & (pix[:, 0] < cam_b.width) & (pix[:, 1] >= 0) & (pix[:, 1] < cam_b.height)
    inside &= torch.isfinite(uv).all(dim=1)
    dst = (pix[:, 1].clamp(0, cam_b.height - 1) * cam_b.width + pix[:, 0].clamp(0, cam_b.width - 1)).long()
    seen = depth_b.reshape(-1)[dst].double()
    ok = inside & (seen > 0) & ((seen - zb).abs() <= rel_tol * seen)
    return src[ok], dst[ok]


def agreement_counts(labels_a: torch.Tensor, labels_b: torch.Tensor) -> tuple[int, int]:
    """(agreeing, counted) of ``agreement(A -> B)`` for paired labels (module docstring).

    labels_a, labels_b: [K] integer labels of the same K pairs; -1 (or any negative) = unlabelled, not counted.
    """
    a = labels_a.reshape(-1).long()
    b = labels_b.reshape(-1).long()
    if a.shape != b.shape:
        raise GagsError(f"agreement needs paired labels of one length; got {list(a.shape)} and {list(b.shape)}.")
    ok = (a >= 0) & (b >= 0)
    a, b = a[ok], b[ok]
    if len(a) == 0:
        return 0, 0
    _, ia = torch.unique(a, return_inverse=True)
    ub, ib = torch.unique(b, return_inverse=True)
    pairs, counts = torch.unique(ia * len(ub) + ib, return_counts=True)
    best = torch.zeros(int(ia.max()) + 1, dtype=torch.int64)
    best.scatter_reduce_(0, pairs // len(ub), counts, reduce="amax")
    return int(best.sum()), int(len(a))


def view_pairs(
    cameras: Sequence[Camera], depths: Sequence[torch.Tensor], min_overlap: float = MIN_OVERLAP,
    rel_tol: float = CARRY_REL_TOL, stride: int = OVERLAP_STRIDE,
) -> list[tuple[int, int, float]]:
    """Ordered pairs (a, b, overlap) of distinct views where at least ``min_overlap`` of a's pixels with depth (every
    ``stride``-th per axis) are carried into b."""
    pairs = []
    for a, (cam_a, depth_a) in enumerate(zip(cameras, depths, strict=True)):
        n_valid = int((depth_a[::stride, ::stride] > 0).sum())
        if n_valid == 0:
            continue
        for b, (cam_b, depth_b) in enumerate(zip(cameras, depths, strict=True)):
            if a == b:
                continue
            src, _ = carry_pixels(depth_a, cam_a, depth_b, cam_b, rel_tol, stride)
            overlap = len(src) / n_valid
            if overlap >= min_overlap:
                pairs.append((a, b, overlap))
    return pairs


def multiview_consistency(
    segments: Sequence[torch.Tensor], depths: Sequence[torch.Tensor], cameras: Sequence[Camera],
    pairs: Sequence[tuple[int, int]] | None = None, rel_tol: float = CARRY_REL_TOL,
    min_overlap: float = MIN_OVERLAP, level_names: Sequence[str] = LEVEL_NAMES,
) -> dict[str, Any]:
    """Per-level multi-view consistency (module docstring).

    Args:
        segments: V label maps [L, H_v, W_v] (e.g. LangSplat's _s: L = 4), -1 = no segment.
        depths: V z-depth maps [H_v, W_v]; cameras: V cameras of those sizes.
        pairs: ordered view pairs (a, b); default: every pair with ``min_overlap`` (``view_pairs``).
        level_names: names of the L levels.
    Returns:
        {"consistency": {level: value in [0, 1] or None when no pixel counts}, "pixels": {level: counted pixels},
         "pairs": number of ordered pairs, "segments_per_view": {level: mean number of segments}}.
    """
    if not (len(segments) == len(depths) == len(cameras)):
        raise GagsError(f"multiview_consistency needs one segment map, depth map and camera per view; got "
                        f"{len(segments)}, {len(depths)}, {len(cameras)}.")
    n_levels = len(level_names)
    for seg, cam in zip(segments, cameras, strict=True):
        if tuple(seg.shape) != (n_levels, cam.height, cam.width):
            raise GagsError(f"segment map of view {cam.name!r} is {list(seg.shape)}; expected "
                            f"[{n_levels}, {cam.height}, {cam.width}].")
    if pairs is None:
        pairs = [(a, b) for a, b, _ in view_pairs(cameras, depths, min_overlap, rel_tol)]
    agree = np.zeros(n_levels, dtype=np.int64)
    counted = np.zeros(n_levels, dtype=np.int64)
    flat = [seg.reshape(n_levels, -1).long() for seg in segments]
    for a, b in pairs:
        src, dst = carry_pixels(depths[a], cameras[a], depths[b], cameras[b], rel_tol)
        for k in range(n_levels):
            good, total = agreement_counts(flat[a][k][src], flat[b][k][dst])
            agree[k] += good
            counted[k] += total
    n_segments = np.zeros(n_levels)
    for seg in flat:
        for k in range(n_levels):
            n_segments[k] += len(torch.unique(seg[k][seg[k] >= 0]))
    return {
        "consistency": {name: (float(agree[k] / counted[k]) if counted[k] else None)
                        for k, name in enumerate(level_names)},
        "pixels": {name: int(counted[k]) for k, name in enumerate(level_names)},
        "pairs": len(pairs),
        "segments_per_view": {name: float(n_segments[k] / max(len(segments), 1)) for k, name in enumerate(level_names)},
    }


def purity_completeness(
    segments: Sequence[torch.Tensor], truth: Sequence[torch.Tensor],
    level_names: Sequence[str] = LEVEL_NAMES[1:], truth_names: Sequence[str] = GT_LEVELS,
) -> dict[str, dict[str, float | None]]:
    """Purity and completeness of every predicted level against every true level, pooled over views.

    Args:
        segments: V maps [L, H, W] of predicted labels (-1 = none), levels ``level_names``.
        truth: V maps [T, H, W] of true part ids (-1 = nothing), levels ``truth_names``, same H, W per view.
    Returns:
        {"LEVEL/TRUTH": {"purity": value, "completeness": value}} for every pair of levels (None when nothing counts).
    """
    if len(segments) != len(truth):
        raise GagsError(f"purity needs one ground-truth map per view; got {len(segments)} and {len(truth)}.")
    out: dict[str, dict[str, float | None]] = {}
    for k, name in enumerate(level_names):
        for g, truth_name in enumerate(truth_names):
            pure = [0, 0]
            complete = [0, 0]
            for seg, gt in zip(segments, truth, strict=True):
                if seg.shape[-2:] != gt.shape[-2:]:
                    raise GagsError(f"segment map {list(seg.shape)} and ground truth {list(gt.shape)} differ in size.")
                p = agreement_counts(seg[k].reshape(-1), gt[g].reshape(-1))
                c = agreement_counts(gt[g].reshape(-1), seg[k].reshape(-1))
                pure = [pure[0] + p[0], pure[1] + p[1]]
                complete = [complete[0] + c[0], complete[1] + c[1]]
            out[f"{name}/{truth_name}"] = {
                "purity": pure[0] / pure[1] if pure[1] else None,
                "completeness": complete[0] / complete[1] if complete[1] else None,
            }
    return out


def evaluate_segment_outputs(out: Path, truth_dir: Path | None = None, rel_tol: float = CARRY_REL_TOL,
                             min_overlap: float = MIN_OVERLAP) -> dict[str, Any]:
    """Consistency (and, with ``truth_dir``, purity) of the segments ``gags segment`` wrote into OUT.

    Reads the scene record, the ``_s`` maps and the rendered depth maps of OUT (``gags.workspace.Workspace``);
    ``truth_dir``: a folder of [3, H, W] id maps NAME.npy (``gags synth``'s ids/), resized (nearest) to the segment
    maps when sizes differ. Views without segments are left out.
    """
    from gags.config import SegmentConfig
    from gags.data.features import feature_paths, feature_stem
    from gags.segment.parallel import segmentation_downscale
    from gags.workspace import Workspace

    out = Path(out)
    ws = Workspace(out)
    scene = ws.load_scene()
    max_height = ws.segment_settings().get("max_height", SegmentConfig.max_height)
    segments, depths, cameras, truth = [], [], [], []
    for i, name in enumerate(scene.names):
        _, s_path = feature_paths(ws.features_dir, name)
        d_path = ws.depth_file(feature_stem(name))
        if not s_path.is_file() or not d_path.is_file():
            continue
        seg = torch.from_numpy(np.load(s_path).astype(np.int64))
        depth = torch.from_numpy(np.load(d_path).astype(np.float32))
        cam = scene.camera(i, segmentation_downscale(scene.cameras[i].height, max_height))
        segments.append(seg)
        depths.append(depth)
        cameras.append(cam)
        if truth_dir is not None:
            t_path = Path(truth_dir) / f"{feature_stem(name)}.npy"
            if not t_path.is_file():
                raise GagsError(f"ground truth {t_path} is missing; pass the ids/ folder of the synthetic scene.")
            ids = torch.from_numpy(np.load(t_path).astype(np.int64))
            if ids.shape[-2:] != seg.shape[-2:]:
                ids = torch.nn.functional.interpolate(ids[None].double(), size=seg.shape[-2:], mode="nearest")[0].long()
            truth.append(ids)
    if not segments:
        raise GagsError(f"{out} has no segment maps with rendered depth; run `gags segment {out}` first.")
    result = multiview_consistency(segments, depths, cameras, rel_tol=rel_tol, min_overlap=min_overlap)
    result["views"] = len(segments)
    if truth_dir is not None:
        result["purity"] = purity_completeness([s[1:] for s in segments], truth)
    return result


__all__ = [
    "agreement_counts", "carry_pixels", "evaluate_segment_outputs", "multiview_consistency", "purity_completeness",
    "view_pairs",
]
