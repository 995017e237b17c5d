"""Benchmark of the torch rasterizer: forward and forward+backward time, (Gaussian, pixel) pairs per second.

    gags bench rasterize [--out bench_out/rasterize.json] [--repeats 3] [--threads 0] [--quick]

Grid: N in {5k, 20k, 100k} x image {128x128, 256x256} x channels {3, 16}. The scene is random but reproducible (seeded)
and described in the JSON ("scene"). Each time is the minimum of ``--repeats`` runs after one warm-up run, as wall
clock and as process CPU time: on a shared machine the wall clock includes the time other processes hold the cores
(the JSON records the load average), the CPU time does not.
"""

from __future__ import annotations

import math
import os
import platform
import time
from typing import Any

import torch

from gags.config import BenchRasterizeConfig
from gags.io import write_json
from gags.splat import rasterize
from gags.splat.torch_backend import build_pairs, composite, project_gaussians
from gags.threads import scoped_torch_threads

SEED = 0
HFOV_DEG = 60.0
DEPTH_RANGE = (2.0, 8.0)
# Median Gaussian scale = SCALE_K / sqrt(N): the same surfaces split into more, smaller Gaussians as N grows (as
# densification does), so 20k Gaussians have a median 1-sigma footprint of ~1.5 px at 128x128 and depth 5.
SCALE_K = 9.5
SCALE_LOG_STD = 0.5
FLATNESS = 0.2  # third axis of every Gaussian is 5x thinner (surface-like splats)
OPACITY_RANGE = (0.1, 1.0)
TARGET = {"n": 20_000, "width": 128, "height": 128, "channels": 16, "fwd_bwd_seconds": 0.3}

SCENE_DOC = (
    f"camera at the origin looking along +z, horizontal FOV {HFOV_DEG} deg, square pixels; N Gaussians with depth "
    f"uniform in {DEPTH_RANGE}, x/y uniform over 1.1x the frustum at that depth; random rotations; scales log-normal "
    f"with median {SCALE_K}/sqrt(N) (world units) and log-std {SCALE_LOG_STD}, third axis x{FLATNESS}; opacities "
    f"uniform in {OPACITY_RANGE}; colours uniform in [0, 1]; seed {SEED}."
)


def make_scene(n: int, channels: int, seed: int = SEED) -> dict:
    g = torch.Generator().manual_seed(seed)
    tan_half = math.tan(math.radians(HFOV_DEG) / 2.0)
    z = DEPTH_RANGE[0] + (DEPTH_RANGE[1] - DEPTH_RANGE[0]) * torch.rand(n, generator=g)
    xy = (torch.rand(n, 2, generator=g) * 2.0 - 1.0) * 1.1 * tan_half * z[:, None]
    means = torch.cat([xy, z[:, None]], dim=1)
    quats = torch.randn(n, 4, generator=g)
    median = SCALE_K / math.sqrt(n)
    scales = median * torch.exp(SCALE_LOG_STD * torch.randn(n, 3, generator=g))
    scales[:, 2] *= FLATNESS
    opacities = OPACITY_RANGE[0] + (OPACITY_RANGE[1] - OPACITY_RANGE[0]) * torch.rand(n, generator=g)
    colors = torch.rand(n, channels, generator=g)
    return {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors}


def make_camera(width: int, height: int) -> tuple[torch.Tensor, torch.Tensor]:
    f = 0.5 * width / math.tan(math.radians(HFOV_DEG) / 2.0)
    K = torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
    return torch.eye(4), K


def _min_times(fn, repeats: int) -> tuple[float, float]:
    """(wall, cpu) seconds, each the minimum over ``repeats`` runs after a warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def bench_case(n: int, width: int, height: int, channels: int, repeats: int) -> dict:
    scene = make_scene(n, channels)
    viewmat, K = make_camera(width, height)
    params = {k: v.clone().requires_grad_(True) for k, v in scene.items()}
    grad_out = torch.rand(height, width, channels, generator=torch.Generator().manual_seed(1))

    def forward():
        return rasterize(
            params["means"], params["quats"], params["scales"], params["opacities"], params["colors"], viewmat, K,
            width, height, backend="torch",
        )

    def forward_backward():
        render, alpha, _ = forward()
        loss = (render * grad_out).sum() + alpha.sum()
        loss.backward()
        for p in params.values():
            p.grad = None

    _, _, meta = forward()
    stats = meta["pair_stats"]
    t_fwd, c_fwd = _min_times(forward, repeats)
    t_fb, c_fb = _min_times(forward_backward, repeats)

    def stage_times() -> dict:
        out = {}
        c0 = time.process_time()
        proj = project_gaussians(
            params["means"], params["quats"], params["scales"], params["opacities"], viewmat, K, width, height
        )
        c1 = time.process_time()
        pairs = build_pairs(proj.means2d, proj.conics, params["opacities"], proj.depths, proj.radii, width, height)
        c2 = time.process_time()
        means2d = proj.means2d.unsqueeze(0)
        render, alpha = composite(means2d, proj.conics, params["colors"], params["opacities"], pairs, width, height)
        c3 = time.process_time()
        ((render * grad_out).sum() + alpha.sum()).backward()
        c4 = time.process_time()
        for p in params.values():
            p.grad = None
        out["project"] = c1 - c0
        out["build_pairs"] = c2 - c1
        out["composite_forward"] = c3 - c2
        out["backward_all"] = c4 - c3
        return out

    # Where the time goes: CPU seconds of the stages, minimum over the repeats.
    runs = [stage_times() for _ in range(repeats + 1)][1:]
    stages = {k: min(r[k] for r in runs) for k in runs[0]}
    composited = stats["pairs"]
    return {
        "n": n,
        "width": width,
        "height": height,
        "channels": channels,
        "visible_gaussians": int((meta["radii"][0] > 0).all(-1).sum()),
        "candidate_pairs": stats["candidate_pairs"],
        "composited_pairs": composited,
        "composited_pairs_per_pixel": composited / (width * height),
        "chunks": stats["chunks"],
        "forward_seconds": t_fwd,
        "forward_backward_seconds": t_fb,
        "forward_cpu_seconds": c_fwd,
        "forward_backward_cpu_seconds": c_fb,
        "forward_pairs_per_second": composited / t_fwd,
        "forward_backward_pairs_per_second": composited / t_fb,
        "forward_backward_pairs_per_cpu_second": composited / c_fb,
        "stage_cpu_seconds": stages,
    }


def run(config: BenchRasterizeConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record it writes."""
    with scoped_torch_threads(config.threads):
        return _run(config)


def _run(config: BenchRasterizeConfig) -> dict[str, Any]:

    if config.quick:
        grid = [(int(TARGET["n"]), int(TARGET["width"]), int(TARGET["height"]), int(TARGET["channels"]))]
    else:
        grid = [(n, s, s, c) for n in (5_000, 20_000, 100_000) for s in (128, 256) for c in (3, 16)]
    results = []
    print(f"{'N':>7} {'size':>9} {'C':>3} {'pairs':>9} {'fwd s':>7} {'fwd+bwd s':>9} {'(cpu s)':>8} "
          f"{'Mpairs/s fwd':>12} {'Mpairs/s f+b':>12}")
    for n, w, h, c in grid:
        r = bench_case(n, w, h, c, config.repeats)
        results.append(r)
        print(
            f"{n:>7} {w:>4}x{h:<4} {c:>3} {r['composited_pairs']:>9} {r['forward_seconds']:>7.3f} "
            f"{r['forward_backward_seconds']:>9.3f} {r['forward_backward_cpu_seconds']:>8.3f} "
            f"{r['forward_pairs_per_second'] / 1e6:>12.2f} "
            f"{r['forward_backward_pairs_per_second'] / 1e6:>12.2f}",
            flush=True,
        )
    target = next(
        (r for r in results if (r["n"], r["width"], r["height"], r["channels"])
         == (TARGET["n"], TARGET["width"], TARGET["height"], TARGET["channels"])),
        None,
    )
    report = {
        "benchmark": "rasterize (torch backend)",
        "scene": SCENE_DOC,
        "timing": f"minimum of {config.repeats} runs after one warm-up, wall clock and process CPU time; forward "
        "builds "
        "the autograd graph (inputs require grad); forward+backward uses loss = sum(render * fixed random weights) + "
        "sum(alpha); stage_cpu_seconds splits one forward+backward into projection, pair building, compositing and "
        "the whole backward pass",
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_1_5_15": list(os.getloadavg()),
        },
        "target": dict(
            TARGET,
            measured_fwd_bwd_seconds=None if target is None else target["forward_backward_seconds"],
            measured_fwd_bwd_cpu_seconds=None if target is None else target["forward_backward_cpu_seconds"],
        ),
        "results": results,
    }
    write_json(config.out, report)
    if target is not None:
        ok = target["forward_backward_seconds"] <= TARGET["fwd_bwd_seconds"]
        print(f"target 20k/128x128/16ch fwd+bwd: {target['forward_backward_seconds']:.3f} s wall, "
              f"{target['forward_backward_cpu_seconds']:.3f} s CPU ({'meets' if ok else 'misses'} "
              f"<= {TARGET['fwd_bwd_seconds']} s wall; load average {os.getloadavg()[0]:.1f})")
    print(f"wrote {config.out}")
    return report
