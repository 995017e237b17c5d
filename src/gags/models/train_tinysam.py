"""``gags train-segmenter``: train the embedded SAM-architecture segmenter (``tinysam``) on renders of the procedural
world, or evaluate it.

Data. Worlds of every preset (ramen, teatime, figurines, kitchen, random) composed from seeds, rendered at
``RESOLUTION`` (the size of the demo and the ablation scenes) from the synthetic rig's cameras (far, middle and near
rings: an object is small in some views and fills others), supersampled as ``gags synth`` renders, and blurred by a
random Gaussian (reconstructed views are softer). Every pixel knows its entity at the three levels (``ids``). Training
world seeds start at ``TRAIN_WORLD_OFFSET`` so that the worlds of ``gags synth``, the demo and the ablation (seeds
0-99) are never seen in training.

Training, as SAM trains ambiguous prompts. Each step takes ``IMAGES_PER_STEP`` views and ``POINTS_PER_IMAGE`` points on
each: most drawn so that every sub-part entity of the view is equally likely (small entities are prompted as often as
large ones), the rest uniform over the image (table, floor and wall included). A point has three true masks, the
entities containing it at the sub-part, part and whole level. The decoder answers three masks; each true mask is
matched to the output that fits it best (SAM's minimum over the outputs, applied to each of the point's three
entities), with SAM's loss (20 x focal + dice on the masks at the image's resolution); the IoU head regresses every
output's IoU with the entity it fits best (mean squared error). AdamW, linear warm-up, cosine decay. Seeded: the same
command gives the same weights bit for bit on the same machine (same thread count). A checkpoint every
``CHECKPOINT_EVERY`` steps; the same command resumes from it.

Evaluation (``--eval-only``, and after training): ``gags.bench.hierarchy_segmenter.quality`` on held-out worlds
(seeds never used in training) at ``RESOLUTION``: random points on the objects, the best IoU of the three predicted
masks with the true entity at each level, for this segmenter and for ``hierarchy`` (with the renderer's exact depth)
in one table.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from gags.config import TrainSegmenterConfig
from gags.errors import GagsError
from gags.io import atomic_path, ensure_dir, write_json
from gags.levels import NAMES as LEVEL_NAMES
from gags.models.specs import TINY_SAM_DIR, TINY_SAM_FILE

PRESETS = ("ramen", "teatime", "figurines", "kitchen", "random")
RESOLUTION = 128
"""Render size: the demo's and the ablation's scenes (``gags demo``, ``gags bench ablation --resolution 128``)."""
SUPERSAMPLE = 2
"""Samples per pixel side, as ``gags synth`` renders (its default)."""
BLUR_MAX = 0.8
"""Renders are blurred by a Gaussian of sigma in [0, BLUR_MAX] pixels (reconstructed views are softer than renders)."""
TRAIN_WORLD_OFFSET = 1000
"""Training world seeds: seed * TRAIN_SEED_STRIDE + TRAIN_WORLD_OFFSET + i; below are the worlds of the demo and
the ablation (seed 0-99), never trained on."""
TRAIN_SEED_STRIDE = 1_000_000
HELDOUT_SEED_BASE = 999_000_000
"""Held-out worlds of the quality table: base + i (training seeds stay below)."""
EVAL_PRESETS = ("ramen", "teatime", "figurines", "kitchen")
"""Presets of the quality table (those of ``gags bench hierarchy-segmenter quality``)."""
IMAGES_PER_STEP = 8
POINTS_PER_IMAGE = 16
"""128 prompts per step: the decoder's most efficient batch on a 2-core CPU (``gags.models.tinysam``)."""
BALANCED_SHARE = 0.75
"""Share of the points drawn with every sub-part entity equally likely; the rest are uniform over the image."""
FOCAL_WEIGHT = 20.0
"""SAM's loss: 20 x focal + 1 x dice (Kirillov et al. 2023, section 3 and appendix A)."""
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
"""Focal loss constants (Lin et al. 2017; torchvision's sigmoid_focal_loss defaults); alpha weighs the pixels inside
the true mask, 1 - alpha those outside (``--focal-alpha``)."""
WARMUP_FRACTION = 0.03
WEIGHT_DECAY = 0.1
"""AdamW weight decay of weight matrices and convolutions (SAM: 0.1)."""
GRAD_CLIP = 1.0
CHECKPOINT_EVERY = 250
"""Steps between checkpoints (about two minutes of work on a 2-core CPU)."""
CHECKPOINT = "checkpoint.pt"
DATA_CACHE = "views_seed{seed}_w{worlds}_v{views}.npz"


# ------------------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class WorldJob:
    preset: str
    seed: int
    views: int
    blur: bool


@dataclass
class ViewSet:
    """Rendered views: rgb [V, H, W, 3] uint8; ids [V, 3, H, W] int32 (entity per level; -1: none)."""

    rgb: np.ndarray
    ids: np.ndarray

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, rgb=self.rgb, ids=self.ids)

    @classmethod
    def load(cls, path: Path) -> ViewSet:
        with np.load(path) as data:
            return cls(data["rgb"], data["ids"])


def render_world(job: WorldJob) -> ViewSet:
    """``job.views`` views of one world: colour (blurred when asked) and entity ids."""
    from scipy.ndimage import gaussian_filter

    from gags.synth.raycast import compile_world, render
    from gags.synth.rig import sample_cameras
    from gags.synth.world import build_world

    torch.set_num_threads(1)
    world = build_world(job.preset, job.seed)
    compiled = compile_world(world)
    rng = np.random.default_rng([job.seed, sum(map(ord, job.preset)), 23])  # 23: this module's stream id
    rgbs, ids = [], []
    for camera in sample_cameras(world, job.views, RESOLUTION, seed=job.seed):
        r = render(world, camera, supersample=SUPERSAMPLE, compiled=compiled)
        rgb = r.rgb
        if job.blur:
            sigma = rng.uniform(0.0, BLUR_MAX)
            rgb = np.clip(gaussian_filter(rgb.astype(np.float32), (sigma, sigma, 0)) + 0.5, 0, 255).astype(np.uint8)
        rgbs.append(rgb)
        ids.append(r.ids.astype(np.int32))
    return ViewSet(np.stack(rgbs), np.stack(ids))


def render_views(jobs: list[WorldJob], workers: int, desc: str) -> ViewSet:
    """Views of every job, in job order (the same whatever the number of workers)."""
    from gags.models.train_tinyclip import map_worlds

    sets = map_worlds(render_world, jobs, workers, desc)
    return ViewSet(np.concatenate([s.rgb for s in sets]), np.concatenate([s.ids for s in sets]))


def training_jobs(seed: int, worlds: int, views: int) -> list[WorldJob]:
    if not 0 <= seed < HELDOUT_SEED_BASE // TRAIN_SEED_STRIDE:
        raise GagsError(f"--seed must lie in 0..{HELDOUT_SEED_BASE // TRAIN_SEED_STRIDE - 1}, got {seed}.")
    base = seed * TRAIN_SEED_STRIDE + TRAIN_WORLD_OFFSET
    return [WorldJob(p, base + i, views, True) for i in range(worlds) for p in PRESETS]


# --------------------------------------------------------------------------------------------------------- batches


def sample_points(ids0: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """Prompt pixels of one view: ids0 [H, W] sub-part ids -> [count, 2] int64 (row, col).

    ``BALANCED_SHARE`` of them with every sub-part entity equally likely (a pixel's weight is 1 / its entity's area),
    the rest uniform; pixels without an entity (-1) are never drawn.
    """
    flat = ids0.reshape(-1)
    _, inverse, counts = torch.unique(flat, return_inverse=True, return_counts=True)
    has = (flat >= 0).double()
    balanced = has / counts[inverse].double()
    n_balanced = int(round(BALANCED_SHARE * count))
    picks = torch.cat([torch.multinomial(balanced, n_balanced, replacement=True, generator=gen),
                       torch.multinomial(has, count - n_balanced, replacement=True, generator=gen)])
    width = ids0.shape[1]
    return torch.stack([picks // width, picks % width], 1)


def entities_at(ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """ids [3, H, W], pixels [P, 2] (row, col) -> [P, 3] the entity under each pixel at each level (-1: none)."""
    return ids[:, pixels[:, 0], pixels[:, 1]].T


def point_targets(ids: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [3, H, W], pixels [P, 2] (row, col) -> true masks [P, 3, H, W] bool and valid [P, 3] (the point has an
    entity at that level)."""
    at = entities_at(ids, pixels)
    return ids[None] == at[:, :, None, None], at >= 0


def mask_costs(logits: torch.Tensor, truth: torch.Tensor, focal_alpha: float = FOCAL_ALPHA
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's loss of every output against every true mask, and their IoU.

    logits [P, K, H, W] (K outputs), truth [P, L, H, W] bool -> cost [P, K, L] (20 x focal + dice), iou [P, K, L].

    The truth is binary, so a pixel's focal term is ``t a(x) + (1 - t) b(x)`` and every pairing sums to products
    ``[P, K, HW] @ [P, HW, L]``: the element-wise work is done once per output, not once per (output, level) pair.
    """
    x = logits.flatten(2)  # [P, K, HW]
    t = truth.flatten(2).transpose(1, 2).float()  # [P, HW, L]
    n_pixels = x.shape[-1]
    prob = torch.sigmoid(x)
    log_p = F.logsigmoid(x)
    a = -focal_alpha * (1 - prob) ** FOCAL_GAMMA * log_p  # focal term where the truth is 1
    b = -(1 - focal_alpha) * prob ** FOCAL_GAMMA * (log_p - x)  # ... and where it is 0 (log(1 - p) = log p - x)
    focal = (a @ t + b.sum(-1, keepdim=True) - b @ t) / n_pixels
    t_sum = t.sum(1)[:, None, :]  # [P, 1, L]
    dice = 1 - (2 * (prob @ t) + 1) / (prob.sum(-1, keepdim=True) + t_sum + 1)
    with torch.no_grad():
        hard = (x > 0).float()
        inter = hard @ t
        iou = inter / (hard.sum(-1, keepdim=True) + t_sum - inter).clamp(min=1)
    return FOCAL_WEIGHT * focal + dice, iou


def prompt_pixels(ids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Prompt pixels of a step's views: ids [B, 3, H, W] -> [B, POINTS_PER_IMAGE, 2] (row, col), drawn view by view."""
    return torch.stack([sample_points(ids[b, 0], POINTS_PER_IMAGE, gen) for b in range(len(ids))])


@dataclass
class StepTerms:
    """A step's loss terms over some of its views: mask [M] (SAM's cost of every true mask that exists, against the
    output it is matched to), iou [N] (the IoU head's squared error per point, mean over its outputs), best [N, 3]
    (best IoU of the three outputs with the point's entity per level; NaN where there is none)."""

    mask: torch.Tensor
    iou: torch.Tensor
    best: torch.Tensor


def decode_points(model: Any, embedding: torch.Tensor, dense_pe: torch.Tensor, pixels: torch.Tensor,
                  size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The three outputs for one-point prompts on one image: embedding [1, C, g, g], pixels [P, 2] (row, col) ->
    logits [P, 3, H, W] (upsampled to size = (H, W), the encoder's input, as SAM's postprocessing) and the IoU head's
    [P, 3]."""
    coords = pixels.flip(1).float()[:, None, :]  # (x, y) pixel index: SAM's prompt encoder adds the half pixel
    labels = torch.ones(len(pixels), 1, dtype=torch.int64)
    sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    low_res, iou_pred = model.mask_decoder(image_embeddings=embedding, image_pe=dense_pe,
                                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                           multimask_output=True)
    return F.interpolate(low_res, size, mode="bilinear", align_corners=False), iou_pred


def step_terms(model: Any, rgb: torch.Tensor, ids: torch.Tensor, pixels: torch.Tensor, matching: str = "best",
               focal_alpha: float = FOCAL_ALPHA) -> StepTerms:
    """model: segment_anything's ``Sam``; rgb [B, H, W, 3] uint8, ids [B, 3, H, W] int32 (H = W = the encoder's
    input), pixels [B, P, 2] prompts (``prompt_pixels``); matching: ``best`` (each true mask against the output that
    fits it best, SAM's rule) or ``level`` (output k against the level-k entity: sub-part, part, whole)."""
    images = model.preprocess(rgb.permute(0, 3, 1, 2).float())
    embeddings = model.image_encoder(images)  # [B, C, g, g]
    dense_pe = model.prompt_encoder.get_dense_pe()
    height, width = rgb.shape[1:3]
    mask_terms, iou_terms, best_ious = [], [], []
    for b in range(len(rgb)):  # one decoder call per image (segment_anything's decoder takes one image)
        truth, valid = point_targets(ids[b], pixels[b])
        logits, iou_pred = decode_points(model, embeddings[b:b + 1], dense_pe, pixels[b], (height, width))
        cost, iou = mask_costs(logits, truth, focal_alpha)  # [P, 3, 3]
        if matching == "best":  # each true mask against the output that fits it best (SAM)
            chosen = cost.min(1).values  # [P, L]
            iou_target = torch.where(valid[:, None, :], iou, torch.zeros_like(iou)).max(2).values  # [P, K]
        else:  # output k answers level k
            chosen = cost.diagonal(dim1=1, dim2=2)  # [P, L]
            iou_target = torch.where(valid, iou.diagonal(dim1=1, dim2=2), torch.zeros_like(valid, dtype=iou.dtype))
        mask_terms.append(chosen[valid])
        iou_terms.append((iou_pred - iou_target).pow(2).mean(1))
        best_ious.append(torch.where(valid, iou.max(1).values, torch.nan))
    return StepTerms(torch.cat(mask_terms), torch.cat(iou_terms), torch.cat(best_ious))


def step_loss(model: Any, rgb: torch.Tensor, ids: torch.Tensor, gen: torch.Generator, matching: str = "best",
              focal_alpha: float = FOCAL_ALPHA) -> tuple[torch.Tensor, dict[str, float]]:
    """One training step's loss on the views rgb [B, H, W, 3] / ids [B, 3, H, W] (prompts drawn from ``gen``):
    the mean of the mask terms plus the mean of the IoU head's terms (``step_terms``), and its statistics."""
    terms = step_terms(model, rgb, ids, prompt_pixels(ids, gen), matching, focal_alpha)
    loss = terms.mask.mean() + terms.iou.mean()
    return loss, _stats([terms])


LEVEL_ORDER_VIEWS = 32
"""Training views on which ``order_outputs_by_level`` measures how each output fits each level (512 prompts)."""


def output_fit(model: Any, rgb: torch.Tensor, ids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mean IoU of every output with every level's true entity: rgb [B, H, W, 3], ids [B, 3, H, W] -> [K, L]
    (outputs x levels; prompts drawn from ``gen``; pairs without an entity are skipped)."""
    pixels = prompt_pixels(ids, gen)
    images = model.preprocess(rgb.permute(0, 3, 1, 2).float())
    total = torch.zeros(3, 3, dtype=torch.float64)
    count = torch.zeros(1, 3, dtype=torch.float64)
    with torch.no_grad():
        embeddings = model.image_encoder(images)
        dense_pe = model.prompt_encoder.get_dense_pe()
        for b in range(len(rgb)):
            truth, valid = point_targets(ids[b], pixels[b])
            logits, _ = decode_points(model, embeddings[b:b + 1], dense_pe, pixels[b], (rgb.shape[1], rgb.shape[2]))
            _, iou = mask_costs(logits, truth)  # [P, K, L]
            total += (iou * valid[:, None, :]).sum(0).double()
            count += valid.sum(0, keepdim=True).double()
    return (total / count.clamp(min=1)).float()


def order_outputs_by_level(model: Any, fit: torch.Tensor) -> list[int]:
    """Give output k the parameters of the output that fits level k best (fit [K, L], ``output_fit``): its mask
    token, its hypernetwork and its row of the IoU head. Returns the source output of each level.

    Weights trained with SAM's best-output rule have no order (one output may serve only the floor and walls); this
    starts ``--matching level`` from the output that already answers each level best, so no level starts from an
    output that never drew it.
    """
    decoder = model.mask_decoder
    source = fit.argmax(0).tolist()  # [L]
    first = 1  # token 0 is the single-mask output; the three multimask outputs are tokens 1..3
    with torch.no_grad():
        tokens = decoder.mask_tokens.weight.clone()
        hyper = [copy.deepcopy(m.state_dict()) for m in decoder.output_hypernetworks_mlps]
        head = decoder.iou_prediction_head.layers[-1]
        head_w, head_b = head.weight.clone(), head.bias.clone()
        for level, k in enumerate(source):
            decoder.mask_tokens.weight[first + level] = tokens[first + k]
            decoder.output_hypernetworks_mlps[first + level].load_state_dict(hyper[first + k])
            head.weight[first + level] = head_w[first + k]
            head.bias[first + level] = head_b[first + k]
    return source


def _stats(shards: list[StepTerms]) -> dict[str, float]:
    mask = torch.cat([t.mask.detach() for t in shards])
    iou = torch.cat([t.iou.detach() for t in shards])
    best = torch.cat([t.best for t in shards])
    return {"mask": float(mask.mean()), "iou_head": float(iou.mean()),
            **{name: float(best[:, k].nanmean()) for k, name in enumerate(LEVEL_NAMES)}}


def step_gradients(model: Any, params: list[torch.nn.Parameter], rgb: torch.Tensor, ids: torch.Tensor,
                   gen: torch.Generator, matching: str, threads: int, pool: ThreadPoolExecutor | None,
                   focal_alpha: float = FOCAL_ALPHA) -> tuple[list[torch.Tensor | None], dict[str, float]]:
    """The gradients of ``step_loss`` (prompts drawn from ``gen`` first), the views split among ``threads`` threads
    of ``pool`` (None: this thread alone, ``threads`` = 1).

    Each thread runs the model on its share of the views and returns the gradients of its terms over the step's term
    counts; they are summed in the shards' order, so the same number of threads gives the same gradients bit for bit.
    Returns one gradient per parameter (None for parameters the loss does not reach, as ``backward`` leaves them).
    """
    pixels = prompt_pixels(ids, gen)
    n_mask = sum(int((entities_at(i, p) >= 0).sum()) for i, p in zip(ids, pixels, strict=True))  # true masks
    n_points = pixels.shape[0] * pixels.shape[1]

    def shard(part: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[tuple[torch.Tensor | None, ...],
                                                                              StepTerms]:
        terms = step_terms(model, *part, matching, focal_alpha)
        loss = terms.mask.sum() / n_mask + terms.iou.sum() / n_points
        return torch.autograd.grad(loss, params, allow_unused=True), terms

    parts = list(zip(rgb.tensor_split(threads), ids.tensor_split(threads), pixels.tensor_split(threads), strict=True))
    results = list(pool.map(shard, parts)) if pool is not None else [shard(part) for part in parts]
    grads: list[torch.Tensor | None] = []
    for i in range(len(params)):
        present = [g for grads_of_shard, _ in results if (g := grads_of_shard[i]) is not None]
        grads.append(torch.stack(present).sum(0) if present else None)
    return grads, _stats([t for _, t in results])


def _param_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "pos_embed" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def _augment(rgb: torch.Tensor, ids: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flips (colour and ids) and brightness in [0.8, 1.2]."""
    flip = torch.rand(len(rgb), generator=gen) < 0.5
    rgb = torch.where(flip[:, None, None, None], rgb.flip(2), rgb)
    ids = torch.where(flip[:, None, None, None], ids.flip(3), ids)
    gain = 0.8 + 0.4 * torch.rand(len(rgb), 1, 1, 1, generator=gen)
    return (rgb.float() * gain).round().clamp(0, 255).to(torch.uint8), ids


# --------------------------------------------------------------------------------------------------------- training


def _options(config: TrainSegmenterConfig) -> dict[str, Any]:
    """What determines the weights: a checkpoint made with other options is never resumed."""
    from gags.workspace import file_fingerprint

    init = None if config.init is None else {"path": str(config.init), "fingerprint": file_fingerprint(config.init)}
    return {"seed": config.seed, "worlds": config.worlds, "views": config.views, "steps": config.steps,
            "lr": config.lr, "matching": config.matching, "focal_alpha": config.focal_alpha, "init": init,
            "threads": step_threads(config)}


def step_threads(config: TrainSegmenterConfig) -> int:
    """Threads sharing each step's views (``--threads``; 0: one per CPU core), at most one per view."""
    wanted = config.threads if config.threads > 0 else (os.cpu_count() or 1)
    return max(1, min(wanted, IMAGES_PER_STEP))


def train(config: TrainSegmenterConfig, data: ViewSet, out: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train (resuming from ``out/CHECKPOINT`` when it was made with the same options); returns the model and a log."""
    from gags.models.tinysam import build_tiny_sam

    torch.manual_seed(config.seed)
    model = build_tiny_sam()
    if config.init is not None:
        from gags.models.segmenters import load_state_dict

        model.load_state_dict(load_state_dict(Path(config.init)))
        made = init_provenance(config.init)
        if config.matching == "level" and made is not None and made.get("matching") == "level":
            print(f"outputs kept in place: {config.init} was trained with --matching level (output k answers level k)")
        elif config.matching == "level":
            probe = torch.Generator().manual_seed(config.seed)
            views = torch.arange(min(LEVEL_ORDER_VIEWS, len(data.rgb)))
            fit = output_fit(model, torch.from_numpy(data.rgb[views.numpy()]),
                             torch.from_numpy(data.ids[views.numpy()]), probe)
            source = order_outputs_by_level(model, fit)
            print(f"outputs for sub-part / part / whole start from outputs {source} of {config.init} (mean IoU with "
                  f"each level's entity: {[[round(v, 2) for v in row] for row in fit.tolist()]})")
    gen = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(_param_groups(model), lr=config.lr, betas=(0.9, 0.999))
    total = config.steps
    warmup = max(1, int(WARMUP_FRACTION * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    )
    history: list[dict[str, float]] = []
    seconds = 0.0
    start_step = 0
    checkpoint = out / CHECKPOINT
    options = _options(config)
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state["options"] != options:
            raise GagsError(
                f"{checkpoint} was made with other options ({state['options']}, now {options}); pass the same "
                "options to resume, or another --out (or delete the checkpoint) to start again."
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        gen.set_state(state["generator"])
        history, seconds, start_step = state["history"], state["seconds"], state["step"]
        print(f"resuming from step {start_step} of {total} ({checkpoint})")
    rgb_all = torch.from_numpy(data.rgb)
    ids_all = torch.from_numpy(data.ids)
    model.train()
    params = list(model.parameters())
    threads = step_threads(config)
    torch_threads = torch.get_num_threads()
    # each thread runs PyTorch single-threaded: the decoder's many small operations gain little from a second
    # PyTorch thread (1.65 against 1.70 steps/s on a 2-core CPU), two threads over the views 1.7x
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    if pool is not None:
        torch.set_num_threads(1)
    bar = tqdm(total=total, initial=start_step, desc="train tinysam", unit="step")
    started = time.time()
    try:
        for step in range(start_step, total):
            idx = torch.randint(len(rgb_all), (IMAGES_PER_STEP,), generator=gen)
            rgb, ids = _augment(rgb_all[idx], ids_all[idx], gen)
            grads, stats = step_gradients(model, params, rgb, ids, gen, config.matching, threads, pool,
                                          config.focal_alpha)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            schedule.step()
            history.append(stats)
            bar.update(1)
            recent = history[-50:]
            bar.set_postfix({k: f"{np.nanmean([h[k] for h in recent]):.3f}" for k in ("mask", *LEVEL_NAMES)})
            if (step + 1) % CHECKPOINT_EVERY == 0 or step + 1 == total:
                state = {"options": options, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "schedule": schedule.state_dict(), "generator": gen.get_state(), "history": history,
                         "seconds": seconds + time.time() - started, "step": step + 1}
                with atomic_path(checkpoint) as tmp:
                    torch.save(state, tmp)
    finally:
        if pool is not None:
            pool.shutdown()
            torch.set_num_threads(torch_threads)
        bar.close()
    model.eval()
    seconds += time.time() - started
    first, last = history[:50], history[-50:]
    log = {"steps": total, "train_minutes": seconds / 60,
           **{f"{k}_first50": float(np.nanmean([h[k] for h in first])) for k in ("mask", *LEVEL_NAMES)},
           **{f"{k}_last50": float(np.nanmean([h[k] for h in last])) for k in ("mask", *LEVEL_NAMES)}}
    return model, log


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's state dict as safetensors (float32)."""
    from safetensors.torch import save_file

    ensure_dir(path.parent)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


# ------------------------------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class QualityOptions:
    """What the quality table is computed on (held-out worlds at RESOLUTION)."""

    worlds: int
    views: int
    points: int


def quality_table(weights: Path, options: QualityOptions) -> dict[str, Any]:
    """Best-of-three-masks IoU per level on held-out worlds, for ``sam:tiny:weights`` and ``hierarchy``."""
    from gags.bench.hierarchy_segmenter import quality
    from gags.config import BenchSegmenterConfig
    from gags.models.hierarchy import HierarchySegmenter
    from gags.models.segmenters import SamSegmenter

    bench = BenchSegmenterConfig(what="quality", seeds=options.worlds, seed_base=HELDOUT_SEED_BASE, depth="exact",
                                 views=options.views, size=RESOLUTION)
    rows = {"tinysam": quality(bench, options.points, SamSegmenter("tiny", weights, device="cpu")),
            "hierarchy": quality(bench, options.points, HierarchySegmenter())}
    return {"options": asdict(options), "presets": list(EVAL_PRESETS), "rows": rows}


def format_quality(table: dict[str, Any]) -> str:
    """The quality table (``gags.bench.hierarchy_segmenter.quality_markdown``) of every row of ``table``."""
    from gags.bench.hierarchy_segmenter import quality_markdown

    return quality_markdown([{"segmenter": name, "quality": q} for name, q in table["rows"].items()])


def format_by_area(table: dict[str, Any]) -> str:
    """The quality table's rows by the true entity's area (``gags.bench.hierarchy_segmenter.by_area_markdown``)."""
    from gags.bench.hierarchy_segmenter import by_area_markdown

    return by_area_markdown([{"segmenter": name, "quality": q} for name, q in table["rows"].items()])


# -------------------------------------------------------------------------------------------------------------- run


def run(config: TrainSegmenterConfig) -> None:
    """Train (or with --eval-only evaluate) the embedded SAM-architecture segmenter; see the module docstring."""
    options = QualityOptions(config.eval_worlds, config.eval_views, config.eval_points)
    if config.eval_only:
        weights = Path(config.weights) if config.weights is not None else TINY_SAM_DIR / TINY_SAM_FILE
        if not weights.is_file():
            raise GagsError(f"--weights {weights}: no such file; pass a tinysam.safetensors written by "
                            "gags train-segmenter.")
        table = quality_table(weights, options)
        print(f"best-of-three IoU with the true entity on held-out worlds ({config.eval_worlds} per preset, "
              f"{config.eval_views} views, {RESOLUTION} px, {config.eval_points} points on objects per view):")
        print(format_quality(table))
        print(format_by_area(table))
        return
    for name, value in (("worlds", config.worlds), ("views", config.views), ("steps", config.steps),
                        ("workers", config.workers)):
        if value < 1:
            raise GagsError(f"--{name} must be at least 1, got {value}.")
    if not 0 < config.focal_alpha < 1:
        raise GagsError(f"--focal-alpha must lie strictly between 0 and 1, got {config.focal_alpha}.")
    if config.threads < 0:
        raise GagsError(f"--threads must be 0 (one per CPU core) or more, got {config.threads}.")
    if config.init is not None and not Path(config.init).is_file():
        raise GagsError(f"--init {config.init}: no such file; pass a tinysam.safetensors written by gags "
                        "train-segmenter.")
    out = ensure_dir(Path(config.out))
    started = time.time()
    load_start = os.getloadavg()[1]
    cache = out / DATA_CACHE.format(seed=config.seed, worlds=config.worlds, views=config.views)
    if cache.is_file():
        data = ViewSet.load(cache)
        print(f"read {len(data.rgb)} training views from {cache}")
    else:
        data = render_views(training_jobs(config.seed, config.worlds, config.views), config.workers,
                            desc="training renders")
        data.save(cache)
    data_minutes = (time.time() - started) / 60
    first_stage = init_provenance(config.init)
    model, log = train(config, data, out)
    folder = ensure_dir(out / "tinysam")
    save_weights(model, folder / TINY_SAM_FILE)
    train_end = time.time()
    table = quality_table(folder / TINY_SAM_FILE, options)
    report = {
        "command": command_line(config), **_options(config), "presets": list(PRESETS), "resolution": RESOLUTION,
        "images_per_step": IMAGES_PER_STEP, "points_per_image": POINTS_PER_IMAGE, "train_views": int(len(data.rgb)),
        "data_minutes": data_minutes, "total_minutes": data_minutes + log["train_minutes"],  # resumed runs included
        "eval_minutes": (time.time() - train_end) / 60, **log, "heldout": {**table, "seed_base": HELDOUT_SEED_BASE},
        "first_stage": first_stage,
        "machine_note": f"{os.cpu_count()} cores, 5-minute load average {load_start:.1f} at the start and "
                        f"{os.getloadavg()[1]:.1f} at the end",
    }
    write_json(folder / "training.json", report)
    write_model_card(folder, report)
    print(format_quality(table))
    print(f"weights written to {folder / TINY_SAM_FILE} (training took {report['total_minutes']:.1f} min: data "
          f"{data_minutes:.1f}, optimisation {log['train_minutes']:.1f}); use them with --segmenter "
          f"sam:tiny:{folder / TINY_SAM_FILE}; to ship them: copy {folder} over {TINY_SAM_DIR}")


def init_provenance(init: Path | None) -> dict[str, Any] | None:
    """How the --init weights were made: the command, steps, rule and minutes of the training.json beside them (as
    ``gags train-segmenter`` writes it), or None (no --init, or weights without their training.json)."""
    if init is None or not (Path(init).parent / "training.json").is_file():
        return None
    made = json.loads((Path(init).parent / "training.json").read_text())
    return {key: made.get(key) for key in ("command", "steps", "matching", "lr", "train_minutes", "total_minutes",
                                           "first_stage")}


def command_line(config: TrainSegmenterConfig) -> str:
    """The ``gags train-segmenter`` command that reproduces ``config`` (every training option spelled out)."""
    return (f"gags train-segmenter --out {config.out} --seed {config.seed} --worlds {config.worlds} "
            f"--views {config.views} --steps {config.steps} --lr {config.lr} --matching {config.matching} "
            f"--focal-alpha {config.focal_alpha} "
            + (f"--init {config.init} " if config.init is not None else "") +
            f"--workers {config.workers} "
            f"--threads {config.threads} --eval-worlds {config.eval_worlds} --eval-views {config.eval_views} "
            f"--eval-points {config.eval_points}")


def write_model_card(folder: Path, report: dict[str, Any]) -> None:
    """MODEL_CARD.md beside the weights: the model, its data, how it was trained, how well it does."""
    from gags.models import tinysam as arch

    weights = folder / TINY_SAM_FILE
    size_mb = weights.stat().st_size / 2**20
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        n_params = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118
    heldout = report["heldout"]
    grid = arch.IMAGE_SIZE // arch.PATCH
    card = f"""# tinysam: the embedded promptable segmenter of gags

**It knows the procedural world of `gags synth` only.** It exists so that the whole pipeline runs on a CPU without
downloads (demo, tests, ablation) through SAM's own code path; on real scenes use SAM
(`--segmenter sam:vit_h:/path/sam_vit_h_4b8939.pth`) or SAM 2.

## Model

- segment_anything's `Sam`: its `PromptEncoder`, its `MaskDecoder` with a `TwoWayTransformer` of depth
  {arch.DECODER_DEPTH} and width {arch.EMBED_DIM} (SAM: 2 and 256), three mask outputs and the predicted-IoU head;
  a small image encoder of this project (`gags.models.tinysam.TinyImageEncoder`: strided convolutions with residual
  blocks, {arch.GLOBAL_BLOCKS} global-attention blocks) turning a {arch.IMAGE_SIZE} px image into a {grid} x {grid}
  grid of {arch.PATCH} px tokens (SAM's ViT: 1024 px, 64 x 64 tokens of 16 px).
- {n_params / 1e6:.2f} M parameters in float32: `{TINY_SAM_FILE}`, {size_mb:.1f} MB (safetensors).
- Loaded by `gags.models.SamSegmenter`, the adapter that loads `vit_b`, `vit_l` and `vit_h` checkpoints:
  `--segmenter tinysam` means `--segmenter sam:tiny:<this file>`.

## Data

- Renders ({RESOLUTION} x {RESOLUTION}, {SUPERSAMPLE}x{SUPERSAMPLE} supersampled, blurred by a Gaussian of random
  sigma up to {BLUR_MAX} px) of procedural worlds of the presets {", ".join(PRESETS)}: {report["worlds"]} worlds per
  preset (world seeds {report["seed"]} x {TRAIN_SEED_STRIDE:,} + {TRAIN_WORLD_OFFSET} + i, never those of the demo or
  the ablation), {report["views"]} views each from the synthetic camera rig (far, middle and near rings):
  {report["train_views"]:,} views; random horizontal flips and brightness.
- Prompts: {POINTS_PER_IMAGE} points per view, {BALANCED_SHARE:.0%} drawn with every sub-part entity equally likely,
  the rest uniform over the image. A point's true masks are the entities containing it at the sub-part, part and
  whole levels.

## Training

{_training_section(report)}

## Quality on held-out worlds

{heldout["options"]["worlds"]} worlds per preset ({", ".join(heldout["presets"])}) whose seeds were never used for
training ({heldout["seed_base"]:,} + i), {heldout["options"]["views"]} views each at {RESOLUTION} px,
{heldout["options"]["points"]} random points on the objects per view. Mean over the points of the best IoU of the
three predicted masks with the true entity at each level; the IoU of the mask the segment stage takes for each level
(the three sorted by area: smallest sub-part, largest whole) with that level's entity; and the share of predicted
masks that pass the segment stage's filters (predicted IoU > 0.7, stability >= 0.85). `hierarchy` is given the
renderer's exact depth.

{format_quality(heldout)}

By the true entity's area (all levels together; best IoU, and that mask's precision and recall: low precision is a
mask too large, low recall an entity partly left out):

{format_by_area(heldout)}

`gags train-segmenter --eval-only` recomputes these tables for the shipped weights.
"""
    with atomic_path(folder / "MODEL_CARD.md") as tmp:
        tmp.write_text(card)


MATCHING_RULES = {
    "best": "as SAM trains ambiguous prompts: each of the point's three true masks is matched to the output that fits "
            "it best; the IoU head regresses each output's IoU with the entity it fits best",
    "level": "output k against the point's level-k entity (sub-part, part, whole: the order the segment stage reads "
             "them in); the IoU head regresses each output's IoU with its level's entity; from --init weights trained "
             "otherwise, each level's output starts from the output that fits that level best on the first training "
             "views",
}
"""How each --matching rule trains the three outputs (the model card's words)."""


def earlier_stages(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages the weights went through before this run, first first: the chain of ``first_stage`` records
    (``init_provenance``: each --init's training.json and the one before it)."""
    stages = []
    stage = report.get("first_stage")
    while stage is not None:
        stages.append(stage)
        stage = stage.get("first_stage")
    return stages[::-1]


def _training_section(report: dict[str, Any]) -> str:
    """The model card's training section: the earlier stages (when the weights started from --init) and this run."""
    lines = []
    earlier = earlier_stages(report)
    for number, stage in enumerate(earlier, 1):
        minutes = stage.get("total_minutes") or 0.0
        source = "" if number == 1 else f", from the weights of stage {number - 1} (--init)"
        lines += [f"- Stage {number} ({stage['steps']} steps, --matching {stage['matching']}, lr "
                  f"{stage['lr']}; {minutes:.0f} minutes){source}: "
                  f"{MATCHING_RULES.get(str(stage['matching']), stage['matching'])}.",
                  "", f"      {stage['command']}", ""]
    rule = MATCHING_RULES[report["matching"]]
    lead = (f"Stage {len(earlier) + 1}, from the weights of stage {len(earlier)} (--init): " + rule if earlier
            else rule[0].upper() + rule[1:])
    alpha = report.get("focal_alpha", FOCAL_ALPHA)
    lines += [f"- {lead}; loss {FOCAL_WEIGHT:g} x focal (alpha {alpha:g}: the weight of the pixels inside the true "
              f"mask) + dice at the image's resolution, MSE for the IoU head.",
              f"- AdamW (lr {report['lr']}, {WARMUP_FRACTION:.0%} warm-up, cosine decay, weight decay {WEIGHT_DECAY}, "
              f"gradient clip {GRAD_CLIP}), {IMAGES_PER_STEP} views x {POINTS_PER_IMAGE} points per step, "
              f"{report['steps']} steps.",
              "- Command (the same seed gives the same weights on the same machine with the same thread count; an "
              "interrupted run resumes from its checkpoint):", "", f"      {report['command']}", "",
              f"- Took {report['total_minutes']:.0f} minutes on a 2-core CPU: rendering {report['data_minutes']:.1f}, "
              f"optimisation {report['train_minutes']:.0f}. Machine: {report['machine_note']}."]
    return "\n".join(lines)


def install(folder: Path) -> None:
    """Copy a trained folder over the shipped weights."""
    ensure_dir(TINY_SAM_DIR)
    for name in (TINY_SAM_FILE, "training.json", "MODEL_CARD.md"):
        shutil.copy2(folder / name, TINY_SAM_DIR / name)

