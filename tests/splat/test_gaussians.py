import math

import pytest
import torch

from gags.cameras import Camera, intrinsics, look_at
from gags.errors import GagsError
from gags.splat.gaussians import (
    SH_C0,
    FrozenGaussians,
    activated,
    frustum_bounds,
    in_any_frustum,
    init_splats,
    knn_rms_distance,
    random_points_in_frustums,
    rgb_to_sh,
    sh_to_rgb,
    splats_from_ply,
)


def test_knn_on_a_grid():
    # A 5x5x5 grid with spacing 0.5: interior points have 6 neighbours at 0.5, so the 3 nearest are all at 0.5;
    # a corner has exactly 3 neighbours at 0.5 as well.
    ax = torch.arange(5) * 0.5
    grid = torch.cartesian_prod(ax, ax, ax)
    d = knn_rms_distance(grid)
    assert torch.allclose(d, torch.full_like(d, 0.5), atol=1e-6)


def test_knn_known_layout_and_chunking():
    # Points on a line at 0, 1, 3, 7: neighbours of 0 -> 1, 3, 7: rms = sqrt((1 + 9 + 49) / 3)
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [7, 0, 0]])
    expected = torch.tensor([
        math.sqrt((1 + 9 + 49) / 3),
        math.sqrt((1 + 4 + 36) / 3),
        math.sqrt((4 + 9 + 16) / 3),
        math.sqrt((16 + 36 + 49) / 3),
    ])
    assert torch.allclose(knn_rms_distance(pts), expected, atol=1e-5)
    # tiny chunks (one row at a time) give the same answer
    assert torch.allclose(knn_rms_distance(pts, chunk_elements=1), expected, atol=1e-5)
    # random cloud: chunked equals one block
    cloud = torch.randn(500, 3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(knn_rms_distance(cloud, chunk_elements=1000), knn_rms_distance(cloud), atol=1e-6)


def test_knn_duplicates_and_single_point():
    pts = torch.tensor([[0.0, 0, 0], [0.0, 0, 0], [0.0, 0, 0], [0.0, 0, 0]])
    d = knn_rms_distance(pts)
    assert (d > 0).all() and torch.isfinite(d.log()).all()
    assert knn_rms_distance(torch.zeros(1, 3)).shape == (1,)


def test_init_splats_values():
    ax = torch.arange(4) * 0.25
    pts = torch.cartesian_prod(ax, ax, ax)
    cols = torch.rand(pts.shape[0], 3, generator=torch.Generator().manual_seed(1))
    s = init_splats(pts, cols, sh_degree=3, generator=torch.Generator().manual_seed(0))
    n = pts.shape[0]
    assert s["means"].shape == (n, 3) and s["quats"].shape == (n, 4) and s["scales"].shape == (n, 3)
    assert s["opacities"].shape == (n,) and s["sh0"].shape == (n, 1, 3) and s["shN"].shape == (n, 15, 3)
    assert torch.allclose(s["scales"].exp(), torch.full((n, 3), 0.25), atol=1e-5)
    assert torch.allclose(torch.sigmoid(s["opacities"]), torch.full((n,), 0.1), atol=1e-6)
    assert torch.allclose(s["quats"].norm(dim=1), torch.ones(n), atol=1e-6)
    assert torch.allclose(sh_to_rgb(s["sh0"][:, 0]), cols, atol=1e-6)
    assert (s["shN"] == 0).all()
    act = activated(s)
    assert act["colors"].shape == (n, 16, 3)
    assert all(p.requires_grad for p in s.values())


def test_rgb_sh_roundtrip():
    assert rgb_to_sh(torch.tensor(0.5)).item() == 0.0
    assert sh_to_rgb(torch.tensor(1.0)).item() == pytest.approx(0.5 + SH_C0)


def test_init_rejects_empty():
    with pytest.raises(GagsError):
        init_splats(torch.zeros(0, 3), torch.zeros(0, 3), sh_degree=3)


def _ring_cameras(n=6):
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = torch.tensor([3 * math.cos(a), 3 * math.sin(a), 0.5])
        cams.append(Camera(f"c{i}", intrinsics(40, 40, 32, 24), look_at(eye, torch.zeros(3)), 64, 48))
    return cams


def test_random_points_in_frustums():
    cams = _ring_cameras()
    near, far = 0.1, 5.0
    lo, hi = frustum_bounds(cams, near, far)
    pts = random_points_in_frustums(cams, 2000, near, far, generator=torch.Generator().manual_seed(0))
    assert pts.shape == (2000, 3)
    assert in_any_frustum(pts, cams, near, far).all()
    assert (pts >= lo - 1e-5).all() and (pts <= hi + 1e-5).all()
    # every camera sees some of them
    for cam in cams:
        uv, z = cam.project(pts)
        vis = (z > near) & (uv[:, 0] >= 0) & (uv[:, 0] < 64) & (uv[:, 1] >= 0) & (uv[:, 1] < 48)
        assert vis.sum() > 50
    # the scene centre, seen by all cameras, is inside; a point far behind every camera is not
    assert in_any_frustum(torch.tensor([[0.0, 0, 0], [0, 0, 40]]), cams, near, far).tolist() == [True, False]


def test_splats_from_ply_pads_sh():
    n = 5
    data = {"means": torch.randn(n, 3), "quats": torch.randn(n, 4), "scales": torch.randn(n, 3),
            "opacities": torch.randn(n), "sh0": torch.randn(n, 1, 3), "shN": torch.randn(n, 3, 3)}
    s = splats_from_ply(data, sh_degree=3)
    assert s["shN"].shape == (n, 15, 3)
    assert torch.equal(s["shN"][:, :3], data["shN"]) and (s["shN"][:, 3:] == 0).all()
    s0 = splats_from_ply(data, sh_degree=0)
    assert s0["shN"].shape == (n, 0, 3)


def test_frozen_gaussians_are_the_activated_ply(tmp_path):
    from gags.data import write_ply

    splats = init_splats(torch.rand(5, 3), torch.rand(5, 3), sh_degree=0, generator=torch.Generator().manual_seed(0))
    raw = {k: v.detach() for k, v in splats.items()}
    write_ply(tmp_path / "g.ply", raw)
    frozen = FrozenGaussians.from_ply(tmp_path / "g.ply")
    assert len(frozen) == 5
    torch.testing.assert_close(frozen.scales, raw["scales"].exp())
    torch.testing.assert_close(frozen.opacities, torch.sigmoid(raw["opacities"]))
    torch.testing.assert_close(frozen.means, raw["means"])
    torch.testing.assert_close(frozen.quats, raw["quats"])
