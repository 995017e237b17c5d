"""``gags bench granularity OUT [--method gags]``: which granularity a one-map field answers with, and why.

On every training view, at the pixels covered at all three levels (the pixels GaD trains on), the field's rendered and
decoded prediction is compared with the three levels' segment features (``_f`` / ``_s``): the mean cosine and mean L1
to each level (L1 on the decoder's raw output, the space the distillation loss works in), the share of pixels whose
prediction is nearest (by cosine) each level, and how far the levels' features are from each other at the same pixel
(mean cosine per pair of levels, and the share of pixels where two levels hold the same feature: one mask kept at
both). For a GaD field also the granularity decoder's weights g at those pixels (mean, share of the argmax per level,
and how often the argmax is the level nearest the prediction), and g's curve during training (``curves.json``).

What it tells: when the prediction is about as far from every level (the levels' features barely differ from the
field's point of view), the distillation gives g no per-pixel signal, and the entropy term alone decides g (README,
section "Benchmarks", and ``tests/distill/test_gad_miniature.py`` for a scene where the field fits and g chooses per
region). Writes ``OUT/bench/granularity.json`` (``gags.workspace.Workspace.bench_file``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gags.config import BenchGranularityConfig
from gags.errors import GagsError
from gags.field import LanguageField
from gags.io import write_json
from gags.levels import LEVELS, NUM_LEVELS
from gags.threads import scoped_torch_threads
from gags.workspace import Workspace

NAME = "granularity"
LEVEL_PAIRS = ((0, 1), (1, 2), (0, 2))
"""Pairs of levels (sub-part-part, part-whole, sub-part-whole) whose features are compared pixel by pixel."""
IDENTICAL_COSINE = 0.9999
"""Two levels' features closer than this at a pixel count as one feature (the same mask kept at both levels)."""
CURVE_POINTS = 11
"""Points of g's training curve kept in the record (evenly spaced, first and last included)."""


@torch.no_grad()
def measure(field: LanguageField, views: list[Any], gaussians: Any) -> dict[str, Any]:
    """The figures of the module docstring over ``views`` (``gags.distill.views.TrainView``)."""
    from gags.distill.train import render_features

    if field.feature_decoder is None:
        raise GagsError(f"the {field.method} field has no feature decoder (it stores CLIP features or codes); `gags "
                        "bench granularity` reads fields with one: --method gags, avg, level-s|m|l or n2f2.")
    cos_sum, l1_sum = torch.zeros(NUM_LEVELS), torch.zeros(NUM_LEVELS)
    nearest = torch.zeros(NUM_LEVELS)
    g_sum, g_argmax = torch.zeros(NUM_LEVELS), torch.zeros(NUM_LEVELS)
    between, identical = torch.zeros(len(LEVEL_PAIRS)), torch.zeros(len(LEVEL_PAIRS))
    agree, pixels = 0, 0
    features = field.features.float()
    for view in views:
        rendered = render_features(gaussians, features, view.camera)  # [C, h, w]
        flat = rendered.reshape(rendered.shape[0], -1).T  # [h w, C]
        seg = view.seg.long().reshape(NUM_LEVELS, -1)
        valid = (seg >= 0).all(0)
        if not bool(valid.any()):
            continue
        raw = field.feature_decoder(flat[valid])  # [P, D] as the loss sees it
        targets = view.table.float()[seg[:, valid]]  # [3, P, D]
        cos = F.cosine_similarity(raw[None], targets, dim=-1)  # [3, P]
        cos_sum += cos.sum(1)
        l1_sum += (raw[None] - targets).abs().mean(-1).sum(1)
        for n, (a, b) in enumerate(LEVEL_PAIRS):
            pair = F.cosine_similarity(targets[a], targets[b], dim=-1)  # [P]
            between[n] += pair.sum()
            identical[n] += ((seg[a, valid] == seg[b, valid]) | (pair > IDENTICAL_COSINE)).sum()
        near = cos.argmax(0)
        nearest += torch.bincount(near, minlength=NUM_LEVELS)
        if field.granularity_decoder is not None:
            g = field.granularity(flat[valid])  # [P, 3]
            g_sum += g.sum(0)
            choice = g.argmax(1)
            g_argmax += torch.bincount(choice, minlength=NUM_LEVELS)
            agree += int((choice == near).sum())
        pixels += int(valid.sum())
    if pixels == 0:
        raise GagsError("no training pixel is covered at all three levels; run `gags segment` again (or check the "
                        "segment maps).")
    record: dict[str, Any] = {"pixels": pixels, "levels": [lv.display for lv in LEVELS],
                              "mean_cosine": (cos_sum / pixels).tolist(), "mean_l1": (l1_sum / pixels).tolist(),
                              "nearest_share": (nearest / pixels).tolist(),
                              "level_pairs": [f"{LEVELS[a].code}-{LEVELS[b].code}" for a, b in LEVEL_PAIRS],
                              "between_levels_cosine": (between / pixels).tolist(),
                              "between_levels_identical_share": (identical / pixels).tolist()}
    if field.granularity_decoder is not None:
        record.update(g_mean=(g_sum / pixels).tolist(), g_argmax_share=(g_argmax / pixels).tolist(),
                      g_argmax_is_nearest=agree / pixels)
    return record


def g_curve(curves_path: Path) -> list[dict[str, Any]]:
    """[{iteration, granularity}] at ``CURVE_POINTS`` evenly spaced points of a field's training curve ([] without)."""
    if not curves_path.is_file():
        return []
    history = [p for p in json.loads(curves_path.read_text()).get("history", []) if p.get("granularity")]
    if not history:
        return []
    picks = sorted({round(i * (len(history) - 1) / (CURVE_POINTS - 1)) for i in range(CURVE_POINTS)})
    return [{"iteration": history[i]["iteration"], "granularity": history[i]["granularity"]} for i in picks]


def run(config: BenchGranularityConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record it writes."""
    from gags.distill.views import load_views
    from gags.splat.gaussians import FrozenGaussians

    ws = Workspace(Path(config.out))
    scene = ws.load_scene()
    field = LanguageField.load(ws.field_file(config.method))
    ws.check_field_inputs(config.method, field.config)
    downscale = config.downscale if config.downscale is not None else float(field.config.get("downscale", 1.0))
    with scoped_torch_threads(config.threads):
        gaussians = FrozenGaussians.from_splats(ws.read_gaussians())
        ws.check_field(config.method, len(field.features), len(gaussians))
        views = load_views(scene, scene.train_ids, ws.require_features(), downscale)
        record = {"method": config.method, "downscale": downscale, "views": len(views),
                  **measure(field, views, gaussians), "g_curve": g_curve(ws.field_curves(config.method))}
    path = ws.bench_file(NAME)
    write_json(path, record)
    print(table(record))
    print(f"gags bench granularity: {path}")
    return record


def table(record: dict[str, Any]) -> str:
    """The record as a few lines of text: one row per level."""
    has_g = "g_mean" in record
    lines = [f"{record['method']}: {record['pixels']} training pixels covered at all three levels "
             f"({record['views']} views at downscale {record['downscale']:g})",
             f"{'level':<10}{'cosine':>9}{'L1':>9}{'nearest':>9}" + (f"{'mean g':>9}{'argmax g':>10}" if has_g else "")]
    for k, name in enumerate(record["levels"]):
        row = (f"{name:<10}{record['mean_cosine'][k]:>9.3f}{record['mean_l1'][k]:>9.4f}"
               f"{100 * record['nearest_share'][k]:>8.1f}%")
        if has_g:
            row += f"{record['g_mean'][k]:>9.3f}{100 * record['g_argmax_share'][k]:>9.1f}%"
        lines.append(row)
    if "between_levels_cosine" in record:
        pairs = " / ".join(record["level_pairs"])
        lines.append(f"between levels ({pairs}) at the same pixel: cosine "
                     + " / ".join(f"{v:.3f}" for v in record["between_levels_cosine"]) + "; the same feature at "
                     + " / ".join(f"{100 * v:.1f}%" for v in record["between_levels_identical_share"])
                     + " of the pixels")
    if has_g:
        lines.append(f"argmax g is the level nearest the prediction at {100 * record['g_argmax_is_nearest']:.1f}% "
                     "of the pixels")
    return "\n".join(lines)


__all__ = ["g_curve", "measure", "run", "table"]
