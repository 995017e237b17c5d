"""``gags distill``: distil the 3-level CLIP features of the training views into one language field (GaD), or a
baseline (what each method trains: :mod:`gags.methods`).

Reads the scene record, the Gaussians and the language features of OUT (LangSplat's format: ``_f`` [M, D] features,
``_s`` [4, H, W] indices into ``_f`` per level default, s, m, l, -1 = none; integer or float). Writes, per method, in
``Workspace.field_dir(METHOD)`` (:mod:`gags.workspace`):

    field_file         per-Gaussian features, decoder weights and the resolved config (gags.field.LanguageField)
    field_curves       losses and mean granularity weights over the iterations, timings (and a plot beside it)
    field_checkpoint   features, decoders, optimizers, step and RNG state, for resuming

One training loop for every method (:mod:`gags.distill.baselines` says what each one trains). An iteration:

1. picks a training view (a seeded permutation of the views per epoch);
2. renders the per-Gaussian features with the rasterizer (geometry frozen: means, rotations, scales and opacities of
   the PLY are constants) into a ``C``-channel map at the training resolution;
3. per head: level weights g (the granularity decoder on the detached rendered feature, or fixed weights); regions =
   the segment of the level chosen per pixel by the argmax of the 5x5-smoothed g; the feature decoder reads the
   rendered feature at the pixels that count (it is pointwise, so the other pixels, whose loss is zero, are skipped);
   target ``sum_k g_k f_k`` (or the paper's ``sum_k g_k ||f - f_k||^2``); region-aware L1; entropy of g; feature
   consistency in the late phase (``gags.distill.losses``);
4. one Adam step for the features (lr 1e-3) and for each decoder (lr 1e-4).

Level features are gathered per step from each view's ``_f`` table and its ``_s`` indices resized (nearest) to the
training resolution, never stored as dense maps: a view costs ``M x D`` float32 + ``3 x h x w`` int32 in memory (a few
hundred kB; dense maps would take ``3 x D x h x w`` floats, 25 MB at 64x64 and 3 GB at 960x540).

Resume: a checkpoint is written atomically every ``checkpoint_every`` iterations (and once before the first one); the
same command continues from it (also after ``kill -9``). Settings that change the result must match the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from gags import validate as check
from gags.cameras import Camera
from gags.config import DistillConfig
from gags.distill import losses
from gags.distill.baselines import N2F2_PHRASES, N2F2_TEMPERATURE, n2f2_fuse
from gags.distill.sparse import init_codebook
from gags.distill.views import TrainView, load_views
from gags.errors import GagsError
from gags.field import (
    FeatureDecoder,
    GranularityDecoder,
    LangSplatAutoencoder,
    LanguageField,
    SparseCodebook,
    decoder_precision,
    native_bfloat16,
)
from gags.io import atomic_path, ensure_dir, write_json
from gags.levels import CODES
from gags.methods import Head, MethodSpec, method, method_spec
from gags.splat.gaussians import FrozenGaussians
from gags.threads import scoped_torch_threads
from gags.training import (
    Checkpoint,
    Clock,
    Curve,
    check_settings,
    finite_or_raise,
    grouped,
    load_checkpoint,
    load_optimizers,
    optimizer_tensors,
    progress_bar,
    save_checkpoint,
    view_index,
)
from gags.workspace import Workspace

CHECKPOINT_FORMAT = "gags-distill-checkpoint/1"

CHECKPOINT_KIND = "distill"
"""Checkpoints of this stage are ``gags.training`` checkpoints of this kind."""


# ----------------------------------------------------------------------------------------------------------------------
# inputs


# ----------------------------------------------------------------------------------------------------------------------
# schedule

GPU_ITERATIONS = 30_000
"""GAGS release ``train.py``: 30,000 iterations."""
GPU_DOWNSCALE = 2.0
"""GAGS release: training at half resolution (``-r 2``)."""
CPU_ITERATIONS = 200
"""CPU default iterations (see :func:`default_schedule`)."""
CPU_MAX_SIDE = 128
"""CPU default: the training images' longer side is at most this many pixels (see :func:`default_schedule`)."""
CPU_REGION_AWARE = False
"""CPU default of ``--region-aware``: the loss is averaged over pixels, not per region then over regions (the
release's ``Scale_balance_loss``, kept on a GPU). Measured with the rest of the CPU default on the demo's scene
(``gags bench ladder``, distillation seeds 42, 1, 2; the share of its target's held-out mIoU a field keeps): averaged
per region, gags kept 69-86% and avg 75-77%; over pixels 84-90% and 85-88% (training views: 71-87% / 69-74% against
89-100% / 88-91%); on the teatime and figurines scenes both keep 92% or more either way. The 128-px ablation says the
same on 2 presets x 3 seeds (``docs/results/ablation_128px_lift.json``: GaD without the region-aware loss has the
higher IoU on 135 held-out queries against 93, p = 0.007)."""
Init = Literal["zero", "lift"]
Precision = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class Schedule:
    """What ``gags distill`` runs when the options leave it open: iterations, image downscale, how the field starts
    (``--init``), how the distillation loss is averaged (``--region-aware``) and the decoders' precision
    (``--precision``)."""

    iterations: int
    downscale: float
    init: Init
    region_aware: bool
    precision: Precision


def default_schedule(cuda: bool, longest_side: int, bfloat16: bool = False) -> Schedule:
    """The defaults of ``--iterations``, ``--downscale``, ``--init``, ``--region-aware`` and ``--precision``.

    GPU: the official schedule, a zero start and 30,000 iterations at half resolution, the loss averaged per region
    (the release's ``Scale_balance_loss``). CPU: a start from the lifted features (``--init lift``,
    :mod:`gags.distill.init`), then ``CPU_ITERATIONS`` = 200 iterations of the same schedule shape (late phase from the
    midpoint) at full resolution up to a longer side of ``CPU_MAX_SIDE`` = 128 pixels: downscale = max(1, longest side
    / 128); the loss averaged over pixels (``CPU_REGION_AWARE``); the decoders in bfloat16 when ``bfloat16`` says the
    CPU has it natively (:func:`gags.field.native_bfloat16`), float32 otherwise.

    Why (``gags bench ladder`` on 128-px scenes made as the demo's, 24 training views, 30,000 Gaussians; the share of
    its target's reading a field keeps, held-out mIoU): the release's zero start at the former CPU default (1,000
    iterations at 40 px) kept 37% for gags on ramen, 58% on teatime, 40% on figurines; it under-fits (it keeps as
    little on the views it trains on), and 5x the time at 128 px only reached 50%. Starting from the lifted features
    with no iteration kept 82% / 88% / 75%; 200 iterations at 128 px from there with the release's region-aware loss
    76% / 122% / 102% (mIoU 19.0 / 17.9 / 24.4 against 9.2 / 8.5 / 9.6 with the former default), and with the loss
    averaged over pixels 89% / 121% / 98% (mIoU 22.4 / 17.8 / 23.5; the spread over seeds: ``CPU_REGION_AWARE``).
    200 iterations at 128 px take 30 s on two idle cores (0.15 s per iteration) after about 33 s of initialisation,
    so a one-head method fits the demo's 90-s budget in float32 (N2F2's three heads through one decoder take 68 s of
    iterations, about 105 s in all). With the decoders in bfloat16 (this machine's AMD EPYC has AVX512-BF16; a decoder
    pass is 3.3x faster) gags takes 55-56 s, avg 50-58 s and N2F2 69 s, and they keep as much (held out on the demo's
    scene over three seeds: gags 84-87%, avg 86-92%; N2F2 89%; teatime and figurines 93% or more).
    """
    if cuda:
        return Schedule(GPU_ITERATIONS, GPU_DOWNSCALE, "zero", True, "float32")
    return Schedule(CPU_ITERATIONS, max(1.0, longest_side / CPU_MAX_SIDE), "lift", CPU_REGION_AWARE,
                    "bfloat16" if bfloat16 else "float32")


# ----------------------------------------------------------------------------------------------------------------------
# training state


@dataclass
class FieldState:
    """Everything a training run changes: per-Gaussian features, decoders, optimizers, step, curves."""

    features: nn.Parameter
    feature_decoder: FeatureDecoder | None
    granularity_decoder: GranularityDecoder | None
    autoencoder: LangSplatAutoencoder | None
    optimizers: dict[str, torch.optim.Adam]
    codebook: SparseCodebook | None = None
    step: int = 0
    curve: dict[str, Any] = field(default_factory=dict)
    """The training curve's state (``gags.training.Curve.state``)."""
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def history(self) -> list[dict[str, Any]]:
        """The training curve's points so far."""
        return list(self.curve.get("points", []))

    def modules(self) -> dict[str, nn.Module]:
        mods = {"feature_decoder": self.feature_decoder, "granularity_decoder": self.granularity_decoder,
                "autoencoder": self.autoencoder, "codebook": self.codebook}
        return {k: m for k, m in mods.items() if m is not None}

    def colors(self) -> Tensor:
        """What is rendered: the per-Gaussian features, or (LangSplatV2) their sparse coefficients."""
        return self.features if self.codebook is None else self.codebook.codes(self.features)


def new_state(spec: MethodSpec, num_gaussians: int, clip_dim: int, config: DistillConfig,
              device: torch.device | str = "cpu", autoencoder: LangSplatAutoencoder | None = None,
              codebook: SparseCodebook | None = None) -> FieldState:
    """Zero features, freshly initialised decoders (seeded by ``config.seed``) and their Adam optimizers.

    autoencoder: LangSplat's, trained before (``"codes"``); codebook: LangSplatV2's, initialised (``"sparse"``).
    """
    features = nn.Parameter(torch.zeros(num_gaussians, spec.feature_dim, device=device))
    feature_decoder = granularity_decoder = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if spec.space == "feature":
            feature_decoder = FeatureDecoder(spec.heads[0].dim, out_dim=clip_dim).to(device)
        if spec.learned_granularity:
            granularity_decoder = GranularityDecoder(spec.heads[0].dim).to(device)
    lr = {"codes": config.langsplat_feature_lr, "sparse": config.sparse_lr}.get(spec.space, config.feature_lr)
    optimizers = {"features": torch.optim.Adam([features], lr=lr)}
    if codebook is not None:
        optimizers["codebook"] = torch.optim.Adam(codebook.parameters(), lr=config.sparse_lr)
    if feature_decoder is not None:
        optimizers["feature_decoder"] = torch.optim.Adam(feature_decoder.parameters(), lr=config.decoder_lr)
    if granularity_decoder is not None:
        optimizers["granularity_decoder"] = torch.optim.Adam(granularity_decoder.parameters(), lr=config.decoder_lr)
    if autoencoder is not None:
        autoencoder.eval().requires_grad_(False)
    return FieldState(features, feature_decoder, granularity_decoder, autoencoder, optimizers, codebook)


def save_state(path: Path, state: FieldState, info: dict[str, Any]) -> None:
    """Write ``state`` as a ``gags.training`` checkpoint (atomic: a kill during the write leaves the previous one)."""
    optim, groups = optimizer_tensors(state.optimizers)
    tensors = {"features.all": state.features.detach().cpu().contiguous(), **optim}
    for name, module in state.modules().items():
        tensors.update(grouped(f"module.{name}", module.state_dict()))
    save_checkpoint(path, CHECKPOINT_KIND, Checkpoint(
        step=state.step, tensors=tensors, rng_state=torch.get_rng_state(),
        info={**info, "param_groups": groups, "curve": state.curve, "seconds": state.seconds,
              "cpu_seconds": state.cpu_seconds}))


def checkpoint_info(path: Path) -> dict[str, Any]:
    """The ``info`` record (settings, seconds) and ``step`` of a checkpoint."""
    ckpt = load_checkpoint(path, CHECKPOINT_KIND)
    return {**ckpt.info, "step": ckpt.step}


def load_state(path: Path, state: FieldState) -> FieldState:
    """Fill a freshly made ``state`` (same method and sizes) from the checkpoint at ``path``."""
    ckpt = load_checkpoint(path, CHECKPOINT_KIND)
    device = state.features.device
    try:
        with torch.no_grad():
            features = ckpt.tensors["features.all"]
            if features.shape != state.features.shape:
                raise ValueError(f"features {tuple(features.shape)}, expected {tuple(state.features.shape)}")
            state.features.copy_(features.to(device))
        for name, module in state.modules().items():
            module.load_state_dict(ckpt.group(f"module.{name}"))
        load_optimizers(state.optimizers, ckpt, ckpt.info["param_groups"])
        torch.set_rng_state(ckpt.rng_state)
        state.step = ckpt.step
        state.curve = dict(ckpt.info.get("curve") or {})
        state.seconds = float(ckpt.info.get("seconds", 0.0))
        state.cpu_seconds = float(ckpt.info.get("cpu_seconds", 0.0))
    except (KeyError, ValueError, RuntimeError) as exc:
        raise GagsError(f"checkpoint {path} does not fit this run ({exc}). Delete it (or pass --no-resume) to start "
                        "over.") from exc
    return state


# ----------------------------------------------------------------------------------------------------------------------
# one iteration


def render_features(gaussians: FrozenGaussians, features: Tensor, camera: Camera) -> Tensor:
    """Render per-Gaussian features [N, C] into ``camera``: [C, h, w] (zero where no Gaussian is hit)."""
    from gags.splat import rasterize

    render, _, _ = rasterize(gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, features,
                             camera.world_to_cam, camera.K, camera.width, camera.height)
    return render.permute(2, 0, 1)


def _weights_map(head: Head, like: Tensor) -> Tensor:
    """Fixed level weights of ``head`` as a [3, h, w] map shaped as the rendered ``like`` [C, h, w]."""
    assert head.weights is not None
    w = torch.tensor(head.weights, dtype=like.dtype, device=like.device)
    return w[:, None, None].expand(3, like.shape[1], like.shape[2])


def pixel_losses(pred: Tensor, levels: Tensor, g: Tensor, target_mode: str, normalize_target: bool) -> Tensor:
    """Per-pixel distillation loss at P pixels, channels last (the layout the decoder produces).

    ``losses.l1_map(pred, mix_target(levels, g))`` (optionally with the target L2-normalised) for ``"mix"``,
    ``weighted_l2_map(pred, levels, g)`` for ``"weighted-l2"`` (``gags.distill._reference``), computed on [P, D] rows
    instead of [D, H, W]
    maps: the same numbers, with memory access that stays contiguous on a CPU.

    pred: [P, D]; levels: [3, P, D]; g: [3, P] -> [P].
    """
    if target_mode == "weighted-l2":
        return (g * (pred[None] - levels).pow(2).sum(-1)).sum(0)
    target = (levels * g[:, :, None]).sum(0)  # [P, D]
    if normalize_target:
        target = F.normalize(target, dim=-1)
    return (pred - target).abs().mean(-1)


def head_losses(render: Tensor, view: TrainView, head: Head, spec: MethodSpec, state: FieldState,
                config: DistillConfig) -> dict[str, Tensor]:
    """Loss terms of one head on one view (unweighted): distill, entropy (learned weights only), consistency.

    render: [C, h, w] rendered features. Also returns ``granularity`` [3] (mean g over the counted pixels).
    """
    f = render[head.channels]  # [c, h, w]
    c, h, w = f.shape
    seg = view.seg.long()  # [3, h, w]
    covered = seg >= 0
    if head.learned:
        assert state.granularity_decoder is not None
        # pointwise, so run on [h w, c] rows (a 1x1 convolution on a CPU takes a slow path)
        with decoder_precision(config.precision, f.device):
            g = state.granularity_decoder(f.detach().reshape(c, -1).T).float().T.reshape(3, h, w)
    else:
        g = _weights_map(head, f)
    valid = covered.all(0) if head.coverage is None else covered[head.coverage]  # [h, w]
    regions = losses.granularity_regions(seg, g, config.smoothing_kernel)
    out: dict[str, Tensor] = {}
    if spec.space == "codes":  # LangSplat: L1 on the rendered code, uncovered pixels zeroed
        assert head.coverage is not None
        target = view.table[seg[head.coverage].clamp_min(0)].permute(2, 0, 1)  # [3, h, w]
        out["distill"] = losses.langsplat_l1(f, target, valid)
    elif spec.space == "sparse":  # LangSplatV2: rendered coefficients times the level's codebook, cosine loss
        assert head.coverage is not None and state.codebook is not None
        idx = valid.reshape(-1).nonzero().squeeze(1)  # [P]
        pred = state.codebook.decode_level(f.reshape(c, -1)[:, idx].T, head.coverage)  # [P, D]
        target = view.table[seg[head.coverage].reshape(-1)[idx]]  # [P, D]
        out["distill"] = losses.cosine_loss(pred, target, h * w)
    else:
        assert state.feature_decoder is not None
        idx = valid.reshape(-1).nonzero().squeeze(1)  # [P]
        with decoder_precision(config.precision, f.device):
            pred = state.feature_decoder(f.reshape(c, -1)[:, idx].T).float()  # [P, D]
        ids = seg.reshape(3, -1)[:, idx]  # [3, P]
        if head.learned:
            levels, g_valid = view.table[ids], g.reshape(3, -1)[:, idx]  # [3, P, D], [3, P]
        else:  # only the levels with a weight
            used = [k for k in range(3) if head.weights[k] != 0.0]  # type: ignore[index]
            levels = view.table[ids[used]]
            g_valid = torch.tensor([head.weights[k] for k in used], dtype=pred.dtype,  # type: ignore[index]
                                   device=pred.device)[:, None].expand(len(used), idx.numel())
        per_pixel = pixel_losses(pred, levels, g_valid, config.target, head.normalize_target)
        loss_map = per_pixel.new_zeros(h * w).index_copy(0, idx, per_pixel).reshape(h, w)
        if config.region_aware:
            out["distill"] = losses.region_aware_loss(loss_map, valid, regions)
        else:
            out["distill"] = losses.masked_mean(loss_map, valid)
        if head.learned:
            out["entropy"] = losses.granularity_entropy(g)
        out["consistency"] = losses.feature_consistency(f, regions)
    with torch.no_grad():
        n = valid.sum().clamp_min(1)
        out["granularity"] = (g * valid).reshape(3, -1).sum(1) / n
    return out


def train_field(gaussians: FrozenGaussians, views: Sequence[TrainView], spec: MethodSpec, config: DistillConfig,
                iterations: int, state: FieldState, *, checkpoint_path: Path | None = None,
                checkpoint_every: int | None = None, checkpoint_extra: dict[str, Any] | None = None,
                progress: bool = True) -> FieldState:
    """Run iterations ``state.step + 1 .. iterations`` in place; returns ``state``.

    Writes a checkpoint to ``checkpoint_path`` (if given) every ``checkpoint_every`` iterations and at the end.
    """
    if not views:
        raise GagsError("there are no training views. Check the scene's images and its train/test split.")
    if config.region_aware is None or config.precision is None:
        raise ValueError("train_field needs config.region_aware and config.precision resolved; gags distill resolves "
                         "them with default_schedule")
    every = max(1, checkpoint_every or config.checkpoint_every)
    extra = checkpoint_extra or {}
    modules = list(state.modules().values())
    for m in modules:
        if m is not state.autoencoder:
            m.train()
    clock = Clock(state.seconds, state.cpu_seconds)
    curve = Curve(iterations, state.curve)

    def sync() -> None:
        state.seconds, state.cpu_seconds, state.curve = clock.seconds, clock.cpu_seconds, curve.state()

    bar = progress_bar(iterations, state.step, f"distill {spec.name}", progress)
    ema = None
    try:
        while state.step < iterations:
            it = state.step + 1
            weights = losses.loss_weights(
                it, iterations, entropy_early=config.entropy_weight, entropy_late=config.entropy_weight_late,
                consistency_late=config.consistency_weight_late, late_start=config.late_start)
            w_entropy = weights.entropy if config.entropy else 0.0
            w_consistency = weights.consistency if config.consistency else 0.0
            view = views[view_index(config.seed, state.step, len(views))]
            render = render_features(gaussians, state.colors(), view.camera)
            total = render.new_zeros(())
            parts = {"distill": 0.0, "entropy": 0.0, "consistency": 0.0}
            granularity = []
            for head in spec.heads:
                terms = head_losses(render, view, head, spec, state, config)
                total = total + terms["distill"]
                if "entropy" in terms and w_entropy > 0:
                    total = total + w_entropy * terms["entropy"]
                if "consistency" in terms and w_consistency > 0:
                    total = total + w_consistency * terms["consistency"]
                for key in parts:
                    if key in terms:
                        parts[key] += float(terms[key].detach())
                if head.learned:
                    granularity.append(terms["granularity"])
            for opt in state.optimizers.values():
                opt.zero_grad(set_to_none=True)
            total.backward()
            for opt in state.optimizers.values():
                opt.step()
            state.step = it
            loss = finite_or_raise(float(total.detach()), it, checkpoint_path)
            ema = loss if ema is None else 0.6 * ema + 0.4 * loss  # smoothing of the GAGS release's progress bar
            bar.update(1)
            if it % 10 == 0 or it == iterations:
                bar.set_postfix(loss=f"{ema:.4f}")
            values: dict[str, float | list[float]] = {"loss": loss, **parts}
            mean_g = [float(v) for v in torch.stack(granularity).mean(0)] if granularity else []
            if sum(mean_g) > 0:  # a view with no pixel to train has no granularity to show
                values["granularity"] = mean_g
            curve.add(values)
            if curve.due(it):
                curve.close(it, seconds=clock.seconds)
            if checkpoint_path is not None and (it % every == 0 or it == iterations):
                sync()
                save_state(checkpoint_path, state, extra)
    finally:
        bar.close()
        sync()
    for m in modules:
        m.eval()
    return state


# ----------------------------------------------------------------------------------------------------------------------
# the field and the curves


def build_field(spec: MethodSpec, state: FieldState, config: dict[str, Any],
                phrases: Tensor | None = None) -> tuple[LanguageField, dict[str, Any]]:
    """The LanguageField of a trained state (n2f2: the levels fused with the phrase embeddings ``phrases`` [P, D]).

    Returns (field, facts for the record).
    """
    facts: dict[str, Any] = {}
    features = state.features.detach()
    if spec.name == "langsplat":
        assert state.autoencoder is not None
        return LanguageField(spec.name, features.cpu(), autoencoder=state.autoencoder.cpu(), config=config), facts
    if state.codebook is not None:
        codes = state.colors().detach()
        facts["sparse_nonzero_per_level"] = float((codes > 0).sum(1).float().mean()) / state.codebook.levels
        return LanguageField(spec.name, codes.cpu(), sparse=state.codebook.eval().cpu(), config=config), facts
    assert state.feature_decoder is not None
    decoder = state.feature_decoder.eval()
    if spec.name == "n2f2":
        if phrases is None:
            raise ValueError("the n2f2 fusion needs the phrase embeddings")
        fused, weights = n2f2_fuse(features, decoder, phrases.to(features.device), levels=len(spec.heads))
        facts["n2f2_mean_weights"] = [float(v) for v in weights.mean(0)]
        features = fused
    field_ = LanguageField(spec.name, features.cpu(), feature_decoder=decoder.cpu(),
                           granularity_decoder=None if state.granularity_decoder is None else
                           state.granularity_decoder.eval().cpu(), config=config)
    return field_, facts


def write_curves_png(path: Path, history: Sequence[dict[str, Any]], title: str) -> None:
    """Plot the loss terms (and the mean granularity weights when there are some) against the iteration."""
    series = {key: [(h["iteration"], h[key]) for h in history if h.get(key)] for key in
              ("loss", "distill", "entropy", "consistency")}
    gran = [(h["iteration"], h["granularity"]) for h in history if "granularity" in h]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    if plt is not None:
        rows = 2 if gran else 1
        fig, axes = plt.subplots(rows, 1, figsize=(7, 3.2 * rows), squeeze=False)
        for key, pts in series.items():
            if pts:
                axes[0][0].plot(*zip(*pts, strict=True), label=key)
        axes[0][0].set_yscale("log")
        axes[0][0].set_title(title)
        axes[0][0].legend()
        if gran:
            for k, name in enumerate(CODES):
                axes[1][0].plot([p[0] for p in gran], [p[1][k] for p in gran], label=f"g_{name}")
            axes[1][0].set_ylim(0, 1)
            axes[1][0].legend()
        axes[-1][0].set_xlabel("iteration")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return
    _write_curves_pil(path, series, gran, title)


_COLORS = {"loss": (0, 0, 0), "distill": (31, 119, 180), "entropy": (255, 127, 14), "consistency": (44, 160, 44),
           "s": (214, 39, 40), "m": (148, 103, 189), "l": (140, 86, 75)}


def _write_curves_pil(path: Path, series: dict[str, list[tuple[int, float]]],
                      gran: list[tuple[int, list[float]]], title: str) -> None:
    """The plot of :func:`write_curves_png` drawn with PIL (log-scaled losses; granularity weights in [0, 1])."""
    from PIL import Image, ImageDraw

    width, panel, margin = 700, 260, 50
    rows = 2 if gran else 1
    img = Image.new("RGB", (width, rows * panel + 20), "white")
    draw = ImageDraw.Draw(img)
    points = [p for pts in series.values() for p in pts] + [(p[0], 0.0) for p in gran]
    x_max = max((p[0] for p in points), default=1)

    def px(x: float) -> float:
        return margin + (width - 2 * margin) * x / max(x_max, 1)

    def panel_box(row: int) -> tuple[int, int]:
        top = 20 + row * panel
        return top + 15, top + panel - 30

    def draw_axes(row: int, label_lo: str, label_hi: str) -> None:
        top, bottom = panel_box(row)
        draw.rectangle([margin, top, width - margin, bottom], outline=(160, 160, 160))
        draw.text((4, top), label_hi, fill=(0, 0, 0))
        draw.text((4, bottom - 10), label_lo, fill=(0, 0, 0))
        draw.text((width - margin - 40, bottom + 4), f"{x_max} it", fill=(0, 0, 0))

    draw.text((margin, 4), title, fill=(0, 0, 0))
    positive = [v for pts in series.values() for _, v in pts if v > 0]
    if positive:
        lo, hi = math.log10(min(positive)), math.log10(max(positive))
        hi = hi if hi > lo else lo + 1.0
        top, bottom = panel_box(0)
        draw_axes(0, f"{10 ** lo:.2g}", f"{10 ** hi:.2g}")
        for n, (key, pts) in enumerate(series.items()):
            xy = [(px(x), bottom - (bottom - top) * (math.log10(v) - lo) / (hi - lo)) for x, v in pts if v > 0]
            if len(xy) > 1:
                draw.line(xy, fill=_COLORS[key], width=2)
            draw.text((width - margin - 120, top + 4 + 12 * n), key, fill=_COLORS[key])
    if gran:
        top, bottom = panel_box(1)
        draw_axes(1, "0", "1")
        for k, name in enumerate(CODES):
            xy = [(px(x), bottom - (bottom - top) * v[k]) for x, v in gran]
            if len(xy) > 1:
                draw.line(xy, fill=_COLORS[name], width=2)
            draw.text((width - margin - 120, top + 4 + 12 * k), f"g_{name}", fill=_COLORS[name])
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


# ----------------------------------------------------------------------------------------------------------------------
# the stage

RESUME_KEYS = ("method", "iterations", "downscale", "seed", "init", "feature_dim", "feature_lr", "decoder_lr",
               "langsplat_feature_lr", "sparse_lr", "target", "region_aware", "entropy", "consistency", "precision",
               "entropy_weight", "entropy_weight_late", "consistency_weight_late", "late_start", "smoothing_kernel")
"""Settings a checkpoint must agree with to be continued (with the number of Gaussians and the feature dimension)."""
UNRECORDED_SETTINGS = {"precision": "float32"}
"""What a setting was in checkpoints written before it was recorded."""


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def resolved_config(config: DistillConfig, iterations: int, downscale: float, init: Init) -> dict[str, Any]:
    """The config as run (JSON-serialisable): defaults resolved (``config.region_aware`` and ``config.precision``
    already are)."""
    out = {k: _plain(v) for k, v in dataclasses.asdict(config).items()}
    out.update(iterations=iterations, downscale=downscale, init=init)
    return out


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _train_autoencoder(views: Sequence[TrainView], config: DistillConfig, cuda: bool) -> LangSplatAutoencoder:
    from gags.distill.autoencoder import default_autoencoder_epochs, train_autoencoder

    feats = torch.cat([v.table for v in views]).float()
    epochs = config.ae_epochs or default_autoencoder_epochs(
        feats.shape[0], config.ae_batch_size, None if cuda else config.ae_cpu_max_steps)
    bar = tqdm(total=epochs, desc="langsplat autoencoder", unit="epoch")

    def on_epoch(epoch: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    try:
        return train_autoencoder(feats, epochs=epochs, batch_size=config.ae_batch_size, lr=config.ae_lr,
                                 cos_weight=config.ae_cos_weight, seed=config.seed, on_epoch=on_epoch)
    finally:
        bar.close()


def _encode_tables(views: Sequence[TrainView], autoencoder: LangSplatAutoencoder) -> list[TrainView]:
    from gags.distill.autoencoder import encode_features

    return [TrainView(v.camera, v.seg, encode_features(autoencoder, v.table.float())) for v in views]


def _phrase_embeddings(config: DistillConfig, clip_dim: int) -> Tensor:
    from gags.models import load_encoder

    encoder = load_encoder(config.encoder, device="cpu")
    if encoder.dim != clip_dim:
        raise GagsError(f"the encoder {config.encoder!r} embeds text in {encoder.dim} dimensions but the language "
                        f"features have {clip_dim}; pass the --encoder that made the features.")
    return encoder.encode_text(list(N2F2_PHRASES))


DEFAULT_THREADS = os.cpu_count() or 1
"""PyTorch threads of the stage by default: every core. At 128 px the work per operation is large enough (200
iterations of the demo scene: 44 s on one thread, 30 s on two idle cores; at the former 40-px default one thread was
faster on a shared machine, hence ``--threads 1`` for small trainings beside other jobs)."""


def validate(config: DistillConfig) -> None:
    """GagsError for an option out of its range, before anything is read or written."""
    if config.iterations is not None:
        check.at_least("--iterations", config.iterations, 0)
    check.optional_positive("--downscale", config.downscale)
    check.at_least("--checkpoint-every", config.checkpoint_every, 1)
    check.at_least("--feature-dim", config.feature_dim, 1)
    for name in ("feature_lr", "decoder_lr", "langsplat_feature_lr", "sparse_lr", "ae_lr"):
        check.positive(f"--{name.replace('_', '-')}", getattr(config, name))
    for name in ("entropy_weight", "entropy_weight_late", "consistency_weight_late", "ae_cos_weight"):
        check.at_least(f"--{name.replace('_', '-')}", getattr(config, name), 0.0)
    check.between("--late-start", config.late_start, 0.0, 1.0)
    check.at_least("--smoothing-kernel", config.smoothing_kernel, 1)
    if config.ae_epochs is not None:
        check.at_least("--ae-epochs", config.ae_epochs, 1)
    check.at_least("--ae-batch-size", config.ae_batch_size, 1)
    check.at_least("--ae-cpu-max-steps", config.ae_cpu_max_steps, 1)
    if config.threads is not None:
        check.at_least("--threads (0: PyTorch's default)", config.threads, 0)


def run(config: DistillConfig) -> dict[str, Any]:
    """Run the stage; returns the record written to ``Workspace.field_curves(METHOD)`` (without the curves)."""
    validate(config)
    entry = method(config.method)
    if config.init == "lift" and entry.build != "distill":
        raise GagsError(f"--init lift starts a trained field; {entry.name} is built without training. Drop --init.")
    lock = Workspace(Path(config.out)).lock(f"distill-{entry.name}", f"gags distill --method {entry.name}")
    with scoped_torch_threads(config.threads if config.threads is not None else DEFAULT_THREADS), lock:
        if entry.build == "lift":
            from gags.distill.lift import run_lift

            return run_lift(config)
        return _run(config)


def _run(config: DistillConfig) -> dict[str, Any]:
    session_start = time.perf_counter()
    out = Path(config.out)
    ws = Workspace(out)
    ws.require_scene()
    ws.require_gaussians()
    folder = ws.require_features()
    spec = method_spec(config.method, config.feature_dim)
    device = _device()
    scene = ws.load_scene()
    if not scene.train_ids:
        raise GagsError(f"the scene in {ws.scene_json} has no training images.")
    longest = max(max(scene.cameras[i].width, scene.cameras[i].height) for i in scene.train_ids)
    schedule = default_schedule(device.type == "cuda", longest, native_bfloat16())
    iterations = config.iterations if config.iterations is not None else schedule.iterations
    downscale = float(config.downscale) if config.downscale is not None else schedule.downscale
    init: Init = config.init if config.init is not None else schedule.init
    precision: Precision = config.precision if config.precision is not None else schedule.precision
    config = dataclasses.replace(  # the loss mean and the precision are read by the training loop from the config
        config, precision=precision,
        region_aware=config.region_aware if config.region_aware is not None else schedule.region_aware)

    gaussians = FrozenGaussians.from_splats(ws.read_gaussians(), device)
    views = load_views(scene, scene.train_ids, folder, downscale, device)
    clip_dim = int(views[0].table.shape[1])
    phrases = _phrase_embeddings(config, clip_dim) if spec.name == "n2f2" else None

    ensure_dir(ws.field_dir(spec.name))
    ckpt_path = ws.field_checkpoint(spec.name)
    settings = {k: v for k, v in resolved_config(config, iterations, downscale, init).items() if k in RESUME_KEYS}
    inputs = ws.inputs()
    settings.update(num_gaussians=len(gaussians), clip_dim=clip_dim, inputs=inputs)
    resume = config.resume and ckpt_path.is_file()
    init_facts: dict[str, Any] = {}
    if resume:
        info = checkpoint_info(ckpt_path)
        saved = {**UNRECORDED_SETTINGS, **info.get("settings", {})}
        init_facts = info.get("init_facts", {})
        if saved.get("inputs") != inputs:
            raise GagsError(f"{ckpt_path} was made from other Gaussians or other language features than {out} holds "
                            "now (they changed since). Pass --no-resume to distill the field again from them.")
        check_settings(ckpt_path, saved, settings)

    autoencoder = None
    if spec.space == "codes":
        autoencoder = LangSplatAutoencoder(in_dim=clip_dim).to(device) if resume else _train_autoencoder(
            views, config, device.type == "cuda").to(device)
    codebook = None
    if spec.space == "sparse":
        codebook = init_codebook(views, len(spec.heads), spec.heads[0].dim, config.seed).to(device)
    state = new_state(spec, len(gaussians), clip_dim, config, device, autoencoder=autoencoder, codebook=codebook)
    if resume:
        load_state(ckpt_path, state)
        print(f"gags distill: resuming {spec.name} from iteration {state.step} ({ckpt_path})")
    elif init == "lift":
        from gags.distill.init import lift_init
        from gags.distill.lift import LIFT_DOWNSCALE

        full = load_views(scene, scene.train_ids, folder, LIFT_DOWNSCALE, device)
        init_facts = lift_init(state, spec, gaussians, full, config.seed, precision)
    extra = {"settings": settings, "init_facts": init_facts}  # every checkpoint carries them to a resumed run
    if not resume:
        save_state(ckpt_path, state, extra)  # keeps the autoencoder of langsplat if the run is stopped early
    train_views = _encode_tables(views, state.autoencoder) if state.autoencoder is not None else views

    start_step = state.step
    train_field(gaussians, train_views, spec, config, iterations, state, checkpoint_path=ckpt_path,
                checkpoint_extra=extra)
    run_config = resolved_config(config, iterations, downscale, init)
    field_, facts = build_field(spec, state, run_config, phrases)
    facts.update(init_facts)
    facts["inputs"] = inputs
    if phrases is not None:
        facts.update(n2f2_phrases=list(N2F2_PHRASES), n2f2_temperature=N2F2_TEMPERATURE)
    field_.config.update(facts)
    field_.save(ws.field_file(spec.name))

    cam = views[0].camera
    done = state.step - start_step
    history = state.history
    report = {
        "method": spec.name,
        "iterations": state.step,
        "resumed_from": start_step if resume else None,
        "seconds": state.seconds,
        "cpu_seconds": state.cpu_seconds,
        "seconds_per_iteration": state.seconds / state.step if state.step else None,
        "session_seconds": time.perf_counter() - session_start,
        "session_iterations": done,
        "resolution": [cam.width, cam.height],
        "downscale": downscale,
        "num_gaussians": len(gaussians),
        "num_views": len(views),
        "feature_dim": spec.feature_dim,
        "clip_dim": clip_dim,
        "device": device.type,
        "final": history[-1] if history else None,
        **facts,
    }
    write_json(ws.field_curves(spec.name), {**report, "history": history})
    write_curves_png(ws.field_curves_png(spec.name), history, f"gags distill --method {spec.name}")
    print(f"gags distill: {spec.name}, {state.step} iterations at {cam.width}x{cam.height}, {len(gaussians)} "
          f"Gaussians, {state.seconds:.0f} s -> {ws.field_file(spec.name)}")
    return report
