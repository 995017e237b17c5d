"""Gaussian splatting: the differentiable rasterizer (``rasterize``), Gaussians and RGB reconstruction."""

from gags.splat.rasterize import rasterize

__all__ = ["rasterize"]
