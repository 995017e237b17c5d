"""``gags segment --segmenter exact``: a procedural scene's own entities as its segments (a perfect segmenter).

Scenes made by ``gags synth`` (and ``gags demo``) carry the entity of every pixel at each level
(``gags.synth.scenes.ids_dir``: [3, H, W] ids per view, sub-part, part, whole). With ``--segmenter exact`` every entity
of a view becomes one segment of its level, cropped and encoded as the segment stage encodes masks; there are no
prompts and no filters. These are the segments of the ladder's R1 rung (``gags bench ladder``), so a field distilled
from them shows what distillation keeps when the segmentation is perfect: the ceiling of the rest of the pipeline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gags.errors import GagsError
from gags.levels import NUM_LEVELS, SEGMENT_ROWS
from gags.segment.image import ImageResult
from gags.timing import StepTimer

EXACT = "exact"
"""The ``--segmenter`` value that selects the scene's own entities."""


def exact_segments(ids: np.ndarray, rgb: np.ndarray, encoder: Any) -> tuple[Tensor, Tensor]:
    """The entities of a synthetic view's id maps as a feature table, encoded as ``gags segment`` encodes masks.

    ids: [3, H, W] int entity ids per level (-1: nothing); rgb: [H, W, 3] uint8.
    Returns (table [M, D] float32, seg [3, H, W] int64 row of ``table`` per level, -1 where no entity); the rows of a
    level are its entities in increasing id, levels one after the other (sub-part, part, whole).
    """
    from gags.models.crops import crop_masks

    ids_t = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    seg = torch.full_like(ids_t, -1)
    masks, offset = [], 0
    for k in range(NUM_LEVELS):
        entities = torch.unique(ids_t[k])
        entities = entities[entities >= 0]
        seg[k] = torch.where(ids_t[k] >= 0, torch.searchsorted(entities, ids_t[k].clamp_min(0)) + offset, -1)
        masks.append(ids_t[k][None] == entities[:, None, None])  # [E, H, W]
        offset += len(entities)
    all_masks = torch.cat(masks)
    if len(all_masks) == 0:
        return torch.zeros(0, encoder.dim), seg
    crops = crop_masks(np.ascontiguousarray(rgb), all_masks, encoder.input_size)
    return encoder.encode_images(crops).float(), seg


def exact_language_features(ids: np.ndarray, rgb: np.ndarray, encoder: Any) -> tuple[np.ndarray, np.ndarray]:
    """One view's exact segments in LangSplat's layout (``gags.segment.extract``'s ``_f`` / ``_s``).

    ids: [3, H, W] int; rgb: [H, W, 3] uint8.
    Returns features [M, D] float16 and segments [4, H, W] int32: rows default, sub-part, part, whole. The default
    row holds all three granularities painted larger first, as the segment stage paints it: at each pixel the
    smallest entity that contains it.
    """
    table, seg = exact_segments(ids, rgb, encoder)
    default = torch.where(seg[0] >= 0, seg[0], torch.where(seg[1] >= 0, seg[1], seg[2]))
    segments = torch.cat([default[None], seg]).to(torch.int32).numpy()
    return table.to(torch.float16).numpy(), segments


def exact_image(ids: np.ndarray, rgb: np.ndarray, encoder: Any, timer: StepTimer | None = None) -> ImageResult:
    """What ``gags.segment.image.segment_image`` returns for one view, from its entity ids: ids [3, H, W] int,
    rgb [H, W, 3] uint8. Cropping and encoding are timed together as the ``encode`` step."""
    timer = timer if timer is not None else StepTimer()
    with timer.step("encode"):
        features, segments = exact_language_features(ids, rgb, encoder)
    per_row = {name: int(len(np.unique(row[row >= 0]))) for name, row in zip(SEGMENT_ROWS, segments, strict=True)}
    return ImageResult(features, segments, per_row, candidates=0, points=0)


def check_exact(scene: Any) -> None:
    """GagsError unless ``scene`` (a ``gags.data.scene.Scene``) was made by ``gags synth`` and has its id maps."""
    from gags.synth.scenes import ids_dir

    if not ids_dir(scene.root).is_dir():
        raise GagsError(f"--segmenter exact needs a scene made by gags synth (or gags demo): {scene.root} has no "
                        f"entity ids ({ids_dir(scene.root).name}/); choose another --segmenter (hierarchy, tinysam, "
                        "sam:...).")


def read_ids(scene_root: Path, stem: str, height: int, width: int) -> np.ndarray:
    """The [3, height, width] int64 entity ids of view ``stem`` of the synthetic scene at ``scene_root``
    (nearest-neighbour resized when the view is segmented at another size). GagsError when the file is missing."""
    from gags.synth.scenes import ids_dir

    path = ids_dir(scene_root) / f"{stem}.npy"
    if not path.is_file():
        raise GagsError(f"{path} is missing: --segmenter exact reads the entity ids that gags synth writes for every "
                        "view; regenerate the scene with gags synth, or choose another --segmenter.")
    ids = torch.from_numpy(np.load(path).astype(np.int64))
    if ids.ndim != 3 or ids.shape[0] != NUM_LEVELS:
        raise GagsError(f"{path} holds an array of shape {list(ids.shape)}, not [3, H, W] entity ids; regenerate the "
                        "scene with gags synth.")
    if tuple(ids.shape[1:]) != (height, width):
        ids = torch.nn.functional.interpolate(ids[None].double(), size=(height, width), mode="nearest")[0].long()
    return ids.numpy()


__all__ = ["EXACT", "check_exact", "exact_image", "exact_language_features", "exact_segments", "read_ids"]
