"""Time `gags synth`: a whole preset scene (world, every view rendered, points, labels, queries) per preset.

Each preset is written into a fresh temporary folder, so nothing is resumed. Prints one line per preset and writes
the times (total, rendering only, per view; wall clock and this process's CPU time) and the scene's size as JSON.
The load average is recorded too: on a shared machine the wall-clock figure depends on what else runs, the CPU time
much less.

    gags bench synth [--out synth.json] [--presets ramen teatime figurines kitchen]
                               [--resolution 256] [--views 40] [--seed 0] [--reconstruct ITERATIONS]

With ``--reconstruct N`` it also writes each preset at 128x128 and trains ``gags reconstruct`` for N iterations on it
(one torch thread), recording the held-out PSNR / SSIM (the issue's figure: >= 25 dB after a short run).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gags.config import BenchSynthConfig, ReconstructConfig, SynthConfig
from gags.io import write_json
from gags.synth import scenes
from gags.synth.raycast import compile_world, render
from gags.synth.rig import plan_cameras, split_views
from gags.synth.world import build_world

REQUIREMENT_SECONDS = 60.0
"""The figure this benchmark checks: a 40-view 256x256 preset within a minute on the project's 2-core machine."""


def bench_preset(preset: str, resolution: int, views: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = SynthConfig(out=Path(tmp) / preset, preset=preset, seed=seed, resolution=resolution, views=views)
        start, cpu_start = time.perf_counter(), time.process_time()
        scenes.run(config)
        total, cpu_total = time.perf_counter() - start, time.process_time() - cpu_start
        queries = json.loads(scenes.queries_path(config.out).read_text())["queries"]
    # rendering alone, same views
    world = build_world(preset, seed)
    n, _ = split_views(views)
    cams, _ = plan_cameras(world, n, resolution, seed)
    compiled = compile_world(world)
    start, cpu_start = time.perf_counter(), time.process_time()
    for cam in cams:
        render(world, cam, config.supersample, compiled)
    render_s, cpu_render = time.perf_counter() - start, time.process_time() - cpu_start
    return {"preset": preset, "views_total": n, "resolution": resolution, "supersample": config.supersample,
            "seconds_total": round(total, 2), "seconds_render": round(render_s, 2),
            "seconds_per_view": round(render_s / n, 3), "cpu_seconds_total": round(cpu_total, 2),
            "cpu_seconds_render": round(cpu_render, 2), "primitives": len(world.prims),
            "wholes": len(world.wholes), "parts": len(world.parts), "subparts": len(world.subparts),
            "queries": len(queries), "within_requirement": total <= REQUIREMENT_SECONDS}


RECONSTRUCT_RESOLUTION = 128


def bench_reconstruct(preset: str, views: int, seed: int, iterations: int) -> dict:
    from gags.splat.reconstruct import run as reconstruct

    with tempfile.TemporaryDirectory() as tmp:
        scene = scenes.run(SynthConfig(out=Path(tmp) / "scene", preset=preset, seed=seed,
                                       resolution=RECONSTRUCT_RESOLUTION, views=views))
        start = time.perf_counter()
        metrics = reconstruct(ReconstructConfig(scene=scene, out=Path(tmp) / "out", iterations=iterations, threads=1))
        seconds = time.perf_counter() - start
    return {"preset": preset, "resolution": RECONSTRUCT_RESOLUTION, "iterations": iterations,
            "psnr_test": round(metrics["psnr"], 3), "ssim_test": round(metrics["ssim"], 4),
            "test_views": metrics["num_test_views"], "gaussians": metrics["num_gaussians"],
            "seconds": round(seconds, 1),
            "history": [{k: h[k] for k in ("iterations", "psnr", "ssim")} for h in metrics.get("history", [])]}


def run(config: BenchSynthConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record it writes."""
    load_before = os.getloadavg()
    rows, recon = [], []
    for preset in [] if config.skip_synth else config.presets:
        row = bench_preset(preset, config.resolution, config.views, config.seed)
        rows.append(row)
        print(f"{preset:10s} {row['views_total']} views {config.resolution}x{config.resolution}: total "
              f"{row['seconds_total']:.1f} s wall / {row['cpu_seconds_total']:.1f} s CPU, rendering "
              f"{row['seconds_render']:.1f} s wall / {row['cpu_seconds_render']:.1f} s CPU "
              f"({row['seconds_per_view']:.2f} s/view), {row['primitives']} primitives, {row['queries']} queries")
    for preset in config.presets if config.reconstruct else []:
        row = bench_reconstruct(preset, config.views, config.seed, config.reconstruct)
        recon.append(row)
        print(f"{preset:10s} reconstruct {config.reconstruct} iterations at {RECONSTRUCT_RESOLUTION}px: held-out PSNR "
              f"{row['psnr_test']:.2f} dB, SSIM {row['ssim_test']:.3f} ({row['seconds']:.0f} s)")
    result = {"benchmark": "synth", "requirement_seconds": REQUIREMENT_SECONDS, "rows": rows, "reconstruct": recon,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "loadavg_before": [round(x, 2) for x in load_before],
                          "loadavg_after": [round(x, 2) for x in os.getloadavg()]}}
    write_json(config.out, result)
    print(f"wrote {config.out}")
    return result

