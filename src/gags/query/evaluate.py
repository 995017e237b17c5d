"""``gags eval``: the LERF-OVS protocol over the labelled frames of a scene.

``evaluate_frames`` scores relevancy maps that are already computed, whatever field made them; the stage (:func:`run`)
renders and decodes a language field and calls it per method, split and frame.

The stage, for every method with a field in ``OUT/field/`` and every split (labelled training views, labelled held-out
views, reported separately):

1. labels: ``--labels DIR`` or the synthetic scene's own ``ROOT/label`` (ROOT from OUT's scene record); frames are
   matched to images by name, then by frame number (``gags.data.labels.match_images``);
2. per labelled view: render the per-Gaussian features at the label resolution (``info.width x info.height``, divided
   by ``--downscale``; the camera's intrinsics are scaled per axis), decode every pixel once and score all the frame's
   categories at once against the canonical phrases (``gags.query.render``);
3. LERF-OVS localization and segmentation (``evaluate_frames``; several levels: ``choose_level``), at the label
   resolution, or enlarged to ``PROTOCOL_MIN_SIDE`` when the labels are smaller (the maps upsampled);
4. writes ``Workspace.eval_metrics(METHOD, SPLIT)`` (``miou``, ``loc_acc`` fractions in [0, 1], a per-query list,
   timings)
   and per query ``FRAME__LABEL_relevancy.png`` (the relevancy of the chosen level over the image, ground-truth boxes in
   green, the localization point as a cross) and ``FRAME__LABEL_mask.png`` (the predicted mask tinted, the rest dimmed,
   the ground-truth outline in green).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from gags import validate as check
from gags.config import EvalConfig
from gags.data.labels import FrameLabels, match_images
from gags.errors import GagsError
from gags.io import write_json
from gags.query import figures as drawing
from gags.query.metrics import MASK_THRESHOLD, ArrayLike, QueryResult, evaluate_query
from gags.workspace import METRICS_JSON, Workspace, query_slug


def evaluate_frames(
    relevancy: Mapping[str, Mapping[str, ArrayLike]],
    labels: Mapping[str, FrameLabels],
    threshold: float = MASK_THRESHOLD,
    on_result: Callable[[str, str, QueryResult], None] | None = None,
) -> dict[str, Any]:
    """Localization accuracy and mIoU over every (frame, label) pair, as LangSplat's evaluation computes them.

    Args:
        relevancy: frame name -> label -> [H, W] (one field) or [L, H, W] (one map per level, e.g. LangSplat's three)
            relevancy of that label's text. Every label of a frame must have a map; frames absent from ``relevancy``
            are not evaluated (that is how a split is chosen).
        labels: frame name -> labels, at any resolution: they are resized to the maps' resolution.
        threshold: mask threshold on the normalised relevancy.
        on_result: called with (frame, label, result) for every pair, e.g. to write per-query images.
    Returns:
        ``{"miou", "loc_acc"`` (fractions in [0, 1]), ``"n_frames", "n_queries", "queries"}`` where every query is
        ``{"frame", "image", "label", "iou", "hit", "point" [x, y], "level_loc", "level_seg"}``; JSON-ready.
    """
    queries: list[dict[str, Any]] = []
    for frame_name, maps in relevancy.items():
        if frame_name not in labels:
            raise ValueError(f"relevancy given for frame {frame_name}, which has no labels")
        frame = labels[frame_name]
        missing = [c for c in frame.categories if c not in maps]
        extra = [c for c in maps if c not in frame.masks]
        if missing or extra:
            raise ValueError(f"frame {frame_name}: labels without relevancy {missing}, relevancy without label {extra}")
        resized: dict[tuple[int, int], FrameLabels] = {}
        for category in frame.categories:
            rel = maps[category]
            size = (int(rel.shape[-1]), int(rel.shape[-2]))
            if size not in resized:
                resized[size] = frame.resized(*size)
            sized = resized[size]
            width, height = size
            gt = sized.masks[category]
            if not gt.any():
                raise GagsError(
                    f"label '{category}' of frame {frame_name} covers no pixel at {width}x{height}. Check the label "
                    "file's polygon, or evaluate at a higher resolution."
                )
            result = evaluate_query(rel, gt, sized.boxes[category], threshold)
            if on_result is not None:
                on_result(frame_name, category, result)
            queries.append(
                {
                    "frame": frame_name,
                    "image": frame.image_name,
                    "label": category,
                    "iou": result.iou,
                    "hit": result.hit,
                    "point": None if result.localization.point is None else list(result.localization.point),
                    "level_loc": result.localization.level,
                    "level_seg": result.segmentation.level,
                }
            )
    if not queries:
        raise GagsError("no labelled (frame, label) pair to evaluate: the chosen views carry no labels.")
    return {
        "miou": float(np.mean([q["iou"] for q in queries])),
        "loc_acc": float(np.mean([q["hit"] for q in queries])),
        "n_frames": len({q["frame"] for q in queries}),
        "n_queries": len(queries),
        "queries": queries,
    }


# ----------------------------------------------------------------------------------------------------------------------
# the stage

SPLITS = ("train", "test")
"""Training views and held-out views, evaluated and reported separately."""
ASPECT_TOLERANCE = 0.02
"""Labels whose aspect ratio differs from their image's by more than 2 % belong to other images."""
PROTOCOL_MIN_SIDE = 720
"""Long side (pixels) below which label maps are evaluated enlarged. LangSplat's filters are fixed in pixels (30 x 30
box, 7 x 7 majority window) and were set on LERF-OVS frames, which are about 1000 x 730 pixels; on the procedural
world's 128-256 px labels the same filters cover up to 8x more of the image and smear small objects away (ground-truth
masks given as relevancy score 46 % mIoU at 128 px, 86 % at 512 px and 92 % at 1024 px). Smaller labels are therefore
rasterised at this long side and the relevancy maps upsampled (bilinear) to it; labels at least this large, such as
LERF-OVS's, are evaluated at their own resolution, exactly as LangSplat does."""


def _label_folder(config: EvalConfig, scene: Any) -> Path:
    if config.labels is not None:
        return Path(config.labels)
    from gags.synth.scenes import label_dir

    folder = label_dir(scene.root)
    if not folder.is_dir():
        raise GagsError(f"no --labels given and the scene folder {scene.root} has no label/ folder (only synthetic "
                        "scenes carry their own labels). Pass --labels DIR, a LERF-OVS label folder of this scene "
                        "(frame_XXXXX.json files).")
    return folder


def _frames_by_split(scene: Any, labels: Mapping[str, FrameLabels]) -> dict[str, list[tuple[str, int]]]:
    """Labelled frames of every split: split -> [(frame name, image index)], in frame order."""
    matched = match_images(labels, scene.names)
    split_of = {i: "train" for i in scene.train_ids} | {i: "test" for i in scene.test_ids}
    frames: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    for name, image in matched.items():
        index = scene.index(image)
        if index in split_of:
            frames[split_of[index]].append((name, index))
    return frames


def labelled_views(out: Path, labels: Path | None = None) -> tuple[Any, dict[str, FrameLabels],
                                                                   dict[str, list[tuple[str, int]]]]:
    """The evaluation set of a scene output folder, found as ``gags eval`` finds it.

    Args:
        out: a scene output folder; labels: a label folder, default the synthetic scene's own.
    Returns:
        (scene, frame name -> labels, split -> [(frame name, image index)] of the labelled frames).
    """
    from gags.data.labels import load_labels

    scene = Workspace(Path(out)).load_scene()
    frames = load_labels(_label_folder(EvalConfig(out=Path(out), labels=labels), scene))
    return scene, frames, _frames_by_split(scene, frames)


def _render_size(frame: FrameLabels, camera: Any, downscale: float, where: Path) -> tuple[int, int]:
    aspect_labels, aspect_image = frame.width / frame.height, camera.width / camera.height
    if abs(aspect_labels / aspect_image - 1) > ASPECT_TOLERANCE:
        raise GagsError(f"{where / (frame.name + '.json')} is drawn on a {frame.width}x{frame.height} image but its "
                        f"image {camera.name} is {camera.width}x{camera.height} (another aspect ratio). Pass the label "
                        "folder of this scene.")
    return max(1, round(frame.width / downscale)), max(1, round(frame.height / downscale))


def protocol_size(width: int, height: int, min_side: int = PROTOCOL_MIN_SIDE) -> tuple[int, int]:
    """(width, height) at which the protocol runs for labels drawn on a ``width`` x ``height`` image.

    The label resolution itself when its long side is at least ``min_side`` (or ``min_side`` <= 0), else enlarged to
    that long side (see ``PROTOCOL_MIN_SIDE``).
    """
    scale = min_side / max(width, height)
    if min_side <= 0 or scale <= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def upsample_maps(maps: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize of relevancy maps [..., h, w] to [..., height, width] (unchanged if already that size)."""
    if maps.shape[-2:] == (height, width):
        return maps
    flat = maps.reshape(-1, *maps.shape[-2:]).astype(np.float32)
    out = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in flat])
    return out.reshape(*maps.shape[:-2], height, width)


def score_frame(name: str, frame: FrameLabels, maps: Mapping[str, np.ndarray],
                protocol_min_side: int = PROTOCOL_MIN_SIDE,
                on_result: Callable[[str, str, QueryResult], None] | None = None) -> dict[str, Any]:
    """The protocol on one frame: relevancy ``maps`` (label -> [H, W] or [L, H, W], any resolution) upsampled to the
    protocol's size for these labels (``protocol_size``), then :func:`evaluate_frames`. ``gags eval`` and
    ``gags bench ladder`` score through this one function."""
    eval_w, eval_h = protocol_size(frame.width, frame.height, protocol_min_side)
    eval_maps = {c: upsample_maps(np.asarray(m, dtype=np.float32), eval_w, eval_h) for c, m in maps.items()}
    return evaluate_frames({name: eval_maps}, {name: frame}, on_result=on_result)


def evaluate_split(
    out_dir: Path,
    scene: Any,
    geometry: Any,
    field: Any,
    frames: list[tuple[str, int]],
    labels: Mapping[str, FrameLabels],
    embeddings: Mapping[str, torch.Tensor],
    canon: torch.Tensor,
    downscale: float = 1.0,
    figures: bool = True,
    label_dir: Path = Path("."),
    info: Mapping[str, Any] | None = None,
    protocol_min_side: int = PROTOCOL_MIN_SIDE,
) -> dict[str, Any]:
    """Render, decode and evaluate one method on the labelled ``frames`` of one split; write metrics.json and figures.

    Args:
        out_dir: ``Workspace.eval_dir(METHOD, SPLIT)``.
        frames: [(frame name, image index)].
        embeddings: category -> [D] text embedding; canon: [C, D] canonical phrases.
        label_dir: the label folder (for messages); info: extra entries of metrics.json (labels, encoder).
        protocol_min_side: labels with a shorter long side are evaluated enlarged (``PROTOCOL_MIN_SIDE``).
    Returns:
        the metrics (as written to ``out_dir / metrics.json``).
    """
    from gags.query import render

    queries: list[dict[str, Any]] = []
    seconds = {"render_decode_relevancy": 0.0, "metrics": 0.0, "figures": 0.0}
    sizes, protocol_sizes = set(), set()
    found: list[tuple[str, str, QueryResult]] = []

    def keep(frame_name: str, category: str, result: QueryResult) -> None:
        found.append((frame_name, category, result))

    for name, index in tqdm(frames, desc=f"eval {out_dir.parent.name}/{out_dir.name}", unit="view", leave=False):
        frame = labels[name]
        camera = scene.cameras[index]
        width, height = _render_size(frame, camera, downscale, label_dir)
        sizes.add((width, height))
        start = time.perf_counter()
        query = torch.stack([embeddings[c] for c in frame.categories])  # [Q, D]
        rel = render.view_relevancy(geometry, field, render.camera_at(camera, width, height), query, canon)
        maps = {c: (rel[q, 0] if rel.shape[1] == 1 else rel[q]).numpy() for q, c in enumerate(frame.categories)}
        seconds["render_decode_relevancy"] += time.perf_counter() - start

        found.clear()
        start = time.perf_counter()
        protocol_sizes.add(protocol_size(frame.width, frame.height, protocol_min_side))
        result = score_frame(name, frame, maps, protocol_min_side, on_result=keep if figures else None)
        seconds["metrics"] += time.perf_counter() - start
        if figures:
            start = time.perf_counter()
            image = cv2.resize(scene.load_image(index), (width, height), interpolation=cv2.INTER_AREA)
            files = write_figures(out_dir, image, frame.resized(width, height), maps, found)
            for q in result["queries"]:
                q.update(files[q["label"]])
            seconds["figures"] += time.perf_counter() - start
        queries.extend(result["queries"])
    if not queries:
        raise GagsError(f"no labelled (frame, label) pair to evaluate for {out_dir}.")
    metrics = {
        "method": field.method,
        "split": out_dir.name,
        "miou": float(np.mean([q["iou"] for q in queries])),
        "loc_acc": float(np.mean([q["hit"] for q in queries])),
        "n_frames": len(frames),
        "n_queries": len(queries),
        "resolution": [list(s) for s in sorted(sizes)],
        "protocol_resolution": [list(s) for s in sorted(protocol_sizes)],
        **(info or {}),
        "seconds": seconds,
        "queries": queries,
    }
    write_json(out_dir / METRICS_JSON, metrics)
    return metrics


def write_figures(out_dir: Path, image: np.ndarray, labels: FrameLabels, maps: Mapping[str, np.ndarray],
                  results: list[tuple[str, str, QueryResult]]) -> dict[str, dict[str, str]]:
    """Per query: ``FRAME__LABEL_relevancy.png`` and ``FRAME__LABEL_mask.png`` in ``out_dir``.

    Args:
        image: [H, W, 3] uint8 at the maps' resolution; labels: at the same resolution; maps: label -> [H, W] or
            [L, H, W] relevancy; results: (frame, label, result) of every query.
    Returns:
        label -> {"relevancy_png", "mask_png"} file names.
    """

    files = {}
    for frame_name, category, result in results:
        stem = f"{frame_name}__{query_slug(category)}"
        rel = maps[category] if maps[category].ndim == 2 else maps[category][result.localization.level]
        mask, point = result.segmentation.mask, result.localization.point
        if mask.shape != image.shape[:2]:  # evaluated enlarged (PROTOCOL_MIN_SIDE): drawn at the image's size
            sx, sy = image.shape[1] / mask.shape[1], image.shape[0] / mask.shape[0]
            if point is not None:
                point = (min(int(point[0] * sx), image.shape[1] - 1), min(int(point[1] * sy), image.shape[0] - 1))
            mask = cv2.resize(mask.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
        drawing.write_png(out_dir / f"{stem}_relevancy.png",
                          drawing.heatmap_figure(image, rel, point, labels.boxes[category]))
        drawing.write_png(out_dir / f"{stem}_mask.png",
                          drawing.mask_figure(image, mask, labels.masks[category], point))
        files[category] = {"relevancy_png": f"{stem}_relevancy.png", "mask_png": f"{stem}_mask.png"}
    return files


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print method | split | frames | queries | mIoU | loc. acc. (percent)."""
    width = max([len("method"), *(len(r["method"]) for r in rows)])
    print(f"{'method':<{width}} {'split':<6} {'frames':>6} {'queries':>7} {'mIoU %':>7} {'loc %':>7}")
    for r in rows:
        print(f"{r['method']:<{width}} {r['split']:<6} {r['n_frames']:>6} {r['n_queries']:>7} "
              f"{100 * r['miou']:>7.1f} {100 * r['loc_acc']:>7.1f}")


def run(config: EvalConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """``gags eval``: every chosen method on every chosen split; returns method -> split -> metrics."""
    with Workspace(Path(config.out)).lock("eval"):
        return _run(config)


def _run(config: EvalConfig) -> dict[str, dict[str, dict[str, Any]]]:
    from gags.data.labels import load_labels
    from gags.query import render

    out = Path(config.out)
    ws = Workspace(out)
    ws.require_scene()
    check.positive("--downscale", config.downscale)
    methods = ws.resolve_methods(config.method)
    scene = ws.load_scene()
    label_dir = _label_folder(config, scene)
    labels = load_labels(label_dir)
    frames = _frames_by_split(scene, labels)
    splits = list(SPLITS) if config.split == "all" else [config.split]
    counts = ", ".join(f"{len(frames[s])} {s}" for s in SPLITS)
    if not any(frames[s] for s in splits):
        raise GagsError(f"the labels in {label_dir} cover no {' or '.join(splits)} view of the scene ({counts} "
                        "labelled views). Choose another --split.")
    splits = [s for s in splits if frames[s]]
    categories = list(dict.fromkeys(c for s in splits for name, _ in frames[s] for c in labels[name].categories))
    geometry = render.load_geometry(out)
    encoder = config.encoder or ws.recorded_encoder()
    ws.check_encoder_weights(encoder)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    rows = []
    embedded: dict[int, tuple[dict[str, torch.Tensor], torch.Tensor]] = {}
    for method in methods:
        field = render.load_field(out, method)
        ws.check_field(method, len(field.features), len(geometry))
        dim = render.field_dim(field)
        if dim not in embedded:
            query, canon = render.text_embeddings(encoder, categories, dim)
            embedded[dim] = (dict(zip(categories, query, strict=True)), canon)
        embeddings, canon = embedded[dim]
        for split in splits:
            metrics = evaluate_split(ws.eval_dir(method, split), scene, geometry, field, frames[split], labels,
                                     embeddings, canon, config.downscale, config.figures, label_dir,
                                     {"labels": str(label_dir), "encoder": encoder, "downscale": config.downscale},
                                     config.protocol_min_side)
            results.setdefault(method, {})[split] = metrics
            rows.append(metrics)
    print_table(rows)
    print(f"gags eval: {ws.eval_root}/METHOD/SPLIT")
    return results
