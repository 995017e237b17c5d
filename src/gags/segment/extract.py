"""``gags segment``: granularity-aware segmentation (GaS) and 3-level CLIP features of every image of a scene.

Reads the scene record and the Gaussians of OUT; writes, per image ``NAME`` (the image file name up to its first dot, as
LangSplat names its files; paths of :class:`gags.workspace.Workspace`)::

    features_dir/NAME_f.npy   [M, D] float16, L2-normalised CLIP features of the image's masks
    features_dir/NAME_s.npy   [4, H, W] int32, per level (default, s, m, l) the row of _f, -1 = no mask
    prompt_file(NAME)         [P, 2] float32 prompt points (x, y) in pixels (pixel (i, j) covers [j, j+1) x [i, i+1)),
                              at the segmentation resolution
    depth_file(NAME)          [H, W] float32 rendered expected depth (0 where no Gaussian is hit)
    segment_config            the resolved settings: models (spec + a fingerprint of their weights), prompt mode,
                              every threshold, the Gaussians' fingerprint
    segment_timings           seconds per step (wall and CPU), ``per_image_s`` and the run's totals (written last)

Steps (the GAGS paper's granularity-aware segmentation, GaS; constants in ``gags.config.SegmentConfig``):

1. Expected depth of every view of the scene (training and held-out), rendered from the Gaussians.
2. Every Gaussian centre projected into every view (``gags.segment.mindepth``): visibility, minimum depth, and per
   view a min-depth sample map.
3. Prompt points per view (``gags.segment.prompts``; ``--prompts gags | paper | uniform``), seeded with
   ``seed + view index`` so that views do not share one random stream and a resumed run draws the same points.
4. Per image (:mod:`gags.segment.image`, run by :mod:`gags.segment.parallel`): the segmenter sees the image (and the
   rendered depth, which the embedded hierarchy uses); points are asked in batches (identical points once), 3 masks
   each; masks failing the quality thresholds are dropped at once and the rest are kept bit-packed with their boxes;
   per level, box NMS over all of the image's candidates picks the survivors, which alone are unpacked and go through
   ``gags.segment.masks.granularity_levels`` (quality, box NMS, small regions, LangSplat's mask NMS). Running box NMS
   first on all candidates and again on the union of the per-level survivors gives exactly the same survivors (greedy
   NMS keeps the same set on any subset that contains every kept box), so the result is the release's while memory
   holds one bit per candidate pixel.
5. Per-level painting (larger masks first) into LangSplat's ``_s`` layout.
6. Every final mask cropped (``gags.models.crops.crop_masks``) and encoded in batches; a mask that appears in several
   levels (the default level holds all three granularities) is encoded once.

Resolution: images are segmented at their size in the scene (the cameras' width x height), except that images taller
than ``max_height`` (1080) are resized to that height, as LangSplat's and the GAGS release's ``preprocess.py`` do;
depth is rendered at that same resolution, ``min_region_area`` counts pixels at it (by default the release's 100 px at
SAM's 1024-px scale, scaled to it), and ``_s`` has that size.

Resume: an image is done when its ``_s`` file exists (``_f`` is written first, ``_s`` last, each atomically), so after
an interruption (even ``kill -9``) the same command continues with the images not done and never recomputes a done
one. Depth maps and prompts are written once for every image not yet done; a rerun that finds them skips steps 1-3.
A rerun whose settings differ from the recorded ones (other models, weights, prompt mode, thresholds,
Gaussians) stops with a GagsError instead of mixing outputs; ``--overwrite`` deletes the stage's outputs and starts
over.

``--segmenter exact`` (:mod:`gags.segment.exact`, scenes made by ``gags synth`` only): steps 1-5 are replaced by the
scene's own entities at each level (a perfect segmenter); step 6 is the same. ``--segmenter oracle`` runs every step
with a perfect promptable segmenter (a point's masks are the entities that contain it).

Existing LangSplat features (:mod:`gags.segment.external`): when OUT's feature folder already holds ``_f``/``_s``
files that this stage did not write (no record), or ``--features DIR`` names such a folder (its files are copied into
OUT), the files are validated (shapes, dtypes, index ranges; a GagsError names the first bad file) and used as they
are.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from gags.cameras import Camera
from gags.config import SegmentConfig
from gags.data.features import check_unique_stems, feature_paths, feature_stem, read_npy
from gags.errors import GagsError
from gags.io import atomic_path, ensure_dir, read_json, write_json
from gags.levels import SEGMENT_ROWS
from gags.segment.exact import ENTITY_SEGMENTERS, EXACT, check_entity_ids
from gags.segment.external import RECORD_VERSION, has_feature_files, import_features
from gags.segment.image import STEPS
from gags.segment.parallel import run_images, segmentation_downscale, torch_threads
from gags.threads import scoped_torch_threads
from gags.timing import StepTimer
from gags.workspace import Workspace, file_fingerprint

RECORDED_FIELDS = (
    "segmenter", "encoder", "prompts", "seed", "max_height", "visibility_rel_tol", "patch_grid", "points_per_ratio",
    "max_points_per_side", "sub_patch_grid", "uniform_points_per_side", "pred_iou_thresh", "stability_thresh",
    "box_nms_thresh", "min_region_area", "mask_nms_iou", "mask_nms_score", "mask_nms_inner", "paint_order",
)
"""Settings that change the outputs; a rerun must agree on all of them (workers, overwrite and features do not)."""


def resolved_settings(config: SegmentConfig, gaussians_path: Path) -> dict[str, Any]:
    """The settings recorded in OUT/segment/config.json: RECORDED_FIELDS, plus fingerprints of the models' weights and
    of the Gaussians. Parsing the model specs here reports a wrong spec before any work starts."""
    from gags.models.specs import parse_encoder_spec, parse_segmenter_spec

    seg = parse_segmenter_spec(config.segmenter)
    enc = parse_encoder_spec(config.encoder)
    settings: dict[str, Any] = {name: getattr(config, name) for name in RECORDED_FIELDS}
    settings["segmenter_weights"] = None if seg.checkpoint is None else file_fingerprint(seg.checkpoint)
    settings["encoder_weights"] = file_fingerprint(enc.checkpoint)
    settings["gaussians"] = file_fingerprint(gaussians_path)
    return settings


def _differences(then: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    keys = sorted(set(then) | set(now))
    return {k: (then.get(k), now.get(k)) for k in keys if then.get(k) != now.get(k)}


# ----------------------------------------------------------------------------------------------------------------------
# steps 1-3: depth, visibility, prompts


@torch.no_grad()
def render_depth(gaussians: dict[str, torch.Tensor], camera: Camera) -> torch.Tensor:
    """Expected depth of one view: [H, W] float32 (0 where no Gaussian is hit).

    gaussians: ``gags.data.read_ply``'s dict (means [N, 3], quats [N, 4], scales [N, 3] log, opacities [N] logit).
    """
    from gags.splat import rasterize

    n = gaussians["means"].shape[0]
    render, _, _ = rasterize(
        gaussians["means"], gaussians["quats"], torch.exp(gaussians["scales"]), torch.sigmoid(gaussians["opacities"]),
        torch.zeros(n, 1), camera.world_to_cam, camera.K, camera.width, camera.height, render_mode="ED",
    )
    depth = render[..., 0].float()
    return torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros_like(depth))


def prompts_for_views(
    config: SegmentConfig,
    gaussians: dict[str, torch.Tensor],
    cameras: Sequence[Camera],
    depths: Sequence[torch.Tensor],
    views: Sequence[int],
) -> dict[int, torch.Tensor]:
    """Steps 2-3: prompt points ([P, 2] float32 pixel x, y) of ``views`` (indices into ``cameras``).

    Visibility and minimum depths use every view in ``cameras``; ``depths``: one [H_v, W_v] map per camera.
    """
    from gags.segment.mindepth import min_depth_sample_map, visibility_min_depth
    from gags.segment.prompts import prompt_points

    out: dict[int, torch.Tensor] = {}
    if config.prompts == "uniform":
        for v in views:
            out[v] = prompt_points("uniform", depths[v], uniform_per_side=config.uniform_points_per_side)
        return out
    min_depth, visible, pixels = visibility_min_depth(gaussians["means"].float(), cameras, depths,
                                                      rel_tol=config.visibility_rel_tol)
    for v in views:
        cam = cameras[v]
        samples, _ = min_depth_sample_map(min_depth, visible[v], pixels[v], cam.height, cam.width)
        out[v] = prompt_points(config.prompts, depths[v], samples, seed=config.seed + v, grid=config.patch_grid,
                               sub_grid=config.sub_patch_grid, points_per_ratio=config.points_per_ratio,
                               max_per_side=config.max_points_per_side)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# steps 4-6 on one image


# ----------------------------------------------------------------------------------------------------------------------
# the stage


def _stage_depths(ws: Workspace, config: SegmentConfig, gaussians: dict[str, torch.Tensor], cameras: Sequence[Camera],
                  fingerprint: str) -> tuple[list[torch.Tensor], float]:
    """Depth of every view: read from OUT's depth folder when made from the same Gaussians at the same size, else
    rendered and written. Returns the maps and the seconds spent rendering."""
    depth_dir, meta_path = ws.depth_dir, ws.depth_meta
    meta = {"gaussians": fingerprint, "max_height": config.max_height}
    reuse = meta_path.is_file() and read_json(meta_path) == meta
    if not reuse and depth_dir.exists():
        shutil.rmtree(depth_dir)
    ensure_dir(depth_dir)
    write_json(meta_path, meta)
    depths, seconds = [], 0.0
    for cam in tqdm(cameras, desc="gags segment: depth", unit="view", leave=False):
        path = ws.depth_file(feature_stem(cam.name))
        if path.is_file():
            depth = torch.from_numpy(read_npy(path).astype(np.float32))
            if tuple(depth.shape) == (cam.height, cam.width):
                depths.append(depth)
                continue
        start = time.perf_counter()
        depth = render_depth(gaussians, cam)
        seconds += time.perf_counter() - start
        with atomic_path(path) as tmp:
            np.save(tmp, depth.numpy().astype(np.float32))
        depths.append(depth)
    return depths, seconds


def validate(config: SegmentConfig) -> None:
    """GagsError for an option out of its range, before anything is read or written."""
    positive = {"--workers": config.workers, "--patch-grid": config.patch_grid,
                "--points-per-ratio": config.points_per_ratio, "--max-points-per-side": config.max_points_per_side,
                "--sub-patch-grid": config.sub_patch_grid, "--uniform-points-per-side": config.uniform_points_per_side}
    for name, value in positive.items():
        if value < 1:
            raise GagsError(f"{name} must be at least 1, got {value}.")
    counts: dict[str, int | None] = {"--threads": config.threads, "--max-height": config.max_height,
                                     "--min-region-area": config.min_region_area}
    for name, count in counts.items():
        if count is not None and count < 0:
            raise GagsError(f"{name} must be >= 0, got {count}.")
    fractions = {"--pred-iou-thresh": config.pred_iou_thresh, "--stability-thresh": config.stability_thresh,
                 "--box-nms-thresh": config.box_nms_thresh, "--mask-nms-iou": config.mask_nms_iou,
                 "--mask-nms-score": config.mask_nms_score, "--mask-nms-inner": config.mask_nms_inner}
    for name, fraction in fractions.items():
        if not 0.0 <= fraction <= 1.0:  # also refuses NaN
            raise GagsError(f"{name} must be a number in [0, 1], got {fraction}.")
    if not 0.0 < config.visibility_rel_tol < 1.0:
        raise GagsError(f"--visibility-rel-tol must be in (0, 1), got {config.visibility_rel_tol}.")
    if config.ray is not None:
        from gags.cluster import RaySlot, require_ray

        require_ray()
        RaySlot(config.ray_cpus_per_worker, config.ray_gpus_per_worker).check("--ray-cpus-per-worker",
                                                                                     "--ray-gpus-per-worker")
        if config.ray_workers < 0:
            raise GagsError(f"--ray-workers must be >= 0 (0: as many as the cluster fits), got {config.ray_workers}.")
        if config.workers > 1:
            raise GagsError(f"--workers {config.workers} counts workers on this machine; with --ray, say how many Ray "
                            "workers with --ray-workers N (0: as many as the cluster fits).")
    if config.features is not None and not Path(config.features).is_dir():
        raise GagsError(f"--features {config.features} is not a folder; pass the folder of LangSplat's _f.npy / "
                        "_s.npy files.")


def run(config: SegmentConfig) -> dict[str, Any]:
    """Run the stage (see the module docstring); returns the summary written to ``Workspace.segment_timings``.

    Every option and both model specs are checked before anything is written. ``--overwrite`` keeps the previous
    outputs until the new run succeeds (``Workspace.replacing``): a failed or interrupted run puts them back.
    """
    validate(config)
    ws = Workspace(Path(config.out))
    scene = ws.load_scene()
    check_unique_stems(scene.names, ws.root)
    if config.features is None:
        resolved_settings(config, ws.require_gaussians())  # a wrong model spec or checkpoint is reported here
        ws.read_gaussians()  # an empty or corrupt PLY too
        if config.segmenter in ENTITY_SEGMENTERS:
            check_entity_ids(scene, config.segmenter)
    with ws.lock("segment"):
        if config.overwrite:
            with ws.replacing("segment", ws.segment_outputs):
                return _run(config, ws, scene)
        return _run(config, ws, scene)


def _run(config: SegmentConfig, ws: Workspace, scene: Any) -> dict[str, Any]:
    wall_start = time.perf_counter()
    out = ws.root
    names = scene.names
    features_dir = ws.features_dir
    record_path = ws.segment_config
    record = ws.segment_record()
    if config.features is not None:
        if record is not None and record.get("source") != "external":
            raise GagsError(f"{features_dir} already holds features computed by gags segment ({record_path}); pass "
                            "--overwrite to replace them with the folder given by --features.")
        return import_features(config, scene)
    if (record is None and has_feature_files(features_dir)) or (record is not None and record.get("source") ==
                                                                 "external"):
        return import_features(config, scene)

    gaussians_path = ws.require_gaussians()
    settings = resolved_settings(config, gaussians_path)
    if record is not None and record.get("settings") != settings:
        diff = _differences(record.get("settings", {}), settings)
        raise GagsError(f"{out} already holds segment outputs made with other settings ({diff}, as (then, now)); "
                        "mixing them would silently mix models. Run with the same settings to resume, or pass "
                        "--overwrite to discard them and start over.")
    ensure_dir(features_dir)
    ws.write_segment_record({"version": RECORD_VERSION, "source": "gags segment", "settings": settings})

    pending = [i for i in range(len(names)) if not feature_paths(features_dir, names[i])[1].is_file()]
    if not pending:
        print(f"gags segment: all {len(names)} images already done in {features_dir}.")
        return {"images": 0, "done": len(names)}

    # steps 1-3 (skipped when every pending image already has its depth and prompts)
    timer = StepTimer()
    cameras = [scene.camera(i, segmentation_downscale(c.height, config.max_height))
               for i, c in enumerate(scene.cameras)]
    exact = config.segmenter == EXACT  # the scene's own entities need no depth and no prompts
    need = [] if exact else [i for i in pending if not ws.prompt_file(feature_stem(names[i])).is_file()
                             or not ws.depth_file(feature_stem(names[i])).is_file()]
    rendered = 0.0
    if need:
        ensure_dir(ws.prompts_dir)
        with timer.step("depth"), scoped_torch_threads(torch_threads(config)):
            gaussians = ws.read_gaussians()
            depths, rendered = _stage_depths(ws, config, gaussians, cameras, settings["gaussians"])
        with timer.step("visibility_prompts"), scoped_torch_threads(torch_threads(config)):
            points = prompts_for_views(config, gaussians, cameras, depths, need)
            for i, pts in points.items():
                with atomic_path(ws.prompt_file(feature_stem(names[i]))) as tmp:
                    np.save(tmp, pts.numpy().astype(np.float32))

    # steps 4-6 per image
    sums_wall: dict[str, float] = {}
    sums_cpu: dict[str, float] = {}
    masks_total = dict.fromkeys(SEGMENT_ROWS, 0)
    counts = {"candidates": 0, "points": 0}
    dim = None
    actors = None
    bar = tqdm(total=len(pending), desc="gags segment", unit="image")
    start_images = time.perf_counter()
    try:
        for report in run_images(config, pending):
            for key, value in report["wall"].items():
                sums_wall[key] = sums_wall.get(key, 0.0) + value
            for key, value in report["cpu"].items():
                sums_cpu[key] = sums_cpu.get(key, 0.0) + value
            for row in SEGMENT_ROWS:
                masks_total[row] += report["masks"][row]
            counts["candidates"] += report["candidates"]
            counts["points"] += report["points"]
            dim = report["dim"]
            actors = report.get("actors", actors)
            bar.update(1)
    finally:
        bar.close()
    images_wall = time.perf_counter() - start_images

    n = len(pending)
    global_wall = {k: v / n for k, v in timer.wall.items()}
    steps_wall = {k: sums_wall.get(k, 0.0) / n for k in STEPS}
    summary = {
        "images": n,
        "done": len(names),
        "views_rendered_s": rendered,
        "workers": actors if config.ray is not None else config.workers,
        "parallel": "ray" if config.ray is not None else config.parallel if config.workers > 1 else "none",
        "resolution": [[c.width, c.height] for c in (cameras[pending[0]],)][0],
        "per_image_s": (sum(timer.wall.values()) + images_wall) / n,
        "images_wall_s": images_wall,
        "models_load_s": images_wall - sum(sums_wall.values()) if config.workers == 1 and config.ray is None else None,
        "global_s_per_image": global_wall,
        "steps_s_per_image": steps_wall,
        "global_cpu_s_per_image": {k: v / n for k, v in timer.cpu.items()},
        "steps_cpu_s_per_image": {k: sums_cpu.get(k, 0.0) / n for k in STEPS},
        "masks_per_image": {k: v / n for k, v in masks_total.items()},
        "candidates_per_image": counts["candidates"] / n,
        "points_per_image": counts["points"] / n,
        "feature_dim": dim,
        "total_wall_s": time.perf_counter() - wall_start,
        "cpu_count": os.cpu_count(),
        "torch_threads_per_worker": torch_threads(config),
    }
    write_json(ws.segment_timings, summary)
    print(f"gags segment: {n} image(s) in {summary['total_wall_s']:.1f} s ({summary['per_image_s']:.2f} s per "
          f"image), {sum(masks_total.values()) / n:.0f} masks per image -> {features_dir}")
    return summary


__all__ = ["prompts_for_views", "render_depth", "resolved_settings", "run"]
