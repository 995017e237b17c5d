"""Ground truth for the training tests of ``gags reconstruct``: a few random coloured Gaussians and the views the
rasterizer renders of them. ``from tests.splat.rendered_truth import ...``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gags.cameras import Camera
from gags.splat import rasterize
from gags.splat.gaussians import activated, make_splats, rgb_to_sh
from gags.splat.reconstruct import Views


def random_gaussians(n: int, generator: torch.Generator, min_scale: float) -> torch.nn.ParameterDict:
    """n opaque-ish (opacity logit 2) Gaussians of random colour near the origin (means ~ N(0, 0.4^2)), standard
    deviations uniform in [min_scale, min_scale + 0.15], SH degree 3 with zero higher bands; drawn from ``generator``."""
    g = generator
    return make_splats(means=torch.randn(n, 3, generator=g) * 0.4, quats=torch.randn(n, 4, generator=g),
                       scales=torch.log(torch.rand(n, 3, generator=g) * 0.15 + min_scale),
                       opacities=torch.full((n,), 2.0), sh0=rgb_to_sh(torch.rand(n, 1, 3, generator=g)),
                       shN=torch.zeros(n, 15, 3))


@torch.no_grad()
def render_views(splats: torch.nn.ParameterDict, cams: Sequence[Camera]) -> Views:
    """The views ``cams`` see of ``splats`` (their colour only: SH degree 0), as uint8 images."""
    images = []
    for c in cams:
        img, _, _ = rasterize(**activated(splats), viewmat=c.world_to_cam, K=c.K, width=c.width, height=c.height,
                              sh_degree=0)
        images.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    return Views(list(cams), images)
