"""Mask NMS: ``gags.segment.masks.mask_nms`` (all pairs at once) against a literal per-pair loop of LangSplat's rules.

Both run on the same synthetic but SAM-like masks: objects (ellipses and rectangles) with nested parts and sub-parts,
large background planes, and near-duplicates (the same mask shifted by a few pixels), with random scores. The script
checks that the kept sets are identical and writes the times and the speed ratio as JSON.

    python benchmarks/mask_nms.py [--out mask_nms.json] [--objects 40] [--seeds 1] [--sizes 256x256 730x988]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gags.segment.masks import mask_nms

# ----------------------------------------------------------------------------------------------------------------------
# the reference: LangSplat's mask_nms rules, one pair at a time, written out literally


def literal_mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_thr: float = 0.8, score_thr: float = 0.7,
                     inner_thr: float = 0.5) -> torch.Tensor:
    """LangSplat preprocess.py ``mask_nms``, pair by pair. masks: [M, H, W] bool, scores: [M] -> keep [M] bool.

    Two deliberate departures, shared with the vectorised version and documented there: the score sort is stable (ties
    keep input order), and the "no mask passes" fallback marks the 3 best-scored masks (LangSplat's ``keep[index, 0]``
    raises on a 1-D tensor).
    """
    scores_sorted, idx = scores.sort(dim=0, descending=True, stable=True)
    num_masks = idx.shape[0]
    masks_ord = masks[idx.view(-1), :]
    masks_area = torch.sum(masks_ord, dim=(1, 2), dtype=torch.float)

    iou_matrix = torch.zeros((num_masks,) * 2, dtype=torch.float)
    inner_iou_matrix = torch.zeros((num_masks,) * 2, dtype=torch.float)
    for i in range(num_masks):
        for j in range(i, num_masks):
            intersection = torch.sum(torch.logical_and(masks_ord[i], masks_ord[j]), dtype=torch.float)
            union = torch.sum(torch.logical_or(masks_ord[i], masks_ord[j]), dtype=torch.float)
            iou = intersection / union
            iou_matrix[i, j] = iou
            if intersection / masks_area[i] < 0.5 and intersection / masks_area[j] >= 0.85:
                inner_iou = 1 - (intersection / masks_area[j]) * (intersection / masks_area[i])
                inner_iou_matrix[i, j] = inner_iou
            if intersection / masks_area[i] >= 0.85 and intersection / masks_area[j] < 0.5:
                inner_iou = 1 - (intersection / masks_area[j]) * (intersection / masks_area[i])
                inner_iou_matrix[j, i] = inner_iou

    iou_matrix.triu_(diagonal=1)
    iou_max, _ = iou_matrix.max(dim=0)
    inner_iou_matrix_u = torch.triu(inner_iou_matrix, diagonal=1)
    inner_iou_max_u, _ = inner_iou_matrix_u.max(dim=0)
    inner_iou_matrix_l = torch.tril(inner_iou_matrix, diagonal=1)
    inner_iou_max_l, _ = inner_iou_matrix_l.max(dim=0)

    keep = iou_max <= iou_thr
    keep_conf = scores_sorted > score_thr
    keep_inner_u = inner_iou_max_u <= 1 - inner_thr
    keep_inner_l = inner_iou_max_l <= 1 - inner_thr
    if keep_conf.sum() == 0:
        keep_conf[:3] = True
    if keep_inner_u.sum() == 0:
        keep_inner_u[:3] = True
    if keep_inner_l.sum() == 0:
        keep_inner_l[:3] = True
    keep *= keep_conf
    keep *= keep_inner_u
    keep *= keep_inner_l

    out = torch.zeros(num_masks, dtype=torch.bool)
    out[idx[keep]] = True
    return out


# ----------------------------------------------------------------------------------------------------------------------
# SAM-like masks


def sam_like_masks(height: int, width: int, n_objects: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, H, W] bool masks and [M] float64 scores in [0.6, 1): objects with nested parts, planes, near-duplicates."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    side = min(height, width)

    def shape(cx: float, cy: float, a: float, b: float) -> np.ndarray:
        if rng.random() < 0.6:
            th = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            return (u / a) ** 2 + (v / b) ** 2 <= 1
        return (np.abs(xx - cx) <= a) & (np.abs(yy - cy) <= b)

    masks = []
    for _ in range(3):  # table / wall / floor
        y0 = rng.uniform(0.3, 0.8) * height
        masks.append(yy >= y0 if rng.random() < 0.5 else yy < y0)
    for _ in range(n_objects):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        a, b = rng.uniform(0.05, 0.25) * side, rng.uniform(0.05, 0.25) * side
        whole = shape(cx, cy, a, b)
        masks.append(whole)
        for _ in range(rng.integers(2, 5)):
            px, py = cx + rng.uniform(-a, a) * 0.6, cy + rng.uniform(-b, b) * 0.6
            part = whole & shape(px, py, a * rng.uniform(0.2, 0.6), b * rng.uniform(0.2, 0.6))
            masks.append(part)
            for _ in range(rng.integers(0, 3)):
                qx, qy = px + rng.uniform(-a, a) * 0.2, py + rng.uniform(-b, b) * 0.2
                masks.append(part & shape(qx, qy, a * rng.uniform(0.05, 0.2), b * rng.uniform(0.05, 0.2)))
    base = len(masks)
    for k in rng.choice(base, size=base // 3, replace=False):  # near-duplicates
        dx, dy = rng.integers(-3, 4, size=2)
        masks.append(np.roll(np.roll(masks[k], dx, axis=1), dy, axis=0))
    stacked = np.stack(masks)
    stacked = stacked[stacked.sum(axis=(1, 2)) > 0]
    perm = rng.permutation(len(stacked))
    scores = rng.uniform(0.6, 1.0, size=len(stacked))
    return torch.from_numpy(stacked[perm]), torch.from_numpy(scores)


# ----------------------------------------------------------------------------------------------------------------------


def run(sizes: list[tuple[int, int]], n_objects: int, seeds: int, repeats: int) -> dict:
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("mask_nms.json"))
    parser.add_argument("--objects", type=int, default=40, help="objects per image (about 9 masks each)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the vectorised version (the best is kept)")
    parser.add_argument("--sizes", nargs="+", default=["256x256", "730x988"], help="HxW")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    report = run(sizes, args.objects, args.seeds, args.repeats)
    from gags.io import write_json

    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
