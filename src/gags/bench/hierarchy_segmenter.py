"""An embedded segmenter (the HierarchySegmenter by default): speed on 256 x 256 images, and mask quality on renders
of the procedural world.

    gags bench hierarchy-segmenter speed --images DIR [--points 64 400] [--repeats 5] [--out speed.json]
    gags bench hierarchy-segmenter quality [--seeds 2] [--seed-base 100] [--views 3] [--points 150]
        [--size 256] [--depth exact|points|none] [--mask-grid N] [--out quality.json]
        [--set thresholds=10,25,60 superpixel_area=100 ...] [--segmenter hierarchy|tinysam|oracle|SPEC]
        (--set: any HierarchySegmenter argument; --segmenter: any spec of gags segment, e.g. tinysam)

speed: set_image + predict on photos of ``--images`` (resized to 256 x 256; e.g. a Mip-NeRF 360 scene's images_4),
after one warm-up call.
quality: prompt points on the objects (not the table, floor or walls) of views rendered at ``--size`` x ``--size``
pixels (default 256) of every preset, worlds ``seed-base .. seed-base + seeds - 1``; for each point and level, the IoU
between the predicted mask and the exact mask of the entity under the point at that level ("iou"), and the best IoU of
any of the three predicted masks with it ("best"); the share of masks more than twice ("over_2x") or less than half
("under_half") the true area; the share of masks that pass the segment stage's filters (score >= 0.7,
stability >= 0.85); and by the true entity's area ("by_area", bins ``AREA_BINS`` of the image's area), the best IoU
and that best mask's precision (its share on the entity) and recall (the entity's share it covers): masks too large
for small entities read as low precision, parts of large entities left out as low recall.

``--mask-grid N`` scores every mask as drawn on an N x N grid (``through_grid``: its share of each cell, bilinearly
upsampled back to the image as SAM upsamples its masks, > 0.5). With ``--segmenter oracle`` (the true entities; the
bench gives it each view's ids) it measures how fine a segmenter's masks must be: e.g. at 128 px, ``--mask-grid 16``
is a mask as coarse as tinysam's token grid and ``--mask-grid 64`` one as fine as its decoder's masks.

Depth given to the segmenter (``--depth``): "exact", the renderer's z-depth; "points", the expected depth rendered
(``gags.splat.rasterize``) from Gaussians placed on surface samples of the views (as ``gags synth`` writes
points3d.ply) with nearest-neighbour scales and no training, i.e. what ``gags reconstruct`` starts from: blurred,
displaced edges, a pessimistic stand-in for the rendered depth the segment stage passes; "none", colour only.

The segmenter's constants were tuned on worlds 100-103 (``--seed-base 100 --seeds 4``); report held-out worlds
(``--seed-base 200``) beside them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gags.bench.provenance import provenance
from gags.config import BenchSegmenterConfig
from gags.errors import GagsError
from gags.io import write_json
from gags.levels import NAMES
from gags.models import HierarchySegmenter, Segmenter, load_segmenter

SPEED_POINTS = (64, 400)
"""speed: prompt points per image timed by default (a sparse and a dense prompt set)."""
QUALITY_POINTS = 150
"""quality: prompt points per view by default."""
PRESETS = ("ramen", "teatime", "figurines", "kitchen")
AREA_BINS = (1 / 512, 1 / 160, 1 / 40)
"""quality: bin edges of the true entity's area, as a share of the image (at 128 px: 32, 102 and 410 pixels; at the
demo's scale a sub-part of a few pixels, a small object, a bowl, a large object)."""
PRED_IOU_MIN, STABILITY_MIN = 0.7, 0.85
"""The segment stage's mask filters (SAM automatic mask generator: pred_iou_thresh, stability_score_thresh)."""


def speed(config: BenchSegmenterConfig, counts: Sequence[int], seg: Segmenter) -> list[dict[str, Any]]:
    """set_image and predict times on ``config.repeats`` photos of ``config.images``, per number of prompt points."""
    if config.images is None or not Path(config.images).is_dir():
        raise GagsError(f"--images {config.images}: pass a folder of photos to time the segmenter on.")
    paths = sorted(p for p in Path(config.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    paths = paths[: config.repeats]
    if not paths:
        raise GagsError(f"no photos (png, jpg) in {config.images}.")
    images = [np.asarray(Image.open(p).convert("RGB").resize((256, 256), Image.Resampling.BILINEAR)) for p in paths]
    rng = np.random.default_rng(0)
    seg.set_image(images[0])  # warm-up: the first call imports scipy and scikit-image
    results = []
    for n_points in counts:
        set_times, predict_times = [], []
        for image in images:
            prompts = rng.uniform(0, 256, size=(n_points, 2)).astype(np.float32)
            t0 = time.perf_counter()
            seg.set_image(image)
            t1 = time.perf_counter()
            seg.predict(prompts)
            t2 = time.perf_counter()
            set_times.append(t1 - t0)
            predict_times.append(t2 - t1)
        total = np.add(set_times, predict_times)
        results.append({
            "points": n_points, "size": 256, "images": len(total),
            "set_image_s_median": float(np.median(set_times)), "predict_s_median": float(np.median(predict_times)),
            "total_s_median": float(np.median(total)), "total_s_max": float(np.max(total)),
        })
    return results


POINT_SAMPLES = 20_000
"""Surface samples behind the "points" depth (``gags synth``'s default point count)."""
POINT_OPACITY = 0.99
"""Opacity of those Gaussians (``gags reconstruct``'s initial opacity is of this order: nearly opaque)."""


def points_depth(cameras: list, renders: list, seed: int) -> list[np.ndarray]:
    """Expected depth [H, W] of every view, rendered from untrained Gaussians on surface samples of the views."""
    import torch

    from gags.splat import rasterize
    from gags.splat.gaussians import knn_rms_distance
    from gags.synth.scenes import surface_points

    xyz, _ = surface_points(cameras, renders, POINT_SAMPLES, seed)
    means = torch.from_numpy(xyz).float()
    spacing = knn_rms_distance(means)
    scales = spacing.clamp(1e-4, 2 * float(spacing.median()))[:, None].expand(-1, 3).contiguous()
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(len(means), -1).contiguous()
    opacities = torch.full((len(means),), POINT_OPACITY)
    depths = []
    for cam in cameras:
        out, _, _ = rasterize(means, quats, scales, opacities, torch.zeros(len(means), 1), cam.world_to_cam, cam.K,
                              cam.width, cam.height, render_mode="ED")
        depth = out[..., 0]
        depths.append(torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros_like(depth)).numpy())
    return depths


def through_grid(masks: np.ndarray, grid: int) -> np.ndarray:
    """masks [P, K, H, W] bool -> the same masks as drawn on a grid x grid grid: each cell's share of the mask (area
    average; H and W multiples of grid), upsampled bilinearly back to H x W as SAM's ``postprocess_masks`` upsamples,
    then above 0.5 (SAM keeps logits above its threshold, strictly)."""
    import torch
    import torch.nn.functional as F

    height, width = masks.shape[-2:]
    if height % grid or width % grid:
        raise GagsError(f"--mask-grid {grid} must divide the image's side ({height} x {width}); e.g. --size "
                        f"{grid * max(1, round(height / grid))}.")
    flat = torch.from_numpy(masks).float().flatten(0, 1)[:, None]  # [P K, 1, H, W]
    share = F.adaptive_avg_pool2d(flat, (grid, grid))
    back = F.interpolate(share, (height, width), mode="bilinear", align_corners=False) > 0.5
    return back[:, 0].reshape(masks.shape).numpy()


def quality(config: BenchSegmenterConfig, n_points: int, seg: Segmenter) -> dict[str, Any]:
    """IoU of the predicted masks with the exact entities under random points on the objects of rendered views
    (through ``through_grid`` with ``config.mask_grid``); a segmenter with ``set_ids`` (the oracle) is given each
    view's entity ids."""
    from gags.synth.raycast import compile_world, render
    from gags.synth.rig import sample_cameras
    from gags.synth.world import build_world

    rng = np.random.default_rng(0)
    ious: list[np.ndarray] = []
    bests: list[np.ndarray] = []
    passed: list[np.ndarray] = []
    over: list[np.ndarray] = []
    under: list[np.ndarray] = []
    precision: list[np.ndarray] = []
    recall: list[np.ndarray] = []
    share: list[np.ndarray] = []
    for preset in PRESETS:
        for seed in range(config.seed_base, config.seed_base + config.seeds):
            world = build_world(preset, seed)
            compiled = compile_world(world)
            cameras = sample_cameras(world, config.views, config.size, seed=seed)
            renders = [render(world, camera, supersample=2, compiled=compiled) for camera in cameras]
            depths: list[np.ndarray | None] = (list(points_depth(cameras, renders, seed)) if config.depth == "points"
                                               else [r.depth if config.depth == "exact" else None for r in renders])
            for r, depth in zip(renders, depths, strict=True):
                objects = ~np.isin(r.ids[2], list(world.background)) & (r.ids[2] >= 0)
                ys, xs = np.nonzero(objects)
                if len(ys) == 0:
                    continue
                pick = rng.integers(0, len(ys), n_points)
                prompts = np.stack([xs[pick], ys[pick]], 1).astype(np.float32) + 0.5
                if hasattr(seg, "set_ids"):
                    seg.set_ids(r.ids)
                seg.set_image(r.rgb, depth)
                prediction, scores, stability = seg.predict(prompts)
                masks = prediction.numpy()
                if config.mask_grid is not None:
                    masks = through_grid(masks, config.mask_grid)
                gt = np.stack([r.ids[k][None] == r.ids[k][ys[pick], xs[pick]][:, None, None] for k in range(3)], 1)
                inter = (masks[:, :, None] & gt[:, None]).sum((-1, -2))  # [P, predicted level, true level]
                union = (masks[:, :, None] | gt[:, None]).sum((-1, -2))
                iou = inter / np.maximum(union, 1)
                ious.append(np.stack([iou[:, k, k] for k in range(3)], 1))
                bests.append(iou.max(1))
                passed.append(((scores >= PRED_IOU_MIN) & (stability >= STABILITY_MIN)).numpy())
                area, true_area = masks.sum((-1, -2)), gt.sum((-1, -2))  # [P, 3]
                over.append(area > 2 * true_area)
                under.append(2 * area < true_area)
                best_k = iou.argmax(1)[:, None, :]  # [P, 1, true level]: the predicted mask that fits best
                best_inter = np.take_along_axis(inter, best_k, 1)[:, 0]  # [P, true level]
                precision.append(best_inter / np.maximum(np.take_along_axis(area[:, :, None], best_k, 1)[:, 0], 1))
                recall.append(best_inter / np.maximum(true_area, 1))
                share.append(true_area / float(r.ids.shape[-1] * r.ids.shape[-2]))
    iou_all, best_all, passed_all = np.concatenate(ious), np.concatenate(bests), np.concatenate(passed)
    over_all, under_all = np.concatenate(over), np.concatenate(under)
    return {
        "points": int(len(iou_all)), "levels": list(NAMES),
        "worlds": [config.seed_base, config.seed_base + config.seeds - 1], "depth": config.depth, "size": config.size,
        "mask_grid": config.mask_grid,
        "iou": iou_all.mean(0).round(4).tolist(), "iou_mean": round(float(iou_all.mean()), 4),
        "best": best_all.mean(0).round(4).tolist(), "best_mean": round(float(best_all.mean()), 4),
        "over_2x": over_all.mean(0).round(4).tolist(), "under_half": under_all.mean(0).round(4).tolist(),
        "pass_filters": passed_all.mean(0).round(4).tolist(),
        "by_area": by_area(best_all, np.concatenate(precision), np.concatenate(recall), np.concatenate(share)),
    }


def by_area(best: np.ndarray, precision: np.ndarray, recall: np.ndarray, share: np.ndarray) -> dict[str, Any]:
    """best, precision, recall, share [N, 3 levels] (share: the true entity's area / the image's) -> per bin of
    ``AREA_BINS`` (all levels together): points, mean best IoU, mean precision and recall of the best mask."""
    bins = np.digitize(share.ravel(), AREA_BINS)
    out: dict[str, Any] = {"edges": list(AREA_BINS), "points": [], "best": [], "precision": [], "recall": []}
    for b in range(len(AREA_BINS) + 1):
        sel = bins == b
        out["points"].append(int(sel.sum()))
        for key, values in (("best", best), ("precision", precision), ("recall", recall)):
            out[key].append(round(float(values.ravel()[sel].mean()), 4) if sel.any() else None)
    return out


def run(config: BenchSegmenterConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record it writes."""
    kwargs: dict[str, Any] = {}
    for item in config.set:
        if "=" not in item:
            raise GagsError(f"--set {item}: write NAME=VALUE, e.g. superpixel_area=100.")
        key, value = item.split("=", 1)
        kwargs[key] = tuple(float(v) for v in value.split(",")) if "," in value else float(value)
        if key == "superpixel_area":
            kwargs[key] = int(kwargs[key])
    if kwargs and config.segmenter != "hierarchy":
        raise GagsError(f"--set sets HierarchySegmenter arguments; it does not apply to --segmenter "
                        f"{config.segmenter}.")
    if config.mask_grid is not None and (config.what != "quality" or config.mask_grid < 1
                                         or config.size % config.mask_grid):
        raise GagsError(f"--mask-grid {config.mask_grid}: give it with quality, as a divisor of --size "
                        f"{config.size} (e.g. {config.size // 8}).")
    seg = HierarchySegmenter(**kwargs) if config.segmenter == "hierarchy" else load_segmenter(config.segmenter, "cpu")
    if config.what == "speed":
        result: dict[str, Any] = {"speed": speed(config, config.points or SPEED_POINTS, seg)}
    else:
        result = {"quality": quality(config, (config.points or (QUALITY_POINTS,))[0], seg),
                  "segmenter": config.segmenter, "params": dict(kwargs)}
    result["provenance"] = provenance()
    print(json.dumps(result, indent=2))
    if config.out is not None:
        write_json(config.out, result)
    return result


def record_label(record: dict[str, Any]) -> str:
    """A quality record's name in tables: its segmenter, and the grid its masks were drawn on (``--mask-grid``)."""
    grid = record["quality"].get("mask_grid")
    return record["segmenter"] + (f" on a {grid} x {grid} grid" if grid else "")


def quality_markdown(records: Sequence[dict[str, Any]]) -> str:
    """Quality records (one per segmenter) -> a row each: the best of its three masks against the true entity (whole,
    part, sub-part, mean), the mask the segment stage takes for each level (the three sorted by area) against that
    level's entity, and the share of masks passing the stage's filters."""
    lines = ["| segmenter | best of three: whole | part | sub-part | mean | as the segment stage reads them: whole / "
             "part / sub-part | masks passing the filters (whole/part/sub-part) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for record in records:
        q = record["quality"]
        best = q["best"]  # sub-part, part, whole
        own = " / ".join(f"{v:.2f}" for v in reversed(q["iou"]))
        passing = "/".join(f"{100 * v:.0f}%" for v in reversed(q["pass_filters"]))
        lines.append(f"| {record_label(record)} | {best[2]:.2f} | {best[1]:.2f} | {best[0]:.2f} | "
                     f"{q['best_mean']:.2f} | {own} | {passing} |")
    return "\n".join(lines)


def by_area_markdown(records: Sequence[dict[str, Any]]) -> str:
    """Quality records (``--out`` of ``quality``, one per segmenter) -> a table of ``by_area``: per bin of the true
    entity's area, best IoU / precision / recall of each segmenter's best mask (all levels together)."""
    edges = records[0]["quality"]["by_area"]["edges"]
    bounds = [0.0, *edges, 1.0]
    size = records[0]["quality"]["size"]
    names = [record_label(r) for r in records]
    lines = ["| true entity's area (share of the image; pixels at the size measured) | points | "
             + " | ".join(f"{n}: best IoU / precision / recall" for n in names) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
    for b in range(len(bounds) - 1):
        lo, hi = bounds[b], bounds[b + 1]
        label = f"{lo:.4f}-{hi:.4f} ({round(lo * size * size)}-{round(hi * size * size)} px)"
        cells = []
        for r in records:
            a = r["quality"]["by_area"]
            cells.append("-" if a["best"][b] is None else
                         f"{a['best'][b]:.2f} / {a['precision'][b]:.2f} / {a['recall'][b]:.2f}")
        lines.append(f"| {label} | {records[0]['quality']['by_area']['points'][b]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
