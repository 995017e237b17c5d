"""``gags query OUT "text"``: where a text query is, in 2D views and among the Gaussians.

Per chosen view (default the held-out views; ``--views NAMES`` or ``--all``), rendered at the image size divided by
``--downscale``: one render of the field, one decode, the relevancy of the text (``gags.query.render``), then the
LERF-OVS localization (argmax of the 30x30 box-filtered relevancy) and segmentation mask (``gags.query.metrics``). With
several levels (langsplat) the level with the highest relevancy is used (``choose_level``: box-filtered maximum for the
point, smoothed maximum for the mask). Writes in ``Workspace.query_dir(TEXT)`` (named by the text in lower
case, other characters as '-'), per view ``STEM`` (the image name without extension)::

    STEM_relevancy.png    the relevancy (min-max normalised, colour-mapped) over the image, the point as a cross
    STEM_relevancy.npy    float32 [H, W] raw relevancy in [0, 1] of the localization level
    STEM_mask.png         the predicted mask, 0 / 255
    STEM_overlay.png      the mask over the image (outside dimmed), the point as a cross
    result.json           text, method, encoder, per view {point [x, y], score, level, mask_pixels, files}

With ``--ply`` also the 3D selection (``gags.query.select3d``): ``relevancy.ply`` (every Gaussian coloured by its
relevancy) and ``selected.ply`` (Gaussians with relevancy > ``--threshold``), and their count in result.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from gags import validate as check
from gags.config import QueryConfig
from gags.errors import GagsError
from gags.io import ensure_dir, write_json
from gags.query import figures, render
from gags.query.metrics import MASK_THRESHOLD, box_filter, localize, segment
from gags.splat.gaussians import FrozenGaussians
from gags.workspace import Workspace


def choose_views(scene: Any, views: tuple[str, ...], all_views: bool) -> list[int]:
    """Image indices to render: ``views`` by name (or stem), every view, or by default the held-out ones."""
    if views and all_views:
        raise GagsError("pass either --views NAMES or --all, not both.")
    if all_views:
        return list(range(len(scene.names)))
    if not views:
        if not scene.test_ids:
            raise GagsError("the scene has no held-out views. Pass --views NAMES or --all.")
        return list(scene.test_ids)
    by_name = {n: i for i, n in enumerate(scene.names)} | {Path(n).stem: i for i, n in enumerate(scene.names)}
    unknown = [v for v in views if v not in by_name]
    if unknown:
        examples = ", ".join(scene.names[:5])
        raise GagsError(f"no view named {', '.join(unknown)} in the scene ({len(scene.names)} views, e.g. {examples}).")
    return list(dict.fromkeys(by_name[v] for v in views))


def answer_view(geometry: FrozenGaussians, field: Any, camera: Any, query: torch.Tensor,
                canon: torch.Tensor) -> dict[str, Any]:
    """Relevancy, localization and mask of one query in one view.

    Returns {"maps" float32 [L, H, W], "localization", "segmentation"} (``gags.query.metrics`` results).
    """
    maps = render.view_relevancy(geometry, field, camera, query.reshape(1, -1), canon)[0].numpy()  # [L, H, W]
    filtered = box_filter(maps)
    return {"maps": maps, "localization": localize(maps, filtered),
            "segmentation": segment(maps, MASK_THRESHOLD, filtered)}


def run(config: QueryConfig) -> dict[str, Any]:
    """Run the stage; returns the record written to ``Workspace.query_result(TEXT)``."""
    from gags.data import read_ply
    from gags.query.select3d import select_gaussians, write_selection_plys

    out = Path(config.out)
    ws = Workspace(out)
    ws.require_scene()
    text = config.text.strip()
    if not text:
        raise GagsError("the query text is empty. Pass a phrase, e.g. gags query OUT \"red cup\".")
    check.positive("--downscale", config.downscale)
    if not 0.0 <= config.threshold <= 1.0:
        raise GagsError(f"--threshold is a relevancy in [0, 1], got {config.threshold}.")
    field = render.load_field(out, config.method)
    scene = ws.load_scene()
    ids = choose_views(scene, config.views, config.all)
    geometry = render.load_geometry(out)
    ws.check_field(config.method, len(field.features), len(geometry))
    encoder = config.encoder or ws.recorded_encoder()
    ws.check_encoder_weights(encoder)
    query, canon = render.text_embeddings(encoder, [text], render.field_dim(field))
    folder = ensure_dir(ws.query_dir(text))
    split_of = {i: "train" for i in scene.train_ids} | {i: "test" for i in scene.test_ids}

    record: dict[str, Any] = {"text": text, "method": field.method, "encoder": encoder, "downscale": config.downscale,
                              "views": []}
    start = time.perf_counter()
    for i in tqdm(ids, desc=f"query {text!r}", unit="view", leave=False):
        camera = scene.cameras[i].scaled(1 / config.downscale) if config.downscale != 1 else scene.cameras[i]
        result = answer_view(geometry, field, camera, query, canon)
        loc, seg = result["localization"], result["segmentation"]
        rel = result["maps"][loc.level]
        image = cv2.resize(scene.load_image(i), (camera.width, camera.height), interpolation=cv2.INTER_AREA)
        stem = Path(camera.name).stem
        files = {"relevancy_png": f"{stem}_relevancy.png", "relevancy_npy": f"{stem}_relevancy.npy",
                 "mask_png": f"{stem}_mask.png", "overlay_png": f"{stem}_overlay.png"}
        figures.write_png(folder / files["relevancy_png"], figures.heatmap_figure(image, rel, loc.point))
        figures.write_npy(folder / files["relevancy_npy"], rel.astype(np.float32))
        figures.write_png(folder / files["mask_png"], seg.mask.astype(np.uint8) * 255)
        figures.write_png(folder / files["overlay_png"], figures.mask_figure(image, seg.mask, None, loc.point))
        record["views"].append({
            "view": camera.name, "split": split_of.get(i, "none"),
            "point": None if loc.point is None else list(loc.point), "score": loc.score,
            "max_relevancy": float(rel.max()), "level": loc.level, "level_mask": seg.level,
            "mask_pixels": int(seg.mask.sum()), "resolution": [camera.width, camera.height], **files,
        })
    record["seconds_2d"] = time.perf_counter() - start

    if config.ply:
        start = time.perf_counter()
        selection = select_gaussians(field, query, canon, config.threshold)
        plys = write_selection_plys(folder, read_ply(ws.gaussians_ply), selection)
        record["3d"] = {"num_gaussians": len(geometry), "selected": selection.count, "threshold": selection.threshold,
                        "level": selection.level, "relevancy_min": float(selection.relevancy.min()),
                        "relevancy_max": float(selection.relevancy.max()), **plys,
                        "seconds": time.perf_counter() - start}
    write_json(ws.query_result(text), record)

    for v in record["views"]:
        point = "none (constant map)" if v["point"] is None else tuple(v["point"])
        print(f"{v['view']}: point {point}, max relevancy {v['max_relevancy']:.3f}, mask "
              f"{v['mask_pixels']} px")
    if "3d" in record:
        sel = record["3d"]
        print(f"3D: {sel['selected']} of {sel['num_gaussians']} Gaussians with relevancy > {sel['threshold']}"
              + ("" if sel["selected_ply"] else " (no selected.ply written)"))
    print(f"gags query: {folder}")
    return record
