"""``gags reconstruct``: train RGB 3D Gaussians from posed photos, as the 3DGS paper (gsplat ``simple_trainer``).

One view per iteration (seeded order, a new permutation every epoch); loss ``(1 - l) L1 + l (1 - SSIM)`` with
l = 0.2; one Adam per parameter with 3DGS's learning rates (the means' decays exponentially to 1 % over the run); SH
degree raised by one every ``sh_degree_interval`` iterations; ``gsplat.strategy.DefaultStrategy`` densification with
its schedule scaled to the run's length (see ``densification_strategy``), optionally under a ceiling on the number of
Gaussians (``BudgetStrategy``; the CPU default). Opacities are not reset: gsplat 1.5.3's DefaultStrategy never resets
them (its test ``step % reset_every == 0 & step > 0`` is always false), and this follows what gsplat does.

A checkpoint is written atomically every ``checkpoint_every`` iterations; running the same command again continues
from it.

Outputs (paths of :class:`gags.workspace.Workspace`): the scene record, the Gaussians (``gaussians_ply``), the metrics
(``reconstruct_metrics``: held-out PSNR/SSIM, per view), the checkpoint and the held-out renders
(``reconstruct_renders/NAME.png``). The metrics' ``curve`` is the training curve: loss and PSNR of the training views,
averaged over about ``gags.training.CURVE_POINTS`` stretches of the run (also kept in the checkpoint, so a resumed run
continues it). Checkpoints, resume, view order, curve and clocks are those of :mod:`gags.training`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gsplat.strategy import DefaultStrategy

from gags import training
from gags import validate as check
from gags.cameras import Camera
from gags.config import ReconstructConfig
from gags.errors import GagsError
from gags.io import atomic_path, ensure_dir, write_json
from gags.splat.gaussians import (
    SPLAT_KEYS,
    activated,
    init_splats,
    make_splats,
    random_points_in_frustums,
    splats_from_ply,
)
from gags.splat.ssim import SSIM_WINDOW, psnr, ssim
from gags.threads import scoped_torch_threads
from gags.workspace import Workspace

# --- 3DGS / gsplat simple_trainer learning rates (Kerbl et al. 2023, Sec. 7.1; gsplat examples/simple_trainer.py) ---
LR_MEANS = 1.6e-4
"""Initial learning rate of the means, times the scene scale."""
LR_MEANS_FINAL_FACTOR = 0.01
"""The means' learning rate decays exponentially to this fraction of its initial value over the run."""
LR = {"scales": 5e-3, "quats": 1e-3, "opacities": 5e-2, "sh0": 2.5e-3, "shN": 2.5e-3 / 20}
ADAM_EPS = 1e-15
"""Adam epsilon of gsplat's simple_trainer (tiny: gradients of individual Gaussians are tiny)."""

# --- densification schedule (gsplat.strategy.DefaultStrategy defaults, made for 30,000 iterations) ---
PAPER_ITERATIONS = 30_000
MIN_REFINE_EVERY = 25
"""Smallest refinement interval of a scaled schedule: gradient statistics must cover several views between two
refinements, and new Gaussians need a few steps to settle before they are judged."""

# --- random initialisation when a scene has no points ---
RANDOM_INIT_NEAR = 0.05
RANDOM_INIT_FAR = 2.0
"""Random initial Gaussians fill the camera frustums between these depths (times the scene scale): for cameras on a
sphere of radius ~scale around the scene, depth 2 x scale reaches the far side of it."""

STANDARD_SH_DEGREE = 3
"""The SH degree of the PLY layout every 3DGS tool reads (45 ``f_rest`` properties)."""
CHECKPOINT_KIND = "reconstruct"
"""Checkpoints of this stage are ``gags.training`` checkpoints of this kind."""

RenderFn = Callable[..., tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]


@dataclass
class Views:
    """Posed images: cameras[i] took images[i] (uint8 [H, W, 3], the camera's size)."""

    cameras: list[Camera]
    images: list[torch.Tensor]

    def __post_init__(self) -> None:
        for cam, img in zip(self.cameras, self.images, strict=True):
            if tuple(img.shape) != (cam.height, cam.width, 3):
                raise GagsError(f"image {cam.name!r} is {tuple(img.shape)}, its camera says {cam.height}x{cam.width}x3."
                                " The image does not match the camera model; check the image folder.")

    def __len__(self) -> int:
        return len(self.cameras)

    def target(self, i: int) -> torch.Tensor:
        """[H, W, 3] float image in [0, 1]."""
        return self.images[i].float().div_(255.0)


@dataclass
class TrainResult:
    step: int
    """Iterations done in total (over all resumed sessions)."""
    seconds: float
    """Training wall time in total (over all resumed sessions), evaluations excluded."""
    resumed_from: int | None
    cpu_seconds: float
    """Process CPU time of training in total (all threads; under CPU contention a better measure of the work)."""
    timing: dict[str, float]
    """Seconds spent in this session per phase: data, render, loss, backward, optimizer, densify, checkpoint."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Held-out metrics at the steps of ``eval_at``."""
    curve: list[dict[str, Any]] = field(default_factory=list)
    """Training curve: {"iteration", "loss", "psnr", "num_gaussians"}, loss and PSNR of the training views averaged
    over the iterations since the previous point."""


def default_rasterize() -> RenderFn:
    from gags.splat.rasterize import rasterize

    return rasterize


@dataclass
class BudgetStrategy(DefaultStrategy):
    """``DefaultStrategy`` with an optional ceiling on the number of Gaussians (for CPUs, where time grows with it).

    When growing would exceed ``max_gaussians``, only the Gaussians with the largest mean screen-space gradients are
    duplicated or split (each adds one Gaussian): the gradient threshold is raised to the budget's quantile for that
    refinement. Without a ceiling it is ``DefaultStrategy`` exactly.
    """

    max_gaussians: int | None = None

    def _grow_gs(self, params, optimizers, state, step):
        if self.max_gaussians is None:
            return super()._grow_gs(params, optimizers, state, step)
        grads = state["grad2d"] / state["count"].clamp_min(1)
        budget = self.max_gaussians - params["means"].shape[0]
        base = self.grow_grad2d
        if budget <= 0:
            threshold = math.inf
        elif int((grads > base).sum()) > budget:
            threshold = float(torch.topk(grads, budget + 1).values[-1])  # > threshold: at most ``budget`` of them
        else:
            threshold = base
        self.grow_grad2d = max(base, threshold)
        try:
            return super()._grow_gs(params, optimizers, state, step)
        finally:
            self.grow_grad2d = base


def densification_strategy(iterations: int, max_gaussians: int | None = None) -> BudgetStrategy:
    """``DefaultStrategy`` with its 30,000-iteration schedule scaled to a run of ``iterations``.

    Rule: with f = min(1, iterations / 30,000), refinement starts at 500 f, stops at 15,000 f (the first half of the
    run, as 3DGS), runs every max(25, 100 f) iterations, and the opacity-reset period (which also gates the pruning of
    too-large Gaussians) is 3,000 f. Thresholds (gradient 2e-4, scale 0.01, prune opacity 0.005, ...) stay as they are.
    So a 30,000-iteration run uses gsplat's defaults exactly; a 7,000-iteration run refines every 25 iterations
    from 117 to 3,500.
    """
    f = min(1.0, iterations / PAPER_ITERATIONS)
    defaults = DefaultStrategy()
    return BudgetStrategy(
        max_gaussians=max_gaussians,
        refine_start_iter=round(defaults.refine_start_iter * f),
        refine_stop_iter=round(defaults.refine_stop_iter * f),
        refine_every=max(min(MIN_REFINE_EVERY, defaults.refine_every), round(defaults.refine_every * f)),
        reset_every=max(1, round(defaults.reset_every * f)),
    )


def make_optimizers(splats: torch.nn.ParameterDict, scene_scale: float) -> dict[str, torch.optim.Adam]:
    """One Adam per parameter (the layout gsplat's strategies expect), with 3DGS's learning rates."""
    lrs = {"means": LR_MEANS * scene_scale, **LR}
    return {name: torch.optim.Adam([splats[name]], lr=lrs[name], eps=ADAM_EPS) for name in SPLAT_KEYS}


def means_lr(step: int, iterations: int, scene_scale: float) -> float:
    """Learning rate of the means at ``step``: exponential decay from 1.6e-4 x scale to 1 % of it at the end."""
    return LR_MEANS * scene_scale * LR_MEANS_FINAL_FACTOR ** (step / max(1, iterations))


def photometric_loss(render: torch.Tensor, target: torch.Tensor, ssim_lambda: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3DGS loss ``(1 - l) L1 + l (1 - SSIM)`` of render and target [H, W, 3]; returns (loss, l1, ssim)."""
    l1 = (render - target).abs().mean()
    s = ssim(render, target, padding="same")
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * (1.0 - s), l1, s


def render_view(splats: torch.nn.ParameterDict, camera: Camera, sh_degree: int, rasterize: RenderFn,
                backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Render [H, W, 3], alpha [H, W, 1] and the rasterizer's meta for one camera."""
    device = splats["means"].device
    return rasterize(**activated(splats), viewmat=camera.world_to_cam.to(device), K=camera.K.to(device),
                     width=camera.width,
                     height=camera.height, sh_degree=sh_degree, backend=backend)


@torch.no_grad()
def evaluate(splats: torch.nn.ParameterDict, views: Views, sh_degree: int, rasterize: RenderFn,
             backend: str = "auto", renders_dir: Path | None = None) -> dict[str, Any]:
    """PSNR and SSIM (skimage-compatible, renders clamped to [0, 1]) per view and their means.

    Returns:
        {"psnr": mean dB, "ssim": mean, "views": [{"name", "psnr", "ssim"}, ...]}
    """
    per_view = []
    for i, cam in enumerate(views.cameras):
        img, _, _ = render_view(splats, cam, sh_degree, rasterize, backend)
        img = img[..., :3].clamp(0.0, 1.0).cpu()
        target = views.target(i)
        per_view.append({"name": cam.name, "psnr": float(psnr(img, target)), "ssim": float(ssim(img, target))})
        if renders_dir is not None:
            _write_png(renders_dir / f"{Path(cam.name).stem}.png", img)
    if not per_view:
        return {"psnr": None, "ssim": None, "views": []}
    return {"psnr": float(np.mean([v["psnr"] for v in per_view])),
            "ssim": float(np.mean([v["ssim"] for v in per_view])), "views": per_view}


def _write_png(path: Path, img: torch.Tensor) -> None:
    from PIL import Image

    arr = (img.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def train(splats: torch.nn.ParameterDict, views: Views, *, iterations: int, scene_scale: float, seed: int = 42,
          sh_degree: int = 3, sh_degree_interval: int = 1000, ssim_lambda: float = 0.2, backend: str = "auto",
          rasterize: RenderFn | None = None, checkpoint_path: Path | None = None, checkpoint_every: int = 1000,
          resume: training.Checkpoint | None = None, checkpoint_info: dict[str, Any] | None = None,
          eval_views: Views | None = None, eval_at: Sequence[int] = (), until: int | None = None,
          max_gaussians: int | None = None, progress: bool = True) -> TrainResult:
    """Optimise ``splats`` in place (the ParameterDict's entries are replaced as densification grows and prunes them).

    Args:
        splats: initial Gaussians (ignored entries are overwritten when ``resume`` is given).
        views: training views.
        iterations: total iterations of the run (a resumed run continues to this count).
        scene_scale: scene extent (learning rate of the means, densification scale thresholds).
        resume: a checkpoint (``gags.training``, kind ``reconstruct``) to continue from.
        checkpoint_path: where to write a checkpoint every ``checkpoint_every`` iterations and at the end.
        eval_views, eval_at: evaluate these views after these iteration counts (recorded in ``history``).
        max_gaussians: ceiling on the number of Gaussians densification may reach (None: none, as 3DGS).
        until: stop this session after this iteration count (checkpoint written), as if interrupted there; the
            schedules stay those of ``iterations``.
    """
    if len(views) == 0:
        raise GagsError("there are no training views. Check the scene's images and the train/test split.")
    rasterize = rasterize or default_rasterize()
    device = splats["means"].device
    strategy = densification_strategy(iterations, max_gaussians)
    saved = resume.info if resume is not None else {}
    start = resume.step if resume is not None else 0
    history: list[dict[str, Any]] = list(saved.get("history", []))
    curve = training.Curve(iterations, saved.get("curve"))
    if resume is not None:
        for key, value in resume.group("splats").items():
            splats[key] = torch.nn.Parameter(value.to(device, copy=True))
    optimizers = make_optimizers(splats, scene_scale)
    strategy.check_sanity(splats, optimizers)
    state = strategy.initialize_state(scene_scale=scene_scale)
    if resume is not None:
        try:
            training.load_optimizers(optimizers, resume, saved["param_groups"])
        except (KeyError, ValueError) as exc:
            raise GagsError(f"checkpoint {checkpoint_path} is inconsistent ({exc}); delete it to start over.") from exc
        strategy_saved = {**resume.group("strategy"), **saved.get("strategy_scalars", {})}
        for key in state:
            if key in strategy_saved:
                value = strategy_saved[key]
                state[key] = value.to(device) if torch.is_tensor(value) else value
    timing = dict.fromkeys(("data", "render", "loss", "backward", "optimizer", "densify", "checkpoint"), 0.0)
    info = dict(checkpoint_info or {})
    clock = training.Clock(saved.get("train_seconds", 0.0), saved.get("cpu_seconds", 0.0))

    def write(step: int) -> None:
        assert checkpoint_path is not None
        t = time.perf_counter()
        optim, groups = training.optimizer_tensors(optimizers)
        tensors = {**training.grouped("splats", dict(splats.items())), **optim,
                   **training.grouped("strategy", {k: v for k, v in state.items() if torch.is_tensor(v)})}
        scalars = {k: v for k, v in state.items() if not torch.is_tensor(v)}
        training.save_checkpoint(checkpoint_path, CHECKPOINT_KIND, training.Checkpoint(
            step=step, tensors=tensors, rng_state=torch.get_rng_state(),
            info={**info, "train_seconds": clock.seconds, "cpu_seconds": clock.cpu_seconds, "history": history,
                  "curve": curve.state(), "param_groups": groups, "strategy_scalars": scalars}))
        timing["checkpoint"] += time.perf_counter() - t

    with torch.random.fork_rng(devices=[]):  # densification draws from the global generator; leave the caller's alone
        if resume is not None:
            torch.set_rng_state(resume.rng_state)
        else:
            torch.manual_seed(seed)
        bar = training.progress_bar(iterations, start, "reconstruct", progress)
        loss_ema = None
        stop = iterations if until is None else max(start, min(until, iterations))
        for step in range(start, stop):
            t0 = time.perf_counter()
            i = training.view_index(seed, step, len(views))
            cam = views.cameras[i]
            target = views.target(i).to(device)
            degree = min(step // max(1, sh_degree_interval), sh_degree)
            optimizers["means"].param_groups[0]["lr"] = means_lr(step, iterations, scene_scale)
            t1 = time.perf_counter()
            img, _, meta = render_view(splats, cam, degree, rasterize, backend)
            strategy.step_pre_backward(splats, optimizers, state, step, meta)
            t2 = time.perf_counter()
            loss, _, _ = photometric_loss(img, target, ssim_lambda)
            t3 = time.perf_counter()
            loss.backward()
            t4 = time.perf_counter()
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            t5 = time.perf_counter()
            strategy.step_post_backward(splats, optimizers, state, step, meta, packed=False)
            t6 = time.perf_counter()
            for key, a, b in (("data", t0, t1), ("render", t1, t2), ("loss", t2, t3), ("backward", t3, t4),
                              ("optimizer", t4, t5), ("densify", t5, t6)):
                timing[key] += b - a
            loss_value = training.finite_or_raise(float(loss.detach()), step, checkpoint_path)
            loss_ema = loss_value if loss_ema is None else 0.9 * loss_ema + 0.1 * loss_value
            bar.update(1)
            if step % 10 == 0 or step == iterations - 1:
                bar.set_postfix(loss=f"{loss_ema:.4f}", gaussians=f"{splats['means'].shape[0]:,}", refresh=False)
            done = step + 1
            curve.add({"loss": loss_value, "psnr": float(psnr(img.detach()[..., :3].clamp(0.0, 1.0), target))})
            if curve.due(done):
                curve.close(done, num_gaussians=int(splats["means"].shape[0]))
            if eval_views is not None and done in eval_at:
                with clock.pause():
                    metrics = evaluate(splats, eval_views, degree, rasterize, backend)
                history.append({"iterations": done, "psnr": metrics["psnr"], "ssim": metrics["ssim"],
                                "seconds": clock.seconds, "cpu_seconds": clock.cpu_seconds,
                                "num_gaussians": int(splats["means"].shape[0])})
            if checkpoint_path is not None and checkpoint_every > 0 and done % checkpoint_every == 0 \
                    and done < stop:
                write(done)
        bar.close()
        if checkpoint_path is not None:
            write(max(start, stop))
    return TrainResult(step=max(start, stop), seconds=clock.seconds,
                       resumed_from=resume.step if resume is not None else None, cpu_seconds=clock.cpu_seconds,
                       timing=timing, history=history, curve=curve.points)


# ------------------------------------------------------------------------------------------------------------------
# the stage


CPU_ITERATIONS = 7000
"""Default run length on a CPU: 3DGS's first evaluation point (7k), with the schedules scaled to it."""
CPU_GAUSSIANS_PER_PIXEL = 1.0
"""Default Gaussian ceiling on a CPU, per pixel of one training image (kitchen, 195x130: 25,350): time per iteration
grows with the number of Gaussians, and past about one per pixel the held-out gain per second drops (see the
reconstruct benchmark)."""
# Settings a checkpoint must agree with to be resumed (others, e.g. --iterations, may change between sessions).
RESUME_KEYS = ("scene", "images", "images_dir", "downscale", "test_every", "sh_degree", "init_ply", "seed")


def _settings(config: ReconstructConfig) -> dict[str, Any]:
    values = {key: getattr(config, key) for key in RESUME_KEYS}
    return {key: str(v) if isinstance(v, Path) else v for key, v in values.items()}


def _load_views(scene: Any, ids: Sequence[int], downscale: int) -> Views:
    cameras = [scene.camera(i, downscale) for i in ids]
    images = [torch.as_tensor(np.ascontiguousarray(scene.load_image(i, downscale))) for i in ids]
    return Views(cameras, images)


def _initial_splats(config: ReconstructConfig, scene: Any, scene_scale: float) -> tuple[torch.nn.ParameterDict, str]:
    gen = torch.Generator().manual_seed(config.seed)
    if config.init_ply is not None:
        from gags.data.ply import read_ply

        return splats_from_ply(read_ply(config.init_ply), config.sh_degree), f"ply:{config.init_ply}"
    points = scene.points
    if points is not None and len(points) > 0:
        points = torch.as_tensor(np.asarray(points), dtype=torch.float32)
        if scene.point_colors is not None:
            colors = torch.as_tensor(np.asarray(scene.point_colors), dtype=torch.float32) / 255.0
        else:
            colors = torch.full_like(points, 0.5)
        return init_splats(points, colors, config.sh_degree, generator=gen), f"points:{len(points)}"
    cameras = [scene.camera(i, 1) for i in scene.train_ids]
    pts = random_points_in_frustums(cameras, config.random_init_points, RANDOM_INIT_NEAR * scene_scale,
                                    RANDOM_INIT_FAR * scene_scale, generator=gen)
    colors = torch.rand(pts.shape[0], 3, generator=gen)
    return init_splats(pts, colors, config.sh_degree, generator=gen), f"random:{len(pts)}"


def resolve_budget(iterations: int | None, max_gaussians: int | None, on_gpu: bool, pixels: int
                   ) -> tuple[int, int | None]:
    """The run's length and Gaussian ceiling: the user's values, or the defaults for the device.

    GPU: 30,000 iterations and no ceiling (3DGS). CPU: 7,000 iterations (3DGS's first evaluation point) and a ceiling of
    ``CPU_GAUSSIANS_PER_PIXEL`` Gaussians per pixel of a training image, since time per iteration grows with the
    Gaussians. ``max_gaussians`` 0 means no ceiling.
    """
    if iterations is None:
        iterations = PAPER_ITERATIONS if on_gpu else CPU_ITERATIONS
    if max_gaussians is None:
        max_gaussians = None if on_gpu else max(1, round(CPU_GAUSSIANS_PER_PIXEL * pixels))
    elif max_gaussians == 0:
        max_gaussians = None
    return iterations, max_gaussians


def validate(config: ReconstructConfig) -> None:
    """GagsError for an option out of its range, before anything is read or written."""
    if config.images is None and config.scene is None:
        raise GagsError("give a scene folder (gags reconstruct SCENE --out OUT) or a folder of photos (--images DIR).")
    check.at_least("--downscale", config.downscale, 1)
    if config.iterations is not None:
        check.at_least("--iterations", config.iterations, 0)
    if config.max_gaussians is not None:
        check.at_least("--max-gaussians (0: no ceiling)", config.max_gaussians, 0)
    check.between("--sh-degree", config.sh_degree, 0, 3)
    check.at_least("--sh-degree-interval", config.sh_degree_interval, 1)
    check.between("--ssim-lambda", config.ssim_lambda, 0.0, 1.0)
    check.at_least("--checkpoint-every", config.checkpoint_every, 1)
    check.at_least("--test-every (0: no held-out views)", config.test_every, 0)
    check.at_least("--random-init-points", config.random_init_points, 1)
    check.at_least("--threads (0: PyTorch's default)", config.threads, 0)
    for step in config.eval_at:
        check.at_least("--eval-at", step, 1)


def run(config: ReconstructConfig) -> dict[str, Any]:
    """Run the stage; returns the metrics written to the stage's metrics file (``Workspace.reconstruct_metrics``)."""
    validate(config)
    with scoped_torch_threads(config.threads), Workspace(Path(config.out)).lock("reconstruct"):
        return _run(config)


def _run(config: ReconstructConfig) -> dict[str, Any]:
    from gags.data import load_scene
    from gags.data.ply import write_ply

    wall_start = time.perf_counter()
    out = ensure_dir(Path(config.out))
    ws = Workspace(out)
    ensure_dir(ws.reconstruct_dir)
    if config.images is not None:
        from gags.data.sfm import run_sfm

        scene_path = run_sfm(Path(config.images), out)
    else:
        assert config.scene is not None  # validate() checked that one is given
        scene_path = Path(config.scene)
    scene = load_scene(scene_path, images_dir=config.images_dir, test_every=config.test_every, strict=config.strict)
    ws.save_scene(scene)
    scene_scale = float(scene.scale)  # 1.1 x camera extent already (3DGS / simple_trainer)
    train_views = _load_views(scene, scene.train_ids, config.downscale)
    test_ids = list(scene.test_ids)
    eval_split = "test" if test_ids else "train"
    test_views = _load_views(scene, test_ids, config.downscale) if test_ids else train_views
    on_gpu = torch.cuda.is_available() and config.backend != "torch"
    device = torch.device("cuda" if on_gpu else "cpu")
    h, w = train_views.images[0].shape[:2]
    if min(h, w) < SSIM_WINDOW:
        raise GagsError(f"the training images are {w}x{h} pixels after --downscale {config.downscale}; SSIM needs at "
                        f"least {SSIM_WINDOW} pixels per side. Use a smaller --downscale.")
    iterations, max_gaussians = resolve_budget(config.iterations, config.max_gaussians, on_gpu, w * h)

    ckpt_path = ws.reconstruct_checkpoint
    settings = _settings(config)
    resume = None
    if config.resume and ckpt_path.is_file():
        resume = training.load_checkpoint(ckpt_path, CHECKPOINT_KIND)
        training.check_settings(ckpt_path, resume.info.get("settings", {}), settings)
    if resume is not None:
        splats = make_splats(**resume.group("splats"))
        init = resume.info.get("init", "checkpoint")
        print(f"gags reconstruct: resuming from iteration {resume.step} ({ckpt_path})")
    else:
        splats, init = _initial_splats(config, scene, scene_scale)
    splats = splats.to(device)

    rasterize = default_rasterize()
    result = train(splats, train_views, iterations=iterations, scene_scale=scene_scale, seed=config.seed,
                   sh_degree=config.sh_degree, sh_degree_interval=config.sh_degree_interval,
                   ssim_lambda=config.ssim_lambda, backend=config.backend, rasterize=rasterize,
                   checkpoint_path=ckpt_path, checkpoint_every=config.checkpoint_every, resume=resume,
                   checkpoint_info={"settings": settings, "init": init}, eval_views=test_views,
                   eval_at=tuple(config.eval_at), max_gaussians=max_gaussians)
    # the standard layout (SH degree 3, higher bands zero when trained with fewer), as the official 3DGS loader reads it
    write_ply(ws.gaussians_ply, {k: v.detach() for k, v in splats.items()}, pad_to_degree=STANDARD_SH_DEGREE)
    # the degree of the last iteration (all bands when nothing was trained, e.g. a PLY taken as it is)
    last = result.step - 1
    final_degree = config.sh_degree if last < 0 else min(last // max(1, config.sh_degree_interval), config.sh_degree)
    t = time.perf_counter()
    metrics = evaluate(splats, test_views, final_degree, rasterize, config.backend, renders_dir=ws.reconstruct_renders)
    eval_seconds = time.perf_counter() - t
    report = {
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "iterations": result.step,
        "seconds": result.seconds,
        "cpu_seconds": result.cpu_seconds,
        "num_gaussians": int(splats["means"].shape[0]),
        "eval_split": eval_split,
        "views": metrics["views"],
        "history": result.history,
        "curve": result.curve,
        "resumed_from": result.resumed_from,
        "init": init,
        "resolution": [w, h],
        "num_train_views": len(train_views),
        "num_test_views": len(test_ids),
        "max_gaussians": max_gaussians,
        "device": str(device),
        "sh_degree": final_degree,
        "scene_scale": scene_scale,
        "eval_seconds": eval_seconds,
        "session_seconds": time.perf_counter() - wall_start,
        "timing": result.timing,
    }
    write_json(ws.reconstruct_metrics, report)
    print(f"gags reconstruct: {result.step} iterations, {report['num_gaussians']} Gaussians, held-out PSNR "
          f"{_fmt(report['psnr'])} dB, SSIM {_fmt(report['ssim'], 3)} ({eval_split} views) -> {ws.gaussians_ply}")
    return report


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
