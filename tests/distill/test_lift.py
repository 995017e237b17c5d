"""Training-free lifting (``gags distill --method lift | lift-consistent``): the gradient trick gives exactly the
blending-weighted sums, a Gaussian that covers one segment in every view gets that segment's feature, the consistent
level is the one whose features agree, and the stage writes fields that eval and query read."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from gags.cameras import Camera, intrinsics, look_at
from gags.config import DistillConfig, EvalConfig, QueryConfig
from gags.distill._reference import lift_level_maps
from gags.distill.lift import consistent_level, lifted_levels, segment_channels, weighted_sums
from gags.distill.train import run as distill
from gags.distill.views import TrainView
from gags.field import LanguageField
from gags.splat import rasterize
from gags.splat.gaussians import FrozenGaussians
from gags.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 24


def _gaussians(n: int, seed: int = 0) -> FrozenGaussians:
    g = torch.Generator().manual_seed(seed)
    return FrozenGaussians(means=torch.randn(n, 3, generator=g) * 0.3, quats=torch.randn(n, 4, generator=g),
                           scales=torch.rand(n, 3, generator=g) * 0.1 + 0.05,
                           opacities=torch.rand(n, generator=g) * 0.5 + 0.4)


def _camera(i: int) -> Camera:
    eye = torch.tensor([2.5 * (i - 0.5), 0.3, 2.5])
    return Camera(f"v{i}.png", intrinsics(30.0, 30.0, SIZE / 2, SIZE / 2), look_at(eye, torch.zeros(3)), SIZE, SIZE)


def test_weighted_sums_are_the_blending_weighted_sums():
    """Against the weights themselves: a render with one-hot colours gives w_ip of every Gaussian at every pixel."""
    gaussians, dim = _gaussians(5), 4
    views = []
    g = torch.Generator().manual_seed(1)
    for i in range(2):
        seg = torch.randint(-1, 3, (3, SIZE, SIZE), generator=g, dtype=torch.int32)
        views.append(TrainView(_camera(i), seg, torch.randn(3, dim, generator=g)))
    channel, level, row = segment_channels(views[0])
    assert len(level) == 9 and level.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and row.tolist() == [0, 1, 2] * 3
    assert ((channel == -1) == (views[0].seg < 0)).all()
    sums, weights = weighted_sums(gaussians, views, progress=False, chunk=4)  # chunks smaller than the channels
    want_sums = torch.zeros(5, 3, dim, dtype=torch.float64)
    want_weights = torch.zeros(5, 3, dtype=torch.float64)
    for view in views:
        cam = view.camera
        w, _, _ = rasterize(gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, torch.eye(5),
                            cam.world_to_cam, cam.K, cam.width, cam.height)  # [H, W, 5]: w_ip
        maps = lift_level_maps(view.seg, view.table).double()  # [H, W, 3D + 3]
        per = torch.einsum("hwi,hwc->ic", w.double(), maps)
        want_sums += per[:, : 3 * dim].reshape(5, 3, dim)
        want_weights += per[:, 3 * dim:]
    assert weights.sum() > 0.5
    torch.testing.assert_close(sums.double(), want_sums, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights.double(), want_weights, rtol=1e-5, atol=1e-6)


def test_a_gaussian_inside_one_segment_gets_its_feature():
    """One Gaussian in front of two cameras; at level s one segment covers every pixel, at level l another one does,
    at level m no pixel has a segment: it gets exactly those features, with agreement 1, and nothing at level m."""
    gaussians = _gaussians(1)
    table = F.normalize(torch.randn(2, 8, generator=torch.Generator().manual_seed(2)), dim=-1)
    seg = torch.stack([torch.zeros(SIZE, SIZE), torch.full((SIZE, SIZE), -1.0), torch.ones(SIZE, SIZE)]).int()
    views = [TrainView(_camera(i), seg, table) for i in range(2)]
    features, agreement = lifted_levels(*weighted_sums(gaussians, views, progress=False))
    torch.testing.assert_close(features[0, 0], table[0])
    torch.testing.assert_close(features[0, 2], table[1])
    assert torch.all(features[0, 1] == 0) and agreement[0, 1] == 0
    torch.testing.assert_close(agreement[0, [0, 2]], torch.ones(2))


def test_the_consistent_level_is_the_one_whose_features_agree():
    """Level s: the same segment in both views; level m: two different segments (disagreeing); level l: the same
    again but the views are weighted alike. Sub-part and whole agree perfectly; the finest wins the tie."""
    gaussians = _gaussians(1)
    table = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    views = []
    for i in range(2):
        seg = torch.stack([torch.zeros(SIZE, SIZE), torch.full((SIZE, SIZE), 1.0 + i), torch.zeros(SIZE, SIZE)])
        views.append(TrainView(_camera(i), seg.int(), table))
    _, agreement = lifted_levels(*weighted_sums(gaussians, views, progress=False))
    assert agreement[0, 1] < 0.99 and agreement[0, 0] == pytest.approx(1.0) == agreement[0, 2]
    assert consistent_level(agreement).tolist() == [0]
    assert consistent_level(torch.tensor([[0.2, 0.9, 0.5]])).tolist() == [1]


def test_lift_through_the_stages(demo_run, encoder_dir, tmp_path):
    """``gags distill --method lift`` and ``lift-consistent`` write fields of the registry that eval and query read."""
    out = shutil.copytree(demo_run[0], tmp_path / "demo")
    ws = Workspace(out)
    for method, levels in (("lift", 3), ("lift-consistent", 1)):
        record = distill(DistillConfig(out=out, method=method))
        field = LanguageField.load(ws.field_file(method))
        assert field.levels == levels and field.features.dtype == torch.float16
        assert record["seen_gaussians"] <= record["num_gaussians"] == len(field.features)
        decoded = field.decode_features(field.features[:10])
        assert decoded.shape == (10, levels, field.clip_dim)
    from gags.query.answer import run as query
    from gags.query.evaluate import run as evaluate

    results = evaluate(EvalConfig(out=out, method="all", split="test", figures=False))
    assert {"lift", "lift-consistent"} <= set(results) and results["lift"]["test"]["n_queries"] > 0
    answer = query(QueryConfig(out=out, text="bowl", method="lift", ply=True))
    assert answer["views"] and answer["3d"]["num_gaussians"] == len(LanguageField.load(ws.field_file("lift")).features)
