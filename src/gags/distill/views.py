"""The training views of a language field: cameras at the training resolution with their segments' features.

Level features are gathered per step from each view's ``_f`` table and its ``_s`` indices resized (nearest) to the
training resolution, never stored as dense maps: a view costs ``M x D`` float32 + ``3 x h x w`` int32 in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gags.cameras import Camera
from gags.data.features import read_language_features
from gags.distill import losses
from gags.errors import GagsError
from gags.levels import ROWS


@dataclass
class TrainView:
    """One training view at the training resolution.

    camera: the camera at the training resolution; seg: [3, h, w] int32 indices into ``table`` for the levels s, m, l
    (-1 = none); table: [M, D] float32, the view's ``_f`` features, or their 3-d LangSplat codes.
    """

    camera: Camera
    seg: Tensor
    table: Tensor

    def __post_init__(self) -> None:
        if self.seg.dim() != 3 or self.seg.shape[0] != 3:
            raise ValueError(f"seg must be [3, h, w], got {tuple(self.seg.shape)}")
        if tuple(self.seg.shape[1:]) != (self.camera.height, self.camera.width):
            raise ValueError(f"seg is {tuple(self.seg.shape[1:])}, camera {self.camera.height}x{self.camera.width}")


def load_views(scene: Any, ids: Sequence[int], folder: Path, downscale: float,
               device: torch.device | str = "cpu") -> list[TrainView]:
    """Cameras at ``downscale`` and their level indices resized (nearest) to that size, with the ``_f`` tables."""
    views, dim = [], None
    for i in ids:
        camera = scene.camera(i, downscale)
        feats, seg = read_language_features(folder, camera.name, missing_hint=(
            f"Run `gags segment {Path(folder).parent}` first (or put LangSplat's _f.npy / _s.npy files there)."))
        if dim is not None and feats.shape[1] != dim:
            raise GagsError(f"{folder} holds features of dimension {feats.shape[1]} for {camera.name!r} and {dim} for "
                            "other images; every image must be encoded by the same CLIP model. Re-run `gags segment`.")
        dim = feats.shape[1]
        aspect_err = abs(seg.shape[2] / seg.shape[1] - camera.width / camera.height)
        if aspect_err > 0.02:
            raise GagsError(f"the _s map of {camera.name!r} is {seg.shape[2]}x{seg.shape[1]} (W x H) but the image is "
                            f"{scene.cameras[i].width}x{scene.cameras[i].height}: not the same aspect ratio. The "
                            "language features belong to other images; re-run `gags segment`.")
        levels = losses.resize_segment_maps(torch.from_numpy(seg[list(ROWS)]), (camera.height, camera.width))
        table = torch.from_numpy(feats.astype(np.float32))
        views.append(TrainView(camera, levels.to(torch.int32).to(device), table.to(device)))
    return views


__all__ = ["TrainView", "load_views"]
