"""Mask NMS: ``gags.segment.masks.mask_nms`` (all pairs at once) against a literal per-pair loop of LangSplat's rules.

Both run on the same synthetic but SAM-like masks: objects (ellipses and rectangles) occluding each other and three
background bands, with nested parts and sub-parts and near-duplicates (shifted by a few pixels), random scores. The
script checks that the kept sets are identical and writes the times and the speed ratio as JSON.

    gags bench mask-nms [--out bench_out/mask_nms.json] [--objects 400] [--seeds 1] [--sizes 256x256 730x988]
                                  [--threads N]
"""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np
import torch

from gags.config import BenchMaskNmsConfig
from gags.errors import GagsError
from gags.io import write_json
from gags.segment._reference import literal_mask_nms
from gags.segment.masks import mask_nms
from gags.threads import scoped_torch_threads

# ----------------------------------------------------------------------------------------------------------------------
# SAM-like masks


def sam_like_masks(height: int, width: int, n_objects: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, H, W] bool masks and [M] float64 scores in [0.6, 1).

    Objects (ellipses and rectangles) are painted in order, each occluding the ones before, over three background bands
    that they occlude too; every object gives its visible mask, half of them a part (30-90 % of it), an eighth a
    sub-part; a quarter of all masks get a near-duplicate (shifted by up to 2 pixels).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    side = min(height, width)
    min_pixels = max(10, height * width // 2000)

    def shape(cx: float, cy: float, a: float, b: float) -> np.ndarray:
        if rng.random() < 0.6:
            th = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            return (u / a) ** 2 + (v / b) ** 2 <= 1
        return (np.abs(xx - cx) <= a) & (np.abs(yy - cy) <= b)

    label = np.full((height, width), -1)
    objects = []
    for k in range(n_objects):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        a, b = rng.uniform(0.02, 0.12) * side, rng.uniform(0.02, 0.12) * side
        objects.append((cx, cy, a, b))
        label[shape(cx, cy, a, b)] = k
    cuts = np.sort(rng.uniform(0.2, 0.8, size=2)) * height
    masks = [(yy >= lo) & (yy < hi) & (label < 0) for lo, hi in zip([0, *cuts], [*cuts, height], strict=True)]
    for k, (cx, cy, a, b) in enumerate(objects):
        visible = label == k
        if visible.sum() < min_pixels:
            continue
        masks.append(visible)
        if rng.random() < 0.5:
            scale = rng.uniform(0.5, 0.95)
            px, py = cx + rng.uniform(-0.3, 0.3) * a, cy + rng.uniform(-0.3, 0.3) * b
            part = visible & shape(px, py, a * scale, b * scale)
            if part.sum() >= min_pixels:
                masks.append(part)
                if rng.random() < 0.25:
                    sub = part & shape(cx, cy, a * scale * 0.4, b * scale * 0.4)
                    if sub.sum() >= min_pixels:
                        masks.append(sub)
    base = len(masks)
    for k in rng.choice(base, size=base // 4, replace=False):  # near-duplicates
        dx, dy = rng.integers(-2, 3, size=2)
        masks.append(np.roll(np.roll(masks[k], dx, axis=1), dy, axis=0))
    stacked = np.stack(masks)
    stacked = stacked[stacked.sum(axis=(1, 2)) > 0]
    perm = rng.permutation(len(stacked))
    scores = rng.uniform(0.6, 1.0, size=len(stacked))
    return torch.from_numpy(stacked[perm]), torch.from_numpy(scores)


# ----------------------------------------------------------------------------------------------------------------------


def compare(sizes: list[tuple[int, int]], n_objects: int, seeds: int, repeats: int) -> dict[str, Any]:
    """Both versions on SAM-like masks of every size and seed: kept sets, times, speed-ups."""
    results = []
    for height, width in sizes:
        for seed in range(seeds):
            masks, scores = sam_like_masks(height, width, n_objects, seed)
            mask_nms(masks[:4], scores[:4])  # warm-up
            fast_times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fast = mask_nms(masks, scores)
                fast_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            slow = literal_mask_nms(masks, scores)
            slow_time = time.perf_counter() - t0
            fast_time = min(fast_times)
            row = {
                "height": height, "width": width, "seed": seed, "masks": int(masks.shape[0]),
                "kept": int(fast.sum()), "identical": bool(torch.equal(fast, slow)),
                "vectorised_s": fast_time, "literal_loop_s": slow_time, "speedup": slow_time / fast_time,
            }
            print(f"{height}x{width} seed {seed}: {row['masks']} masks, kept {row['kept']}, identical "
                  f"{row['identical']}, vectorised {fast_time:.3f} s, literal loop {slow_time:.1f} s, "
                  f"speed-up {row['speedup']:.0f}x", flush=True)
            results.append(row)
    return {
        "benchmark": "mask_nms",
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "objects": n_objects,
        "results": results,
        "all_identical": all(r["identical"] for r in results),
        "min_speedup": min(r["speedup"] for r in results),
    }


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> (H, W); GagsError for anything else."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise GagsError(f"--sizes {text}: write each size as HxW, e.g. 256x256.")
    return int(parts[0]), int(parts[1])


def run(config: BenchMaskNmsConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record it writes."""
    with scoped_torch_threads(config.threads):
        return _run(config)


def _run(config: BenchMaskNmsConfig) -> dict[str, Any]:
    sizes = [parse_size(s) for s in config.sizes]
    report = compare(sizes, config.objects, config.seeds, config.repeats)
    write_json(config.out, report)
    print(f"wrote {config.out}")
    return report

