"""``gags eval``: the LERF-OVS protocol over the labelled frames of a scene.

``evaluate_frames`` scores relevancy maps that are already computed, whatever field made them; the stage that renders
and decodes a language field calls it per method and split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gags.data.labels import FrameLabels
from gags.errors import GagsError
from gags.query.metrics import MASK_THRESHOLD, ArrayLike, QueryResult, evaluate_query


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
                    "point": list(result.localization.point),
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
