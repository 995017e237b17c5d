"""Benchmark of ``gags reconstruct`` on real photos: held-out PSNR/SSIM along the run, wall and CPU time, time split.

    python benchmarks/reconstruct.py [--data ../shared/data/mipnerf360_kitchen_small] [--images-dir images_8]
        [--iterations 7000] [--checkpoints 1000 3000 7000] [--max-gaussians N] [--out bench_out/reconstruct.json]

One run of ``--iterations`` (the 3DGS schedule scaled to that length, as ``gags reconstruct`` does), evaluated on the
held-out views (every 8th image) every ``--eval-every`` iterations and at ``--checkpoints``. The JSON holds the curve
(iterations, PSNR, SSIM, training wall seconds, CPU seconds, Gaussians), the figures at the checkpoints, the first
evaluation reaching ``--target-psnr`` and its time, the split of training time into phases (data, render, loss,
backward, optimizer, densify, checkpoint) and the machine's load (the wall clock on a shared machine includes the time
other processes hold the cores; CPU seconds do not).

OpenMP threads wait passively unless OMP_WAIT_POLICY is set otherwise: on a machine busy with other work, spinning
worker threads make every small parallel region many times slower (measured on a 2-core machine at load 10: 7.9 s per
iteration spinning against 0.56 s passive).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first import of torch

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from gags.config import ReconstructConfig
from gags.io import write_json
from gags.splat.reconstruct import run

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mipnerf360_kitchen_small"
# Issue 2's target: >= 20 dB on the held-out views within 15 minutes on a 2-core CPU.
TARGET_PSNR = 20.0
TARGET_SECONDS = 15 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images-dir", default="images_8")
    parser.add_argument("--downscale", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=7000)
    parser.add_argument("--checkpoints", type=int, nargs="*", default=[1000, 3000, 7000])
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--max-gaussians", type=int, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--target-psnr", type=float, default=TARGET_PSNR)
    parser.add_argument("--work", type=Path, default=None, help="OUT folder to keep (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=Path("bench_out/reconstruct.json"))
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    eval_at = sorted({*range(args.eval_every, args.iterations, args.eval_every), *args.checkpoints} - {args.iterations})
    eval_at = [s for s in eval_at if 0 < s < args.iterations]
    work = args.work or Path(tempfile.mkdtemp(prefix="gags_bench_reconstruct_"))
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        metrics = run(ReconstructConfig(scene=args.data, out=work, images_dir=args.images_dir,
                                        downscale=args.downscale, iterations=args.iterations, eval_at=tuple(eval_at),
                                        max_gaussians=args.max_gaussians, resume=args.work is not None))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - start
    final = {"iterations": metrics["iterations"], "psnr": metrics["psnr"], "ssim": metrics["ssim"],
             "seconds": metrics["seconds"], "cpu_seconds": metrics["cpu_seconds"],
             "num_gaussians": metrics["num_gaussians"]}
    curve = [*metrics["history"], final]
    reached = next((p for p in curve if p["psnr"] is not None and p["psnr"] >= args.target_psnr), None)
    timing = metrics["timing"]
    total = sum(timing.values()) or 1.0
    result = {
        "benchmark": "reconstruct",
        "data": str(args.data),
        "images_dir": args.images_dir,
        "downscale": args.downscale,
        "resolution": metrics["resolution"],
        "num_train_views": metrics["num_train_views"],
        "num_test_views": metrics["num_test_views"],
        "iterations": args.iterations,
        "max_gaussians": args.max_gaussians,
        "at": {str(p["iterations"]): p for p in curve if p["iterations"] in args.checkpoints},
        "curve": curve,
        "target": {"psnr": args.target_psnr, "seconds": TARGET_SECONDS,
                   "reached_at_iterations": reached["iterations"] if reached else None,
                   "reached_after_seconds": reached["seconds"] if reached else None,
                   "met": bool(reached and reached["seconds"] <= TARGET_SECONDS)},
        "timing_seconds": timing,
        "timing_fraction": {k: v / total for k, v in timing.items()},
        "seconds_per_iteration": metrics["seconds"] / max(1, metrics["iterations"]),
        "eval_seconds": metrics["eval_seconds"],
        "wall_seconds": wall,
        "per_view": metrics["views"],
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "platform": platform.platform(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "torch": torch.__version__},
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("at", "target", "timing_fraction", "seconds_per_iteration")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
