"""Steps 3-4 of granularity-aware segmentation: where to prompt the segmenter.

``gags`` (the official release's rule, ``utils/SAM_utils.py: build_mindepth_point_grid``): the image is cut into an
8x8 grid of patches. In each patch ``r = mean(rendered depth) / mean(non-zero min-depth samples)`` says how much
farther this view is from what the patch shows than the nearest view that sees it; the patch gets ``n x n`` points
with ``n = clip(int(4 r), 1, 20)``, and ``n = 1`` when ``r < 1`` or ``r`` is undefined (no samples). A far view, where
a patch covers more surface, gets denser prompts; the nearest view of a surface gets 4 x 4 per patch. Each point
picks one of the patch's 10x10 sub-patches with probability proportional to its number of pixels holding a min-depth
sample (uniform over the sub-patches when the patch has none), then a uniform pixel inside it.

``paper``: the paper's Eq. 1 is written with the inverse ratio ``r' = 1 / r``. The equivalent rule keeps everything
else: ``n = clip(int(4 r'), 1, 20)``, with the same guard (``n = 1`` where ``r < 1``, i.e. ``r' > 1``, or undefined).
Both rules give 4 x 4 points at the nearest view (``r = r' = 1``) and part with distance: ``gags`` grows to 20 x 20,
``paper`` shrinks to 1 (``n = 3`` for ``r`` in (1, 4/3], 2 up to 2, then 1): the far views get the sparsest prompts.

``uniform``: LangSplat's 32x32 grid over the whole image, at segment_anything's ``build_point_grid`` positions.
(LangSplat also runs a second crop layer of 2x2 crops, ``crop_n_layers=1``; that is not a prompt layout, not done here.)

Patches and sub-patches: an axis of length L cut into k parts has boundaries ``floor(i L / k)``, i = 0..k, so the parts
tile the image exactly and differ in length by at most one pixel. (The release starts patches at
``int(linspace(0, L-1, k+1))`` with a fixed length ``int(L / k)``, which overlaps or skips a pixel or a few at the
seams, and samples sub-patch ends inclusively.) A part shorter than k pixels has empty sub-parts; they are never chosen.

Points are continuous pixel coordinates (x, y) in the project's convention (pixel (i, j) covers [j, j+1) x [i, i+1)):
a chosen pixel is returned as its centre (j + 0.5, i + 0.5). segment_anything adds 0.5 to the coordinates it is given,
so an adapter feeding SAM should pass ``xy - 0.5`` to reproduce the releases' prompts exactly. Patches are visited in
row-major order; the draw is seeded (``torch.Generator``) and vectorised over all points.
"""
from __future__ import annotations

from typing import Literal

import torch

from gags.errors import GagsError

PromptMode = Literal["gags", "paper", "uniform"]

PATCH_GRID = 8
"""Patches per side (release, preprocess.py: ``build_all_layer_mindepth_point_grids(n_per_side=8)``)."""
POINTS_PER_RATIO = 4
"""Points per side per unit depth ratio (release: ``nsample_min_distance=4``)."""
MAX_POINTS_PER_SIDE = 20
"""Upper clip of points per side (release, SAM_utils.py: ``max(1, min(sample_num, 20))``)."""
SUB_PATCH_GRID = 10
"""Sub-patches per side inside a patch (release, SAM_utils.py: ``sample_based_mapping(crop_num=10)``)."""
UNIFORM_POINTS_PER_SIDE = 32
"""LangSplat's grid (preprocess.py: ``SamAutomaticMaskGenerator(points_per_side=32)``)."""
SEED = 42
"""The release seeds everything with 42 (preprocess.py: ``seed_everything(42)``)."""


def grid_bounds(length: int, parts: int) -> torch.Tensor:
    """[parts + 1] int64 boundaries ``floor(i * length / parts)``: part i is ``[b[i], b[i+1])``.

    >>> grid_bounds(10, 3)
    tensor([ 0,  3,  6, 10])
    """
    return torch.arange(parts + 1, dtype=torch.int64) * length // parts


def _part_index(coords: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """Index of the (non-empty) part containing each coordinate; bounds: [..., k+1] rows matching coords' rows."""
    return torch.searchsorted(bounds, coords, right=True) - 1


def _check_maps(depth: torch.Tensor, samples: torch.Tensor, grid: int) -> None:
    if depth.ndim != 2 or tuple(samples.shape) != tuple(depth.shape):
        raise GagsError(f"prompt sampling needs a depth map and a min-depth sample map of one size [H, W]; got "
                        f"{list(depth.shape)} and {list(samples.shape)}.")
    if depth.shape[0] < grid or depth.shape[1] < grid:
        raise GagsError(f"image of {depth.shape[1]}x{depth.shape[0]} pixels is smaller than the {grid}x{grid} patch "
                        "grid; use larger images.")


def _patch_ids(height: int, width: int, grid: int) -> torch.Tensor:
    """[H, W] int64 row-major patch id of every pixel."""
    rows = _part_index(torch.arange(height), grid_bounds(height, grid))
    cols = _part_index(torch.arange(width), grid_bounds(width, grid))
    return rows[:, None] * grid + cols[None, :]


def patch_ratios(depth: torch.Tensor, samples: torch.Tensor, grid: int = PATCH_GRID) -> torch.Tensor:
    """Per patch ``r = mean(depth) / mean(non-zero samples)``.

    Args:
        depth: [H, W] rendered expected depth of the view.
        samples: [H, W] its min-depth sample map (0 = no sample).
        grid: patches per side.
    Returns:
        [grid, grid] float64, row-major patches; NaN where a patch holds no sample.
    """
    _check_maps(depth, samples, grid)
    ids = _patch_ids(depth.shape[0], depth.shape[1], grid).reshape(-1)
    d = depth.detach().cpu().double().reshape(-1)
    s = samples.detach().cpu().double().reshape(-1)
    has = (s != 0).double()
    n_cells = grid * grid
    mean_depth = torch.bincount(ids, weights=d, minlength=n_cells) / torch.bincount(ids, minlength=n_cells)
    mean_sample = torch.bincount(ids, weights=s * has, minlength=n_cells) / torch.bincount(ids, weights=has,
                                                                                          minlength=n_cells)
    return (mean_depth / mean_sample).reshape(grid, grid)


def points_per_side(
    ratio: torch.Tensor,
    mode: Literal["gags", "paper"] = "gags",
    points_per_ratio: int = POINTS_PER_RATIO,
    max_per_side: int = MAX_POINTS_PER_SIDE,
) -> torch.Tensor:
    """Points per side of every patch from its depth ratio (``patch_ratios``).

    gags: ``clip(int(4 r), 1, 20)``; paper: ``clip(int(4 / r), 1, 20)``; both 1 where ``r < 1`` or undefined.
    Returns an int64 tensor of ``ratio``'s shape.
    """
    if mode not in ("gags", "paper"):
        raise GagsError(f"unknown prompt mode {mode!r} for depth-driven prompts; use 'gags' or 'paper'.")
    r = ratio.double()
    valid = torch.isfinite(r) & (r >= 1)  # NaN compares False; r = inf cannot happen (samples are > 0)
    r_safe = torch.where(valid, r, torch.ones_like(r))
    scaled = points_per_ratio * (r_safe if mode == "gags" else 1.0 / r_safe)
    n = torch.floor(scaled).clamp(1, max_per_side).long()
    return torch.where(valid, n, torch.ones_like(n))


def uniform_prompts(height: int, width: int, per_side: int = UNIFORM_POINTS_PER_SIDE) -> torch.Tensor:
    """[per_side^2, 2] float32 pixel (x, y): segment_anything's ``build_point_grid`` scaled to the image (x fastest).

    SAM places a point at ``(k + 0.5) / n * W`` and adds 0.5 itself; in the project's convention that is
    ``(k + 0.5) / n * W + 0.5``, which is what is returned.

    >>> uniform_prompts(4, 4, per_side=2)
    tensor([[1.5000, 1.5000],
            [3.5000, 1.5000],
            [1.5000, 3.5000],
            [3.5000, 3.5000]])
    """
    k = torch.arange(per_side, dtype=torch.float64) + 0.5
    xs = k / per_side * width + 0.5
    ys = k / per_side * height + 0.5
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1).float()


def depth_prompts(
    depth: torch.Tensor,
    samples: torch.Tensor,
    mode: Literal["gags", "paper"] = "gags",
    *,
    seed: int = SEED,
    generator: torch.Generator | None = None,
    grid: int = PATCH_GRID,
    sub_grid: int = SUB_PATCH_GRID,
    points_per_ratio: int = POINTS_PER_RATIO,
    max_per_side: int = MAX_POINTS_PER_SIDE,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Depth-driven prompt points of one view (``gags`` or ``paper`` rule, see the module docstring).

    Args:
        depth: [H, W] rendered expected depth.
        samples: [H, W] min-depth sample map (0 = no sample).
        mode: ``gags`` (release) or ``paper`` (Eq. 1's inverse ratio).
        seed: seeds a new CPU generator when ``generator`` is None.
        generator: a ``torch.Generator`` (CPU) to draw from instead.
        grid, sub_grid, points_per_ratio, max_per_side: the rule's constants.
        sample_weights: [H, W] optional per-pixel weights of the sub-patch draw (e.g. the number of Gaussians per pixel,
            ``min_depth_sample_map``'s counts); default: 1 where a sample is, as the release does.
    Returns:
        [P, 2] float32 pixel (x, y), P = sum over patches of n^2; patches in row-major order.
    """
    _check_maps(depth, samples, grid)
    height, width = depth.shape
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    n = points_per_side(patch_ratios(depth, samples, grid), mode, points_per_ratio, max_per_side).reshape(-1)

    # absolute sub-patch boundaries: [grid, sub_grid + 1] per patch row / column
    rb, cb = grid_bounds(height, grid), grid_bounds(width, grid)
    row_len, col_len = rb[1:] - rb[:-1], cb[1:] - cb[:-1]
    sub = torch.arange(sub_grid + 1, dtype=torch.int64)
    row_sub = rb[:-1, None] + sub[None, :] * row_len[:, None] // sub_grid
    col_sub = cb[:-1, None] + sub[None, :] * col_len[:, None] // sub_grid

    # every pixel's (patch, sub-patch) cell, and the draw weight of every cell
    ys, xs = torch.arange(height), torch.arange(width)
    prow, pcol = _part_index(ys, rb), _part_index(xs, cb)
    srow = _part_index(ys[:, None], row_sub[prow])[:, 0]
    scol = _part_index(xs[:, None], col_sub[pcol])[:, 0]
    cell = ((prow[:, None] * grid + pcol[None, :]) * sub_grid + srow[:, None]) * sub_grid + scol[None, :]
    if sample_weights is None:
        weight = (samples.detach().cpu() != 0).double()
    else:
        weight = sample_weights.detach().cpu().double()
    if tuple(weight.shape) != (height, width) or not torch.isfinite(weight).all() or (weight < 0).any():
        raise GagsError("sample_weights must be a finite, non-negative [H, W] map of the view's size.")
    n_cells = grid * grid * sub_grid * sub_grid
    weights = torch.bincount(cell.reshape(-1), weights=weight.reshape(-1), minlength=n_cells)
    weights = weights.reshape(grid * grid, sub_grid * sub_grid)
    row_h, col_w = row_sub[:, 1:] - row_sub[:, :-1], col_sub[:, 1:] - col_sub[:, :-1]
    sizes = row_h[:, None, :, None] * col_w[None, :, None, :]
    sizes = sizes.reshape(grid * grid, sub_grid * sub_grid).double()
    empty = weights.sum(dim=1) == 0
    weights[empty] = (sizes[empty] > 0).double()  # uniform over the non-empty sub-patches

    # draw: per point a patch (fixed by n), a sub-patch (inverse CDF), then a pixel
    patch = torch.repeat_interleave(torch.arange(grid * grid), n * n)
    cdf = weights.cumsum(dim=1)[patch]  # [P, sub_grid^2]
    u = torch.rand(len(patch), generator=gen, dtype=torch.float64)
    k = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0].clamp(max=sub_grid * sub_grid - 1)
    pr, pc = patch // grid, patch % grid
    sr, sc = k // sub_grid, k % sub_grid
    y0, y1 = row_sub[pr, sr], row_sub[pr, sr + 1]
    x0, x1 = col_sub[pc, sc], col_sub[pc, sc + 1]
    ux = torch.rand(len(patch), generator=gen, dtype=torch.float64)
    uy = torch.rand(len(patch), generator=gen, dtype=torch.float64)
    x = torch.minimum(x0 + torch.floor(ux * (x1 - x0)).long(), x1 - 1)
    y = torch.minimum(y0 + torch.floor(uy * (y1 - y0)).long(), y1 - 1)
    return torch.stack([x, y], dim=1).float() + 0.5


def prompt_points(
    mode: PromptMode,
    depth: torch.Tensor,
    samples: torch.Tensor | None = None,
    *,
    seed: int = SEED,
    uniform_per_side: int = UNIFORM_POINTS_PER_SIDE,
    **kwargs,
) -> torch.Tensor:
    """[P, 2] float32 prompt points of one view for ``mode`` (gags | paper | uniform); ``depth`` [H, W] gives the size.

    ``samples`` ([H, W] min-depth sample map) is required for gags and paper; ``kwargs`` go to ``depth_prompts``.
    """
    if mode == "uniform":
        return uniform_prompts(depth.shape[-2], depth.shape[-1], uniform_per_side)
    if mode not in ("gags", "paper"):
        raise GagsError(f"unknown prompt mode {mode!r}; use gags, paper or uniform.")
    if samples is None:
        raise GagsError(f"prompt mode {mode!r} needs the view's min-depth sample map.")
    return depth_prompts(depth, samples, mode, seed=seed, **kwargs)
