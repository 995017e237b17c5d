"""LERF-OVS ground-truth labels: one JSON file per annotated frame.

Format (the public LERF-OVS release, labelme-like), e.g. ``label/teatime/frame_00002.json`` for image
``frame_00002.jpg``::

    {"info": {"name": "frame_00002.jpg", "width": 988, "height": 731, "depth": 3, "note": ""},
     "objects": [{"category": "cookie", "group": 1, "segmentation": [[x, y], ...], "area": 0, "layer": 1.0,
                  "bbox": [x1, y1, x2, y2], "iscrowd": 0, "note": ""}, ...]}

``segmentation`` is one polygon of float pixel coordinates; ``bbox`` is its box. The same category may appear in several
objects (two cookies): they form one label whose mask is the union of their polygons and which keeps every box.

Rasterisation follows LangSplat's evaluation (``eval/utils.py: polygon_to_mask``): the float vertices are cast to int32
(truncation toward zero) and filled with ``cv2.fillPoly`` at the ``info`` size. The procedural world writes its labels
in the same format (``label/frame_XXXXX.json`` for ``frame_XXXXX.png``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gags.errors import GagsError

LABEL_GLOB = "frame_*.json"
"""Label files of a folder (LangSplat's ``eval_gt_lerfdata`` reads ``frame_*.json``)."""

_FRAME_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class FrameLabels:
    """The labels of one frame at one resolution.

    Attributes:
        name: frame name, the label file's stem (``"frame_00041"``).
        image_name: the image the labels were drawn on (``info.name``, e.g. ``"frame_00041.jpg"``).
        width, height: resolution of ``masks`` (and of the pixel coordinates of ``boxes``).
        masks: category -> bool [height, width], union of that category's polygons.
        boxes: category -> float64 [B, 4] (x1, y1, x2, y2) in pixels, one row per object of that category.
    Categories keep the order of their first appearance in the file (LangSplat's query order).
    """

    name: str
    image_name: str
    width: int
    height: int
    masks: dict[str, np.ndarray] = field(repr=False)
    boxes: dict[str, np.ndarray] = field(repr=False)

    @property
    def categories(self) -> list[str]:
        return list(self.masks)

    def resized(self, width: int, height: int) -> FrameLabels:
        """These labels at another resolution: masks by nearest neighbour (pixel centres), boxes scaled per axis.

        Nearest neighbour samples source pixel ``floor((i + 0.5) * src / dst)`` (OpenCV's INTER_NEAREST_EXACT).
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"target size must be positive, got {width}x{height}")
        if (width, height) == (self.width, self.height):
            return self
        rows = _nearest_index(height, self.height)
        cols = _nearest_index(width, self.width)
        scale = np.array([width / self.width, height / self.height] * 2, dtype=np.float64)
        return FrameLabels(
            name=self.name,
            image_name=self.image_name,
            width=width,
            height=height,
            masks={c: m[rows[:, None], cols[None, :]] for c, m in self.masks.items()},
            boxes={c: b * scale for c, b in self.boxes.items()},
        )


def _nearest_index(dst: int, src: int) -> np.ndarray:
    """Source index of every destination index for nearest-neighbour resampling: int64 [dst]."""
    return np.minimum(((np.arange(dst) + 0.5) * (src / dst)).astype(np.int64), src - 1)


def frame_number(name: str) -> int | None:
    """The frame number of a frame or image name: ``"frame_00041.jpg"`` -> 41; None when it has none."""
    match = _FRAME_NUMBER.search(Path(name).stem)
    return int(match.group(1)) if match else None


def polygon_mask(polygon: np.ndarray, width: int, height: int) -> np.ndarray:
    """Rasterise one polygon as LangSplat does: vertices cast to int32, then ``cv2.fillPoly``.

    Args:
        polygon: [P, 2] (x, y) float pixel coordinates.
    Returns:
        bool [height, width].
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    cv2.fillPoly(mask, [np.ascontiguousarray(polygon, dtype=np.float64).astype(np.int32)], 1)
    return mask.astype(bool)


def _fail(path: Path, where: str, what: str) -> GagsError:
    return GagsError(
        f"{path}: {where} {what}. Expected a LERF-OVS label file: info {{name, width, height}} and objects "
        "[{category, segmentation [[x, y], ...], bbox [x1, y1, x2, y2]}]."
    )


def _size(path: Path, info: Mapping[str, Any], key: str) -> int:
    value = info.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, f"info.{key}", f"must be a positive integer, got {value!r}")
    if value != int(value) or value <= 0:
        raise _fail(path, f"info.{key}", f"must be a positive integer, got {value!r}")
    return int(value)


def _numbers(path: Path, where: str, value: Any, shape_text: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise _fail(path, where, f"must be {shape_text} of numbers") from None
    if not np.isfinite(array).all():
        raise _fail(path, where, "contains a non-finite number")
    return array


def read_frame_labels(path: Path) -> FrameLabels:
    """Read one LERF-OVS label file; raise a GagsError naming the file and the field when it is malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise GagsError(f"label file {path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GagsError(f"{path} is not valid JSON ({exc}). Replace it with the original label file.") from None
    if not isinstance(data, dict):
        raise _fail(path, "the top level", f"must be an object, got {type(data).__name__}")
    info = data.get("info")
    if not isinstance(info, dict):
        raise _fail(path, "info", "is missing or not an object")
    width, height = _size(path, info, "width"), _size(path, info, "height")
    image_name = info.get("name", path.stem)
    if not isinstance(image_name, str) or not image_name:
        raise _fail(path, "info.name", f"must be the image's file name, got {image_name!r}")
    objects = data.get("objects")
    if not isinstance(objects, list):
        raise _fail(path, "objects", "is missing or not a list")

    masks: dict[str, np.ndarray] = {}
    boxes: dict[str, list[np.ndarray]] = {}
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise _fail(path, f"objects[{i}]", "must be an object")
        category = obj.get("category")
        if not isinstance(category, str) or not category.strip():
            raise _fail(path, f"objects[{i}].category", f"must be a non-empty string, got {category!r}")
        if "segmentation" not in obj:
            raise _fail(path, f"objects[{i}].segmentation", "is missing")
        polygon = _numbers(path, f"objects[{i}].segmentation", obj["segmentation"], "a list of [x, y] points")
        if polygon.ndim != 2 or polygon.shape[1] != 2 or polygon.shape[0] == 0:
            raise _fail(path, f"objects[{i}].segmentation", f"must be a list of [x, y] points, got {polygon.shape}")
        if "bbox" not in obj:
            raise _fail(path, f"objects[{i}].bbox", "is missing")
        box = _numbers(path, f"objects[{i}].bbox", obj["bbox"], "[x1, y1, x2, y2]").reshape(-1)
        if box.shape != (4,):
            raise _fail(path, f"objects[{i}].bbox", f"must be [x1, y1, x2, y2], got {box.size} numbers")
        x1, y1, x2, y2 = box
        if x2 < 0 or y2 < 0 or x1 > width or y1 > height:
            raise _fail(path, f"objects[{i}].bbox", f"{obj['bbox']} lies outside the {width}x{height} image")
        box = np.clip(box, 0.0, [width, height, width, height])  # a box reaching outside the image ends at its edge
        mask = polygon_mask(polygon, width, height)
        if category in masks:
            masks[category] |= mask
            boxes[category].append(box)
        else:
            masks[category] = mask
            boxes[category] = [box]
    return FrameLabels(
        name=path.stem,
        image_name=image_name,
        width=width,
        height=height,
        masks=masks,
        boxes={c: np.stack(b) for c, b in boxes.items()},
    )


def load_labels(folder: Path) -> dict[str, FrameLabels]:
    """Read every ``frame_*.json`` of a LERF-OVS label folder: frame name -> labels, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GagsError(f"label folder {folder} does not exist. Pass the folder holding frame_XXXXX.json files.")
    paths = sorted(folder.glob(LABEL_GLOB))
    if not paths:
        raise GagsError(
            f"label folder {folder} holds no {LABEL_GLOB} file. Pass a LERF-OVS label folder (e.g. label/teatime)."
        )
    return {p.stem: read_frame_labels(p) for p in paths}


def match_images(labels: Mapping[str, FrameLabels], image_names: Sequence[str]) -> dict[str, str]:
    """The image of every labelled frame: frame name -> image name.

    An image matches when its stem equals the frame name or the stem of ``info.name``; failing that, when it carries
    the same frame number (``frame_00041.json`` <-> ``frame_41.png``), if exactly one image does.
    """
    by_stem = {Path(n).stem: n for n in image_names}
    by_number: dict[int, list[str]] = {}
    for n in image_names:
        number = frame_number(n)
        if number is not None:
            by_number.setdefault(number, []).append(n)
    matched: dict[str, str] = {}
    for name, frame in labels.items():
        image = by_stem.get(name) or by_stem.get(Path(frame.image_name).stem)
        if image is None:
            number = frame_number(name)
            candidates = by_number.get(number, []) if number is not None else []
            if len(candidates) == 1:
                image = candidates[0]
            elif len(candidates) > 1:
                raise GagsError(
                    f"labels of frame {name} match several images by frame number ({', '.join(candidates)}). "
                    "Rename the images or the label files so that their names agree."
                )
        if image is None:
            examples = ", ".join(list(image_names)[:3])
            raise GagsError(
                f"labels of frame {name} ({frame.image_name}) match none of the scene's {len(image_names)} images "
                f"(e.g. {examples}). Pass the label folder of this scene."
            )
        matched[name] = image
    return matched
