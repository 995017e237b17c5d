"""The training curve of ``gags reconstruct`` (loss and training-view PSNR over the run), and that a resumed run
continues it."""

import math

import pytest
import torch

from gags import training
from gags.cameras import Camera, intrinsics, look_at
from gags.splat import reconstruct as rec
from gags.splat.gaussians import init_splats, make_splats
from tests.splat.rendered_truth import random_gaussians, render_views

SIZE = 32
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scene() -> tuple[rec.Views, torch.nn.ParameterDict]:
    """Four views of 8 coloured Gaussians (rendered by the rasterizer), and grey noisy Gaussians to start from."""
    g = torch.Generator().manual_seed(0)
    n = 8
    truth = random_gaussians(n, g, min_scale=0.1)
    cams = []
    for i in range(4):
        a = 2 * math.pi * i / 4
        eye = torch.tensor([2.5 * math.cos(a), 2.5 * math.sin(a), 0.5])
        cams.append(Camera(f"v{i}.png", intrinsics(30, 30, SIZE / 2, SIZE / 2), look_at(eye, torch.zeros(3)), SIZE,
                           SIZE))
    pts = truth["means"].detach() + 0.1 * torch.randn(n, 3, generator=g)
    return render_views(truth, cams), init_splats(pts, torch.full_like(pts, 0.5), sh_degree=0, generator=g)


def test_curve_averages_stretches_of_the_run(monkeypatch):
    views, init = _scene()
    kwargs = {"iterations": 20, "scene_scale": 2.75, "seed": 0, "sh_degree": 0, "progress": False}
    monkeypatch.setattr(training, "CURVE_POINTS", 20)  # one point per iteration
    fine = rec.train(make_splats(**{k: v.detach().clone() for k, v in init.items()}), views, **kwargs).curve
    monkeypatch.setattr(training, "CURVE_POINTS", 4)  # one point every 5 iterations
    coarse = rec.train(make_splats(**{k: v.detach().clone() for k, v in init.items()}), views, **kwargs).curve
    assert [p["iteration"] for p in fine] == list(range(1, 21))
    assert [p["iteration"] for p in coarse] == [5, 10, 15, 20]
    for i, point in enumerate(coarse):
        stretch = fine[5 * i:5 * i + 5]
        assert point["loss"] == pytest.approx(sum(p["loss"] for p in stretch) / 5, rel=1e-5)
        assert point["psnr"] == pytest.approx(sum(p["psnr"] for p in stretch) / 5, rel=1e-5)
    assert coarse[-1]["loss"] < coarse[0]["loss"], coarse
    assert all(p["num_gaussians"] >= 8 for p in coarse)


def test_resumed_run_continues_the_curve(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "CURVE_POINTS", 4)  # 20 iterations -> one point every 5
    views, init = _scene()
    straight = make_splats(**{k: v.detach().clone() for k, v in init.items()})
    whole = rec.train(straight, views, iterations=20, scene_scale=2.75, seed=0, sh_degree=0, progress=False).curve

    ckpt = tmp_path / "ckpt.safetensors"
    first = make_splats(**{k: v.detach().clone() for k, v in init.items()})
    rec.train(first, views, iterations=20, scene_scale=2.75, seed=0, sh_degree=0, progress=False,
              checkpoint_path=ckpt, until=10)
    assert [p["iteration"] for p in training.load_checkpoint(ckpt, rec.CHECKPOINT_KIND).info["curve"]["points"]] == [5, 10]
    second = make_splats(**{k: v.detach().clone() for k, v in init.items()})
    resumed = rec.train(second, views, iterations=20, scene_scale=2.75, seed=0, sh_degree=0, progress=False,
                        checkpoint_path=ckpt, resume=training.load_checkpoint(ckpt, rec.CHECKPOINT_KIND)).curve
    assert [p["iteration"] for p in resumed] == [p["iteration"] for p in whole]
    for a, b in zip(resumed, whole, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4) and a["psnr"] == pytest.approx(b["psnr"], rel=1e-4)
