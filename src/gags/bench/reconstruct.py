"""Benchmark of ``gags reconstruct`` on real photos: held-out PSNR/SSIM along the run, wall and CPU time, time split.

    gags bench reconstruct SCENE [--images-dir images_8] [--iterations 7000] [--checkpoints 1000 3000 7000]
        [--max-gaussians N] [--out bench_out/reconstruct.json]

One run of ``--iterations`` (the 3DGS schedule scaled to that length, as ``gags reconstruct`` does), evaluated on the
held-out views (every 8th image) every ``--eval-every`` iterations and at ``--checkpoints``. The JSON holds the curve
(iterations, PSNR, SSIM, training wall seconds, CPU seconds, Gaussians), the figures at the checkpoints, the first
evaluation reaching ``--target-psnr`` and its time, the split of training time into phases (data, render, loss,
backward, optimizer, densify, checkpoint) and the machine's load (the wall clock on a shared machine includes the time
other processes hold the cores; CPU seconds do not).

Run it through the ``gags`` command, which makes OpenMP threads wait passively (``gags.cli``): on a machine busy with
other work, spinning worker threads make every small parallel region many times slower.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gags.config import BenchReconstructConfig, ReconstructConfig
from gags.io import write_json
from gags.splat.reconstruct import run as reconstruct
from gags.threads import scoped_torch_threads

TARGET_SECONDS = 15 * 60
"""The time within which ``--target-psnr`` should be reached on a 2-core CPU (the project's reconstruction target)."""


def run(config: BenchReconstructConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record it writes."""
    with scoped_torch_threads(config.threads):
        return _run(config)


def _run(config: BenchReconstructConfig) -> dict[str, Any]:

    every = range(config.eval_every, config.iterations, config.eval_every)
    eval_at = sorted({*every, *config.checkpoints} - {config.iterations})
    eval_at = [s for s in eval_at if 0 < s < config.iterations]
    work = config.work or Path(tempfile.mkdtemp(prefix="gags_bench_reconstruct_"))
    load_before = os.getloadavg()
    start = time.perf_counter()
    try:
        metrics = reconstruct(ReconstructConfig(
            scene=config.scene, out=work, images_dir=config.images_dir, downscale=config.downscale,
            iterations=config.iterations, eval_at=tuple(eval_at), max_gaussians=config.max_gaussians,
            resume=config.work is not None))
    finally:
        if config.work is None:
            shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - start
    final = {"iterations": metrics["iterations"], "psnr": metrics["psnr"], "ssim": metrics["ssim"],
             "seconds": metrics["seconds"], "cpu_seconds": metrics["cpu_seconds"],
             "num_gaussians": metrics["num_gaussians"]}
    curve = [*metrics["history"], final]
    reached = next((p for p in curve if p["psnr"] is not None and p["psnr"] >= config.target_psnr), None)
    timing = metrics["timing"]
    total = sum(timing.values()) or 1.0
    result = {
        "benchmark": "reconstruct",
        "scene": str(config.scene),
        "images_dir": config.images_dir,
        "downscale": config.downscale,
        "resolution": metrics["resolution"],
        "num_train_views": metrics["num_train_views"],
        "num_test_views": metrics["num_test_views"],
        "iterations": config.iterations,
        "max_gaussians": config.max_gaussians,
        "at": {str(p["iterations"]): p for p in curve if p["iterations"] in config.checkpoints},
        "curve": curve,
        "target": {"psnr": config.target_psnr, "seconds": TARGET_SECONDS,
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
    write_json(config.out, result)
    print(json.dumps({k: result[k] for k in ("at", "target", "timing_fraction", "seconds_per_iteration")}, indent=2))
    print(f"wrote {config.out}")
    return result
