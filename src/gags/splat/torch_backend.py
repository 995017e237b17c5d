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

Instead of gsplat's per-tile lists, the compositing builds one entry per (Gaussian, covered pixel) pair, sorts the
pairs by (pixel, depth) and evaluates the transmittance as a segmented cumulative sum of log(1 - alpha) in float64.
Because the transmittance is non-increasing, the pairs composited at a pixel are a prefix of its list: those whose
inclusive transmittance is still > 1e-4. Pairs are generated per (Gaussian, pixel row) span: the analytic range of
pixels of the row where alpha >= 1/255 (with a tiny margin against rounding; the exact test still decides), so no
pixel of the radius box outside the ellipse is ever evaluated. The image is then a sparse matrix product,
render = W @ colors with W the [H*W, N] matrix of weights alpha T. Gradients come from a hand-written backward pass
(``_Composite``) that treats the set of composited pairs as fixed, as gsplat's backward kernel does (no gradient
through the 0.999 clamp).

Cost control: pairs are built in chunks of Gaussians (front to back) of at most ``max_chunk_pairs`` expected candidate
pairs, each chunk its own pair list. After each chunk, pixels whose transmittance has reached the stop threshold are
marked done; later Gaussians whose whole box lies on done pixels are skipped in O(1) with a summed-area table, and their
pairs on done pixels are dropped before sorting. So huge near-camera Gaussians that cover the screen cost one chunk of
work until they saturate it, and the peak memory of the build is bounded by the chunk size (plus the composited pairs
kept for the backward pass, about 30 bytes each).

Performance notes (CPU): 1-D ``index_select`` is several times faster than advanced indexing and 2-D row gathers;
float32 ``log1p`` has no vectorised kernel (float64 does); per-channel scatter-adds beat a transposed sparse product
for few channels.
"""

from __future__ import annotations

import math
import warnings
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
# Expected candidate (Gaussian, pixel) pairs per building chunk; ~60 bytes each while building -> ~250 MB at most.
DEFAULT_MAX_CHUNK_PAIRS = 1 << 22


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


def _rotation_entries(quats: Tensor) -> list[list[Tensor]]:
    """The 3x3 rotation of each (normalised) wxyz quaternion as nested lists of [N] tensors."""
    w, x, y, z = torch.nn.functional.normalize(quats, p=2, dim=-1).unbind(-1)
    return [
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y)],
        [2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x)],
        [2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y)],
    ]


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

    # Camera covariance W R S S R^T W^T = H H^T with H = W R S, written entry by entry on [N] tensors: batched 3x3
    # matrix products (and their autograd) cost several times more on a CPU.
    rot = _rotation_entries(quats)
    sx, sy, sz = scales.unbind(-1)
    w = [[rot_w2c[i, j] for j in range(3)] for i in range(3)]
    half = [
        [(w[i][0] * rot[0][j] + w[i][1] * rot[1][j] + w[i][2] * rot[2][j]) * s for j, s in enumerate((sx, sy, sz))]
        for i in range(3)
    ]

    def cov_entry(i: int, k: int) -> Tensor:
        return half[i][0] * half[k][0] + half[i][1] * half[k][1] + half[i][2] * half[k][2]

    s00, s01, s02 = cov_entry(0, 0), cov_entry(0, 1), cov_entry(0, 2)
    s11, s12, s22 = cov_entry(1, 1), cov_entry(1, 2), cov_entry(2, 2)

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
class PairChunk:
    """The composited (Gaussian, pixel) pairs of one chunk of Gaussians, sorted by (pixel, depth).

    Pairs come from spans, one per (Gaussian, pixel row): pair = (span, local), pixel x = span's first x + local.
    pix: [P] int32 flat pixel index y * W + x.      gid: [P] int32 Gaussian index.
    alpha: [P] min(0.999, o exp(-sigma)) (0 for the few stored pairs that are not composited).
    trans: [P] transmittance in front of the pair (including the chunks in front).   weight: [P] alpha * trans.
    span, local: [P] int32.                         span_ax, span_dy: [S] mean2d - centre of the span's first pixel.
    counts: [H*W] int64 stored pairs per pixel (the pairs of pixel p are a contiguous run).
    """

    pix: Tensor
    gid: Tensor
    alpha: Tensor
    trans: Tensor
    weight: Tensor
    span: Tensor
    local: Tensor
    span_ax: Tensor
    span_dy: Tensor
    counts: Tensor

    @property
    def dx(self) -> Tensor:
        """[P] mean2d.x - pixel centre x."""
        return self.span_ax.index_select(0, self.span).sub_(self.local.to(self.span_ax.dtype))

    @property
    def dy(self) -> Tensor:
        """[P] mean2d.y - pixel centre y."""
        return self.span_dy.index_select(0, self.span)

    def pixel_matrix(self, n_gaussians: int) -> Tensor:
        """Sparse CSR [H*W, N] of the compositing weights: render = W @ colors."""
        return _csr(_offsets(self.counts, self.pix.dtype), self.gid, self.weight, (self.counts.numel(), n_gaussians))


@dataclass
class PairList:
    """The composited pairs of one image: one PairChunk per chunk of Gaussians (front to back), and per pixel
    log_t_final: [H*W] float64 log transmittance behind its last composited pair.
    stats: counters (candidate pairs, composited pairs, stored pairs, chunks, skipped Gaussians)."""

    chunks: list[PairChunk]
    log_t_final: Tensor
    stats: dict

    def cat(self, name: str) -> Tensor:
        """A per-pair field of all chunks, concatenated (chunk order)."""
        return torch.cat([getattr(chunk, name) for chunk in self.chunks])


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A CSR matrix from trusted indices (no invariant checks, no "beta" warning on every call)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _offsets(counts: Tensor, dtype: torch.dtype) -> Tensor:
    """[0, cumsum(counts)] as CSR row pointers."""
    out = torch.zeros(counts.numel() + 1, dtype=dtype, device=counts.device)
    torch.cumsum(counts, 0, out=out[1:])
    return out


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
    cum = torch.cumsum(counts, 0)
    if int(cum[-1]) <= max_pairs:
        return [(0, n)]
    bounds = []
    start = 0
    while start < n:
        base = int(cum[start - 1]) if start > 0 else 0
        end = int(torch.searchsorted(cum, base + max_pairs, right=True))
        end = max(end, start + 1)
        bounds.append((start, end))
        start = end
    return bounds


# Pixels within this distance (in pixels) outside the analytic alpha >= 1/255 span of a row are still evaluated, so
# that rounding in the span never drops a pixel that the exact test keeps.
_SPAN_MARGIN = 1e-3


@dataclass
class _Visible:
    """Visible Gaussians front to back, with what the row spans need (all [V]; float64 except ids and boxes)."""

    gid: Tensor  # Gaussian ids
    mx: Tensor
    my: Tensor
    a: Tensor  # conic
    b: Tensor
    c: Tensor
    det: Tensor  # a c - b^2
    two_a_level: Tensor  # 2 a ln(255 o): the row span's discriminant at dy = 0
    inv_a: Tensor
    log_o: Tensor
    x0: Tensor  # pixel box (int64), clipped to the image
    x1: Tensor
    y0: Tensor
    ny: Tensor
    estimate: Tensor  # expected candidate pairs (ellipse area + perimeter, at most the box)


def _visible_gaussians(means2d, conics, opacities, depths, radii, width, height) -> _Visible:
    f64 = torch.float64
    ids = torch.nonzero((radii > 0).all(dim=-1)).squeeze(1)
    # Front to back; ties keep index order, as gsplat's stable radix sort of (tile, depth) keys.
    order = ids.index_select(0, torch.argsort(depths.index_select(0, ids), stable=True))
    x0, y0, nx, ny = _pixel_boxes(means2d.index_select(0, order), radii.index_select(0, order), width, height)
    m = means2d.index_select(0, order).to(f64)
    a, b, c = conics.index_select(0, order).to(f64).unbind(-1)
    op = opacities.index_select(0, order).to(f64)
    level = torch.log(op / ALPHA_THRESHOLD)
    det = a * c - b * b
    # pixels with alpha >= 1/255: ellipse sigma <= level of area 2 pi level / sqrt(det), plus a perimeter allowance
    area = 2.0 * math.pi * level / det.sqrt()
    estimate = torch.minimum(nx * ny, (area + 2.0 * (nx + ny)).ceil().long())
    return _Visible(
        gid=order, mx=m[:, 0].contiguous(), my=m[:, 1].contiguous(), a=a.contiguous(), b=b.contiguous(),
        c=c.contiguous(), det=det, two_a_level=2.0 * a * level, inv_a=1.0 / a, log_o=torch.log(op),
        x0=x0, x1=x0 + nx - 1, y0=y0, ny=ny, estimate=estimate,
    )


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
    Computation is in the dtype of means2d except the transmittance product and the row spans (float64).
    """
    with torch.no_grad():
        means2d, conics, opacities = means2d.detach(), conics.detach(), opacities.detach()
        device = means2d.device
        dtype = means2d.dtype
        n_pix = width * height
        vis = _visible_gaussians(means2d, conics, opacities, depths, radii, width, height)

        carry = torch.zeros(n_pix, dtype=torch.float64, device=device)  # log T so far
        done = torch.zeros(n_pix, dtype=torch.bool, device=device)
        kept: list[tuple[Tensor, ...]] = []
        stats = {"candidate_pairs": 0, "max_chunk_candidates": 0, "chunks": 0, "skipped_gaussians": 0, "pairs": 0}
        for c_start, c_end in _chunk_bounds(vis.estimate, max_chunk_pairs):
            sel = torch.arange(c_start, c_end, device=device)
            if stats["chunks"] > 0 and bool(done.any()):
                # Skip Gaussians whose box lies entirely on finished pixels (summed-area table of open pixels).
                open_px = (~done).view(height, width).to(torch.int64)
                sat = torch.zeros(height + 1, width + 1, dtype=torch.int64, device=device)
                sat[1:, 1:] = open_px.cumsum(0).cumsum(1)
                bx0, by0 = vis.x0.index_select(0, sel), vis.y0.index_select(0, sel)
                bx1, by1 = vis.x1.index_select(0, sel) + 1, by0 + vis.ny.index_select(0, sel)
                n_open = sat[by1, bx1] - sat[by0, bx1] - sat[by1, bx0] + sat[by0, bx0]
                live = (n_open > 0) & (bx1 > bx0)
                stats["skipped_gaussians"] += int(torch.count_nonzero(~live))
                sel = sel[live]
            stats["chunks"] += 1
            if sel.numel() == 0:
                continue
            pairs = _chunk_pairs(
                sel, vis, width, carry, done, dtype, check_done=stats["chunks"] > 1, stats=stats,
            )
            if pairs is not None:
                kept.append(pairs)

        chunks = []
        for pix, gid, alpha, trans, span, local, span_ax, span_dy in kept:
            counts = torch.bincount(pix, minlength=n_pix)
            chunks.append(PairChunk(pix, gid, alpha, trans, alpha * trans, span, local, span_ax, span_dy, counts))
        stats["stored_pairs"] = sum(int(chunk.pix.numel()) for chunk in chunks)
        return PairList(chunks, carry, stats)


def _chunk_pairs(
    sel: Tensor,
    vis: _Visible,
    width: int,
    carry: Tensor,
    done: Tensor,
    dtype: torch.dtype,
    check_done: bool,
    stats: dict,
) -> tuple[Tensor, ...] | None:
    """Pairs of the visible Gaussians ``sel`` (positions in ``vis``, front to back), filtered and composited against
    the running per-pixel state ``carry`` (log T) and ``done``, which are updated in place.

    Gathers use ``index_select`` on 1-D tensors: on a CPU it is several times faster than advanced indexing."""
    device = sel.device
    f64 = torch.float64
    n_pix = carry.numel()
    # --- one span per (Gaussian, box row): the pixels of the row where alpha >= 1/255 (float64) ---------------------
    rows_per = vis.ny.index_select(0, sel)
    n_rows = int(rows_per.sum())
    if n_rows == 0:
        return None
    g = torch.repeat_interleave(sel, rows_per, output_size=n_rows)  # position in vis of each row's Gaussian
    first_row = vis.y0.index_select(0, sel) - (torch.cumsum(rows_per, 0) - rows_per)
    row = torch.repeat_interleave(first_row, rows_per, output_size=n_rows).add_(torch.arange(n_rows, device=device))
    dy = vis.my.index_select(0, g).sub_(row.to(torch.float64)).sub_(PIXEL_CENTER)
    # sigma(dx) = a/2 dx^2 + b dy dx + c/2 dy^2 <= ln(255 o)  <=>  dx = (-b dy +- sqrt(disc)) / a,
    # disc = 2 a ln(255 o) - (a c - b^2) dy^2; pixel centre x + 0.5 = mean_x - dx.
    disc = vis.two_a_level.index_select(0, g) - vis.det.index_select(0, g) * dy * dy
    inv_a = vis.inv_a.index_select(0, g)
    half = disc.clamp_min(0.0).sqrt_().mul_(inv_a)
    centre = vis.b.index_select(0, g).mul_(dy).mul_(inv_a).add_(vis.mx.index_select(0, g)).sub_(PIXEL_CENTER)
    slack = half * _SPAN_MARGIN + _SPAN_MARGIN
    j0 = torch.maximum(torch.ceil(centre - half - slack), vis.x0.index_select(0, g).to(torch.float64))
    j1 = torch.minimum(torch.floor(centre + half + slack), vis.x1.index_select(0, g).to(torch.float64))
    lengths = torch.where(disc >= 0, (j1 - j0 + 1.0).clamp_min(0.0), 0.0).long()
    live = torch.nonzero(lengths).squeeze(1)
    n_pairs = int(lengths.sum())
    stats["candidate_pairs"] += n_pairs
    stats["max_chunk_candidates"] = max(stats["max_chunk_candidates"], n_pairs)
    if n_pairs == 0:
        return None
    idx_dtype = torch.int32 if max(n_pairs, n_pix) < 2**31 - 1 else torch.int64
    lengths = lengths.index_select(0, live)
    span_start = torch.cumsum(lengths, 0) - lengths
    g = g.index_select(0, live)
    j0 = j0.index_select(0, live)
    s_dy = dy.index_select(0, live)
    # Per span: pixel of pair k = base + k; local index l = k - start; dx = ax - l; and, with
    # sigma = a/2 dx^2 + b dy dx + c/2 dy^2 written as a quadratic in l, alpha = exp(-(q0 + l (q1 + l q2))), where
    # q0 = sigma(l = 0) - ln(o) folds in the opacity.
    s_base = (row.index_select(0, live) * width + j0.long() - span_start).to(idx_dtype)
    s_start = span_start.to(idx_dtype)
    s_gid = vis.gid.index_select(0, g).to(idx_dtype)
    s_a, s_b = vis.a.index_select(0, g), vis.b.index_select(0, g)
    s_ax = vis.mx.index_select(0, g).sub_(j0).sub_(PIXEL_CENTER)
    b_dy = s_b * s_dy
    sigma0 = (0.5 * s_a * s_ax + b_dy) * s_ax + 0.5 * vis.c.index_select(0, g) * s_dy * s_dy
    s_q0 = sigma0.sub_(vis.log_o.index_select(0, g)).to(dtype)
    s_q1 = (s_a * s_ax).add_(b_dy).neg_().to(dtype)
    s_q2 = (0.5 * s_a).to(dtype)
    s_ax, s_dy = s_ax.to(dtype), s_dy.to(dtype)

    # --- pairs, generated front to back; only their pixel is needed before sorting ---------------------------------
    span = torch.repeat_interleave(
        torch.arange(live.numel(), device=device, dtype=idx_dtype), lengths, output_size=n_pairs
    )
    pix = s_base.index_select(0, span).add_(torch.arange(n_pairs, device=device, dtype=idx_dtype))
    n_ok = n_pairs
    if check_done:
        # pairs on pixels finished by earlier chunks get the key n_pix and land at the end of the sort
        ok = ~done.index_select(0, pix)
        n_ok = int(torch.count_nonzero(ok))
        if n_ok == 0:
            return None
        if n_ok < n_pairs:
            pix = torch.where(ok, pix, torch.full((), n_pix, dtype=idx_dtype, device=device))
    # --- sort by pixel; generation order is front to back, the stable sort keeps depth order within a pixel ---------
    pix, perm = torch.sort(pix, stable=True)
    pix, perm = pix[:n_ok], perm[:n_ok]
    # --- per pair, from the (small) span tables ----------------------------------------------------------------------
    span = span.index_select(0, perm)
    local = perm.to(idx_dtype).sub_(s_start.index_select(0, span))
    pgid = s_gid.index_select(0, span)
    lf = local.to(dtype)
    expo = s_q2.index_select(0, span).mul_(lf).add_(s_q1.index_select(0, span)).mul_(lf)
    expo.add_(s_q0.index_select(0, span))
    alpha = torch.exp(expo.neg_()).clamp_max_(MAX_ALPHA)
    # gsplat skips alpha < 1/255 (and sigma < 0, impossible with a positive definite conic); the spans leave only
    # rounding cases at their ends (the margin): those get alpha = 0, a no-op.
    refused = alpha < ALPHA_THRESHOLD
    alpha.masked_fill_(refused, 0.0)

    # --- transmittance: segmented cumulative sum of log(1 - alpha) in float64 ---------------------------------------
    counts = torch.bincount(pix, minlength=n_pix)
    log1m = alpha.to(f64, copy=True).neg_().log1p_()
    csum = torch.cumsum(log1m, 0)
    starts = torch.cumsum(counts, 0) - counts
    before = torch.where(starts > 0, csum.index_select(0, (starts - 1).clamp_min(0)), 0.0)
    # log T after pair k = csum[k] - csum before the pixel's first pair + log T carried from earlier chunks
    log_t_after = csum.add_((carry - before).index_select(0, pix))
    inc = log_t_after > _LOG_MIN_TRANSMITTANCE
    n_inc = int(torch.count_nonzero(inc))
    stats["pairs"] += n_inc - int(torch.count_nonzero(refused.logical_and_(inc)))
    if n_inc == 0:
        done |= counts > 0
        return None
    # T in front of the pair = T after it / (1 - alpha); alpha <= 0.999 so the division is safe.
    trans = torch.exp(log_t_after.to(dtype)).div_(1.0 - alpha)
    if n_inc < n_ok:
        if n_ok - n_inc <= _MAX_ZERO_FILL * n_ok:
            # Few refused pairs: keep them with alpha = 0 (no weight, no gradient) instead of compacting 6 arrays.
            refused = torch.nonzero(~inc).squeeze(1)
            refused_counts = torch.bincount(pix.index_select(0, refused), minlength=n_pix)
            alpha.index_fill_(0, refused, 0.0)
            trans.index_fill_(0, refused, 0.0)
            kept_counts = counts - refused_counts
        else:
            keep = torch.nonzero(inc).squeeze(1)
            pix, pgid, alpha, trans, span, local = (
                t.index_select(0, keep) for t in (pix, pgid, alpha, trans, span, local)
            )
            kept_counts = torch.bincount(pix, minlength=n_pix)
        done |= kept_counts < counts  # a pair was refused: the pixel is finished
    else:
        kept_counts = counts
    # The pixel's transmittance now is T after its last kept pair (kept pairs are a prefix of each pixel's run).
    has = torch.nonzero(kept_counts).squeeze(1)
    last = starts.index_select(0, has) + kept_counts.index_select(0, has) - 1
    carry.index_copy_(0, has, log_t_after.index_select(0, last))
    return pix, pgid, alpha, trans, span, local, s_ax, s_dy


# When at most this fraction of the candidate pairs of a chunk is refused by the transmittance stop, they are kept with
# alpha = 0 rather than compacted away (compaction costs a pass per array; zero pairs cost little later).
_MAX_ZERO_FILL = 0.25
# log of gsplat's stop threshold: a pair is composited only if T after it stays > 1e-4.
_LOG_MIN_TRANSMITTANCE = math.log(MIN_TRANSMITTANCE)


# ----------------------------------------------------------------------------------------------------------------------
# Compositing with a hand-written backward pass
# ----------------------------------------------------------------------------------------------------------------------


class _Composite(torch.autograd.Function):
    """Alpha compositing of the pairs of a PairList. Inputs: means2d [1, N, 2], conics [N, 3], colors [N, C],
    opacities [N], background [C] (or None). Outputs: render [H*W, C], alpha [H*W]."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, pairs: PairList, absgrad: bool):
        n_gauss = colors.shape[0]
        weights = [chunk.pixel_matrix(n_gauss) for chunk in pairs.chunks]
        render = colors.new_zeros(pairs.log_t_final.numel(), colors.shape[1])
        if colors.shape[1] > 0:
            for w in weights:
                render += w @ colors
        t_final = torch.exp(pairs.log_t_final).to(colors.dtype)
        if background is not None:
            render += t_final[:, None] * background[None, :]
        ctx.pairs = pairs
        ctx.weights = weights
        ctx.absgrad = absgrad
        ctx.has_background = background is not None
        ctx.save_for_backward(means2d, conics, colors, opacities, background if background is not None else colors)
        return render, 1.0 - t_final

    @staticmethod
    def backward(ctx, grad_render, grad_alpha):
        means2d, conics, colors, opacities, background = ctx.saved_tensors
        pairs: PairList = ctx.pairs
        dtype = colors.dtype
        device = colors.device
        n_gauss = colors.shape[0]
        grad_render = grad_render.contiguous()
        t_final = torch.exp(pairs.log_t_final)
        # dL/dT_final * T_final per pixel (T_final enters the render through the background and alpha = 1 - T)
        tail = -grad_alpha.to(torch.float64)
        if ctx.has_background:
            tail = tail + (grad_render @ background).to(torch.float64)
        behind_chunk = t_final * tail  # + sum of w v over the chunks behind the current one, per pixel

        sums = torch.zeros(8 if ctx.absgrad else 6, n_gauss, dtype=dtype, device=device)
        grad_colors = torch.zeros_like(colors) if ctx.needs_input_grad[2] else None
        a, b, c = conics.detach().unbind(-1)
        for chunk, weights in zip(reversed(pairs.chunks), reversed(ctx.weights), strict=True):
            n_pairs = chunk.pix.numel()
            # v_k = colour_k . dL/drender at the pair's pixel: a sampled dense-dense product on the pattern of W.
            if colors.shape[1] > 0:
                v = torch.sparse.sampled_addmm(weights, grad_render, colors.T, beta=0.0).values()
            else:
                v = torch.zeros(n_pairs, dtype=dtype, device=device)
            # dL/dalpha_k = T_k v_k - (sum_{j behind k} w_j v_j + T_final dL/dT_final) / (1 - alpha_k), per pixel.
            csum = torch.cumsum((chunk.weight * v).to(torch.float64), 0)
            ends = torch.cumsum(chunk.counts, 0)
            at_end = torch.where(chunk.counts > 0, csum.index_select(0, (ends - 1).clamp(0, n_pairs - 1)), 0.0)
            behind = (at_end + behind_chunk).index_select(0, chunk.pix).sub_(csum).to(dtype)
            if len(pairs.chunks) > 1:  # this chunk's per-pixel totals are behind the chunks in front of it
                starts = ends - chunk.counts
                before = torch.where(starts > 0, csum.index_select(0, (starts - 1).clamp(0, n_pairs - 1)), 0.0)
                behind_chunk += torch.where(chunk.counts > 0, at_end - before, 0.0)
            grad_a = (chunk.trans * v).sub_(behind.div_(1.0 - chunk.alpha))
            # alpha = o exp(-sigma): d/dsigma = -alpha (none where the 0.999 clamp is active, as gsplat).
            grad_sigma = torch.where(chunk.alpha < MAX_ALPHA, grad_a.mul_(chunk.alpha).neg_(), 0.0)
            # Per-Gaussian sums (1-D scatter-adds); conic and opacity are constant per Gaussian: out of the sums.
            gid = chunk.gid
            dx, dy = chunk.dx, chunk.dy
            gs_dx = grad_sigma * dx
            gs_dy = grad_sigma * dy
            per_pair = [grad_sigma, gs_dx, gs_dy, gs_dx * dx, gs_dx * dy, gs_dy * dy]
            if ctx.absgrad:
                pa, pb, pc = (t.index_select(0, gid) for t in (a, b, c))
                per_pair += [(pa * gs_dx).add_(pb * gs_dy).abs_(), (pb * gs_dx).add_(pc * gs_dy).abs_()]
            for row, values in zip(sums, per_pair, strict=True):
                row.index_add_(0, gid, values)
            if grad_colors is not None:
                grad_colors += _weights_transposed_times(chunk, grad_render, n_gauss)

        s_sig, s_dx, s_dy, s_xx, s_xy, s_yy = sums[:6]
        grad_means2d = torch.stack([a * s_dx + b * s_dy, b * s_dx + c * s_dy], dim=-1).unsqueeze(0)
        grad_conics = torch.stack([0.5 * s_xx, s_xy, 0.5 * s_yy], dim=-1)
        grad_opacities = -s_sig / opacities.detach().clamp_min(ALPHA_THRESHOLD)
        if ctx.absgrad:
            means2d.absgrad = sums[6:8].T.unsqueeze(0)
        grad_background = (t_final.to(dtype) @ grad_render) if ctx.has_background else None
        return grad_means2d, grad_conics, grad_colors, grad_opacities, grad_background, None, None


# Up to this many channels, W^T G is computed channel by channel with 1-D scatter-adds; above, through a CSR matrix of
# W^T (which needs the pairs grouped by Gaussian: one sort).
_MAX_SCATTER_CHANNELS = 6


def _weights_transposed_times(pairs: PairChunk, grad_render: Tensor, n_gauss: int) -> Tensor:
    """W^T @ grad_render: [N, C] gradient of the colours, W the [H*W, N] compositing weights."""
    n_ch = grad_render.shape[1]
    out_dtype = grad_render.dtype
    if n_ch == 0 or pairs.pix.numel() == 0:
        return torch.zeros(n_gauss, n_ch, dtype=out_dtype, device=grad_render.device)
    if n_ch <= _MAX_SCATTER_CHANNELS:
        columns = grad_render.T.contiguous()
        out = torch.zeros(n_ch, n_gauss, dtype=out_dtype, device=grad_render.device)
        for ch in range(n_ch):
            out[ch].index_add_(0, pairs.gid, columns[ch].index_select(0, pairs.pix).mul_(pairs.weight))
        return out.T
    by_gauss = torch.argsort(pairs.gid).to(pairs.gid.dtype)
    crow = _offsets(torch.bincount(pairs.gid, minlength=n_gauss), pairs.pix.dtype)
    transposed = _csr(
        crow, pairs.pix.index_select(0, by_gauss), pairs.weight.index_select(0, by_gauss),
        (n_gauss, pairs.counts.numel()),
    )
    return transposed @ grad_render


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
