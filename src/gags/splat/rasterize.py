"""``rasterize``: render Gaussians into one camera, with the arguments and conventions of ``gsplat.rasterization``.

Two backends behind one contract:
- ``"gsplat"``: ``gsplat.rasterization`` (CUDA only), called with ``packed=False``.
- ``"torch"``: the pure-PyTorch rasterizer of :mod:`gags.splat.torch_backend` (CPU or GPU), same rules as gsplat.
``"auto"`` picks gsplat when CUDA is available and the inputs live on a CUDA device, the torch backend otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gags.errors import GagsError
from gags.splat.sh import MAX_SH_DEGREE, num_sh_bases, spherical_harmonics
from gags.splat.torch_backend import DEFAULT_MAX_CHUNK_PAIRS, rasterize_torch

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
BACKENDS = ("auto", "torch", "gsplat")
# gsplat rendering.py: expected depth = accumulated depth / alpha.clamp(min=1e-10).
_ED_MIN_ALPHA = 1e-10
# gsplat rendering.py: SH colours are shifted by +0.5 and clamped at 0 ("apple-to-apple with Inria's CUDA backend").
_SH_OFFSET = 0.5


def _check_shapes(means, quats, scales, opacities, colors, viewmat, K, sh_degree, render_mode, backend, backgrounds):
    n = means.shape[0] if means.dim() == 2 else -1
    problems = []
    if means.dim() != 2 or means.shape[1] != 3:
        problems.append(f"means must be [N, 3], got {tuple(means.shape)}")
    if tuple(quats.shape) != (n, 4):
        problems.append(f"quats must be [N, 4] = [{n}, 4], got {tuple(quats.shape)}")
    if tuple(scales.shape) != (n, 3):
        problems.append(f"scales must be [N, 3] = [{n}, 3], got {tuple(scales.shape)}")
    if tuple(opacities.shape) != (n,):
        problems.append(f"opacities must be [N] = [{n}], got {tuple(opacities.shape)}")
    if sh_degree is None:
        if colors.dim() != 2 or colors.shape[0] != n:
            problems.append(f"colors must be [N, C] with N = {n} (sh_degree=None), got {tuple(colors.shape)}")
    else:
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            problems.append(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {sh_degree}")
        elif colors.dim() != 3 or colors.shape[0] != n or colors.shape[2] != 3 or colors.shape[1] < num_sh_bases(
            sh_degree
        ):
            problems.append(
                f"SH colors must be [N, K, 3] with N = {n} and K >= {num_sh_bases(sh_degree)}, "
                f"got {tuple(colors.shape)}"
            )
    if tuple(viewmat.shape) != (4, 4):
        problems.append(f"viewmat must be [4, 4] (one camera), got {tuple(viewmat.shape)}")
    if tuple(K.shape) != (3, 3):
        problems.append(f"K must be [3, 3] (one camera), got {tuple(K.shape)}")
    if render_mode not in RENDER_MODES:
        problems.append(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if backend not in BACKENDS:
        problems.append(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backgrounds is not None and backgrounds.dim() != 1:
        problems.append(f"backgrounds must be [C], got {tuple(backgrounds.shape)}")
    if problems:
        raise GagsError("rasterize: " + "; ".join(problems))


def _pick_backend(backend: str, means: Tensor) -> str:
    if backend == "auto":
        return "gsplat" if torch.cuda.is_available() and means.is_cuda else "torch"
    if backend == "gsplat" and not (torch.cuda.is_available() and means.is_cuda):
        raise GagsError(
            "rasterize: backend='gsplat' needs CUDA and tensors on a CUDA device; "
            "use backend='torch' (or 'auto') on a CPU"
        )
    return backend


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: int | None = None,
    render_mode: str = "RGB",
    backgrounds: Tensor | None = None,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    absgrad: bool = False,
    backend: str = "auto",
    max_chunk_pairs: int = DEFAULT_MAX_CHUNK_PAIRS,
) -> tuple[Tensor, Tensor, dict]:
    """Render N Gaussians into one pinhole camera.

    means: [N, 3]; quats: [N, 4] wxyz (need not be normalised); scales: [N, 3] (activated); opacities: [N] (activated);
    colors: [N, C] post-activation values of any channel count, or SH coefficients [N, K, 3] when ``sh_degree`` is set
    (colour = SH(direction from the camera centre to the mean) + 0.5, clamped at 0, as gsplat);
    viewmat: [4, 4] world-to-camera (OpenCV); K: [3, 3].
    render_mode: "RGB" (the C colour channels), "D" (accumulated depth sum w z), "ED" (expected depth sum w z / alpha),
    "RGB+D", "RGB+ED" (colour channels then depth). backgrounds: [C] colour behind the Gaussians (depth channels get 0).
    absgrad: also accumulate |d loss / d means2d| per Gaussian into ``meta["means2d"].absgrad`` during backward.
    max_chunk_pairs: torch backend only, expected candidate (Gaussian, pixel) pairs built at once (bounds the
    building memory, ~60 bytes per pair).

    Returns render [H, W, C] (C = channels, 1, or channels + 1 by mode), alpha [H, W, 1] and ``meta``, gsplat's dict for
    ``packed=False`` with one camera: "means2d" [1, N, 2] (non-leaf, receives gradients), "radii" [1, N, 2] int32,
    "depths" [1, N], "conics" [1, N, 3], "opacities" [1, N], "width", "height", "n_cameras" (1), "gaussian_ids" (None).
    """
    _check_shapes(means, quats, scales, opacities, colors, viewmat, K, sh_degree, render_mode, backend, backgrounds)
    # Cameras often come as float64 (numpy) while Gaussians are float32: follow the Gaussians.
    viewmat = viewmat.to(dtype=means.dtype, device=means.device)
    K = K.to(dtype=means.dtype, device=means.device)
    if backgrounds is not None:
        backgrounds = backgrounds.to(dtype=colors.dtype, device=colors.device)
    chosen = _pick_backend(backend, means)
    if chosen == "gsplat":
        return _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmat, K, width, height, near_plane, far_plane, sh_degree,
            render_mode, backgrounds, eps2d, radius_clip, absgrad,
        )

    if sh_degree is not None:
        campos = -viewmat[:3, :3].T @ viewmat[:3, 3]  # camera centre in world coordinates
        colors = torch.clamp_min(spherical_harmonics(sh_degree, means - campos, colors) + _SH_OFFSET, 0.0)

    with_color = render_mode in ("RGB", "RGB+D", "RGB+ED")
    with_depth = render_mode != "RGB"
    if with_color:
        if backgrounds is not None and backgrounds.shape[0] != colors.shape[1]:
            raise GagsError(
                f"rasterize: backgrounds has {backgrounds.shape[0]} channels but colors have {colors.shape[1]}"
            )
        feats, bg = colors, backgrounds
    else:
        feats, bg = colors.new_zeros(colors.shape[0], 0), None
    render, alpha, meta = rasterize_torch(
        means, quats, scales, opacities, feats, viewmat, K, width, height,
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, radius_clip=radius_clip, backgrounds=bg,
        absgrad=absgrad, extra_depth_channel=with_depth, max_chunk_pairs=max_chunk_pairs,
    )
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp(min=_ED_MIN_ALPHA)], dim=-1)
    return render, alpha, meta


def _rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmat, K, width, height, near_plane, far_plane, sh_degree, render_mode,
    backgrounds, eps2d, radius_clip, absgrad,
):
    import gsplat

    render, alpha, meta = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmat[None], K[None], width, height,
        near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree,
        packed=False, backgrounds=None if backgrounds is None else backgrounds[None], render_mode=render_mode,
        absgrad=absgrad,
    )
    return render[0], alpha[0], meta
