"""``gags segment``: granularity-aware segmentation (GaS) and 3-level CLIP features of every image of a scene.

Reads ``OUT/scene.json`` and ``OUT/gaussians.ply``; writes, per image ``NAME`` (the image file name up to its first
dot, as LangSplat names its files)::

    OUT/language_features/NAME_f.npy   [M, D] float16, L2-normalised CLIP features of the image's masks
    OUT/language_features/NAME_s.npy   [4, H, W] int32, per level (default, s, m, l) the row of _f, -1 = no mask
    OUT/prompts/NAME.npy               [P, 2] float32 prompt points (x, y) in pixels (pixel (i, j) covers
                                       [j, j+1) x [i, i+1)), at the segmentation resolution
    OUT/segment/depth/NAME.npy         [H, W] float32 rendered expected depth (0 where no Gaussian is hit)
    OUT/segment/config.json            the resolved settings: models (spec + a fingerprint of their weights), prompt
                                       mode, every threshold, the Gaussians' fingerprint
    OUT/segment/timings.json           seconds per step (wall and CPU), ``per_image_s`` and the run's totals

Steps (DESIGN.md "GaS"; constants in ``gags.config.SegmentConfig``):

1. Expected depth of every view of the scene (training and held-out), rendered from the Gaussians.
2. Every Gaussian centre projected into every view (``gags.segment.mindepth``): visibility, minimum depth, and per
   view a min-depth sample map.
3. Prompt points per view (``gags.segment.prompts``; ``--prompts gags | paper | uniform``), seeded with
   ``seed + view index`` so that views do not share one random stream and a resumed run draws the same points.
4. Per image: the segmenter sees the image (and the rendered depth, which the embedded hierarchy uses); points are
   asked in batches (identical points once), 3 masks each; masks failing the quality thresholds are dropped at once
   and the rest are kept bit-packed with their boxes; per level, box NMS over all of the image's candidates picks the
   survivors, which alone are unpacked and go through ``gags.segment.masks.granularity_levels`` (quality, box NMS,
   small regions, LangSplat's mask NMS). Running box NMS first on all candidates and again on the union of the
   per-level survivors gives exactly the same survivors (greedy NMS keeps the same set on any subset that contains
   every kept box), so the result is the release's while memory holds one bit per candidate pixel.
5. Per-level painting (larger masks first) into LangSplat's ``_s`` layout.
6. Every final mask cropped (``gags.models.crops.crop_masks``) and encoded in batches; a mask that appears in several
   levels (the default level holds all three granularities) is encoded once.

Resolution: images are segmented at their size in the scene (the cameras' width x height), except that images taller
than ``max_height`` (1080) are resized to that height, as LangSplat's and the GAGS release's ``preprocess.py`` do;
depth is rendered at that same resolution, ``min_region_area`` counts pixels at it, and ``_s`` has that size.

Resume: an image is done when its ``_s`` file exists (``_f`` is written first, ``_s`` last, each atomically), so after
an interruption (even ``kill -9``) the same command continues with the images not done and never recomputes a done
one. Depth maps and prompts are written once for every image not yet done; a rerun that finds them skips steps 1-3.
A rerun whose settings differ from ``OUT/segment/config.json`` (other models, weights, prompt mode, thresholds,
Gaussians) stops with a GagsError instead of mixing outputs; ``--overwrite`` deletes the stage's outputs and starts
over.

Existing LangSplat features: when ``OUT/language_features/`` already holds ``_f``/``_s`` files that this stage did not
write (no ``OUT/segment/config.json``), or ``--features DIR`` names such a folder (its files are copied into OUT), the
files are validated (shapes, dtypes, index ranges; a GagsError names the first bad file) and used as they
are.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import hashlib
import multiprocessing
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from tqdm.auto import tqdm

from gags.config import SegmentConfig
from gags.data.features import (LEVEL_NAMES, check_features, check_unique_stems, feature_paths, feature_stem, read_npy,
                                 write_language_features)
from gags.errors import GagsError
from gags.io import atomic_path, ensure_dir, read_json, write_json
from gags.threads import scoped_torch_threads

FEATURES_DIR = "language_features"
PROMPTS_DIR = "prompts"
STAGE_DIR = "segment"
DEPTH_DIR = "depth"
CONFIG_FILE = "config.json"
TIMINGS_FILE = "timings.json"
DEPTH_META_FILE = "meta.json"
RECORD_VERSION = 1

PREDICT_CHUNK_ELEMENTS = 1 << 26
"""Mask elements ([points, 3, H, W] booleans) asked of the segmenter at once: 64 MB, about 340 points at 256 x 256."""
FINGERPRINT_BYTES = 1 << 22
"""A weights file is fingerprinted by its size and the SHA-256 of its first and last 4 MiB (cheap for a 2.5 GB SAM
checkpoint, and any retrained or replaced weights change it)."""
STEPS = ("load", "segmenter_image", "predict", "filter", "paint", "crop", "encode", "write")
"""Per-image steps timed in timings.json (global steps: depth, visibility, prompts)."""


# ----------------------------------------------------------------------------------------------------------------------
# file names and layout


def segmentation_downscale(height: int, max_height: int) -> float:
    """Factor by which an image ``height`` pixels tall is reduced for segmentation (1 = full size)."""
    if max_height > 0 and height > max_height:
        return height / max_height
    return 1.0


# ----------------------------------------------------------------------------------------------------------------------
# fingerprints and the settings record


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json")
"""Files of a model folder (open_clip ``local-dir``) that make the model; its model card and training record do not."""
IGNORED_IN_FOLDERS = ("training.json",)


def file_fingerprint(path: Path) -> str:
    """Size and SHA-256 of the first and last ``FINGERPRINT_BYTES`` of a file (a folder: of each of its model files)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = (sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                    and p.name not in IGNORED_IN_FOLDERS) if path.is_dir() else [path])
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}:".encode())
        with open(file, "rb") as fh:
            digest.update(fh.read(FINGERPRINT_BYTES))
            if size > 2 * FINGERPRINT_BYTES:
                fh.seek(size - FINGERPRINT_BYTES)
                digest.update(fh.read(FINGERPRINT_BYTES))
            elif size > FINGERPRINT_BYTES:
                digest.update(fh.read())
    return digest.hexdigest()[:16]


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
def render_depth(gaussians: dict[str, torch.Tensor], camera) -> torch.Tensor:
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
    cameras: Sequence,
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


@dataclass
class StepTimer:
    """Wall and CPU (process) seconds per named step."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - wall
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


@dataclass
class Candidates:
    """Quality-passing masks of one image, bit-packed row by row.

    packed: [C, H, ceil(W / 8)] uint8 (``np.packbits`` along each image row); boxes: [C, 4] float32 (x0, y0, x1, y1,
    inclusive); predicted_iou, stability: [C] float32; granularity: [C] int64 (0 sub-part, 1 part, 2 whole);
    height, width: the image size; asked: points given to the segmenter (after removing identical points).
    """

    packed: np.ndarray
    boxes: torch.Tensor
    predicted_iou: torch.Tensor
    stability: torch.Tensor
    granularity: torch.Tensor
    height: int
    width: int
    asked: int

    def unpack(self, rows: torch.Tensor) -> torch.Tensor:
        """[K] rows -> [K, H, W] bool masks."""
        bits = np.unpackbits(self.packed[rows.numpy()], axis=2, count=self.width)
        return torch.from_numpy(bits.view(bool))


def packed_boxes(packed: np.ndarray, width: int) -> torch.Tensor:
    """Boxes of row-packed masks: [K, H, ceil(W / 8)] uint8 -> [K, 4] int64 (x0, y0, x1, y1), inclusive, as
    ``gags.segment.masks.masks_to_boxes`` ([0, 0, 0, 0] for an empty mask)."""
    k, height, _ = packed.shape
    rows = packed.any(axis=2)  # [K, H]
    cols = np.unpackbits(np.bitwise_or.reduce(packed, axis=1), axis=1, count=width).view(bool)  # [K, W]
    nonempty = rows.any(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = height - 1 - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = width - 1 - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([x0, y0, x1, y1], axis=1) * nonempty[:, None]
    return torch.from_numpy(boxes.astype(np.int64))


def candidate_masks(segmenter, points: torch.Tensor, height: int, width: int, pred_iou_thresh: float,
                    stability_thresh: float, chunk_elements: int = PREDICT_CHUNK_ELEMENTS) -> Candidates:
    """Ask the segmenter (``set_image`` already called) for 3 masks per point; keep those passing the quality test.

    points: [P, 2] pixel (x, y). Identical points are asked once (a segmenter's answer depends on the point only).
    Candidates keep SAM's order: point-major, then sub-part, part, whole (``masks.flatten(0, 1)``).
    """
    first = np.unique(points.detach().cpu().numpy().astype(np.float32).reshape(-1, 2), axis=0, return_index=True)[1]
    pts = points.detach().cpu().float().reshape(-1, 2)[np.sort(first)]
    per_call = max(1, chunk_elements // (3 * height * width))
    packed, ious, stabs, grans = [], [], [], []
    for start in range(0, len(pts), per_call):
        pred = segmenter.predict(pts[start:start + per_call])
        iou, stab = pred.scores.detach().cpu().float(), pred.stability.detach().cpu().float()
        keep = (iou > pred_iou_thresh) & (stab >= stability_thresh)  # [p, 3]
        if not keep.any():
            continue
        masks = pred.masks.detach().cpu().numpy().reshape(-1, height, width)  # [3p, H, W]
        # packing everything then selecting rows is ~5x cheaper than selecting the full masks first
        packed.append(np.packbits(masks, axis=2)[np.flatnonzero(keep.reshape(-1).numpy())])
        ious.append(iou[keep])
        stabs.append(stab[keep])
        grans.append(torch.nonzero(keep, as_tuple=True)[1])
    if not packed:
        return Candidates(np.zeros((0, height, (width + 7) // 8), np.uint8), torch.zeros((0, 4)), torch.zeros(0),
                          torch.zeros(0), torch.zeros(0, dtype=torch.int64), height, width, len(pts))
    all_packed = np.concatenate(packed)
    return Candidates(all_packed, packed_boxes(all_packed, width).float(), torch.cat(ious), torch.cat(stabs),
                      torch.cat(grans), height, width, len(pts))


def box_nms_survivors(cand: Candidates, box_nms_thresh: float) -> torch.Tensor:
    """Sorted rows of ``cand`` that survive box NMS in at least one level (default = all, s, m, l)."""
    keep = []
    everything = torch.arange(len(cand.boxes))
    groups = [everything] + [everything[cand.granularity == k] for k in range(3)]
    for rows in groups:
        if len(rows):
            keep.append(rows[torchvision.ops.nms(cand.boxes[rows], cand.predicted_iou[rows], box_nms_thresh)])
    if not keep:
        return torch.zeros(0, dtype=torch.int64)
    return torch.unique(torch.cat(keep))


@dataclass
class ImageResult:
    """features: [M, D] float16; segments: [4, H, W] int32 (LangSplat's _s); masks: masks per level."""

    features: np.ndarray
    segments: np.ndarray
    masks: dict[str, int]
    candidates: int
    points: int


def segment_image(rgb: np.ndarray, depth: np.ndarray | None, points: torch.Tensor, segmenter, encoder,
                  config: SegmentConfig, timer: StepTimer | None = None) -> ImageResult:
    """Steps 4-6 on one image.

    rgb: [H, W, 3] uint8; depth: [H, W] float32 rendered depth (0 = unknown) or None; points: [P, 2] pixel (x, y).
    """
    from gags.models.crops import crop_masks
    from gags.segment.masks import granularity_levels, langsplat_segment_maps

    timer = timer if timer is not None else StepTimer()
    height, width = rgb.shape[:2]
    with timer.step("segmenter_image"):
        segmenter.set_image(rgb, depth)
    with timer.step("predict"):
        cand = candidate_masks(segmenter, points, height, width, config.pred_iou_thresh, config.stability_thresh)
    with timer.step("filter"):
        rows = box_nms_survivors(cand, config.box_nms_thresh)
        levels = granularity_levels(
            cand.unpack(rows), cand.predicted_iou[rows], cand.stability[rows], cand.granularity[rows],
            pred_iou_thresh=config.pred_iou_thresh, stability_thresh=config.stability_thresh,
            box_nms_thresh=config.box_nms_thresh, min_region_area=config.min_region_area,
            nms_iou=config.mask_nms_iou, nms_score=config.mask_nms_score, nms_inner=config.mask_nms_inner,
        )
    per_level = [levels[name].masks for name in LEVEL_NAMES]
    with timer.step("paint"):
        segments = langsplat_segment_maps(per_level, config.paint_order).to(torch.int32).numpy()
    with timer.step("crop"):
        source = torch.cat([levels[name].source for name in LEVEL_NAMES])  # [M] candidate row of every _f row
        unique, row_of = torch.unique(source, return_inverse=True)  # the same candidate = the same cleaned mask
        first = torch.full((len(unique),), len(source), dtype=torch.int64)
        first.scatter_reduce_(0, row_of, torch.arange(len(source)), reduce="amin")
        all_masks = torch.cat(per_level) if len(source) else torch.zeros((0, height, width), dtype=torch.bool)
        crops = crop_masks(torch.from_numpy(np.require(rgb, requirements=['C', 'W'])), all_masks[first],
                           encoder.input_size)
    with timer.step("encode"):
        unique_features = encoder.encode_images(crops) if len(crops) else torch.zeros((0, encoder.dim))
        features = unique_features[row_of].to(torch.float16).numpy()
    return ImageResult(features, segments, {n: len(levels[n].masks) for n in LEVEL_NAMES}, len(cand.boxes),
                       cand.asked)


# ----------------------------------------------------------------------------------------------------------------------
# validation of a language_features folder (LangSplat's format)


def validate_language_features(folder: Path, names: Sequence[str], sizes: Sequence[tuple[int, int]],
                               required: Sequence[str]) -> dict[str, Any]:
    """Check LangSplat ``_f``/``_s`` files of images ``names``; raise GagsError naming the first bad file.

    sizes: the (width, height) of every image (``_s`` must have its aspect ratio, within a pixel of rounding);
    required: names whose files must exist (others are checked when present).
    ``_f``: [M, D] float16/float32, finite, D the same for every image. ``_s``: [4, H, W] integers (or floats holding
    integers, as LangSplat saves them), every value in [-1, M).
    Returns {"images": checked count, "dim": D, "missing": names without files}.
    """
    folder = Path(folder)
    dim = None
    checked, missing = 0, []
    must = set(required)
    for name, (width, height) in zip(names, sizes, strict=True):
        f_path, s_path = feature_paths(folder, name)
        if not f_path.is_file() or not s_path.is_file():
            if name in must:
                absent = f_path if not f_path.is_file() else s_path
                raise GagsError(f"{absent} is missing: {folder} has no features of training image {name!r}. Re-run "
                                "LangSplat's preprocessing for all images, or run `gags segment` without these files.")
            missing.append(name)
            continue
        feats, seg = read_npy(f_path), read_npy(s_path)
        if dim is not None and feats.ndim == 2 and feats.shape[1] != dim:
            raise GagsError(f"{f_path} has features of dimension {feats.shape[1]}, other images {dim}; every image "
                            "must be encoded by the same CLIP model.")
        check_features(feats, seg, f_path, s_path)
        dim = feats.shape[1]
        if abs(seg.shape[2] - seg.shape[1] * width / height) > 1.0:
            raise GagsError(f"{s_path} is {seg.shape[2]}x{seg.shape[1]} (W x H) but image {name!r} is "
                            f"{width}x{height}; the segment maps must have the image's aspect ratio.")
        checked += 1
    return {"images": checked, "dim": dim, "missing": missing}


def _has_feature_files(folder: Path) -> bool:
    return folder.is_dir() and (any(folder.glob("*_f.npy")) or any(folder.glob("*_s.npy")))


# ----------------------------------------------------------------------------------------------------------------------
# per-image work (in this process, in threads, or in worker processes)


class _ImageWorker:
    """Loads the scene and the models once; ``process(index)`` segments one image and writes its files."""

    def __init__(self, config: SegmentConfig) -> None:
        from gags.data import load_scene_json
        from gags.models import load_encoder, load_segmenter

        self.config = config
        self.out = Path(config.out)
        self.scene = load_scene_json(self.out)
        self.segmenter = load_segmenter(config.segmenter)
        self.encoder = load_encoder(config.encoder)

    def process(self, index: int) -> dict[str, Any]:
        config, scene = self.config, self.scene
        name = scene.names[index]
        stem = feature_stem(name)
        timer = StepTimer()
        with timer.step("load"):
            downscale = segmentation_downscale(scene.cameras[index].height, config.max_height)
            rgb = scene.load_image(index, downscale)
            depth = read_npy(self.out / STAGE_DIR / DEPTH_DIR / f"{stem}.npy").astype(np.float32)
            points = torch.from_numpy(read_npy(self.out / PROMPTS_DIR / f"{stem}.npy")).float()
            if depth.shape != rgb.shape[:2]:
                raise GagsError(f"{self.out / STAGE_DIR / DEPTH_DIR / (stem + '.npy')} is {depth.shape}, the image "
                                f"{rgb.shape[:2]}; delete {self.out / STAGE_DIR / DEPTH_DIR} and run again.")
        result = segment_image(rgb, depth, points, self.segmenter, self.encoder, config, timer)
        with timer.step("write"):
            write_language_features(self.out / FEATURES_DIR, name, result.features, result.segments)
        return {"index": index, "wall": timer.wall, "cpu": timer.cpu, "masks": result.masks,
                "candidates": result.candidates, "points": result.points, "dim": int(result.features.shape[1])}


def torch_threads(config: SegmentConfig) -> int:
    """PyTorch threads per worker: ``config.threads``, or the CPU cores shared among the workers."""
    if config.threads > 0:
        return config.threads
    return max(1, (os.cpu_count() or 1) // max(1, config.workers))


_PROCESS_WORKER: _ImageWorker | None = None  # one per worker process (set by _init_process_worker)


def _init_process_worker(config: SegmentConfig, threads: int) -> None:
    global _PROCESS_WORKER
    torch.set_num_threads(threads)
    _PROCESS_WORKER = _ImageWorker(config)


def _process_in_worker(index: int) -> dict[str, Any]:
    assert _PROCESS_WORKER is not None
    return _PROCESS_WORKER.process(index)


def _run_images(config: SegmentConfig, indices: Sequence[int]) -> Iterator[dict[str, Any]]:
    """Yield the per-image reports of ``indices`` as they finish (``config.workers`` at a time)."""
    workers = max(1, min(config.workers, len(indices)))
    threads = torch_threads(config)
    if workers == 1:
        with scoped_torch_threads(threads):
            worker = _ImageWorker(config)
            for index in indices:
                yield worker.process(index)
        return
    if config.parallel == "thread":
        local = threading.local()
        lock = threading.Lock()

        def run_one(index: int) -> dict[str, Any]:
            if not hasattr(local, "worker"):
                with lock:  # model construction is not thread-safe in every library
                    local.worker = _ImageWorker(config)
            return local.worker.process(index)

        with scoped_torch_threads(threads), futures.ThreadPoolExecutor(workers) as pool:
            yield from _as_completed(pool, run_one, indices)
        return
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads is not safe
    with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_process_worker,
                                     initargs=(config, threads)) as pool:
        yield from _as_completed(pool, _process_in_worker, indices)


def _as_completed(pool: futures.Executor, fn, indices: Sequence[int]) -> Iterator[dict[str, Any]]:
    pending = [pool.submit(fn, i) for i in indices]
    try:
        for fut in futures.as_completed(pending):
            yield fut.result()
    finally:
        for fut in pending:
            fut.cancel()


# ----------------------------------------------------------------------------------------------------------------------
# the stage


def _import_features(config: SegmentConfig, scene, features_dir: Path) -> dict[str, Any]:
    """Validate an existing LangSplat folder (``--features`` or OUT/language_features) and record it."""
    names = scene.names
    sizes = [(c.width, c.height) for c in scene.cameras]
    required = [names[i] for i in scene.train_ids] or names
    source = Path(config.features) if config.features is not None else features_dir
    if not source.is_dir():
        raise GagsError(f"--features {source} is not a folder; pass LangSplat's language_features/ folder.")
    report = validate_language_features(source, names, sizes, required)
    if config.features is not None and source.resolve() != features_dir.resolve():
        ensure_dir(features_dir)
        for name in names:
            for path in feature_paths(source, name):
                if path.is_file():
                    with atomic_path(features_dir / path.name) as tmp:
                        shutil.copyfile(path, tmp)
    write_json(Path(config.out) / STAGE_DIR / CONFIG_FILE, {
        "version": RECORD_VERSION, "source": "external", "from": str(source.resolve()), "dim": report["dim"],
        "images": report["images"], "missing": report["missing"]})
    print(f"gags segment: using existing LangSplat features from {source}: {report['images']} images, "
          f"{report['dim']}-d" + (f"; {len(report['missing'])} held-out image(s) without features" if report["missing"]
                                  else ""))
    return {"source": "external", **report}


def _stage_depths(config: SegmentConfig, gaussians: dict[str, torch.Tensor], cameras: Sequence,
                  fingerprint: str) -> tuple[list[torch.Tensor], float]:
    """Depth of every view: read from OUT/segment/depth when made from the same Gaussians at the same size, else
    rendered and written. Returns the maps and the seconds spent rendering."""
    depth_dir = Path(config.out) / STAGE_DIR / DEPTH_DIR
    meta_path = depth_dir / DEPTH_META_FILE
    meta = {"gaussians": fingerprint, "max_height": config.max_height}
    reuse = meta_path.is_file() and read_json(meta_path) == meta
    if not reuse and depth_dir.exists():
        shutil.rmtree(depth_dir)
    ensure_dir(depth_dir)
    write_json(meta_path, meta)
    depths, seconds = [], 0.0
    for cam in tqdm(cameras, desc="gags segment: depth", unit="view", leave=False):
        path = depth_dir / f"{feature_stem(cam.name)}.npy"
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


def run(config: SegmentConfig) -> dict[str, Any]:
    """Run the stage (see the module docstring); returns the summary written to OUT/segment/timings.json."""
    from gags.data import load_scene_json, read_ply

    wall_start = time.perf_counter()
    out = Path(config.out)
    scene = load_scene_json(out)
    if config.workers < 1:
        raise GagsError(f"--workers must be at least 1, got {config.workers}.")
    if config.threads < 0:
        raise GagsError(f"--threads must be >= 0 (0 = CPU cores / workers), got {config.threads}.")
    if config.max_height < 0:
        raise GagsError(f"--max-height must be >= 0 (0 = never resize), got {config.max_height}.")
    names = scene.names
    check_unique_stems(names, out)
    features_dir = out / FEATURES_DIR
    stage_dir = out / STAGE_DIR
    record_path = stage_dir / CONFIG_FILE
    if config.overwrite:
        for folder in (features_dir, out / PROMPTS_DIR, stage_dir):
            if folder.exists():
                shutil.rmtree(folder)

    record = read_json(record_path) if record_path.is_file() else None
    if config.features is not None:
        if record is not None and record.get("source") != "external":
            raise GagsError(f"{features_dir} already holds features computed by gags segment ({record_path}); pass "
                            "--overwrite to replace them with the folder given by --features.")
        return _import_features(config, scene, features_dir)
    if (record is None and _has_feature_files(features_dir)) or (record is not None and record.get("source") ==
                                                                  "external"):
        return _import_features(config, scene, features_dir)

    gaussians_path = out / "gaussians.ply"
    if not gaussians_path.is_file():
        raise GagsError(f"{gaussians_path} does not exist. Run `gags reconstruct` first (or put a 3DGS .ply there).")
    settings = resolved_settings(config, gaussians_path)
    if record is not None and record.get("settings") != settings:
        diff = _differences(record.get("settings", {}), settings)
        raise GagsError(f"{out} already holds segment outputs made with other settings ({diff}, as (then, now)); "
                        "mixing them would silently mix models. Run with the same settings to resume, or pass "
                        "--overwrite to discard them and start over.")
    ensure_dir(features_dir)
    write_json(record_path, {"version": RECORD_VERSION, "source": "gags segment", "settings": settings})

    pending = [i for i in range(len(names)) if not feature_paths(features_dir, names[i])[1].is_file()]
    if not pending:
        print(f"gags segment: all {len(names)} images already done in {features_dir}.")
        return {"images": 0, "done": len(names)}

    # steps 1-3 (skipped when every pending image already has its depth and prompts)
    timer = StepTimer()
    cameras = [scene.camera(i, segmentation_downscale(c.height, config.max_height))
               for i, c in enumerate(scene.cameras)]
    prompt_dir = ensure_dir(out / PROMPTS_DIR)
    depth_dir = stage_dir / DEPTH_DIR
    need = [i for i in pending if not (prompt_dir / f"{feature_stem(names[i])}.npy").is_file()
            or not (depth_dir / f"{feature_stem(names[i])}.npy").is_file()]
    rendered = 0.0
    if need:
        with timer.step("depth"), scoped_torch_threads(torch_threads(config)):
            gaussians = read_ply(gaussians_path)
            depths, rendered = _stage_depths(config, gaussians, cameras, settings["gaussians"])
        with timer.step("visibility_prompts"), scoped_torch_threads(torch_threads(config)):
            points = prompts_for_views(config, gaussians, cameras, depths, need)
            for i, pts in points.items():
                with atomic_path(prompt_dir / f"{feature_stem(names[i])}.npy") as tmp:
                    np.save(tmp, pts.numpy().astype(np.float32))

    # steps 4-6 per image
    sums_wall: dict[str, float] = {}
    sums_cpu: dict[str, float] = {}
    masks_total = {n: 0 for n in LEVEL_NAMES}
    counts = {"candidates": 0, "points": 0}
    dim = None
    bar = tqdm(total=len(pending), desc="gags segment", unit="image")
    start_images = time.perf_counter()
    try:
        for report in _run_images(config, pending):
            for key, value in report["wall"].items():
                sums_wall[key] = sums_wall.get(key, 0.0) + value
            for key, value in report["cpu"].items():
                sums_cpu[key] = sums_cpu.get(key, 0.0) + value
            for n in LEVEL_NAMES:
                masks_total[n] += report["masks"][n]
            counts["candidates"] += report["candidates"]
            counts["points"] += report["points"]
            dim = report["dim"]
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
        "workers": config.workers,
        "parallel": config.parallel if config.workers > 1 else "none",
        "resolution": [[c.width, c.height] for c in (cameras[pending[0]],)][0],
        "per_image_s": (sum(timer.wall.values()) + images_wall) / n,
        "models_load_s": images_wall - sum(sums_wall.values()) if config.workers == 1 else None,
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
    write_json(stage_dir / TIMINGS_FILE, summary)
    print(f"gags segment: {n} image(s) in {summary['total_wall_s']:.1f} s ({summary['per_image_s']:.2f} s per "
          f"image), {sum(masks_total.values()) / n:.0f} masks per image -> {features_dir}")
    return summary


__all__ = [
    "Candidates", "ImageResult", "StepTimer", "box_nms_survivors", "candidate_masks", "feature_paths", "feature_stem",
    "prompts_for_views", "render_depth", "resolved_settings", "run", "segment_image", "segmentation_downscale",
    "validate_language_features",
]
