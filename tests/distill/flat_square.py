"""The scene of the distillation tests: a flat square [-1, 1]^2 on z = 0 covered by a grid of small opaque Gaussians,
seen from above by a ring of cameras, and its nested segments per level (sub-part 4x4 cells, part 2x2 quadrants,
whole two halves). ``from tests.distill.flat_square import ...``."""

from __future__ import annotations

import math

import torch

from gags.cameras import Camera, intrinsics, look_at
from gags.splat.gaussians import FrozenGaussians


def square_gaussians(grid: int) -> tuple[FrozenGaussians, torch.Tensor]:
    """grid x grid flat opaque Gaussians (opacity 0.95) covering the square; also their centres' (x, y) [N, 2]."""
    step = 2.0 / grid
    c = torch.linspace(-1 + step / 2, 1 - step / 2, grid)
    y, x = torch.meshgrid(c, c, indexing="ij")
    xy = torch.stack([x.reshape(-1), y.reshape(-1)], 1)
    n = xy.shape[0]
    means = torch.cat([xy, torch.zeros(n, 1)], 1)
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1)
    scales = torch.tensor([0.6 * step, 0.6 * step, 0.01 * step]).repeat(n, 1)
    opacities = torch.full((n,), 0.95)
    return FrozenGaussians(means, quats, scales, opacities), xy


def ring_cameras(n: int, size: int, name: str = "view_{i:02d}.png") -> list[Camera]:
    """n size x size cameras on a ring above the square, all looking at its centre, the square filling most of the
    image; camera i is called ``name.format(i=i)``."""
    K = intrinsics(size * 1.1, size * 1.1, size / 2, size / 2)
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n
        eye = torch.tensor([0.6 * math.cos(a), 0.6 * math.sin(a), 2.4])
        cams.append(Camera(name.format(i=i), K, look_at(eye, torch.zeros(3), torch.tensor([0.0, 1.0, 0.0])),
                           size, size))
    return cams


def pixel_points(cam: Camera, scale: int = 1) -> torch.Tensor:
    """Where the ray of each pixel centre meets z = 0, at ``scale`` x the camera's size: [H * scale, W * scale, 2]."""
    v, u = torch.meshgrid((torch.arange(cam.height * scale) + 0.5) / scale,
                          (torch.arange(cam.width * scale) + 0.5) / scale, indexing="ij")
    rays = torch.stack([u, v, torch.ones_like(u)], -1) @ torch.linalg.inv(cam.K).T  # camera frame
    c2w = cam.cam_to_world
    dirs = rays @ c2w[:3, :3].T
    eye = c2w[:3, 3]
    t = -eye[2] / dirs[..., 2]
    return (eye + t[..., None] * dirs)[..., :2]


def segment_ids(xy: torch.Tensor) -> torch.Tensor:
    """Segment index of points (x, y) [..., 2] per level -> [3, ...] (s: 0..15, m: 0..3, l: 0..1; -1 outside)."""
    inside = (xy.abs() <= 1.0).all(-1)
    u = ((xy + 1.0) / 2.0).clamp(0.0, 1.0 - 1e-6)  # [0, 1)
    s = (u[..., 1] * 4).long() * 4 + (u[..., 0] * 4).long()
    m = (u[..., 1] * 2).long() * 2 + (u[..., 0] * 2).long()
    whole = (u[..., 0] * 2).long()
    ids = torch.stack([s, m, whole])
    return torch.where(inside, ids, torch.full_like(ids, -1))
