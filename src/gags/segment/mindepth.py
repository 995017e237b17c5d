"""Step 2 of granularity-aware segmentation: which view sees each Gaussian centre, and from how near.

Every Gaussian centre is projected into every view. It is *visible* in a view when it lands inside the image, in front
of the camera, and its depth ``z`` agrees with the rendered (expected) depth ``D`` at its pixel:
``|D - z| <= rel_tol * D``. Each Gaussian keeps the smallest rendered depth ``D`` over the views where it is visible
(the rendered depth at its pixel, not its own ``z``, as the official release does). A view's *min-depth sample map*
holds, at the pixel of each Gaussian visible there, that Gaussian's minimum depth over all views; 0 elsewhere.

Conventions (and where they differ from the official release, ``depth_SAM.py``):
- Pixel (row i, column j) covers ``[j, j+1) x [i, i+1)`` (``gags.cameras``), so a centre projected to ``(u, v)`` lands
  in pixel ``(floor(v), floor(u))``. The release rounds ``u, v`` computed with the principal point at ``W/2``, which is
  the same rule shifted by half a pixel.
- When several visible Gaussians land on one pixel, the release writes them with one indexed assignment, whose order
  PyTorch leaves unspecified (in practice the last in Gaussian order wins). Here the Gaussian with the largest index
  wins, always, so the result is deterministic; ``counts`` says how many landed there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gags.cameras import Camera
from gags.errors import GagsError

VISIBILITY_REL_TOL = 0.25
"""Visibility test ``|D - z| <= 0.25 D`` (release depth_SAM.py: ``PointCloudToImageMapper(visibility_threshold)``)."""

CHUNK = 1 << 20
"""Gaussians projected at a time: bounds the temporaries to a few tens of MB per chunk."""


def project_to_pixels(means: torch.Tensor, camera: Camera) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel of every Gaussian centre in one view.

    Args:
        means: [N, 3] world coordinates.
        camera: the view.
    Returns:
        pixels: [N, 2] int64 pixel (x = column, y = row) containing the projected centre (meaningful where ``inside``).
        z: [N] depth along the optical axis.
        inside: [N] bool, in front of the camera (z > 0) and inside the image.
    """
    uv, z = camera.project(means)
    pix = torch.floor(uv)
    inside = (z > 0) & (pix[:, 0] >= 0) & (pix[:, 0] < camera.width) & (pix[:, 1] >= 0) & (pix[:, 1] < camera.height)
    inside &= torch.isfinite(uv).all(dim=1)
    pixels = torch.where(inside[:, None], pix, torch.zeros_like(pix)).long()
    return pixels, z, inside


def visibility_min_depth(
    means: torch.Tensor,
    cameras: Sequence[Camera],
    depths: Sequence[torch.Tensor],
    rel_tol: float = VISIBILITY_REL_TOL,
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Visibility of every Gaussian centre in every view, and each Gaussian's minimum rendered depth.

    Args:
        means: [N, 3] Gaussian centres, world coordinates.
        cameras: V views.
        depths: V rendered expected-depth maps, [H_v, W_v] each, the size of their camera.
        rel_tol: visible when ``|D(pixel) - z| <= rel_tol * D(pixel)``.
        chunk: Gaussians processed at a time (memory bound only; the result does not depend on it).
    Returns:
        min_depth: [N] float32, minimum over visible views of the rendered depth at the Gaussian's pixel; ``inf`` where
            the Gaussian is visible in no view.
        visible: [V, N] bool.
        pixels: [V, N, 2] int32 pixel (x, y) of the Gaussian in each view where it is visible, -1 elsewhere (int32
            rather than int64: at 300 views x 1M Gaussians this array alone is 2.4 GB).
    """
    if len(cameras) != len(depths):
        raise GagsError(f"visibility_min_depth got {len(cameras)} cameras but {len(depths)} depth maps; pass one "
                        "rendered depth map per camera.")
    if means.ndim != 2 or means.shape[1] != 3:
        raise GagsError(f"Gaussian centres must be [N, 3]; got {list(means.shape)}.")
    device = means.device
    n, v = means.shape[0], len(cameras)
    min_depth = torch.full((n,), float("inf"), dtype=torch.float32, device=device)
    visible = torch.zeros((v, n), dtype=torch.bool, device=device)
    pixels = torch.full((v, n, 2), -1, dtype=torch.int32, device=device)
    for view, (camera, depth) in enumerate(zip(cameras, depths, strict=True)):
        if tuple(depth.shape) != (camera.height, camera.width):
            raise GagsError(f"rendered depth of view {camera.name!r} is {list(depth.shape)}, but its camera is "
                            f"{camera.height}x{camera.width} (H x W); render depth at the camera's size.")
        flat_depth = depth.to(device=device, dtype=torch.float32).reshape(-1)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            pix, z, inside = project_to_pixels(means[start:stop], camera)
            d = flat_depth[pix[:, 1] * camera.width + pix[:, 0]]  # garbage where not inside, masked below
            vis = inside & ((d - z).abs() <= rel_tol * d)
            visible[view, start:stop] = vis
            pixels[view, start:stop] = torch.where(vis[:, None], pix, torch.full_like(pix, -1)).int()
            min_depth[start:stop] = torch.minimum(min_depth[start:stop], torch.where(vis, d, torch.inf))
    return min_depth, visible, pixels


def min_depth_sample_map(
    min_depth: torch.Tensor, visible: torch.Tensor, pixels: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One view's min-depth sample map.

    Args:
        min_depth: [N] per-Gaussian minimum depth (``visibility_min_depth``).
        visible: [N] bool, visibility in this view.
        pixels: [N, 2] pixel (x, y) in this view (read where ``visible``).
        height, width: the view's size.
    Returns:
        samples: [H, W] float32, the minimum depth of the Gaussian written at each pixel (the largest-index Gaussian
            when several land there), 0 where none lands.
        counts: [H, W] int32, how many visible Gaussians land at each pixel.
    """
    device = min_depth.device
    ids = torch.nonzero(visible.to(device), as_tuple=True)[0]
    pix = pixels.to(device)[ids].long()
    if len(pix) and (pix.min() < 0 or pix[:, 0].max() >= width or pix[:, 1].max() >= height):
        raise GagsError(f"a visible Gaussian's pixel lies outside the {width}x{height} sample map; pass the size of "
                        "the view the pixels were computed for.")
    flat = pix[:, 1] * width + pix[:, 0]
    winner = torch.full((height * width,), -1, dtype=torch.long, device=device)
    winner.scatter_reduce_(0, flat, ids, reduce="amax", include_self=True)
    samples = torch.zeros(height * width, dtype=torch.float32, device=device)
    hit = winner >= 0
    samples[hit] = min_depth[winner[hit]].float()
    counts = torch.bincount(flat, minlength=height * width).int()
    return samples.reshape(height, width), counts.reshape(height, width)


def min_depth_samples(
    min_depth: torch.Tensor, visible: torch.Tensor, pixels: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-depth sample maps of all views of one size (``min_depth_sample_map`` per view).

    Args:
        min_depth: [N]; visible: [V, N] bool; pixels: [V, N, 2]; height, width: the size every view shares.
    Returns:
        samples: [V, H, W] float32 (0 where no Gaussian lands); counts: [V, H, W] int32.
    """
    maps = [min_depth_sample_map(min_depth, visible[k], pixels[k], height, width) for k in range(visible.shape[0])]
    if not maps:
        empty = torch.zeros((0, height, width))
        return empty, empty.int()
    return torch.stack([m[0] for m in maps]), torch.stack([m[1] for m in maps])
