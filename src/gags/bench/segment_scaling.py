"""``gags bench segment-scaling OUT``: ``gags segment`` with 1..N workers in threads and on Ray; what N GPUs would do.

    gags bench segment-scaling OUT [--workers 1 2] [--ray local] [--repeats 3] [--sam-seconds-per-image S]

OUT: a scene output folder with Gaussians (after ``gags reconstruct``). Each case segments a fresh copy of OUT's scene
record and Gaussians (in ``OUT/bench/segment_scaling/``, deleted afterwards) with ``gags segment``'s defaults and the
given models: ``--workers N`` (threads sharing one process) and ``--ray ADDRESS --ray-workers N`` (one actor per worker,
``cores / N`` cores each). Every case is run ``--repeats`` times, cases interleaved, so a slow moment of the machine
does not fall on one case only. Per case: the wall time of the whole command (``local``: starting and stopping the Ray
instance included), the time of the per-image part (models loaded, images segmented and written), and that part per
image. Ray's start-up: the seconds from nothing to one actor with its models loaded (connecting, or starting and
stopping a ``local`` instance, included), timed apart. Ray's overhead per image and worker: (Ray's wall - the threads'
wall - start-up) x N / images, at the same N.

Every Ray case's files are compared with the first threads case's: the ``_s`` maps must be identical (the features
equal up to float16 rounding when the thread counts differ).

Scaling model (printed and in the JSON): a scene of ``--model-images`` images on N GPUs, one Ray actor per GPU, images
handed out one at a time: ``T(N) = startup + ceil(images / N) * (t + overhead)``, with ``startup`` and ``overhead``
measured here (Ray's start and one model load, and its per-image cost) and ``t`` the seconds per image of each
published figure (:data:`PUBLISHED_SECONDS_PER_IMAGE`) and of ``--sam-seconds-per-image`` when given (a real
architecture measured on this machine's CPU). It assumes what Ray's scheduling gives, no more: each image is
independent and the output folder's storage keeps up.

Writes ``OUT/bench/segment_scaling.json`` (``gags.workspace.Workspace.bench_file``).
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from gags.bench.ablation import mean_std
from gags.bench.provenance import provenance
from gags.config import BenchSegmentScalingConfig, SegmentConfig
from gags.errors import GagsError
from gags.io import write_json
from gags.workspace import Workspace

NAME = "segment_scaling"
INPUTS = ("scene.json", "gaussians.ply", "points3D.ply")
"""What each case copies from OUT (the files ``gags segment`` reads; points3D.ply only when present)."""

PUBLISHED_SECONDS_PER_IMAGE: dict[str, float] = {
    "LangSplat preprocess, SAM ViT-H, RTX A6000 (minghanqin/LangSplat#15: ~2 min)": 120.0,
    "LangSplat preprocess, SAM ViT-H, RTX 3090 (minghanqin/LangSplat#15: 9 min)": 540.0,
    "LangSplat's SAM automatic masks alone, GPU (minghanqin/LangSplat#15: ~20 s)": 20.0,
    "GAGS preprocess.py, GPU (WHU-USI3DV/GAGS#3: 4-5 min)": 270.0,
    "LangSplatV2 preprocess, GPU (ZhaoYujie2002/LangSplatV2#3: 50-55 s)": 52.5,
}
"""Seconds per image that users of the official codes report, with the thread that reports them."""


def _case_config(config: BenchSegmentScalingConfig, out: Path, backend: str, workers: int) -> SegmentConfig:
    if backend == "threads":
        return SegmentConfig(out=out, segmenter=config.segmenter, encoder=config.encoder, workers=workers)
    cores = os.cpu_count() or 1
    return SegmentConfig(out=out, segmenter=config.segmenter, encoder=config.encoder, ray=config.ray,
                         ray_workers=workers, ray_cpus_per_worker=max(1.0, float(cores // workers)))


def _fresh_copy(ws: Workspace, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for name in INPUTS:
        if (ws.root / name).is_file():
            shutil.copy2(ws.root / name, dst / name)
    return dst


def _compare(reference: Path, other: Path) -> dict[str, Any]:
    """Per-image agreement of two ``gags segment`` outputs: identical _s maps, largest |difference| of _f."""
    ref_ws, other_ws = Workspace(reference), Workspace(other)
    same_s, max_f = True, 0.0
    for path in sorted(ref_ws.features_dir.glob("*_s.npy")):
        same_s &= bool(np.array_equal(np.load(path), np.load(other_ws.features_dir / path.name)))
        f_name = path.name[: -len("_s.npy")] + "_f.npy"
        a = np.load(ref_ws.features_dir / f_name).astype(np.float32)
        b = np.load(other_ws.features_dir / f_name).astype(np.float32)
        max_f = max(max_f, float(np.abs(a - b).max()) if a.shape == b.shape and a.size else math.inf)
    return {"same_segments": same_s, "max_feature_difference": max_f}


def _ray_startup(config: BenchSegmentScalingConfig, out: Path) -> float:
    """Seconds from nothing to one Ray actor with its models loaded, ready for images (connecting to or starting the
    cluster, and closing it, included): the fixed cost of ``gags segment --ray``."""
    from gags.cluster import connect
    from gags.segment.parallel import ImageWorker, ray_slot, ray_threads

    seg = _case_config(config, out, "ray", 1)
    start = time.perf_counter()
    with connect(config.ray) as ray:
        actor = ray.remote(ImageWorker).options(**ray_slot(seg).options()).remote(seg, os.getcwd(), ray_threads(seg))
        ray.get(actor.__ray_ready__.remote())
        ray.kill(actor)
    return time.perf_counter() - start


def scaling_model(images: int, gpus: list[int], startup_s: float, overhead_s: float,
                  seconds_per_image: dict[str, float]) -> list[dict[str, Any]]:
    """``T(N) = startup + ceil(images / N) * (t + overhead)`` for every (source, t) and N (see the module docstring)."""
    rows = []
    for source, t in seconds_per_image.items():
        hours = {str(n): (startup_s + math.ceil(images / n) * (t + overhead_s)) / 3600 for n in gpus}
        rows.append({"source": source, "seconds_per_image": t, "hours": hours})
    return rows


def run(config: BenchSegmentScalingConfig) -> dict[str, Any]:
    """Run the benchmark (see the module docstring); returns the record it writes."""
    from gags.segment.extract import run as segment

    if config.repeats < 1 or not config.workers or min(config.workers) < 1:
        raise GagsError(f"--repeats must be >= 1 and --workers >= 1 each, got {config.repeats} / {config.workers}.")
    ws = Workspace(Path(config.out))
    ws.load_scene()
    ws.require_gaussians()
    work = ws.bench_dir / NAME
    cases = [(backend, n) for backend in ("threads", "ray") for n in config.workers]
    runs: dict[str, list[dict[str, Any]]] = {f"{b} {n}": [] for b, n in cases}
    agreement: dict[str, dict[str, Any]] = {}
    images = 0
    startups: list[float] = []
    try:
        for repeat in range(config.repeats):
            startups.append(_ray_startup(config, _fresh_copy(ws, work / "startup")))
            for backend, n in cases:
                key = f"{backend} {n}"
                out = _fresh_copy(ws, work / f"{backend}{n}")
                start = time.perf_counter()
                summary = segment(_case_config(config, out, backend, n))
                wall = time.perf_counter() - start
                images = summary["images"]
                runs[key].append({"wall_s": wall, "images_s": summary["images_wall_s"],
                                  "per_image_s": summary["images_wall_s"] / images, "workers": summary["workers"]})
                print(f"gags bench segment-scaling: repeat {repeat + 1}/{config.repeats}, {key}: {wall:.1f} s",
                      flush=True)
                if repeat == 0:
                    reference = work / f"threads{config.workers[0]}"
                    if out != reference:
                        agreement[key] = _compare(reference, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = {key: {"wall_s": mean_std([r["wall_s"] for r in rs]), "images_s": mean_std([r["images_s"] for r in rs]),
                   "per_image_s": mean_std([r["per_image_s"] for r in rs])} for key, rs in runs.items()}
    startup = mean_std(startups)
    # Ray's extra time over threads at the same worker count, less its start-up, per image and worker
    overhead = {str(n): max(0.0, (table[f"ray {n}"]["wall_s"]["mean"] - table[f"threads {n}"]["wall_s"]["mean"]
                                  - startup["mean"]) * n / images) for n in config.workers}
    per_image_overhead = overhead[str(min(config.workers))]
    sources = dict(PUBLISHED_SECONDS_PER_IMAGE)
    if config.sam_seconds_per_image is not None:
        label = f"gags segment, SAM ViT-H on this CPU ({os.cpu_count()} cores, measured)"
        sources[label] = config.sam_seconds_per_image
    model = scaling_model(config.model_images, list(config.model_gpus), startup["mean"], per_image_overhead, sources)
    record = {
        "benchmark": NAME,
        "scene": str(ws.root),
        "images": images,
        "segmenter": config.segmenter,
        "encoder": config.encoder,
        "ray": config.ray,
        "repeats": config.repeats,
        "cases": table,
        "runs": runs,
        "agreement_with_threads": agreement,
        "ray_overhead_per_image_s": overhead,
        "ray_startup_s": startup,
        "model": {"images": config.model_images, "gpus": list(config.model_gpus), "startup_s": startup["mean"],
                  "overhead_per_image_s": per_image_overhead, "rows": model},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()},
    }
    path = ws.bench_file(NAME)
    record["provenance"] = provenance()
    write_json(path, record)
    print(markdown(record))
    print(f"gags bench segment-scaling: {path}")
    return record


def _cell(stat: dict[str, Any], digits: int = 1) -> str:
    return f"{stat['mean']:.{digits}f}" + ("" if stat["std"] is None else f" ± {stat['std']:.{digits}f}")


def markdown(record: dict[str, Any]) -> str:
    """The record's two tables (the cases; the scaling model) in Markdown."""
    lines = [f"`gags segment` on {record['images']} images ({record['segmenter']} + {record['encoder']}), "
             f"mean ± std over {record['repeats']} runs:", "",
             "| case | command wall (s) | per-image part (s) | per image (s) |", "| --- | ---: | ---: | ---: |"]
    for key, row in record["cases"].items():
        backend, n = key.split()
        label = f"`--workers {n}`" if backend == "threads" else f"`--ray {record['ray']} --ray-workers {n}`"
        lines.append(f"| {label} | {_cell(row['wall_s'])} | {_cell(row['images_s'])} | "
                     f"{_cell(row['per_image_s'], 3)} |")
    model = record["model"]
    gpus = model["gpus"]
    lines += ["", f"Scaling model, {model['images']} images, one actor per GPU (hours; Ray start-up "
              f"{model['startup_s']:.1f} s, overhead {model['overhead_per_image_s']:.3f} s per image):", "",
              "| seconds per image (source) | " + " | ".join(f"{n} GPU" for n in gpus) + " |",
              "| --- | " + " | ".join("---:" for _ in gpus) + " |"]
    for row in model["rows"]:
        lines.append(f"| {row['seconds_per_image']:.0f} s ({row['source']}) | "
                     + " | ".join(f"{row['hours'][str(n)]:.2f}" for n in gpus) + " |")
    return "\n".join(lines)


__all__ = ["PUBLISHED_SECONDS_PER_IMAGE", "markdown", "run", "scaling_model"]
