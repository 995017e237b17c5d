import numpy as np
import pytest
import torch

from gags.errors import GagsError
from gags.segment.prompts import (
    depth_prompts,
    grid_bounds,
    patch_ratios,
    points_per_side,
    prompt_points,
    uniform_prompts,
)


def test_grid_bounds_tile_the_axis():
    assert grid_bounds(10, 8).tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 10]
    assert grid_bounds(256, 8).tolist() == list(range(0, 257, 32))
    b = grid_bounds(93, 10)
    assert b[0] == 0 and b[-1] == 93 and ((b[1:] - b[:-1]) >= 9).all() and ((b[1:] - b[:-1]) <= 10).all()


def maps_with_ratios(ratios):
    """64x64 image, constant depth 12; patch (i, j) (8x8 px) holds samples at depth 12 / ratios[i][j] (None: none)."""
    depth = torch.full((64, 64), 12.0)
    samples = torch.zeros(64, 64)
    for i, row in enumerate(ratios):
        for j, r in enumerate(row):
            if r is not None:
                samples[8 * i + 1, 8 * j + 2] = 12.0 / r
                samples[8 * i + 5, 8 * j + 6] = 12.0 / r
    return depth, samples


def test_points_per_side_for_known_ratios():
    ratios = [[None] * 8 for _ in range(8)]
    ratios[0][:6] = [1.0, 1.5, 3.0, 0.5, 10.0, 1.6]
    depth, samples = maps_with_ratios(ratios)
    r = patch_ratios(depth, samples)
    assert r[0, :6].tolist() == pytest.approx([1.0, 1.5, 3.0, 0.5, 10.0, 1.6])
    assert torch.isnan(r[0, 6:]).all() and torch.isnan(r[1:]).all()
    n = points_per_side(r, "gags")
    assert n[0, :6].tolist() == [4, 6, 12, 1, 20, 6]  # clip(int(4 r), 1, 20); 1 where r < 1
    assert (n[0, 6:] == 1).all() and (n[1:] == 1).all()  # undefined ratio -> 1
    paper = points_per_side(r, "paper")
    assert paper[0, :6].tolist() == [4, 2, 1, 1, 1, 2]  # clip(int(4 / r), 1, 20); 1 where r < 1
    pts = depth_prompts(depth, samples, "gags")
    assert len(pts) == int((n**2).sum())


def test_points_land_only_in_the_sub_patch_with_samples():
    depth = torch.full((80, 80), 20.0)
    samples = torch.zeros(80, 80)
    samples[3, 5] = 1.0  # patch (0, 0) is 10x10 px: sub-patches are single pixels; only (5, 3) has a sample
    pts = depth_prompts(depth, samples, "gags", seed=3)
    first = pts[:400]  # r = 20 -> n = clip(80, 1, 20) = 20 -> 400 points, drawn first (row-major patches)
    assert torch.equal(first, torch.tensor([[5.5, 3.5]]).expand(400, 2))
    assert len(pts) == 400 + 63  # every other patch has no sample: one point each


def test_sub_patch_draw_is_proportional_to_sample_counts():
    depth = torch.full((160, 160), 20.0)
    samples = torch.zeros(160, 160)
    samples[0, 0] = 1.0  # sub-patch (0, 0) of patch (0, 0): 1 sample pixel
    samples[2:4, 18:20] = 1.0  # sub-patch (row 1, col 9) (2x2 px each): 3 sample pixels ...
    samples[3, 18] = 0.0
    pts = depth_prompts(depth, samples, "gags", seed=0)[:400]
    in_second = ((pts[:, 0] >= 18) & (pts[:, 1] >= 2)).float().mean().item()
    assert in_second == pytest.approx(0.75, abs=0.1)
    # the pixel inside a chosen sub-patch is uniform, not only sample pixels: (18, 3) has no sample but is drawn
    assert ((pts[:, 0] == 18.5) & (pts[:, 1] == 3.5)).any()


def test_uniform_fallback_when_a_patch_has_no_samples():
    depth = torch.full((160, 160), 5.0)
    samples = torch.zeros(160, 160)
    pts = depth_prompts(depth, samples, "gags", seed=1)
    assert len(pts) == 64  # undefined ratio: one point per patch
    patch = (pts[:, 1] // 20) * 8 + pts[:, 0] // 20
    assert torch.equal(patch, torch.arange(64.0))  # one in each patch, row-major


def test_seeded_and_deterministic():
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(60, 90, generator=g) * 4 + 1
    samples = torch.where(torch.rand(60, 90, generator=g) < 0.2, torch.rand(60, 90, generator=g) + 0.5, 0.0)
    a = depth_prompts(depth, samples, "gags", seed=42)
    b = depth_prompts(depth, samples, "gags", seed=42)
    c = depth_prompts(depth, samples, "gags", seed=43)
    d = depth_prompts(depth, samples, "gags", generator=torch.Generator().manual_seed(42))
    assert torch.equal(a, b) and torch.equal(a, d)
    assert not torch.equal(a, c)


def test_sizes_not_divisible_by_the_grids():
    g = torch.Generator().manual_seed(5)
    h, w = 67, 93
    depth = torch.rand(h, w, generator=g) * 3 + 3
    samples = torch.where(torch.rand(h, w, generator=g) < 0.3, torch.full((h, w), 1.0), 0.0)
    pts = depth_prompts(depth, samples, "gags")
    n = points_per_side(patch_ratios(depth, samples), "gags").reshape(-1)
    assert len(pts) == int((n**2).sum())
    x, y = pts[:, 0] - 0.5, pts[:, 1] - 0.5
    assert (x >= 0).all() and (x < w).all() and (y >= 0).all() and (y < h).all()
    assert torch.equal(x, x.round()) and torch.equal(y, y.round())  # pixel centres
    rb, cb = grid_bounds(h, 8), grid_bounds(w, 8)
    patch = torch.repeat_interleave(torch.arange(64), n**2)
    pr, pc = patch // 8, patch % 8
    assert ((y >= rb[pr]) & (y < rb[pr + 1]) & (x >= cb[pc]) & (x < cb[pc + 1])).all()
    assert samples[y.long(), x.long()].sum() > 0.5 * len(pts)  # weighted towards sample pixels


def test_uniform_matches_segment_anything_grid():
    amg = pytest.importorskip("segment_anything.utils.amg")
    pts = uniform_prompts(738, 994)
    sam = amg.build_point_grid(32) * np.array([[994, 738]])  # what SAM's generator prompts (it adds 0.5 itself)
    assert pts.shape == (1024, 2)
    assert np.allclose(pts.numpy(), sam + 0.5, atol=1e-3)
    assert torch.equal(prompt_points("uniform", torch.zeros(738, 994)), pts)


def test_prompt_points_errors():
    with pytest.raises(GagsError, match="min-depth sample map"):
        prompt_points("gags", torch.ones(64, 64))
    with pytest.raises(GagsError, match="unknown prompt mode"):
        prompt_points("dense", torch.ones(64, 64), torch.ones(64, 64))
    with pytest.raises(GagsError, match="smaller than"):
        depth_prompts(torch.ones(4, 64), torch.ones(4, 64))
