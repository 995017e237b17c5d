"""Mask NMS: ``gags.segment.masks.mask_nms`` (all pairs at once) against a literal per-pair loop of LangSplat's rules.

Both run on the same synthetic but SAM-like masks: objects (ellipses and rectangles) occluding each other and three
background bands, with nested parts and sub-parts and near-duplicates (shifted by a few pixels), random scores. The
script checks that the kept sets are identical and writes the times and the speed ratio as JSON.

    python benchmarks/mask_nms.py [--out bench_out/mask_nms.json] [--objects 400] [--seeds 1] [--sizes 256x256 730x988]
                                  [--threads N]
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
    masks = [(yy >= lo) & (yy < hi) & (label < 0) for lo, hi in zip([0, *cuts], [*cuts, height])]
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
    parser.add_argument("--out", type=Path, default=Path("bench_out/mask_nms.json"))
    parser.add_argument("--objects", type=int, default=400, help="objects per image (most are partly hidden)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the vectorised version (the best is kept)")
    parser.add_argument("--sizes", nargs="+", default=["256x256", "730x988"], help="HxW")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both versions (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    report = run(sizes, args.objects, args.seeds, args.repeats)
    from gags.io import write_json

    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
