import pytest
import torch

from gags.cameras import Camera, intrinsics, look_at
from gags.errors import GagsError
from gags.segment.mindepth import (
    min_depth_sample_map,
    min_depth_samples,
    project_to_pixels,
    visibility_min_depth,
)

W, H = 64, 48
K = intrinsics(50.0, 50.0, 32.0, 24.0)


def camera(name, eye, target):
    return Camera(name, K, look_at(torch.tensor(eye), torch.tensor(target)), W, H)


# view 0 looks along +y from y = -5; view 1 looks along -x from x = 5, at the line y = -1
FRONT = camera("front", [0.0, -5.0, 0.0], [0.0, 0.0, 0.0])
SIDE = camera("side", [5.0, -1.0, 0.0], [0.0, -1.0, 0.0])

MEANS = torch.tensor([
    [0.0, -3.0, 0.0],   # 0: depth 2 in front, on the optical axis
    [0.0, -1.0, 0.0],   # 1: depth 4 in front, behind the surface at depth 2 (occluded); depth 5 from the side
    [0.0, -2.5, 0.0],   # 2: depth 2.5 in front: |2 - 2.5| = 0.5 = 0.25 * 2, visible (the test is inclusive)
    [0.0, -2.4, 0.0],   # 3: depth 2.6 in front: 0.6 > 0.5, hidden
    [0.0, -7.0, 0.0],   # 4: behind the front camera; outside the side view
    [30.0, -3.0, 0.0],  # 5: far outside the front image
])


def depth_maps():
    front = torch.full((H, W), 2.0)  # an occluding wall at depth 2
    side = torch.full((H, W), 5.0)
    side[24, 32] = 4.5  # where Gaussian 1 projects in the side view: |4.5 - 5| <= 1.125, visible at D = 4.5
    return [front, side]


def test_project_to_pixels_floors_continuous_coordinates():
    pix, z, inside = project_to_pixels(MEANS[:1], FRONT)
    assert inside.tolist() == [True]
    assert pix.tolist() == [[32, 24]]  # principal point (32, 24) lies on pixel (32, 24)'s corner -> that pixel
    assert z.tolist() == pytest.approx([2.0])


def test_visibility_with_a_known_occluder():
    min_depth, visible, pixels = visibility_min_depth(MEANS, [FRONT, SIDE], depth_maps())
    assert visible[0].tolist() == [True, False, True, False, False, False]
    # from the side every centre on the x = 0 plane has depth 5; rendered 5 except at Gaussian 1's pixel
    assert visible[1, :4].tolist() == [True, True, True, True]
    assert visible[1, 4:].tolist() == [False, False]
    # minimum of the RENDERED depth at the Gaussian's pixel over the views where it is visible
    assert min_depth[0].item() == pytest.approx(2.0)
    assert min_depth[1].item() == pytest.approx(4.5)  # not its z (5): the rendered depth at its pixel
    assert min_depth[2].item() == pytest.approx(2.0)
    assert min_depth[3].item() == pytest.approx(5.0)  # hidden in front, seen from the side
    assert torch.isinf(min_depth[4:]).all()
    assert pixels[0, 0].tolist() == [32, 24]
    assert pixels[0, 1].tolist() == [-1, -1]
    assert pixels[1, 1].tolist() == [32, 24]


def test_chunking_does_not_change_the_result():
    torch.manual_seed(0)
    means = torch.randn(500, 3) * 2 + torch.tensor([0.0, 1.0, 0.0])
    depths = [torch.rand(H, W) * 6 + 1, torch.rand(H, W) * 6 + 1]
    full = visibility_min_depth(means, [FRONT, SIDE], depths, rel_tol=0.5)
    chunked = visibility_min_depth(means, [FRONT, SIDE], depths, rel_tol=0.5, chunk=7)
    for a, b in zip(full, chunked):
        assert torch.equal(a, b)
    assert full[1].any()  # the random set is not trivially invisible


def test_sample_map_last_gaussian_wins_and_counts():
    min_depth = torch.tensor([3.0, 7.0, 2.0, 9.0])
    visible = torch.tensor([True, True, True, False])
    pixels = torch.tensor([[1, 2], [4, 0], [1, 2], [0, 0]], dtype=torch.int32)
    samples, counts = min_depth_sample_map(min_depth, visible, pixels, height=3, width=5)
    expected = torch.zeros(3, 5)
    expected[2, 1] = 2.0  # Gaussians 0 and 2 land on (x=1, y=2): the larger index wins
    expected[0, 4] = 7.0
    assert torch.equal(samples, expected)
    assert counts[2, 1].item() == 2 and counts[0, 4].item() == 1 and counts.sum().item() == 3


def test_sample_maps_of_all_views():
    min_depth, visible, pixels = visibility_min_depth(MEANS, [FRONT, SIDE], depth_maps())
    samples, counts = min_depth_samples(min_depth, visible, pixels, H, W)
    assert samples.shape == (2, H, W) and counts.shape == (2, H, W)
    assert samples[0, 24, 32].item() == pytest.approx(2.0)  # Gaussians 0 and 2 share the principal pixel
    assert counts[0, 24, 32].item() == 2
    assert counts[0].sum().item() == 2 and counts[1].sum().item() == 4
    assert samples[0].count_nonzero().item() == 1


def test_errors_name_the_problem():
    with pytest.raises(GagsError, match="one rendered depth map per camera"):
        visibility_min_depth(MEANS, [FRONT, SIDE], depth_maps()[:1])
    with pytest.raises(GagsError, match="render depth at the camera's size"):
        visibility_min_depth(MEANS, [FRONT], [torch.ones(H + 1, W)])
    with pytest.raises(GagsError, match="outside"):
        min_depth_sample_map(torch.ones(1), torch.ones(1, dtype=torch.bool), torch.tensor([[9, 0]]), 3, 5)
