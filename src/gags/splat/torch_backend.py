"""Differentiable Gaussian rasterizer in pure PyTorch (CPU, also runs on a GPU).

It follows the rules of gsplat 1.5.3 (``cuda/csrc/ProjectionEWA3DGSFused.cu``, ``cuda/include/Utils.cuh`` and
``cuda/csrc/RasterizeToPixels3DGSFwd.cu``) so that a scene trained here renders the same with gsplat's CUDA backend:

Projection (one camera): EWA splatting with the perspective Jacobian evaluated at the mean clamped to 1.3x the field of
view, ``eps2d`` added to the diagonal of the 2D covariance, culling of Gaussians outside [near, far], with a
non-positive 2D determinant, with opacity < 1/255, with both radii <= ``radius_clip`` or whose box misses the image.
Radius per axis = ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(diagonal of the 2D covariance)).

Compositing (per pixel, front to back by depth, pixel centres at +0.5): sigma = 1/2 d^T conic d, alpha =
min(0.999, o exp(-sigma)); a Gaussian is skipped if sigma < 0 or alpha < 1/255; the pixel stops before the first
Gaussian whose T (1 - alpha) <= 1e-4 (that Gaussian is not composited).

Instead of gsplat's per-tile lists, the compositing builds one entry per (Gaussian, covered pixel) pair, sorts the pairs
by (pixel, depth) and evaluates the transmittance as a segmented cumulative sum of log(1 - alpha) in float64. Because the
transmittance is non-increasing, the pairs composited at a pixel are a prefix of its list: those whose inclusive
transmittance is still > 1e-4. Gradients come from a hand-written backward pass (``_Composite``) that treats the set of
composited pairs as fixed, as gsplat's backward kernel does.

Cost control: pairs are built in chunks of Gaussians (front to back) holding at most ``max_chunk_pairs`` candidate pairs.
After each chunk, pixels whose transmittance has reached the stop threshold are marked done; later Gaussians whose whole
box lies on done pixels are skipped in O(1) with a summed-area table, and their pairs on done pixels are dropped before
sorting. So huge near-camera Gaussians that cover the screen cost one chunk of work each time they saturate it, and the
peak memory of the build is bounded by the chunk size (plus the composited pairs kept for the backward pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# gsplat cuda/include/Common.h: ALPHA_THRESHOLD (1.f / 255.f); skip splats fainter than this, cull Gaussians below it.
ALPHA_THRESHOLD = 1.0 / 255.0
# gsplat RasterizeToPixels3DGSFwd.cu: alpha = min(0.999f, opac * __expf(-sigma)).
MAX_ALPHA = 0.999
# gsplat RasterizeToPixels3DGSFwd.cu: ``if (next_T <= 1e-4f) done``.
MIN_TRANSMITTANCE = 1e-4
# gsplat ProjectionEWA3DGSFused.cu: ``float extend = 3.33f`` standard deviations at most.
MAX_EXTEND = 3.33
# gsplat Utils.cuh persp_proj: lim = (W - cx) / fx + 0.3 * tan_fovx, i.e. the Jacobian is clamped at 1.3x the FOV.
FOV_MARGIN = 0.3
# gsplat RasterizeToPixels3DGSFwd.cu: ``px = (float)j + 0.5f``.
PIXEL_CENTER = 0.5
# Candidate (Gaussian, pixel) pairs built at once; about 60 bytes each while building -> ~130 MB per chunk.
DEFAULT_MAX_CHUNK_PAIRS = 1 << 21


# ----------------------------------------------------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Projection:
    """Gaussians projected into one camera (gsplat's ``packed=False`` layout without the camera axis).

    means2d: [N, 2] pixel coordinates of the means (0 where culled).
    depths: [N] camera-space z of the means (0 where culled).
    conics: [N, 3] inverse 2D covariance (a, b, c): sigma = 1/2 (a dx^2 + c dy^2) + b dx dy (0 where culled).
    radii: [N, 2] int32 box half-sizes in pixels, 0 where culled.
    """

    means2d: Tensor
    depths: Tensor
    conics: Tensor
    radii: Tensor

    @property
    def visible(self) -> Tensor:
        """[N] bool: not culled."""
        return (self.radii > 0).all(dim=-1)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices from quaternions (wxyz, normalised here). quats: [N, 4] -> [N, 3, 3]."""
    q = torch.nn.functional.normalize(quats, p=2, dim=-1)
    w, x, y, z = q.unbind(-1)
    rows = [
        1.0 - 2.0 * (y * y + z * z),
        2.0 * (x * y - w * z),
        2.0 * (x * z + w * y),
        2.0 * (x * y + w * z),
        1.0 - 2.0 * (x * x + z * z),
        2.0 * (y * z - w * x),
        2.0 * (x * z - w * y),
        2.0 * (y * z + w * x),
        1.0 - 2.0 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
) -> Projection:
    """EWA projection of 3D Gaussians into one pinhole camera, as gsplat's fully fused projection.

    means: [N, 3], quats: [N, 4] (wxyz), scales: [N, 3] (activated), opacities: [N] (activated),
    viewmat: [4, 4] world-to-camera (OpenCV), K: [3, 3]. Differentiable w.r.t. means, quats, scales and viewmat.
    """
    rot_w2c = viewmat[:3, :3]
    t_w2c = viewmat[:3, 3]
    means_c = means @ rot_w2c.T + t_w2c  # [N, 3]
    x, y, z = means_c.unbind(-1)

    # World covariance R S S R^T, then camera covariance W Sigma W^T.
    rot = quat_to_rotmat(quats)  # [N, 3, 3]
    half = rot_w2c @ (rot * scales[:, None, :])  # [N, 3, 3]  (W R S)
    cov_c = half @ half.transpose(-1, -2)  # [N, 3, 3]
    s00, s01, s02 = cov_c[:, 0, 0], cov_c[:, 0, 1], cov_c[:, 0, 2]
    s11, s12, s22 = cov_c[:, 1, 1], cov_c[:, 1, 2], cov_c[:, 2, 2]

    in_range = (z >= near_plane) & (z <= far_plane)
    z_safe = torch.where(in_range, z, torch.ones_like(z))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + FOV_MARGIN * tan_fovx
    lim_x_neg = cx / fx + FOV_MARGIN * tan_fovx
    lim_y_pos = (height - cy) / fy + FOV_MARGIN * tan_fovy
    lim_y_neg = cy / fy + FOV_MARGIN * tan_fovy
    rz = 1.0 / z_safe
    tx = z_safe * torch.clamp(x * rz, min=-lim_x_neg, max=lim_x_pos)
    ty = z_safe * torch.clamp(y * rz, min=-lim_y_neg, max=lim_y_pos)
    # Jacobian J = [[ja, 0, jb], [0, jc, jd]].
    ja = fx * rz
    jb = -fx * tx * rz * rz
    jc = fy * rz
    jd = -fy * ty * rz * rz
    c00 = ja * ja * s00 + 2.0 * ja * jb * s02 + jb * jb * s22 + eps2d
    c01 = ja * jc * s01 + ja * jd * s02 + jb * jc * s12 + jb * jd * s22
    c11 = jc * jc * s11 + 2.0 * jc * jd * s12 + jd * jd * s22 + eps2d
    det = c00 * c11 - c01 * c01
    mean_x = fx * x * rz + cx
    mean_y = fy * y * rz + cy

    with torch.no_grad():
        keep = in_range & (det > 0) & (opacities >= ALPHA_THRESHOLD)
        # Opacity-aware extent: alpha = o exp(-sigma) >= 1/255 inside sigma <= ln(255 o).
        extend = torch.sqrt(2.0 * torch.log(opacities.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp_max(MAX_EXTEND)
        radius_x = torch.ceil(extend * torch.sqrt(c00.clamp_min(0.0)))
        radius_y = torch.ceil(extend * torch.sqrt(c11.clamp_min(0.0)))
        keep &= ~((radius_x <= radius_clip) & (radius_y <= radius_clip))
        keep &= (mean_x + radius_x > 0) & (mean_x - radius_x < width)
        keep &= (mean_y + radius_y > 0) & (mean_y - radius_y < height)
        radii = torch.stack([radius_x, radius_y], dim=-1)
        radii = torch.where(keep[:, None], radii, torch.zeros_like(radii)).to(torch.int32)

    det_safe = torch.where(keep, det, torch.ones_like(det))
    conics = torch.stack([c11 / det_safe, -c01 / det_safe, c00 / det_safe], dim=-1)
    zero = torch.zeros((), dtype=means.dtype, device=means.device)
    conics = torch.where(keep[:, None], conics, zero)
    means2d = torch.where(keep[:, None], torch.stack([mean_x, mean_y], dim=-1), zero)
    depths = torch.where(keep, z, zero)
    return Projection(means2d=means2d, depths=depths, conics=conics, radii=radii)


# ----------------------------------------------------------------------------------------------------------------------
# Pair building (no gradients)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class PairList:
    """The composited (Gaussian, pixel) pairs of one image, sorted by (pixel, depth).

    pix: [P] int64 flat pixel index y * W + x.   gid: [P] int64 Gaussian index.
    alpha: [P] min(0.999, o exp(-sigma)).        trans: [P] transmittance before the pair (exclusive).
    dx, dy: [P] mean2d - pixel centre.           clamped: [P] bool, alpha hit the 0.999 clamp (no gradient).
    log_t_final: [H*W] float64 log transmittance after the last composited pair of each pixel.
    starts: [H*W] int64 first pair of each pixel; counts: [H*W] number of pairs per pixel.
    stats: counters (candidate pairs, chunks, skipped Gaussians).
    """

    pix: Tensor
    gid: Tensor
    alpha: Tensor
    trans: Tensor
    dx: Tensor
    dy: Tensor
    clamped: Tensor
    log_t_final: Tensor
    starts: Tensor
    counts: Tensor
    stats: dict


def _pixel_boxes(means2d: Tensor, radii: Tensor, width: int, height: int) -> tuple[Tensor, ...]:
    """Inclusive pixel ranges whose centres lie within the radius box. Returns x0, y0, nx, ny (int64, [N])."""
    r = radii.to(torch.float64)
    m = means2d.detach().to(torch.float64)
    x0 = torch.ceil(m[:, 0] - r[:, 0] - PIXEL_CENTER).clamp(0, width)
    x1 = torch.floor(m[:, 0] + r[:, 0] - PIXEL_CENTER).clamp(-1, width - 1)
    y0 = torch.ceil(m[:, 1] - r[:, 1] - PIXEL_CENTER).clamp(0, height)
    y1 = torch.floor(m[:, 1] + r[:, 1] - PIXEL_CENTER).clamp(-1, height - 1)
    nx = (x1 - x0 + 1).clamp_min(0)
    ny = (y1 - y0 + 1).clamp_min(0)
    return x0.long(), y0.long(), nx.long(), ny.long()


def _chunk_bounds(counts: Tensor, max_pairs: int) -> list[tuple[int, int]]:
    """Split a sequence of per-Gaussian pair counts into consecutive ranges of at most ``max_pairs`` pairs
    (a single Gaussian above the limit gets a range of its own)."""
    n = counts.numel()
    if n == 0:
        return []
    total = int(counts.sum())
    if total <= max_pairs:
        return [(0, n)]
    cum = torch.cumsum(counts, 0)
    bounds = []
    start = 0
    while start < n:
        base = int(cum[start - 1]) if start > 0 else 0
        end = int(torch.searchsorted(cum, base + max_pairs, right=True))
        end = max(end, start + 1)
        bounds.append((start, end))
        start = end
    return bounds


def build_pairs(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    max_chunk_pairs: int = DEFAULT_MAX_CHUNK_PAIRS,
) -> PairList:
    """Find the composited (Gaussian, pixel) pairs and their alphas and transmittances, gsplat's forward rules.

    means2d: [N, 2], conics: [N, 3], opacities: [N], depths: [N], radii: [N, 2] (0 = culled).
    Computation is in the dtype of means2d except the transmittance product (float64).
    """
    with torch.no_grad():
        device = means2d.device
        dtype = means2d.dtype
        n_pix = width * height
        visible = (radii > 0).all(dim=-1)
        ids = torch.nonzero(visible).squeeze(1)
        # Front to back; ties keep index order, as gsplat's stable radix sort of (tile, depth) keys.
        order = ids[torch.argsort(depths[ids], stable=True)]
        x0, y0, nx, ny = _pixel_boxes(means2d[order], radii[order], width, height)
        box_counts = nx * ny

        carry = torch.zeros(n_pix, dtype=torch.float64, device=device)  # log T so far
        done = torch.zeros(n_pix, dtype=torch.bool, device=device)
        kept: list[tuple[Tensor, ...]] = []
        stats = {"candidate_pairs": 0, "max_chunk_candidates": 0, "chunks": 0, "skipped_gaussians": 0}
        for c_start, c_end in _chunk_bounds(box_counts, max_chunk_pairs):
            sel = torch.arange(c_start, c_end, device=device)
            cnt = box_counts[sel]
            if kept and bool(done.any()):
                # Skip Gaussians whose box lies entirely on finished pixels (summed-area table of open pixels).
                open_px = (~done).view(height, width).to(torch.int64)
                sat = torch.zeros(height + 1, width + 1, dtype=torch.int64, device=device)
                sat[1:, 1:] = open_px.cumsum(0).cumsum(1)
                bx0, by0 = x0[sel], y0[sel]
                bx1, by1 = bx0 + nx[sel], by0 + ny[sel]
                n_open = sat[by1, bx1] - sat[by0, bx1] - sat[by1, bx0] + sat[by0, bx0]
                live = n_open > 0
                stats["skipped_gaussians"] += int((~live & (cnt > 0)).sum())
                sel, cnt = sel[live], cnt[live]
            n_pairs = int(cnt.sum())
            stats["chunks"] += 1
            stats["candidate_pairs"] += n_pairs
            stats["max_chunk_candidates"] = max(stats["max_chunk_candidates"], n_pairs)
            if n_pairs == 0:
                continue
            pairs = _chunk_pairs(
                sel, cnt, n_pairs, order, x0, y0, nx, means2d, conics, opacities, width, carry, done, dtype
            )
            if pairs is not None:
                kept.append(pairs)

        if kept:
            pix, gid, alpha, trans, dx, dy, clamped = (torch.cat(parts) for parts in zip(*kept))
            if len(kept) > 1:
                perm = torch.argsort(pix, stable=True)  # chunks are front to back: stable keeps depth order
                pix, gid, alpha, trans, dx, dy, clamped = (
                    t[perm] for t in (pix, gid, alpha, trans, dx, dy, clamped)
                )
        else:
            empty_f = torch.zeros(0, dtype=dtype, device=device)
            empty_i = torch.zeros(0, dtype=torch.int64, device=device)
            pix, gid, alpha, trans, dx, dy = empty_i, empty_i, empty_f, empty_f, empty_f, empty_f
            clamped = torch.zeros(0, dtype=torch.bool, device=device)
        counts = torch.bincount(pix, minlength=n_pix)
        starts = torch.cumsum(counts, 0) - counts
        stats["pairs"] = int(pix.numel())
        return PairList(pix, gid, alpha, trans, dx, dy, clamped, carry, starts, counts, stats)


def _chunk_pairs(
    sel: Tensor,
    cnt: Tensor,
    n_pairs: int,
    order: Tensor,
    x0: Tensor,
    y0: Tensor,
    nx: Tensor,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    width: int,
    carry: Tensor,
    done: Tensor,
    dtype: torch.dtype,
) -> tuple[Tensor, ...] | None:
    """Candidate pairs of the Gaussians ``order[sel]`` (front to back), filtered and composited against the running
    per-pixel state ``carry`` (log T) and ``done``, which are updated in place."""
    device = sel.device
    rank = torch.repeat_interleave(torch.arange(sel.numel(), device=device), cnt, output_size=n_pairs)
    first = torch.cumsum(cnt, 0) - cnt
    local = torch.arange(n_pairs, device=device) - first[rank]
    row_len = nx[sel][rank]
    ly = torch.div(local, row_len, rounding_mode="floor")
    lx = local - ly * row_len
    px = x0[sel][rank] + lx
    py = y0[sel][rank] + ly
    pix = py * width + px
    gid = order[sel][rank]

    m = means2d[gid]
    con = conics[gid]
    dx = m[:, 0] - (px.to(dtype) + PIXEL_CENTER)
    dy = m[:, 1] - (py.to(dtype) + PIXEL_CENTER)
    sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
    raw = opacities[gid] * torch.exp(-sigma)
    alpha = raw.clamp_max(MAX_ALPHA)
    ok = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & ~done[pix]
    idx = torch.nonzero(ok).squeeze(1)
    if idx.numel() == 0:
        return None
    pix, gid, alpha, dx, dy, raw = pix[idx], gid[idx], alpha[idx], dx[idx], dy[idx], raw[idx]

    perm = torch.argsort(pix, stable=True)  # pairs were generated front to back
    pix, gid, alpha, dx, dy, raw = pix[perm], gid[perm], alpha[perm], dx[perm], dy[perm], raw[perm]

    log1m = torch.log1p(-alpha.to(torch.float64))
    csum = torch.cumsum(log1m, 0)
    excl = csum - log1m
    n_pix = carry.numel()
    counts = torch.bincount(pix, minlength=n_pix)
    starts = torch.cumsum(counts, 0) - counts
    log_t = excl - excl[starts[pix]] + carry[pix]  # log T before each pair
    t_before = torch.exp(log_t)
    t_after = t_before * (1.0 - alpha.to(torch.float64))
    inc = t_after > MIN_TRANSMITTANCE
    stop = ~inc
    if bool(stop.any()):
        done[pix[stop]] = True
    inc_idx = torch.nonzero(inc).squeeze(1)
    pix = pix[inc_idx]
    carry.index_add_(0, pix, log1m[inc_idx])
    return (
        pix,
        gid[inc_idx],
        alpha[inc_idx],
        t_before[inc_idx].to(dtype),
        dx[inc_idx],
        dy[inc_idx],
        raw[inc_idx] > MAX_ALPHA,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Compositing with a hand-written backward pass
# ----------------------------------------------------------------------------------------------------------------------


class _Composite(torch.autograd.Function):
    """Alpha compositing of the pairs of a PairList. Inputs: means2d [1, N, 2], conics [N, 3], colors [N, C],
    opacities [N], background [C] (or None). Outputs: render [H*W, C], alpha [H*W]."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, pairs: PairList, absgrad: bool):
        n_pix = pairs.log_t_final.numel()
        weight = pairs.alpha * pairs.trans
        render = torch.zeros(n_pix, colors.shape[1], dtype=colors.dtype, device=colors.device)
        render.index_add_(0, pairs.pix, colors[pairs.gid] * weight[:, None])
        t_final = torch.exp(pairs.log_t_final).to(colors.dtype)
        if background is not None:
            render += t_final[:, None] * background[None, :]
        ctx.pairs = pairs
        ctx.absgrad = absgrad
        ctx.has_background = background is not None
        ctx.save_for_backward(means2d, conics, colors, opacities, background if background is not None else colors)
        return render, 1.0 - t_final

    @staticmethod
    def backward(ctx, grad_render, grad_alpha):
        means2d, conics, colors, opacities, background = ctx.saved_tensors
        pairs: PairList = ctx.pairs
        dtype = colors.dtype
        n_gauss = colors.shape[0]
        pix, gid, alpha, trans = pairs.pix, pairs.gid, pairs.alpha, pairs.trans
        t_final = torch.exp(pairs.log_t_final).to(dtype)
        weight = alpha * trans

        g_pix = grad_render[pix]  # [P, C]
        v = (colors[gid] * g_pix).sum(1)  # colour . dL/drender per pair
        grad_colors = torch.zeros_like(colors).index_add_(0, gid, g_pix * weight[:, None])

        # Sum over the later pairs of the same pixel of w_j v_j (float64: a running sum over all pairs).
        wv = (weight * v).to(torch.float64)
        csum = torch.cumsum(wv, 0)
        last = (pairs.starts + pairs.counts - 1).clamp_min(0)
        later = (csum[last[pix]] - csum).to(dtype)
        tail = -grad_alpha
        if ctx.has_background:
            tail = tail + grad_render @ background
        tail = t_final * tail  # dL/dT_final * T_final, per pixel
        grad_a = trans * v - (later + tail[pix]) / (1.0 - alpha)
        free = ~pairs.clamped
        grad_sigma = torch.where(free, -alpha * grad_a, torch.zeros_like(grad_a))
        grad_o = torch.where(free, grad_a * alpha / opacities[gid], torch.zeros_like(grad_a))

        con = conics[gid]
        dx, dy = pairs.dx, pairs.dy
        g_mx = grad_sigma * (con[:, 0] * dx + con[:, 1] * dy)
        g_my = grad_sigma * (con[:, 1] * dx + con[:, 2] * dy)
        per_pair = [g_mx, g_my, 0.5 * grad_sigma * dx * dx, grad_sigma * dx * dy, 0.5 * grad_sigma * dy * dy, grad_o]
        if ctx.absgrad:
            per_pair += [g_mx.abs(), g_my.abs()]
        acc = torch.zeros(n_gauss, len(per_pair), dtype=dtype, device=colors.device)
        acc.index_add_(0, gid, torch.stack(per_pair, dim=1))

        grad_means2d = acc[:, 0:2].unsqueeze(0)
        if ctx.absgrad:
            means2d.absgrad = acc[:, 6:8].unsqueeze(0)
        grad_background = (t_final[:, None] * grad_render).sum(0) if ctx.has_background else None
        return grad_means2d, acc[:, 2:5], grad_colors, acc[:, 5], grad_background, None, None


def composite(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    pairs: PairList,
    width: int,
    height: int,
    background: Tensor | None = None,
    absgrad: bool = False,
) -> tuple[Tensor, Tensor]:
    """Composite the pairs into an image. means2d: [1, N, 2] (receives ``.absgrad`` if asked), conics: [N, 3],
    colors: [N, C], opacities: [N], background: [C]. Returns render [H, W, C] and alpha [H, W, 1]."""
    render, alpha = _Composite.apply(means2d, conics, colors, opacities, background, pairs, absgrad)
    return render.view(height, width, -1), alpha.view(height, width, 1)


def rasterize_torch(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    backgrounds: Tensor | None = None,
    absgrad: bool = False,
    extra_depth_channel: bool = False,
    max_chunk_pairs: int = DEFAULT_MAX_CHUNK_PAIRS,
) -> tuple[Tensor, Tensor, dict]:
    """Project and composite post-activation colours [N, C] (the depth appended as a last channel when
    ``extra_depth_channel``). Returns render [H, W, C(+1)], alpha [H, W, 1] and gsplat's ``meta`` (packed=False)."""
    proj = project_gaussians(
        means, quats, scales, opacities, viewmat, K, width, height, near_plane, far_plane, eps2d, radius_clip
    )
    means2d = proj.means2d.unsqueeze(0)  # [1, N, 2]: the tensor DefaultStrategy reads gradients from
    if extra_depth_channel:
        colors = torch.cat([colors, proj.depths[:, None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(1)])
    pairs = build_pairs(
        proj.means2d, proj.conics, opacities, proj.depths, proj.radii, width, height, max_chunk_pairs
    )
    render, alpha = composite(
        means2d, proj.conics, colors, opacities, pairs, width, height, backgrounds, absgrad
    )
    meta = {
        "batch_ids": None,
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": proj.radii.unsqueeze(0),
        "means2d": means2d,
        "depths": proj.depths.unsqueeze(0),
        "conics": proj.conics.unsqueeze(0),
        "opacities": opacities.unsqueeze(0),
        "width": width,
        "height": height,
        "n_batches": 1,
        "n_cameras": 1,
        "n_pairs": pairs.stats["pairs"],
        "pair_stats": pairs.stats,
    }
    return render, alpha, meta
