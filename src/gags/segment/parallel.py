"""Per-image work of ``gags segment``: in this process, in threads, in worker processes, or on a Ray cluster.

Each worker loads the scene and the models once (:class:`ImageWorker`); ``process(index)`` segments one image
(:func:`gags.segment.image.segment_image`) and writes its feature files, so a finished image is never lost.

On Ray (``--ray``, :func:`ray_images`) every worker is an actor holding one :class:`ImageWorker`; images are handed out
one at a time to whichever actor is free. An actor that dies is restarted and its unfinished image is redone
(``gags.cluster.MAX_RESTARTS`` times at most); the files of an image are written atomically, ``_s`` last, so a dead
actor leaves nothing half-written and the image counts as not done until it is redone.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gags.cluster import MAX_RESTARTS, RaySlot
from gags.config import SegmentConfig
from gags.data.features import feature_stem, read_npy, write_language_features
from gags.errors import GagsError, one_line
from gags.segment.exact import ENTITY_SEGMENTERS, EXACT, OracleSegmenter, exact_image, read_ids
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

    def __init__(self, config: SegmentConfig, cwd: str | None = None, threads: int = 0) -> None:
        """cwd, threads: for a worker in another process or on another node (see ``gags.cluster.worker_setup``)."""
        from gags.models import load_encoder, load_segmenter

        if cwd is not None:
            from gags.cluster import worker_setup

            worker_setup(cwd, threads)

        self.config = config
        self.ws = Workspace(Path(config.out))
        self.scene = self.ws.load_scene()
        self.exact = config.segmenter == EXACT  # the scene's own entities: no segmenter, no prompts, no depth
        self.segmenter = None if self.exact else load_segmenter(config.segmenter)
        self.encoder = load_encoder(config.encoder)

    def process(self, index: int) -> dict[str, Any]:
        config, scene = self.config, self.scene
        name = scene.names[index]
        stem = feature_stem(name)
        timer = StepTimer()
        with timer.step("load"):
            downscale = segmentation_downscale(scene.cameras[index].height, config.max_height)
            rgb = scene.load_image(index, downscale)
            if config.segmenter in ENTITY_SEGMENTERS:
                ids = read_ids(scene.root, stem, *rgb.shape[:2])
            if not self.exact:
                depth = read_npy(self.ws.depth_file(stem)).astype(np.float32)
                points = torch.from_numpy(read_npy(self.ws.prompt_file(stem))).float()
                if depth.shape != rgb.shape[:2]:
                    raise GagsError(f"{self.ws.depth_file(stem)} is {depth.shape}, the image {rgb.shape[:2]}; delete "
                                    f"{self.ws.depth_dir} and run again.")
        if self.exact:
            result = exact_image(ids, rgb, self.encoder, timer)
        else:
            if isinstance(self.segmenter, OracleSegmenter):
                self.segmenter.set_ids(ids)  # the oracle answers with this view's entities
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
    """Yield the per-image reports of ``indices`` as they finish (``config.workers`` at a time, or on Ray)."""
    if config.ray is not None:
        from gags.cluster import check_shared_storage, connect

        with connect(config.ray) as ray:
            check_shared_storage(ray, Path(config.out))
            yield from ray_images(config, indices)
        return
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


def ray_slot(config: SegmentConfig) -> RaySlot:
    return RaySlot(cpus=config.ray_cpus_per_worker, gpus=config.ray_gpus_per_worker)


def ray_threads(config: SegmentConfig) -> int:
    """PyTorch threads of a Ray actor: ``--threads``, else the whole CPU cores it reserves (at least 1)."""
    return config.threads if config.threads > 0 else max(1, int(config.ray_cpus_per_worker))


def ray_images(config: SegmentConfig, indices: Sequence[int],
               worker_class: type[ImageWorker] = ImageWorker) -> Iterator[dict[str, Any]]:
    """Yield the per-image reports of ``indices`` as Ray actors finish them (the driver must be connected:
    ``gags.cluster.connect``). ``worker_class``: the actor's class (tests inject faults with a subclass)."""
    import ray
    from ray.util import ActorPool

    slot = ray_slot(config)
    fits = slot.fits_in_cluster(ray, "worker", "--ray")
    count = max(1, min(config.ray_workers or fits, len(indices)))
    actor = ray.remote(worker_class).options(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS,
                                             **slot.options())
    config = dataclasses.replace(config, out=Path(config.out).resolve())
    actors: list[Any] = [actor.remote(config, os.getcwd(), ray_threads(config)) for _ in range(count)]
    pool = ActorPool(actors)
    try:
        for index in indices:
            pool.submit(lambda a, i: a.process.remote(i), index)
        while pool.has_next():
            try:
                yield {**pool.get_next_unordered(), "actors": count}
            except ray.exceptions.RayTaskError as exc:  # an error raised by the worker's code: raise it here
                raise exc.as_instanceof_cause() from None
            except ray.exceptions.RayActorError as exc:
                raise GagsError(f"a Ray worker of gags segment was lost for good (restarted {MAX_RESTARTS} times, "
                                f"or it could not start: {one_line(str(exc))}); finished images are kept, run the same "
                                "command to resume (a worker out of memory: give each more with "
                                "--ray-cpus-per-worker).") from None
    finally:
        for a in actors:
            ray.kill(a)


def _as_completed(pool: futures.Executor, fn: Callable[[int], dict[str, Any]],
                  indices: Sequence[int]) -> Iterator[dict[str, Any]]:
    pending = [pool.submit(fn, i) for i in indices]
    try:
        for fut in futures.as_completed(pending):
            yield fut.result()
    finally:
        for fut in pending:
            fut.cancel()


__all__ = ["ImageWorker", "ray_images", "run_images", "segmentation_downscale", "torch_threads"]
