"""Training on a tiny synthetic scene (ground truth rendered by the rasterizer itself) and the training pieces."""

import math

import pytest
import torch

from gags.cameras import Camera, intrinsics, look_at
from gags.splat import rasterize
from gags.splat.gaussians import init_splats, make_splats
from gags.splat.reconstruct import (
    LR_MEANS,
    LR_MEANS_FINAL_FACTOR,
    densification_strategy,
    evaluate,
    make_optimizers,
    means_lr,
    photometric_loss,
    train,
)
from gags.training import load_checkpoint
from tests.splat.rendered_truth import random_gaussians, render_views

SIZE = 40
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ground_truth(seed: int = 0, n: int = 12) -> torch.nn.ParameterDict:
    return random_gaussians(n, torch.Generator().manual_seed(seed), min_scale=0.08)


def _cameras(n: int) -> list[Camera]:
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = torch.tensor([2.5 * math.cos(a), 2.5 * math.sin(a), 0.8 * (-1) ** i])
        cams.append(Camera(f"v{i:02d}.png", intrinsics(36, 36, SIZE / 2, SIZE / 2), look_at(eye, torch.zeros(3)),
                           SIZE, SIZE))
    return cams


def _scene():
    gt = _ground_truth()
    cams = _cameras(9)
    train_views = render_views(gt, cams[:8:1][:7])
    test_views = render_views(gt, [cams[7], cams[8]])
    # "SfM points": noisy copies of the true centres with grey colours
    g = torch.Generator().manual_seed(1)
    pts = torch.cat([gt["means"].detach() + 0.08 * torch.randn(12, 3, generator=g) for _ in range(4)])
    init = init_splats(pts, torch.full_like(pts, 0.5), sh_degree=3, generator=g)
    return train_views, test_views, init


def test_training_raises_held_out_psnr(tmp_path):
    train_views, test_views, splats = _scene()
    before = evaluate(splats, test_views, 0, rasterize)
    result = train(splats, train_views, iterations=300, scene_scale=2.75, seed=0, sh_degree_interval=100,
                   eval_views=test_views, eval_at=(100, 200), progress=False,
                   checkpoint_path=tmp_path / "ckpt.safetensors", checkpoint_every=100)
    after = evaluate(splats, test_views, 2, rasterize)
    assert result.step == 300 and [h["iterations"] for h in result.history] == [100, 200]
    # measured (held-out views): 21.2 dB / SSIM 0.53 before (mostly black background), 29.4 dB / 0.90 after
    assert after["psnr"] > before["psnr"] + 5.0 and after["psnr"] > 26.0, (before["psnr"], after["psnr"])
    assert after["ssim"] > before["ssim"] + 0.25
    assert splats["means"].shape[0] != 48  # densification changed the set
    assert set(result.timing) >= {"render", "loss", "backward", "optimizer", "densify"}
    ckpt = load_checkpoint(tmp_path / "ckpt.safetensors", "reconstruct")
    assert ckpt.step == 300 and ckpt.group("splats")["means"].shape == splats["means"].shape


def test_resume_continues_identically(tmp_path):
    """Training 40 iterations straight equals 20, a checkpoint, and 20 more from it."""
    train_views, _, init = _scene()
    kwargs = {"iterations": 40, "scene_scale": 2.75, "seed": 3, "sh_degree_interval": 15, "progress": False}
    straight = make_splats(**{k: v.detach().clone() for k, v in init.items()})
    train(straight, train_views, **kwargs)

    first = make_splats(**{k: v.detach().clone() for k, v in init.items()})
    first_result = train(first, train_views, **kwargs, until=20, checkpoint_path=tmp_path / "c.safetensors")
    assert first_result.step == 20
    ckpt = load_checkpoint(tmp_path / "c.safetensors", "reconstruct")
    assert ckpt.step == 20
    resumed = make_splats(**ckpt.group("splats"))
    result = train(resumed, train_views, **kwargs, resume=ckpt)
    assert result.resumed_from == 20
    for key in straight:
        assert resumed[key].shape == straight[key].shape
        assert torch.allclose(resumed[key], straight[key], atol=1e-5), key


def test_schedules():
    assert means_lr(0, 1000, 2.0) == pytest.approx(LR_MEANS * 2.0)
    assert means_lr(1000, 1000, 2.0) == pytest.approx(LR_MEANS * 2.0 * LR_MEANS_FINAL_FACTOR)
    assert means_lr(500, 1000, 1.0) == pytest.approx(LR_MEANS * math.sqrt(LR_MEANS_FINAL_FACTOR))
    full = densification_strategy(30_000)
    assert (full.refine_start_iter, full.refine_stop_iter, full.refine_every, full.reset_every) == (500, 15_000, 100,
                                                                                                     3000)
    short = densification_strategy(7000)
    assert (short.refine_start_iter, short.refine_stop_iter, short.refine_every, short.reset_every) == (117, 3500, 25,
                                                                                                        700)
    assert densification_strategy(60_000).refine_stop_iter == 15_000


def test_photometric_loss_is_zero_on_identical_images():
    img = torch.rand(20, 20, 3)
    loss, _, s = photometric_loss(img, img, 0.2)
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and float(s) == pytest.approx(1.0, abs=1e-6)


def test_budget_strategy_caps_growth():
    def grown(max_gaussians):
        n = 100
        splats = _ground_truth(n=n)
        with torch.no_grad():
            splats["scales"].fill_(math.log(1e-3))  # all small: every selected Gaussian is duplicated
        opts = make_optimizers(splats, 1.0)
        strategy = densification_strategy(30_000, max_gaussians=max_gaussians)
        state = strategy.initialize_state(scene_scale=1.0)
        state["grad2d"] = torch.linspace(1e-3, 2e-3, n)  # all above the 2e-4 threshold
        state["count"] = torch.ones(n)
        strategy._grow_gs(splats, opts, state, step=600)
        assert strategy.grow_grad2d == 2e-4  # restored after the refinement
        return splats["means"].shape[0], state

    assert grown(None)[0] == 200
    n, state = grown(130)
    assert n == 130
    # the duplicated ones are those with the largest gradients
    assert torch.equal(state["grad2d"][100:].sort().values, torch.linspace(1e-3, 2e-3, 100)[70:])
    assert grown(90)[0] == 100  # over budget already: no growth


def test_default_budget_per_device():
    from gags.splat.reconstruct import CPU_ITERATIONS, resolve_budget

    assert resolve_budget(None, None, on_gpu=True, pixels=25_350) == (30_000, None)
    assert resolve_budget(None, None, on_gpu=False, pixels=25_350) == (CPU_ITERATIONS, 25_350)
    assert resolve_budget(500, 0, on_gpu=False, pixels=25_350) == (500, None)
    assert resolve_budget(500, 1000, on_gpu=True, pixels=25_350) == (500, 1000)
