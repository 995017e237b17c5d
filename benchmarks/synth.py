"""Time `gags synth`: a whole preset scene (world, every view rendered, points, labels, queries) per preset.

Each preset is written into a fresh temporary folder, so nothing is resumed. Prints one line per preset and writes
the times (total, rendering only, per view; wall clock and this process's CPU time) and the scene's size as JSON.
The load average is recorded too: on a shared machine the wall-clock figure depends on what else runs, the CPU time
much less.

    python benchmarks/synth.py [--out synth.json] [--presets ramen teatime figurines kitchen]
                               [--resolution 256] [--views 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from gags.config import SynthConfig
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
        queries = json.loads((config.out / "queries.json").read_text())["queries"]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("synth.json"))
    parser.add_argument("--presets", nargs="+", default=["ramen", "teatime", "figurines", "kitchen"])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--views", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    for preset in args.presets:
        row = bench_preset(preset, args.resolution, args.views, args.seed)
        rows.append(row)
        print(f"{preset:10s} {row['views_total']} views {args.resolution}x{args.resolution}: total "
              f"{row['seconds_total']:.1f} s wall / {row['cpu_seconds_total']:.1f} s CPU, rendering "
              f"{row['seconds_render']:.1f} s wall / {row['cpu_seconds_render']:.1f} s CPU "
              f"({row['seconds_per_view']:.2f} s/view), {row['primitives']} primitives, {row['queries']} queries")
    result = {"benchmark": "synth", "requirement_seconds": REQUIREMENT_SECONDS, "rows": rows,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "loadavg_before": [round(x, 2) for x in load_before],
                          "loadavg_after": [round(x, 2) for x in os.getloadavg()]}}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
