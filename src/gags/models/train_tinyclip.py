"""``gags train-encoder``: train the embedded tiny CLIP on renders of the procedural world, or evaluate it.

Data. Worlds of every preset (ramen, teatime, figurines, kitchen, random) are composed from seeds, rendered from
cameras of the synthetic rig, and cropped exactly as the segment stage crops (``gags.models.crops.crop_masks``:
background black, box crop, square pad, resize to the encoder's input):

- exact crops: every entity visible with at least ``MIN_CROP_PIXELS`` pixels, at each level (sub-part, part, whole;
  implicit entities are skipped: their crop is their parent's), captioned with its name at that level ("egg yolk",
  "egg", "ramen bowl"), its colour ("yellow egg yolk"), its texture ("striped mug", "red striped mug");
- segmenter crops: masks of the embedded ``HierarchySegmenter`` at random points, as the segment stage sees them;
  a mask whose IoU with an entity is at least ``MATCH_IOU`` gets that entity's captions, any other mask is a generic
  crop captioned "object", "things", "stuff" or "texture";
- background entities (table, floor, wall) are captioned with their names and also "stuff" and "texture".

Training. Contrastive (InfoNCE), label-aware: a caption is a positive of every image it describes truly ("mug" and
"red mug" both describe a red mug; two crops of mugs in a batch share "mug"), so targets are the normalised rows and
columns of that compatibility matrix instead of the identity. Every step contrasts the batch's images with all the
names of the vocabulary, the four generic phrases and the batch's captions. AdamW, linear warm-up, cosine decay.

Evaluation. Held-out worlds (seeds never used for training, so new compositions, colours and views), exact crops,
zero-shot top-1 among every name of every level; per level.

The model is an open_clip ``CLIP`` (a small CLIP ResNet image tower, a small text transformer, open_clip's BPE
tokenizer), written in open_clip's ``local-dir:`` format (open_clip_config.json + open_clip_model.safetensors), and
loaded back through ``OpenClipEncoder`` for evaluation: the code path of any real CLIP checkpoint.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from gags.config import TrainEncoderConfig
from gags.errors import GagsError
from gags.io import atomic_path, ensure_dir, write_json
from gags.levels import NAMES as LEVEL_NAMES
from gags.models.crops import crop_masks
from gags.models.specs import TINY_CLIP_DIR

INPUT_SIZE = 64
"""Side of the crops the tiny CLIP sees (pixels; CLIP's ResNet needs a multiple of 32). Half of the entities of a
256 x 256 view have boxes under ~40 px, so little detail is lost."""
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": INPUT_SIZE, "layers": [2, 3, 4, 2], "width": 24, "head_width": 32},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 2},
}
"""open_clip CLIP config. Image tower: CLIP's ModifiedResNet (the RN50 architecture with 2, 3, 4, 2 bottlenecks per
stage and a stem width of 24, attention pooling). A ViT of similar cost (4 layers of width 128, 8 px patches on 48 px
crops) learned about 4x more slowly per step on this data (7% vs 29% held-out whole-object top-1 after 400 supervised
steps of 64 crops), too slowly for the one-hour CPU budget. Text tower: a transformer of 2 layers of width 128 over 12
tokens (the longest caption, e.g. "dark green checkered bear snout", takes 10 with start and end; ``Captions`` checks
that every caption fits).

Depth against data (held-out top-1 whole / part / sub-part, README "Models"): 2, 2, 2, 2 blocks on 14 worlds x 6 views
for 12 epochs (26 min) reach 69.7 / 65.2 / 65.6%; 2, 3, 4, 2 blocks on 28 worlds x 4 views for 19 epochs (48 min)
78.9 / 73.8 / 77.8%; on 42 worlds x 4 views for 13 epochs (43 min, the shipped model) 81.9 / 75.0 / 75.6%."""
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESS_CFG = {"size": INPUT_SIZE, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                  "interpolation": "bilinear", "resize_mode": "squash"}
"""open_clip's defaults (OpenAI mean/std); crops arrive square at INPUT_SIZE, so resizing never happens."""

PRESETS = ("ramen", "teatime", "figurines", "kitchen", "random")
RESOLUTION = 256
"""Render size, the size of the synthetic benchmark scenes (gags synth --resolution default)."""
SUPERSAMPLE = 1
"""Samples per pixel side when rendering training data (1: 4x faster than 2; blur augmentation softens edges)."""
MIN_CROP_PIXELS = 64
"""Smallest entity (or mask) cropped: 0.1% of a 256 x 256 image, the synthetic benchmark's visibility threshold."""
SEGMENTER_POINTS = 24
"""Random prompt points per view for segmenter crops (3 masks each, duplicates removed)."""
MAX_SEGMENTER_CROPS = 24
"""At most this many segmenter crops per view."""
MATCH_IOU = 0.5
"""A segmenter mask takes the captions of an entity it overlaps with at least this IoU; below, it is generic."""
BLUR_MAX = 1.2
"""Training renders are blurred by a Gaussian of sigma in [0, BLUR_MAX] pixels: reconstructed views are softer."""
GENERIC = ("object", "things", "stuff", "texture")
"""LERF's canonical phrases; the relevancy score compares every query against them."""
RELEVANCY_TEMPERATURE = 10.0
"""LERF / LangSplat relevancy: softmax(10 [f.q, f.c])[0] = sigmoid(10 (f.q - f.c))."""
BACKGROUND_GENERIC = ("stuff", "texture")
"""Generic phrases that also describe background surfaces (table, floor, wall)."""
TRAIN_SEED_STRIDE = 1_000_000
"""World seeds of training run ``seed``: seed * stride + i (i < stride)."""
HELDOUT_SEED_BASE = 999_000_000
"""World seeds of the held-out evaluation: base + i; training seeds stay below (seed < 999)."""
EVAL_VIEWS = 4
"""Views per held-out world."""
WARMUP_FRACTION = 0.05
"""Share of the steps with a linear learning-rate warm-up before the cosine decay."""
WEIGHT_DECAY = 0.1
"""AdamW weight decay of weight matrices (not of embeddings, biases, norms); CLIP trainings use 0.1-0.2."""
GRAD_CLIP = 1.0
"""Gradient norm clip (open_clip's training script offers --grad-clip-norm; 1.0 is its common setting)."""
LOGIT_SCALE_MAX = 100.0
"""open_clip clamps the logit scale to 100 (ln 100 = 4.6052)."""
MODEL_FILE = "open_clip_model.safetensors"


# ------------------------------------------------------------------------------------------------------------ names


def vocabulary_names() -> list[str]:
    """Every name of every level of the procedural world's library, sorted (the zero-shot classes)."""
    from gags.synth.world import World

    vocab = World.vocabulary()
    return sorted(set().union(*(vocab[level] for level in LEVEL_NAMES)))


def colour_names() -> list[str]:
    from gags.synth.world import COLORS

    return list(COLORS)


def texture_names() -> list[str]:
    from gags.synth.world import TEXTURES

    return list(TEXTURES)


# ------------------------------------------------------------------------------------------------------------- data


@dataclass
class CropSet:
    """Crops and what they show. N crops:

    crops [N, S, S, 3] uint8; name [N] index into vocabulary_names() (-1: generic); color, texture [N] indices into
    colour_names() / texture_names() (-1: generic); level [N] 0 sub-part, 1 part, 2 whole (-1: generic);
    background [N] bool; source [N] 0 exact mask, 1 segmenter mask.
    """

    crops: np.ndarray
    name: np.ndarray
    color: np.ndarray
    texture: np.ndarray
    level: np.ndarray
    background: np.ndarray
    source: np.ndarray

    FIELDS = ("crops", "name", "color", "texture", "level", "background", "source")

    @classmethod
    def concat(cls, sets: list[CropSet]) -> CropSet:
        return cls(**{f: np.concatenate([getattr(s, f) for s in sets]) for f in cls.FIELDS})

    @classmethod
    def empty(cls, size: int) -> CropSet:
        none = np.zeros(0, np.int64)
        return cls(crops=np.zeros((0, size, size, 3), np.uint8), name=none, color=none.copy(), texture=none.copy(),
                   level=none.copy(), background=np.zeros(0, bool), source=none.copy())

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{k: getattr(self, k) for k in self.FIELDS})

    @classmethod
    def load(cls, path: Path) -> CropSet:
        with np.load(path) as data:
            return cls(*(data[k] for k in cls.FIELDS))


@dataclass(frozen=True)
class WorldJob:
    preset: str
    seed: int
    views: int
    segmenter_crops: bool
    blur: bool


def world_crops(job: WorldJob) -> CropSet:
    """Render ``job.views`` views of one world and crop them (exact masks, and segmenter masks when asked)."""
    from scipy.ndimage import gaussian_filter

    from gags.models.hierarchy import HierarchySegmenter
    from gags.synth.raycast import compile_world, render
    from gags.synth.rig import sample_cameras
    from gags.synth.world import build_world

    torch.set_num_threads(1)
    names = {n: i for i, n in enumerate(vocabulary_names())}
    colors = {c: i for i, c in enumerate(colour_names())}
    textures = {t: i for i, t in enumerate(texture_names())}
    world = build_world(job.preset, job.seed)
    compiled = compile_world(world)
    cameras = sample_cameras(world, job.views, RESOLUTION, seed=job.seed)
    rng = np.random.default_rng([job.seed, sum(map(ord, job.preset)), 17])  # 17: this module's stream id
    segmenter = HierarchySegmenter() if job.segmenter_crops else None
    out = []
    whole_of = [np.array([world.parts[world.subparts[s].parent].parent for s in range(len(world.subparts))]),
                np.array([p.parent for p in world.parts]), np.arange(len(world.wholes))]
    for camera in cameras:
        r = render(world, camera, supersample=SUPERSAMPLE, compiled=compiled)
        rgb = r.rgb
        if job.blur:
            sigma = rng.uniform(0.0, BLUR_MAX)
            rgb = np.clip(gaussian_filter(rgb.astype(np.float32), (sigma, sigma, 0)) + 0.5, 0, 255).astype(np.uint8)
        # every entity at every level: masks [E, H, W] and what they are
        masks, infos = [], []
        for level in range(3):
            ids, counts = np.unique(r.ids[level], return_counts=True)
            keep = (ids >= 0) & (counts >= MIN_CROP_PIXELS)
            for entity in ids[keep]:
                d = world.describe(level, int(entity))
                background = int(whole_of[level][entity]) in world.background
                masks.append(r.ids[level] == entity)
                infos.append((names[d.name], colors[d.color], textures[d.texture], level, background, d.implicit))
        if not masks:
            continue
        gt = np.stack(masks)  # [E, H, W]
        info = np.array(infos, dtype=np.int64)  # [E, 6]
        explicit = info[:, 5] == 0
        sel_masks, sel_info, source = [gt[explicit]], [info[explicit, :5]], [np.zeros(int(explicit.sum()), np.int64)]
        if segmenter is not None:
            seg_masks, seg_info = _segmenter_crops(segmenter, rgb, r.depth, gt, info, rng)
            sel_masks.append(seg_masks)
            sel_info.append(seg_info)
            source.append(np.ones(len(seg_masks), np.int64))
        all_masks = np.concatenate(sel_masks)
        all_info = np.concatenate(sel_info)
        crops = crop_masks(rgb, all_masks, INPUT_SIZE).numpy()
        out.append(CropSet(crops, all_info[:, 0], all_info[:, 1], all_info[:, 2], all_info[:, 3],
                           all_info[:, 4].astype(bool), np.concatenate(source)))
    return CropSet.concat(out) if out else CropSet.empty(INPUT_SIZE)


def _segmenter_crops(segmenter, rgb: np.ndarray, depth: np.ndarray, gt: np.ndarray, info: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hierarchy-segmenter masks at random points, labelled by their best-matching entity or generic.

    gt: [E, H, W] entity masks; info: [E, 6] (name, color, texture, level, background, implicit).
    Returns masks [M, H, W] and info [M, 5] (generic masks: name = color = texture = level = -1, background 0).
    """
    height, width = rgb.shape[:2]
    segmenter.set_image(rgb, depth)
    points = rng.uniform([0, 0], [width, height], size=(SEGMENTER_POINTS, 2)).astype(np.float32)
    masks = segmenter.predict(points).masks.reshape(-1, height, width).numpy()
    masks = masks[masks.sum((1, 2)) >= MIN_CROP_PIXELS]
    if len(masks) == 0:
        return np.zeros((0, height, width), bool), np.zeros((0, 5), np.int64)
    _, first = np.unique(np.packbits(masks.reshape(len(masks), -1), axis=1), axis=0, return_index=True)
    masks = masks[np.sort(first)]
    if len(masks) > MAX_SEGMENTER_CROPS:
        masks = masks[np.sort(rng.choice(len(masks), MAX_SEGMENTER_CROPS, replace=False))]
    flat_m = masks.reshape(len(masks), -1).astype(np.float32)
    flat_g = gt.reshape(len(gt), -1).astype(np.float32)
    inter = flat_m @ flat_g.T  # [M, E]
    union = flat_m.sum(1)[:, None] + flat_g.sum(1)[None, :] - inter
    iou = inter / np.maximum(union, 1.0)
    best = iou.argmax(1)
    matched = iou[np.arange(len(masks)), best] >= MATCH_IOU
    out = np.full((len(masks), 5), -1, np.int64)
    out[:, 4] = 0
    out[matched] = info[best[matched], :5]
    return masks, out


J = TypeVar("J")
R = TypeVar("R")


def map_worlds(fn: Callable[[J], R], jobs: list[J], workers: int, desc: str) -> list[R]:
    """``fn`` of every job (a world to render), in job order whatever the number of worker processes."""
    if workers <= 1:
        return [fn(j) for j in tqdm(jobs, desc=desc, unit="world")]
    with mp.get_context("spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap(fn, jobs), total=len(jobs), desc=desc, unit="world"))


def build_crops(jobs: list[WorldJob], workers: int, desc: str) -> CropSet:
    """Crops of every job, in job order (deterministic whatever the number of workers)."""
    return CropSet.concat(map_worlds(world_crops, jobs, workers, desc))


def training_jobs(seed: int, worlds: int, views: int) -> list[WorldJob]:
    if not 0 <= seed < HELDOUT_SEED_BASE // TRAIN_SEED_STRIDE:
        raise GagsError(f"--seed must lie in 0..{HELDOUT_SEED_BASE // TRAIN_SEED_STRIDE - 1}, got {seed}.")
    return [WorldJob(p, seed * TRAIN_SEED_STRIDE + i, views, True, True) for i in range(worlds) for p in PRESETS]


def heldout_jobs(worlds: int) -> list[WorldJob]:
    return [WorldJob(p, HELDOUT_SEED_BASE + i, EVAL_VIEWS, False, False) for i in range(worlds) for p in PRESETS]


# --------------------------------------------------------------------------------------------------------- captions


class Captions:
    """Every caption the training data can use, tokenised once, with what each one asserts.

    Text t asserts name[t] (or is generic: generic[t] >= 0), and optionally color[t], texture[t] (-1: unsaid).
    """

    def __init__(self, data: CropSet, tokenizer) -> None:
        names, colors, textures = vocabulary_names(), colour_names(), texture_names()
        plain = textures.index("plain")
        rows: dict[str, tuple[int, int, int, int]] = {}
        for i, name in enumerate(names):
            rows[name] = (i, -1, -1, -1)
        for g, phrase in enumerate(GENERIC):
            rows[phrase] = (-1, -1, -1, g)
        combos = {(int(n), int(c), int(x))
                  for n, c, x in zip(data.name, data.color, data.texture, strict=True) if n >= 0}
        for n, c, x in sorted(combos):
            rows[f"{colors[c]} {names[n]}"] = (n, c, -1, -1)
            if x != plain:
                rows[f"{textures[x]} {names[n]}"] = (n, -1, x, -1)
                rows[f"{colors[c]} {textures[x]} {names[n]}"] = (n, c, x, -1)
        self.texts = list(rows)
        table = np.array(list(rows.values()), dtype=np.int64)
        self.name, self.color, self.texture, self.generic = (torch.from_numpy(table[:, k]) for k in range(4))
        self.tokens = tokenizer(self.texts)  # [T, context]
        longest = max(len(tokenizer.encode(t)) + 2 for t in self.texts)  # + start and end tokens
        if longest > self.tokens.shape[1]:
            raise RuntimeError(f"a caption needs {longest} tokens; raise MODEL_CFG's context_length")
        self.index = {t: i for i, t in enumerate(self.texts)}
        self.n_names = len(names)
        self.plain = plain
        self.base = torch.arange(len(names) + len(GENERIC))  # every name and generic phrase: in every step

    def variants(self, data: CropSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption choices of every crop: indices [N, V] (padded with -1) and counts [N]."""
        names, colors, textures = vocabulary_names(), colour_names(), texture_names()
        table = {}
        rows = []
        for n, c, x, bg in zip(data.name.tolist(), data.color.tolist(), data.texture.tolist(),
                               data.background.tolist(), strict=True):
            key = (n, c, x, bg)
            if key not in table:  # a few hundred distinct keys: captions are built once per key
                if n < 0:
                    options = list(GENERIC)
                else:
                    options = [names[n], f"{colors[c]} {names[n]}"]
                    if x != self.plain:
                        options += [f"{textures[x]} {names[n]}", f"{colors[c]} {textures[x]} {names[n]}"]
                    if bg:
                        options += list(BACKGROUND_GENERIC)
                table[key] = [self.index[o] for o in options]
            rows.append(table[key])
        width = max(len(r) for r in rows)
        padded = torch.full((len(rows), width), -1, dtype=torch.int64)
        for i, r in enumerate(rows):
            padded[i, : len(r)] = torch.tensor(r)
        return padded, torch.tensor([len(r) for r in rows])

    @staticmethod
    def sample(variants: torch.Tensor, counts: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One caption per image, uniform over its variants: variants [B, V], counts [B] -> text indices [B]."""
        pick = (torch.rand(len(counts), generator=gen) * counts).long().clamp_max(counts - 1)
        return variants.gather(1, pick[:, None])[:, 0]

    def positives(self, texts: torch.Tensor, name: torch.Tensor, color: torch.Tensor, texture: torch.Tensor,
                  background: torch.Tensor) -> torch.Tensor:
        """[B, T] bool: caption texts[t] describes image b truly."""
        tn, tc, tx, tg = self.name[texts], self.color[texts], self.texture[texts], self.generic[texts]
        specific = ((tn[None] == name[:, None]) & (name[:, None] >= 0)
                    & ((tc[None] < 0) | (tc[None] == color[:, None]))
                    & ((tx[None] < 0) | (tx[None] == texture[:, None])))
        background_words = torch.tensor([GENERIC.index(g) for g in BACKGROUND_GENERIC])
        generic = (tg[None] >= 0) & (
            (name[:, None] < 0) | (background[:, None] & torch.isin(tg, background_words)[None])
        )
        return specific | generic


# --------------------------------------------------------------------------------------------------------- training


def _normalise(crops: torch.Tensor) -> torch.Tensor:
    """uint8 [B, S, S, 3] -> normalised float [B, 3, S, S], as OpenClipEncoder.preprocess does at this size."""
    x = crops.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(OPENAI_MEAN)[:, None, None]
    std = torch.tensor(OPENAI_STD)[:, None, None]
    return (x - mean) / std


def _augment(crops: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and brightness in [0.8, 1.2] (uint8 [B, S, S, 3] -> same)."""
    flip = torch.rand(len(crops), generator=gen) < 0.5
    crops = torch.where(flip[:, None, None, None], crops.flip(2), crops)
    gain = 0.8 + 0.4 * torch.rand(len(crops), 1, 1, 1, generator=gen)
    return (crops.float() * gain).round().clamp(0, 255).to(torch.uint8)


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, positives: torch.Tensor, scale: torch.Tensor,
                     caption_columns: torch.Tensor) -> torch.Tensor:
    """Label-aware InfoNCE.

    image: [B, D], text: [T, D] (both unit norm); positives: [B, T] bool (every row has one); caption_columns: [C]
    indices of the texts that are some image's sampled caption (the text-to-image direction runs over these).
    Targets are the normalised rows (image -> texts) and columns (caption -> images) of ``positives``.
    """
    logits = scale * image @ text.T  # [B, T]
    pos = positives.float()
    loss_i = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, dim=1)).sum(1).mean()
    cols = pos[:, caption_columns].T  # [C, B]
    loss_t = -(cols / cols.sum(1, keepdim=True) * F.log_softmax(logits[:, caption_columns].T, dim=1)).sum(1).mean()
    return 0.5 * (loss_i + loss_t)


def _param_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        embedding = "embedding" in name or name.endswith("class_embedding") or name == "logit_scale"
        (decay if p.ndim >= 2 and not embedding else no_decay).append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def train(data: CropSet, seed: int, epochs: int, batch_size: int, lr: float, model_cfg: dict | None = None,
          log=print) -> tuple[torch.nn.Module, dict]:
    """Train a tiny CLIP (``model_cfg``, default MODEL_CFG) on ``data``; returns the model (float32) and a log."""
    import open_clip
    from open_clip.model import CLIP

    model_cfg = MODEL_CFG if model_cfg is None else model_cfg
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CLIP(**model_cfg)
    tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
    captions = Captions(data, tokenizer)
    variants, counts = captions.variants(data)
    crops = torch.from_numpy(data.crops)
    name, color, texture = (torch.from_numpy(a) for a in (data.name, data.color, data.texture))
    background = torch.from_numpy(data.background)
    n = len(crops)
    steps_per_epoch = max(1, n // batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, int(WARMUP_FRACTION * total))
    optimizer = torch.optim.AdamW(_param_groups(model), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    )
    history = []
    start = time.time()
    model.train()
    bar = tqdm(total=total, desc="train tiny CLIP", unit="step")
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            images = _normalise(_augment(crops[idx], gen))
            chosen = captions.sample(variants[idx], counts[idx], gen)
            texts = torch.unique(torch.cat([captions.base, chosen]))
            columns = torch.searchsorted(texts, torch.unique(chosen))
            positives = captions.positives(texts, name[idx], color[idx], texture[idx], background[idx])
            image_f = F.normalize(model.encode_image(images), dim=-1)
            text_f = F.normalize(model.encode_text(captions.tokens[texts]), dim=-1)
            loss = contrastive_loss(image_f, text_f, positives, model.logit_scale.exp(), columns)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(LOGIT_SCALE_MAX))
            history.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(history[-20:]):.3f}", epoch=epoch)
    bar.close()
    model.eval()
    minutes = (time.time() - start) / 60
    log(f"trained {total} steps ({epochs} epochs of {steps_per_epoch}) in {minutes:.1f} min")
    return model, {"steps": total, "train_minutes": minutes, "loss_first20": float(np.mean(history[:20])),
                   "loss_last20": float(np.mean(history[-20:])), "captions": len(captions.texts)}


def save_local_dir(model: torch.nn.Module, folder: Path, model_cfg: dict | None = None) -> None:
    """Write ``model`` in open_clip's local-dir format: open_clip_config.json + open_clip_model.safetensors (fp16)."""
    from safetensors.torch import save_file

    model_cfg = MODEL_CFG if model_cfg is None else model_cfg
    preprocess = {**PREPROCESS_CFG, "size": model_cfg["vision_cfg"]["image_size"]}
    ensure_dir(folder)
    write_json(folder / "open_clip_config.json", {"model_cfg": model_cfg, "preprocess_cfg": preprocess})
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / MODEL_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


# ------------------------------------------------------------------------------------------------------- evaluation




def evaluate(encoder, data: CropSet) -> dict:
    """Zero-shot top-1 among every vocabulary name, per level (exact crops of held-out renders).

    Returns {"subpart"|"part"|"whole"|"background": {"n", "top1_all_names", "top1_level_names",
    "relevancy_true_name", "relevancy_other_names", "misses_to": {"subpart"|"part"|"whole": count}}}, where
    ``misses_to`` counts the wrong top-1 predictions among all names by the level of the name predicted.
    """
    from gags.synth.world import World

    names = vocabulary_names()
    vocab = World.vocabulary()
    text = encoder.encode_text(names)  # [N, D]
    image = encoder.encode_images(data.crops)  # [M, D]
    scores = image @ text.T
    predicted = scores.argmax(1).numpy()
    missed = predicted != data.name
    # LERF relevancy of every name on every crop: min over the canonical phrases c of softmax(10 [s_q, s_c])[0]
    canonical = image @ encoder.encode_text(list(GENERIC)).T  # [M, 4]
    relevancy = torch.sigmoid(RELEVANCY_TEMPERATURE * (scores[:, :, None] - canonical[:, None, :])).amin(-1)
    truth = torch.zeros_like(scores, dtype=torch.bool)
    has_name = torch.from_numpy(data.name >= 0)
    truth[has_name.nonzero().flatten(), torch.from_numpy(data.name[data.name >= 0])] = True
    name_level = np.zeros(len(names), np.int64)  # the level of every name (the vocabulary's levels are disjoint)
    for level, level_name in enumerate(LEVEL_NAMES):
        name_level[[names.index(n) for n in vocab[level_name]]] = level
    out = {}
    for level, level_name in enumerate(LEVEL_NAMES):
        allowed = name_level == level
        level_pred = torch.where(torch.from_numpy(allowed)[None], scores, -torch.inf).argmax(1).numpy()
        rows = (data.level == level) & (data.name >= 0)
        groups = {level_name: rows & ~data.background}
        if level == 2:
            groups["background"] = rows & data.background
        for key, sel in groups.items():
            if not sel.any():
                continue
            rel, tru = relevancy[torch.from_numpy(sel)], truth[torch.from_numpy(sel)]
            out[key] = {
                "n": int(sel.sum()),
                "top1_all_names": float(1.0 - missed[sel].mean()),
                "top1_level_names": float((level_pred[sel] == data.name[sel]).mean()),
                "relevancy_true_name": float(rel[tru].mean()),
                "relevancy_other_names": float(rel[~tru].mean()),
                "misses_to": {other: int((missed & sel & (name_level[predicted] == k)).sum())
                              for k, other in enumerate(LEVEL_NAMES)},
            }
    return out


def format_table(metrics: dict) -> str:
    lines = ["| level | crops | top-1 among all names | top-1 among the level's names | relevancy: true name "
             "| relevancy: other names |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for key in (*reversed(LEVEL_NAMES), "background"):
        if key in metrics:
            m = metrics[key]
            lines.append(f"| {key} | {m['n']} | {100 * m['top1_all_names']:.1f}% | {100 * m['top1_level_names']:.1f}% "
                         f"| {m['relevancy_true_name']:.2f} | {m['relevancy_other_names']:.2f} |")
    return "\n".join(lines)


def format_misses(metrics: dict) -> str:
    """One line per level: how the misses among all names split by the level of the name predicted."""
    lines = ["Misses among all names, by the level of the name predicted:", ""]
    for key in reversed(LEVEL_NAMES):  # evaluate() always returns these three
        to = metrics[key]["misses_to"]
        lines.append(f"- {key}: {sum(to.values())} misses, {to['whole']} to a whole, {to['part']} to a part, "
                     f"{to['subpart']} to a sub-part")
    lines += ["", "A whole and its main part can differ by a few pixels (\"glass of water\" and \"glass\", \"apple\" "
              "and \"apple body\", where the part is all but the object's stem): "
              "a miss to the object's own main part is often a crop that shows little more than that part."]
    return "\n".join(lines)


def heldout_data(config: TrainEncoderConfig, cache: Path | None = None) -> CropSet:
    jobs = heldout_jobs(config.eval_worlds)
    if cache is not None and cache.is_file():
        data = CropSet.load(cache)
        if data.crops.shape[1] == INPUT_SIZE:
            return data
    data = build_crops(jobs, config.workers, desc="held-out renders")
    if cache is not None:
        data.save(cache)
    return data


# -------------------------------------------------------------------------------------------------------------- run


def run(config: TrainEncoderConfig) -> None:
    """Train (or with --eval-only evaluate) the tiny CLIP; see the module docstring."""
    from gags.models.encoders import OpenClipEncoder, load_encoder

    if config.eval_only:
        folder = Path(config.weights) if config.weights is not None else TINY_CLIP_DIR
        encoder = load_encoder(f"openclip:local-dir:{folder}", device="cpu")
        metrics = evaluate(encoder, heldout_data(config))
        print(f"zero-shot top-1 of {folder} on held-out renders ({config.eval_worlds} worlds per preset, "
              f"{EVAL_VIEWS} views each, seeds {HELDOUT_SEED_BASE}+):")
        print(format_table(metrics))
        print(format_misses(metrics))
        return
    for name, value in (("worlds", config.worlds), ("views", config.views), ("epochs", config.epochs),
                        ("batch_size", config.batch_size), ("workers", config.workers)):
        if value < 1:
            raise GagsError(f"--{name.replace('_', '-')} must be at least 1, got {value}.")
    if config.threads < 0:
        raise GagsError(f"--threads must be 0 (PyTorch's default) or more, got {config.threads}.")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    out = ensure_dir(Path(config.out))
    started = time.time()
    load_start = os.getloadavg()[1]
    cache = out / f"train_crops_seed{config.seed}_w{config.worlds}_v{config.views}.npz"
    data = CropSet.load(cache) if cache.is_file() else None
    if data is not None and data.crops.shape[1] == INPUT_SIZE:
        print(f"read {len(data.crops)} training crops from {cache}")
    else:  # none yet, or made for another input size
        data = build_crops(training_jobs(config.seed, config.worlds, config.views), config.workers,
                           desc="training renders")
        data.save(cache)
    data_minutes = (time.time() - started) / 60
    model, log = train(data, config.seed, config.epochs, config.batch_size, config.lr)
    folder = out / "tinyclip"
    save_local_dir(model, folder)
    total_minutes = (time.time() - started) / 60
    encoder = OpenClipEncoder("local-dir", folder, device="cpu")
    metrics = evaluate(encoder, heldout_data(config, out / f"heldout_crops_w{config.eval_worlds}.npz"))
    report = {
        "seed": config.seed, "worlds_per_preset": config.worlds, "views_per_world": config.views,
        "presets": list(PRESETS), "epochs": config.epochs, "batch_size": config.batch_size, "lr": config.lr,
        "train_crops": int(len(data.crops)),
        "train_crops_exact": int((data.source == 0).sum()), "train_crops_segmenter": int((data.source == 1).sum()),
        "train_crops_generic": int((data.name < 0).sum()),
        "data_minutes": data_minutes, "total_minutes": total_minutes, **log,
        "heldout": {"worlds_per_preset": config.eval_worlds, "views_per_world": EVAL_VIEWS,
                    "seed_base": HELDOUT_SEED_BASE, "metrics": metrics},
        "torch_threads": torch.get_num_threads(),
        "machine_note": f"{os.cpu_count()} cores, 5-minute load average {load_start:.1f} at the start and "
                        f"{os.getloadavg()[1]:.1f} at the end",
    }
    write_json(folder / "training.json", report)
    write_model_card(folder, report, command_line(config))
    print(format_table(metrics))
    print(f"model written to {folder} (training took {total_minutes:.1f} min: data {data_minutes:.1f}, "
          f"optimisation {log['train_minutes']:.1f}); to ship it: copy it over {TINY_CLIP_DIR}")


def command_line(config: TrainEncoderConfig) -> str:
    """The ``gags train-encoder`` command that reproduces ``config`` (every training option spelled out)."""
    return (f"gags train-encoder --out {config.out} --seed {config.seed} --worlds {config.worlds} "
            f"--views {config.views} --epochs {config.epochs} --batch-size {config.batch_size} --lr {config.lr} "
            f"--workers {config.workers} --threads {config.threads} --eval-worlds {config.eval_worlds}")


def write_model_card(folder: Path, report: dict, command: str) -> None:
    """MODEL_CARD.md beside the weights: what the model is, its data, how it was trained, how well it does."""
    cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    vision, text_cfg = cfg["vision_cfg"], cfg["text_cfg"]
    size_mb = (folder / MODEL_FILE).stat().st_size / 2**20
    n_params = sum(int(np.prod(v)) for v in _shapes(folder / MODEL_FILE).values())
    heldout = report["heldout"]
    n_names = len(vocabulary_names())
    card = f"""# Tiny CLIP: the embedded image-text encoder of gags

**It knows the procedural world of `gags synth` only**: its {n_names} object, part and sub-part names, 14 colour
names, 5 texture names and the generic phrases "object", "things", "stuff" and "texture". It exists so that the
whole pipeline runs on a CPU without downloads (demo, tests); on real scenes use a real CLIP, e.g.
`--encoder openclip:ViT-B-16:/path/open_clip_pytorch_model.bin` (laion2b_s34b_b88k, as in the GAGS paper).

## Model

- An open_clip `CLIP`. Image tower: CLIP's ModifiedResNet (the RN50 design) with {vision["layers"]} bottleneck blocks
  per stage, stem width {vision["width"]}, attention pooling, on {vision["image_size"]} x {vision["image_size"]} crops.
  Text tower: a transformer of {text_cfg["layers"]} layers of width {text_cfg["width"]} over
  {text_cfg["context_length"]} tokens of open_clip's BPE tokenizer. {cfg["embed_dim"]}-d embeddings.
- {n_params / 1e6:.2f} M parameters in float16: `{MODEL_FILE}`, {size_mb:.1f} MB (open_clip's 49,408-token
  embedding table is most of it).
- Stored in open_clip's `local-dir:` format (`open_clip_config.json` + weights) and loaded by
  `gags.models.OpenClipEncoder`, the code that loads real CLIP checkpoints: `--encoder tiny` means
  `--encoder openclip:local-dir:<this folder>`.

## Data

- Renders ({RESOLUTION} x {RESOLUTION}) of procedural worlds of the presets {", ".join(PRESETS)}:
  {report["worlds_per_preset"]} worlds per preset (world seeds {report["seed"]} x {TRAIN_SEED_STRIDE:,} + i),
  {report["views_per_world"]} views each from the synthetic camera rig, each view blurred by a Gaussian of random
  sigma up to {BLUR_MAX} px (reconstructed views are softer than renders).
- Crops made exactly as the segment stage makes them (`gags.models.crop_masks`: background black, box crop, square
  pad, resize to {vision["image_size"]} px): {report["train_crops"]:,} crops. {report["train_crops_exact"]:,} of exact
  entity masks (every explicit entity of at least {MIN_CROP_PIXELS} px, at every level);
  {report["train_crops_segmenter"]:,} of embedded-segmenter masks at random points, of which
  {report["train_crops_generic"]:,} match no entity (IoU < {MATCH_IOU}) and are captioned with a generic phrase.
- Captions: the name at the crop's level ("egg yolk", "egg", "ramen bowl"), alone, with its colour ("yellow egg
  yolk"), with its texture ("striped mug", "red striped mug"); table, floor and wall also "stuff" and "texture".

## Training

- Label-aware InfoNCE: a caption is a positive of every crop it truly describes ("mug" of every mug of the batch,
  "mug" and "red mug" of a red mug), so duplicate captions are never negatives. Every step contrasts the batch with
  every vocabulary name, the generic phrases and the batch's captions.
- AdamW (lr {report["lr"]}, {WARMUP_FRACTION:.0%} linear warm-up, cosine decay, weight decay {WEIGHT_DECAY}, gradient
  clip {GRAD_CLIP}), batch {report["batch_size"]}, {report["epochs"]} epochs ({report["steps"]} steps), random
  horizontal flips and brightness.
- Command (the same seed gives the same weights on the same machine):

      {command}

- Took {report["total_minutes"]:.0f} minutes on a 2-core CPU: rendering and cropping {report["data_minutes"]:.0f},
  optimisation {report["train_minutes"]:.0f}, held-out evaluation the rest. Machine: {report["machine_note"]}.

## Zero-shot accuracy on held-out renders

{heldout["worlds_per_preset"]} worlds per preset whose seeds were never used for training ({heldout["seed_base"]:,} + i:
new compositions, colours and textures), {heldout["views_per_world"]} views each, crops of exact entity masks. Top-1
among all {n_names} names of every level, and among the names of the crop's level only; "whole" counts objects,
"background" the table, floor and wall. Relevancy is LERF's score for a name (the minimum over the generic phrases
of softmax(10 [s_name, s_phrase])), averaged over the crops for their true name and for every other name.

{format_table(heldout["metrics"])}

{format_misses(heldout["metrics"])}

`gags train-encoder --eval-only` recomputes this table for the shipped weights.
"""
    with atomic_path(folder / "MODEL_CARD.md") as tmp:
        tmp.write_text(card)


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no items())


def install(folder: Path) -> None:
    """Copy a trained local-dir folder over the shipped weights (what produced the package's tiny CLIP)."""
    ensure_dir(TINY_CLIP_DIR)
    for name in ("open_clip_config.json", MODEL_FILE, "training.json", "MODEL_CARD.md"):
        shutil.copy2(folder / name, TINY_CLIP_DIR / name)

