"""Training-free language fields (Occam's LGS): each Gaussian's feature is the mean of the 2D features of the pixels
it contributes to, weighted by its blending weight (alpha times transmittance), over every training view.

For Gaussian i and level k (sub-part, part, whole)::

    F_ik = sum over views and pixels p of w_ip f_k(p) / sum over the same pixels of w_ip

where f_k(p) is the CLIP feature of the segment that covers p at level k (LangSplat's ``_f`` / ``_s``) and the sums
run over the pixels that have a segment at that level. The weights are never formed one by one: a render is linear in
the per-Gaussian colours, ``render(p) = sum_i w_ip c_i``, so the gradient of ``sum_p <render(p), g(p)>`` with respect to
the colours is ``sum_p w_ip g(p)``: one render and one backward pass per view with the level feature maps as ``g``
give every weighted sum at once, on any rasterizer backend (gsplat's CUDA kernels included). Since f_k is constant on
each segment, ``g`` is one indicator channel per segment of the view, and the features are multiplied in afterwards
(fewer channels than the 3 x D of the feature maps themselves). Channels are rendered in chunks of ``CHANNEL_CHUNK`` to
bound memory.

Two methods of the registry are built from one pass:

- ``lift``: the three levels' unit mean features, ``[N, 3 x D]`` (float16), queried as LangSplat's three fields are
  (per query, the level with the highest relevancy);
- ``lift-consistent``: per Gaussian, the level whose features agree best across the views that see it, measured by the
  length of the weighted mean of the unit features (1 when every pixel agrees, smaller as they spread; the mean
  resultant length), ``[N, D]``: one field that answers every query, a training-free test of the GAGS paper's claim that
  the multi-view-consistent granularity is the right one.

A Gaussian that no pixel with a segment sees gets a zero feature: it adds nothing to a rendered pixel's feature, and in
a 3D query its relevancy is 0.5 (the query does not beat the canonical phrases), so it is never selected at the default
threshold.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from gags.config import DistillConfig
from gags.distill.views import TrainView, load_views
from gags.errors import GagsError
from gags.field import DirectFeatures, LanguageField
from gags.io import ensure_dir, write_json
from gags.levels import NUM_LEVELS
from gags.splat.gaussians import FrozenGaussians
from gags.workspace import Workspace

CHANNEL_CHUNK = 512
"""Segment channels rendered at once: the render and its gradient map take ``H x W x CHANNEL_CHUNK`` floats per
view."""
LIFT_DOWNSCALE = 1.0
"""Views are lifted at their full size by default: there is no training cost to save."""


def segment_channels(view: TrainView) -> tuple[Tensor, Tensor, Tensor]:
    """The (level, segment) pairs present in a view, one render channel each.

    Returns (channel map [3, h, w] int64: the channel of each pixel's segment at each level, -1 where none; level [C]
    and ``_f`` row [C] of every channel), channels ordered by level, then row.
    """
    seg = view.seg.long()  # [3, h, w]
    rows = view.table.shape[0]
    level = torch.arange(NUM_LEVELS)[:, None, None]
    keys = torch.where(seg >= 0, level * rows + seg, torch.full_like(seg, -1))
    present, inverse = torch.unique(keys, return_inverse=True)  # sorted: -1 first when some pixel has no segment
    first = int((present < 0).sum())
    channel = inverse - first  # -1 stays -1
    kept = present[first:]
    return channel, kept // rows, kept % rows


def weighted_sums(gaussians: FrozenGaussians, views: Sequence[TrainView], progress: bool = True,
                  chunk: int = CHANNEL_CHUNK) -> tuple[Tensor, Tensor]:
    """Blending-weighted sums of the level features over every view.

    Returns (sums [N, 3, D], weights [N, 3]): sums of ``w_ip f_k(p)`` and of ``w_ip`` over the pixels covered at each
    level. A level's feature map is constant on each of its segments, so what is rendered is one indicator channel per
    (level, segment) of the view (:func:`segment_channels`; a few hundred at most, fewer than 3 x D): the gradient
    gives each Gaussian's weight inside every segment, W [N, C], and the sums are ``W @ table`` per level.
    """
    from gags.splat import rasterize

    if not views:
        raise GagsError("there are no training views. Check the scene's images and its train/test split.")
    dim = int(views[0].table.shape[1])
    n = len(gaussians)
    sums = torch.zeros(n, NUM_LEVELS, dim, dtype=torch.float64)
    weights = torch.zeros(n, NUM_LEVELS, dtype=torch.float64)
    g = gaussians
    for view in tqdm(views, desc="lift", unit="view", disable=not progress, leave=False):
        channel, level, row = segment_channels(view)
        cam = view.camera
        table = view.table.double()
        for start in range(0, len(level), chunk):
            stop = min(start + chunk, len(level))
            # [h w, C'] indicators of this chunk's channels: a pixel lights one channel per level
            inside = (channel >= start) & (channel < stop)  # [3, h, w]
            pixels = inside.nonzero()[:, 1:]  # [Q, 2] (y, x)
            indicator = torch.zeros(cam.height, cam.width, stop - start)
            indicator[pixels[:, 0], pixels[:, 1], channel[inside] - start] = 1.0
            colors = torch.zeros(n, stop - start, requires_grad=True)
            render, _, _ = rasterize(g.means, g.quats, g.scales, g.opacities, colors, cam.world_to_cam, cam.K,
                                     cam.width, cam.height)
            (grad,) = torch.autograd.grad((render * indicator).sum(), colors)  # [N, C']: weight inside each segment
            grad = grad.double()
            for k in range(NUM_LEVELS):  # W_k @ table_k, per level
                of_level = (level[start:stop] == k).nonzero().squeeze(1)
                if of_level.numel():
                    w_k = grad[:, of_level]
                    sums[:, k] += w_k @ table[row[start:stop][of_level]]
                    weights[:, k] += w_k.sum(1)
    return sums.float(), weights.float()


def lifted_levels(sums: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """(unit mean features [N, 3, D], agreement [N, 3]) from :func:`weighted_sums`.

    Agreement: the length of the weighted mean of the level's unit features, in [0, 1] (0 where nothing was seen).
    """
    mean = sums / weights.clamp_min(1e-12)[..., None]
    agreement = torch.where(weights > 0, mean.norm(dim=-1), torch.zeros_like(weights))
    return F.normalize(mean, dim=-1), agreement


def consistent_level(agreement: Tensor) -> Tensor:
    """[N] the level (0 sub-part, 1 part, 2 whole) with the highest agreement (the finest on ties)."""
    return agreement.argmax(dim=1)


def run_lift(config: DistillConfig) -> dict[str, Any]:
    """``gags distill --method lift | lift-consistent``: build the field (see the module docstring); returns the record
    written beside it."""
    from gags.methods import method

    start = time.perf_counter()
    entry = method(config.method)
    ws = Workspace(config.out)
    ws.require_scene()
    ws.require_gaussians()
    folder = ws.require_features()
    scene = ws.load_scene()
    if not scene.train_ids:
        raise GagsError(f"the scene in {ws.scene_json} has no training images.")
    downscale = float(config.downscale) if config.downscale is not None else LIFT_DOWNSCALE
    gaussians = FrozenGaussians.from_splats(ws.read_gaussians())
    views = load_views(scene, scene.train_ids, folder, downscale)
    sums, weights = weighted_sums(gaussians, views)
    features, agreement = lifted_levels(sums, weights)
    seen = (weights > 0).any(dim=1)
    facts: dict[str, Any] = {"seen_gaussians": int(seen.sum()), "num_gaussians": len(gaussians),
                             "mean_agreement": [float(v) for v in agreement[seen].mean(0)] if seen.any() else None}
    dim = features.shape[-1]
    if entry.name == "lift":
        field = LanguageField(entry.name, features.reshape(len(gaussians), -1), direct=DirectFeatures(NUM_LEVELS, dim))
    else:
        level = consistent_level(agreement)
        chosen = features[torch.arange(len(gaussians)), level]
        counts = torch.bincount(level[seen], minlength=NUM_LEVELS)
        facts["level_share"] = [float(v) for v in counts / max(1, int(seen.sum()))]
        field = LanguageField(entry.name, chosen, direct=DirectFeatures(1, dim))
    cam = views[0].camera
    record = {"method": entry.name, "build": "lift", "seconds": time.perf_counter() - start,
              "resolution": [cam.width, cam.height], "downscale": downscale, "num_views": len(views),
              "clip_dim": dim, **facts}
    field.config.update({"method": entry.name, "downscale": downscale, "seed": config.seed, "inputs": ws.inputs(),
                         **facts})
    ensure_dir(ws.field_dir(entry.name))
    write_json(ws.field_curves(entry.name), {**record, "history": []})
    field.save(ws.field_file(entry.name))  # last: its presence means the field is done
    print(f"gags distill: {entry.name}, {len(views)} views at {cam.width}x{cam.height}, {len(gaussians)} Gaussians "
          f"({facts['seen_gaussians']} seen), {record['seconds']:.1f} s -> {ws.field_file(entry.name)}")
    return record


__all__ = ["CHANNEL_CHUNK", "consistent_level", "lifted_levels", "run_lift", "segment_channels", "weighted_sums"]
