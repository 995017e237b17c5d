"""Speed of the embedded HierarchySegmenter: set_image + predict on 256 x 256 images, as JSON.

    python benchmarks/hierarchy_segmenter.py [--points 64 400] [--repeats 5] [--out bench_out/hierarchy.json]

Images: the shared kitchen photos (images_4, resized to 256 x 256), or random smooth images when they are absent.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gags.io import write_json
from gags.models import HierarchySegmenter

KITCHEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "mipnerf360_kitchen_small" / "images_4"
if not KITCHEN.is_dir():
    KITCHEN = Path("/work/shared/data/mipnerf360_kitchen_small/images_4")


def images(n: int, size: int) -> list[np.ndarray]:
    paths = sorted(KITCHEN.glob("*.png"))[:n]
    if paths:
        return [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR)) for p in paths]
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    return [np.asarray(Image.fromarray(s).resize((size, size), Image.BICUBIC)) for s in small]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[64, 400])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    seg = HierarchySegmenter()
    rng = np.random.default_rng(0)
    results = []
    for n_points in args.points:
        set_times, predict_times = [], []
        for image in images(args.repeats, args.size):
            points = rng.uniform(0, args.size, size=(n_points, 2)).astype(np.float32)
            t0 = time.perf_counter()
            seg.set_image(image)
            t1 = time.perf_counter()
            seg.predict(points)
            t2 = time.perf_counter()
            set_times.append(t1 - t0)
            predict_times.append(t2 - t1)
        total = np.add(set_times, predict_times)
        results.append({
            "points": n_points, "size": args.size, "images": len(total),
            "set_image_s_median": float(np.median(set_times)), "predict_s_median": float(np.median(predict_times)),
            "total_s_median": float(np.median(total)), "total_s_max": float(np.max(total)),
        })
    print(json.dumps(results, indent=2))
    if args.out is not None:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
