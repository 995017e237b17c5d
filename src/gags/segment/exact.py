"""A procedural scene's own entities as segments: ``gags segment --segmenter exact`` and ``--segmenter oracle``.

Scenes made by ``gags synth`` (and ``gags demo``) carry the entity of every pixel at each level
(``gags.synth.scenes.ids_dir``: [3, H, W] ids per view, sub-part, part, whole). Two perfect segmenters read them:

- ``exact``: every entity of a view becomes one segment of its level, cropped and encoded as the segment stage encodes
  masks; there are no prompts and no filters. These are the segments of the ladder's R1 rung (``gags bench ladder``),
  so a field distilled from them shows what distillation keeps when the segmentation is perfect: the ceiling of the
  rest of the pipeline.
- ``oracle`` (:class:`OracleSegmenter`): a perfect promptable segmenter. A prompt point's three masks are the entities
  that contain it (predicted IoU 1, stability 1; none where no entity does), and everything else is the stage's own:
  its prompt points, its filters, its painting. What ``oracle`` loses against ``exact`` is what the prompts and the
  filters lose, whatever the segmenter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from gags.errors import GagsError
from gags.levels import NUM_LEVELS, SEGMENT_ROWS
from gags.segment.image import ImageResult
from gags.timing import StepTimer

if TYPE_CHECKING:
    from gags.models.segmenters import MaskPrediction

EXACT = "exact"
"""The ``--segmenter`` value that makes every entity a segment (no prompts, no filters)."""
ORACLE = "oracle"
"""The ``--segmenter`` value of the perfect promptable segmenter (:class:`OracleSegmenter`)."""
ENTITY_SEGMENTERS = (EXACT, ORACLE)
"""Segmenters that read the scene's entity ids."""


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


class OracleSegmenter:
    """A perfect promptable segmenter (``--segmenter oracle``): a point's masks are the entities that contain it.

    ``set_ids`` gives the view's entity ids before ``set_image``; the segment stage does it for every view
    (``gags.segment.parallel.ImageWorker``).
    """

    def __init__(self) -> None:
        self._ids: Tensor | None = None

    def set_ids(self, ids: np.ndarray) -> None:
        """ids: [3, H, W] int entity ids of the next image (sub-part, part, whole; -1: nothing)."""
        self._ids = torch.from_numpy(np.asarray(ids, dtype=np.int64))

    def set_image(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> None:
        """rgb: [H, W, 3] uint8, the image whose ids ``set_ids`` gave; depth is ignored."""
        if self._ids is None or tuple(self._ids.shape[1:]) != tuple(np.shape(rgb)[:2]):
            raise GagsError("the oracle segmenter needs the entity ids of the image it is given (set_ids) first.")

    def predict(self, points: np.ndarray | Tensor) -> MaskPrediction:
        """points: [P, 2] pixel (x, y) -> masks [P, 3, H, W] (the entity containing the point's pixel at each level,
        empty where none), scores = stability = [P, 3] 1 for an entity, 0 for none."""
        from gags.models.segmenters import MaskPrediction, check_points

        if self._ids is None:
            raise GagsError("the oracle segmenter needs the entity ids of the image (set_ids) before predict.")
        ids = self._ids
        height, width = ids.shape[1:]
        pts = torch.from_numpy(check_points(points, height, width))
        cols = pts[:, 0].long().clamp(0, width - 1)  # pixel (i, j) covers [j, j + 1) x [i, i + 1)
        rows = pts[:, 1].long().clamp(0, height - 1)
        at = ids[:, rows, cols].T  # [P, 3]
        masks = (ids[None] == at[:, :, None, None]) & (at >= 0)[:, :, None, None]
        found = (at >= 0).float()
        return MaskPrediction(masks, found, found.clone())


def check_entity_ids(scene: Any, segmenter: str) -> None:
    """GagsError unless ``scene`` (a ``gags.data.scene.Scene``) was made by ``gags synth`` and has its id maps."""
    from gags.synth.scenes import ids_dir

    if not ids_dir(scene.root).is_dir():
        raise GagsError(f"--segmenter {segmenter} needs a scene made by gags synth (or gags demo): {scene.root} has "
                        f"no entity ids ({ids_dir(scene.root).name}/); choose another --segmenter (hierarchy, "
                        "tinysam, sam:...).")


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


__all__ = ["ENTITY_SEGMENTERS", "EXACT", "ORACLE", "OracleSegmenter", "check_entity_ids", "exact_image",
           "exact_language_features", "exact_segments", "read_ids"]
