"""Per-image work of ``gags segment``: in this process, in threads, or in worker processes.

Each worker loads the scene and the models once (:class:`ImageWorker`); ``process(index)`` segments one image
(:func:`gags.segment.image.segment_image`) and writes its feature files, so a finished image is never lost.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gags.config import SegmentConfig
from gags.data.features import feature_stem, read_npy, write_language_features
from gags.errors import GagsError
from gags.segment.image import segment_image
from gags.threads import scoped_torch_threads
from gags.timing import StepTimer
from gags.workspace import Workspace


def segmentation_downscale(height: int, max_height: int) -> float:
    """Factor by which an image ``height`` pixels tall is reduced for segmentation (1 = full size)."""
    if max_height > 0 and height > max_height:
        return height / max_height
    return 1.0


class ImageWorker:
    """Loads the scene and the models once; ``process(index)`` segments one image and writes its files."""

    def __init__(self, config: SegmentConfig) -> None:
        from gags.models import load_encoder, load_segmenter

        self.config = config
        self.ws = Workspace(Path(config.out))
        self.scene = self.ws.load_scene()
        self.segmenter = load_segmenter(config.segmenter)
        self.encoder = load_encoder(config.encoder)

    def process(self, index: int) -> dict[str, Any]:
        config, scene = self.config, self.scene
        name = scene.names[index]
        stem = feature_stem(name)
        timer = StepTimer()
        with timer.step("load"):
            downscale = segmentation_downscale(scene.cameras[index].height, config.max_height)
            rgb = scene.load_image(index, downscale)
            depth = read_npy(self.ws.depth_file(stem)).astype(np.float32)
            points = torch.from_numpy(read_npy(self.ws.prompt_file(stem))).float()
            if depth.shape != rgb.shape[:2]:
                raise GagsError(f"{self.ws.depth_file(stem)} is {depth.shape}, the image {rgb.shape[:2]}; delete "
                                f"{self.ws.depth_dir} and run again.")
        result = segment_image(rgb, depth, points, self.segmenter, self.encoder, config, timer)
        with timer.step("write"):
            write_language_features(self.ws.features_dir, name, result.features, result.segments)
        return {"index": index, "wall": timer.wall, "cpu": timer.cpu, "masks": result.masks,
                "candidates": result.candidates, "points": result.points, "dim": int(result.features.shape[1])}


def torch_threads(config: SegmentConfig) -> int:
    """PyTorch threads per worker: ``config.threads``, or the CPU cores shared among the workers."""
    if config.threads > 0:
        return config.threads
    return max(1, (os.cpu_count() or 1) // max(1, config.workers))


_PROCESS_WORKER: ImageWorker | None = None  # one per worker process (set by _init_process_worker)


def _init_process_worker(config: SegmentConfig, threads: int) -> None:
    global _PROCESS_WORKER
    torch.set_num_threads(threads)
    _PROCESS_WORKER = ImageWorker(config)


def _process_in_worker(index: int) -> dict[str, Any]:
    assert _PROCESS_WORKER is not None
    return _PROCESS_WORKER.process(index)


def run_images(config: SegmentConfig, indices: Sequence[int]) -> Iterator[dict[str, Any]]:
    """Yield the per-image reports of ``indices`` as they finish (``config.workers`` at a time)."""
    workers = max(1, min(config.workers, len(indices)))
    threads = torch_threads(config)
    if workers == 1:
        with scoped_torch_threads(threads):
            worker = ImageWorker(config)
            for index in indices:
                yield worker.process(index)
        return
    if config.parallel == "thread":
        local = threading.local()
        lock = threading.Lock()

        def run_one(index: int) -> dict[str, Any]:
            if not hasattr(local, "worker"):
                with lock:  # model construction is not thread-safe in every library
                    local.worker = ImageWorker(config)
            return local.worker.process(index)

        with scoped_torch_threads(threads), futures.ThreadPoolExecutor(workers) as threads_pool:
            yield from _as_completed(threads_pool, run_one, indices)
        return
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads is not safe
    with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_process_worker,
                                     initargs=(config, threads)) as processes_pool:
        yield from _as_completed(processes_pool, _process_in_worker, indices)


def _as_completed(pool: futures.Executor, fn: Callable[[int], dict[str, Any]],
                  indices: Sequence[int]) -> Iterator[dict[str, Any]]:
    pending = [pool.submit(fn, i) for i in indices]
    try:
        for fut in futures.as_completed(pending):
            yield fut.result()
    finally:
        for fut in pending:
            fut.cancel()


__all__ = ["ImageWorker", "run_images", "segmentation_downscale", "torch_threads"]
