"""The torch rasterizer against gsplat's rules: projection vs gsplat's PyTorch reference, compositing vs a float64
pixel-by-pixel transcription of gsplat's CUDA forward kernel, gradients vs finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from gags.errors import GagsError
from gags.splat import rasterize
from gags.splat.sh import spherical_harmonics
from gags.splat.torch_backend import (
    build_pairs,
    composite,
    project_gaussians,
)

ti = pytest.importorskip("gsplat.cuda._torch_impl")


def make_camera(width: int, height: int, dtype=torch.float64):
    f = 0.9 * width
    K = torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=dtype)
    # A camera looking at the origin from z = -4, slightly rotated so no axis is trivial.
    angle = 0.2
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]], dtype=dtype)
    viewmat = torch.eye(4, dtype=dtype)
    viewmat[:3, :3] = rot
    viewmat[:3, 3] = torch.tensor([0.1, -0.05, 4.0], dtype=dtype)
    return viewmat, K


def make_scene(n: int, seed: int, channels: int = 3, dtype=torch.float64, scale=(0.05, 0.4), opacity=(0.05, 1.0)):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([2.5, 2.0, 2.0], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = scale[0] + (scale[1] - scale[0]) * torch.rand(n, 3, generator=g, dtype=dtype)
    opacities = opacity[0] + (opacity[1] - opacity[0]) * torch.rand(n, generator=g, dtype=dtype)
    colors = torch.rand(n, channels, generator=g, dtype=dtype)
    return means, quats, scales, opacities, colors


# ----------------------------------------------------------------------------------------------------------------------
# Reference compositing: gsplat's rasterize_to_pixels_3dgs_fwd_kernel, one pixel at a time, in float64.
# ----------------------------------------------------------------------------------------------------------------------


def reference_composite(means2d, conics, opacities, colors, depths, radii, width, height, background=None):
    """Returns render [H, W, C], alpha [H, W, 1], number of pixels that stopped early, number of clamped alphas."""
    m = means2d.detach().double().tolist()
    con = conics.detach().double().tolist()
    op = opacities.detach().double().tolist()
    col = colors.detach().double().tolist()
    dep = depths.detach().double().tolist()
    visible = [i for i in range(len(op)) if int(radii[i, 0]) > 0 and int(radii[i, 1]) > 0]
    order = sorted(visible, key=lambda i: (dep[i], i))
    n_ch = colors.shape[1]
    bg = [0.0] * n_ch if background is None else background.detach().double().tolist()
    render = torch.zeros(height, width, n_ch, dtype=torch.float64)
    alphas = torch.zeros(height, width, 1, dtype=torch.float64)
    stopped = clamped = 0
    for i in range(height):
        for j in range(width):
            px, py = j + 0.5, i + 0.5
            T = 1.0
            out = [0.0] * n_ch
            for g in order:
                a, b, c = con[g]
                dx, dy = m[g][0] - px, m[g][1] - py
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(0.999, op[g] * math.exp(-sigma))
                if sigma < 0.0 or alpha < 1.0 / 255.0:
                    continue
                next_T = T * (1.0 - alpha)
                if next_T <= 1e-4:
                    stopped += 1
                    break
                clamped += alpha == 0.999
                for k in range(n_ch):
                    out[k] += col[g][k] * alpha * T
                T = next_T
            alphas[i, j, 0] = 1.0 - T
            for k in range(n_ch):
                render[i, j, k] = out[k] + T * bg[k]
    return render, alphas, stopped, clamped


def _project_reference(means, quats, scales, viewmat, K, width, height):
    covars, _ = ti._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = ti._fully_fused_projection(
        means, covars, viewmat[None], K[None], width, height, eps2d=0.3, near_plane=0.01, far_plane=1e10
    )
    return radii[0], means2d[0], depths[0], conics[0]


# ----------------------------------------------------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------------------------------------------------


def _projection_scene(dtype):
    W, H = 64, 48
    viewmat, K = make_camera(W, H, dtype)
    means, quats, scales, _, _ = make_scene(60, seed=1, dtype=dtype)
    extra = torch.tensor(
        [
            [0.0, 0.0, -4.5],  # behind the camera
            [0.0, 0.0, -3.995],  # closer than the near plane
            [40.0, 0.0, 0.0],  # far off-screen
            [3.4, 0.0, -1.0],  # outside 1.3x the field of view but large enough to reach the image
        ],
        dtype=dtype,
    )
    means = torch.cat([means, extra])
    quats = torch.cat([quats, torch.tensor([[1.0, 0, 0, 0]] * 4, dtype=dtype)])
    scales = torch.cat([scales, torch.tensor([[0.1, 0.1, 0.1]] * 3 + [[1.5, 1.5, 1.5]], dtype=dtype)])
    # opacity 1: gsplat's PyTorch reference uses the plain 3.33 sigma extent, which the opacity-aware rule matches at 1.
    opacities = torch.ones(means.shape[0], dtype=dtype)
    return means, quats, scales, opacities, viewmat, K, W, H


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_projection_matches_gsplat_reference(dtype):
    means, quats, scales, opacities, viewmat, K, W, H = _projection_scene(dtype)
    proj = project_gaussians(means, quats, scales, opacities, viewmat, K, W, H)
    radii, means2d, depths, conics = _project_reference(means, quats, scales, viewmat, K, W, H)
    ours_vis = proj.visible
    ref_vis = (radii > 0).all(-1)
    assert torch.equal(ours_vis, ref_vis)
    assert 50 < int(ours_vis.sum()) < means.shape[0] - 2  # culling happened and most are in view
    assert bool(ours_vis[-1])  # the Gaussian beyond the clamp region reaches the image
    v = ours_vis
    torch.testing.assert_close(proj.means2d[v], means2d[v], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(proj.depths[v], depths[v], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(proj.conics[v], conics[v], atol=1e-4, rtol=1e-4)
    assert int((proj.radii[v] - radii[v]).abs().max()) <= 1
    assert proj.radii.dtype == torch.int32 and proj.radii.shape == (means.shape[0], 2)


def test_projection_gradients_match_gsplat_reference():
    means, quats, scales, opacities, viewmat, K, W, H = _projection_scene(torch.float64)
    g = torch.Generator().manual_seed(3)
    wm, wd, wc = torch.randn(means.shape[0], 2, generator=g), torch.randn(means.shape[0], generator=g), torch.randn(
        means.shape[0], 3, generator=g
    )
    grads = []
    for which in ("ours", "ref"):
        p = [t.clone().requires_grad_(True) for t in (means, quats, scales)]
        if which == "ours":
            proj = project_gaussians(p[0], p[1], p[2], opacities, viewmat, K, W, H)
            m2, d, c, vis = proj.means2d, proj.depths, proj.conics, proj.visible
        else:
            radii, m2, d, c = _project_reference(p[0], p[1], p[2], viewmat, K, W, H)
            vis = (radii > 0).all(-1)
        loss = (wm.double() * m2)[vis].sum() + (wd.double() * d)[vis].sum() + (wc.double() * c)[vis].sum() * 10.0
        grads.append(torch.autograd.grad(loss, p))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, atol=1e-8, rtol=1e-7)


def test_radius_is_opacity_aware():
    means, quats, scales, _, viewmat, K, W, H = _projection_scene(torch.float64)
    opacities = torch.linspace(0.002, 1.0, means.shape[0], dtype=torch.float64)
    proj = project_gaussians(means, quats, scales, opacities, viewmat, K, W, H)
    _, _, _, conics = _project_reference(means, quats, scales, viewmat, K, W, H)
    vis = proj.visible
    assert not bool(vis[opacities < 1.0 / 255.0].any())  # faint Gaussians are culled
    det = conics[:, 0] * conics[:, 2] - conics[:, 1] ** 2
    cov_diag = torch.stack([conics[:, 2] / det, conics[:, 0] / det], -1)  # diagonal of the blurred 2D covariance
    extend = torch.sqrt(2.0 * torch.log(opacities * 255.0)).clamp_max(3.33)
    expected = torch.ceil(extend[:, None] * cov_diag.sqrt())
    assert int((proj.radii[vis].double() - expected[vis]).abs().max()) <= 1
    assert bool((proj.radii[vis][:10] < expected[vis][-10:].max()).all())


# ----------------------------------------------------------------------------------------------------------------------
# Compositing
# ----------------------------------------------------------------------------------------------------------------------


def _render_and_reference(scene, W, H, background=None, max_chunk_pairs=1 << 21, render_mode="RGB"):
    means, quats, scales, opacities, colors = scene
    viewmat, K = make_camera(W, H, torch.float64)
    render, alpha, meta = rasterize(
        means, quats, scales, opacities, colors, viewmat, K, W, H, backgrounds=background,
        max_chunk_pairs=max_chunk_pairs, render_mode=render_mode,
    )
    ref = reference_composite(
        meta["means2d"][0], meta["conics"][0], opacities, colors, meta["depths"][0], meta["radii"][0], W, H, background
    )
    return render, alpha, meta, ref


@pytest.mark.parametrize("channels", [1, 3, 16])
def test_compositing_matches_kernel_reference(channels):
    scene = make_scene(40, seed=channels, channels=channels)
    render, alpha, _meta, (ref_render, ref_alpha, _, _) = _render_and_reference(scene, 20, 16)
    assert render.shape == (16, 20, channels) and alpha.shape == (16, 20, 1)
    assert float(ref_alpha.max()) > 0.5
    assert float((render - ref_render).abs().max()) <= 1e-9
    assert float((alpha - ref_alpha).abs().max()) <= 1e-9


def test_compositing_early_stop_and_clamp_match_reference():
    # Dense, nearly opaque layers: many pixels reach T <= 1e-4, some alphas hit the 0.999 clamp.
    means, quats, scales, opacities, colors = make_scene(60, seed=7, scale=(0.2, 0.6), opacity=(0.7, 1.0))
    opacities[:5] = 1.0
    scales[:5] = 1.0
    # A large opaque Gaussian in front of the camera: its centre pixels have sigma < 0.001, alpha clamps at 0.999.
    viewmat, _ = make_camera(24, 18)
    means[0] = viewmat[:3, :3].T @ (torch.tensor([0.05, 0.0, 1.5], dtype=torch.float64) - viewmat[:3, 3])
    scales[0] = 3.0
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    render, alpha, _meta, (ref_render, ref_alpha, stopped, clamped) = _render_and_reference(
        (means, quats, scales, opacities, colors), 24, 18, background=bg
    )
    assert stopped > 50 and clamped > 0
    assert float((render - ref_render).abs().max()) <= 1e-9
    assert float((alpha - ref_alpha).abs().max()) <= 1e-9


@pytest.mark.parametrize("zero_fill", [0.0, 1.0])
def test_refused_pairs_compacted_or_zero_filled_match_reference(monkeypatch, zero_fill):
    # Pairs behind the stop point are either dropped (compaction) or kept with alpha = 0: same image, same gradients.
    import gags.splat.torch_backend as tb

    monkeypatch.setattr(tb, "_MAX_ZERO_FILL", zero_fill)
    means, quats, scales, opacities, colors = make_scene(60, seed=7, scale=(0.2, 0.6), opacity=(0.7, 1.0))
    render, alpha, meta, (ref_render, ref_alpha, stopped, _) = _render_and_reference(
        (means, quats, scales, opacities, colors), 24, 18
    )
    assert stopped > 50
    stats = meta["pair_stats"]
    assert (stats["stored_pairs"] - stats["pairs"] >= stopped) == (zero_fill == 1.0)
    assert float((render - ref_render).abs().max()) <= 1e-9
    assert float((alpha - ref_alpha).abs().max()) <= 1e-9


def test_chunked_build_equals_single_pass():
    scene = make_scene(80, seed=11, scale=(0.1, 0.5), opacity=(0.5, 1.0))
    W, H = 24, 20
    _render1, _alpha1, meta1, (ref_render, ref_alpha, stopped, _) = _render_and_reference(scene, W, H)
    render2, alpha2, meta2, _ = _render_and_reference(scene, W, H, max_chunk_pairs=300)
    assert meta1["pair_stats"]["chunks"] == 1 and meta2["pair_stats"]["chunks"] > 5
    assert stopped > 0
    assert float((render2 - ref_render).abs().max()) <= 1e-9
    assert float((alpha2 - ref_alpha).abs().max()) <= 1e-9
    assert meta2["n_pairs"] == meta1["n_pairs"]
    # Same gradients through the chunked pair lists.
    viewmat, K = make_camera(W, H)
    weights = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = []
    for chunk in (1 << 21, 300):
        inputs = [t.clone().requires_grad_(True) for t in scene]
        render, alpha, _ = rasterize(*inputs, viewmat, K, W, H, max_chunk_pairs=chunk)
        ((render * weights).sum() + alpha.sum()).backward()
        grads.append([t.grad for t in inputs])
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-9)


def test_render_modes_and_backgrounds():
    means, quats, scales, opacities, colors = make_scene(40, seed=5)
    W, H = 20, 16
    viewmat, K = make_camera(W, H)
    bg = torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64)
    out = {}
    for mode in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        out[mode] = rasterize(
            means, quats, scales, opacities, colors, viewmat, K, W, H, render_mode=mode, backgrounds=bg
        )
    ref_rgb, ref_alpha, _, _ = reference_composite(
        out["RGB"][2]["means2d"][0], out["RGB"][2]["conics"][0], opacities, colors, out["RGB"][2]["depths"][0],
        out["RGB"][2]["radii"][0], W, H, bg,
    )
    depths = out["RGB"][2]["depths"][0]
    ref_d, _, _, _ = reference_composite(
        out["RGB"][2]["means2d"][0], out["RGB"][2]["conics"][0], opacities, depths[:, None], depths,
        out["RGB"][2]["radii"][0], W, H,
    )
    ref_ed = ref_d / ref_alpha.clamp(min=1e-10)
    assert out["RGB"][0].shape == (H, W, 3)
    assert out["D"][0].shape == (H, W, 1) and out["ED"][0].shape == (H, W, 1)
    assert out["RGB+D"][0].shape == (H, W, 4) and out["RGB+ED"][0].shape == (H, W, 4)
    tol = 1e-9
    assert float((out["RGB"][0] - ref_rgb).abs().max()) <= tol
    assert float((out["D"][0] - ref_d).abs().max()) <= tol
    assert float((out["ED"][0] - ref_ed).abs().max()) <= tol
    assert float((out["RGB+D"][0][..., :3] - ref_rgb).abs().max()) <= tol
    assert float((out["RGB+D"][0][..., 3:] - ref_d).abs().max()) <= tol  # depth channel gets no background
    assert float((out["RGB+ED"][0][..., 3:] - ref_ed).abs().max()) <= tol
    for mode in out:
        assert float((out[mode][1] - ref_alpha).abs().max()) <= tol
    # The background shows where nothing is: some pixels are empty in this scene.
    empty = ref_alpha[..., 0] < 1e-12
    assert bool(empty.any())
    assert torch.allclose(out["RGB"][0][empty], bg.expand(int(empty.sum()), 3))


def test_sh_colors_match_gsplat():
    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(50, 3, generator=g, dtype=torch.float64)
    coeffs = torch.randn(50, 16, 3, generator=g, dtype=torch.float64)
    for degree in range(4):
        ours = spherical_harmonics(degree, dirs, coeffs)
        ref = ti._spherical_harmonics(degree, dirs, coeffs)
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)


def test_sh_rendering_is_view_dependent_colour_plus_half():
    means, quats, scales, opacities, _ = make_scene(30, seed=2)
    W, H = 16, 12
    viewmat, K = make_camera(W, H)
    sh = torch.randn(30, 16, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.3
    render, _, meta = rasterize(means, quats, scales, opacities, sh, viewmat, K, W, H, sh_degree=2)
    campos = torch.linalg.inv(viewmat)[:3, 3]
    colors = (ti._spherical_harmonics(2, means - campos, sh) + 0.5).clamp_min(0.0)
    ref, _, _, _ = reference_composite(
        meta["means2d"][0], meta["conics"][0], opacities, colors, meta["depths"][0], meta["radii"][0], W, H
    )
    assert float((render - ref).abs().max()) <= 1e-9


# ----------------------------------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------------------------------


def _tiny_scene(seed=0, n=5, opacity=(0.3, 0.8)):
    return make_scene(n, seed=seed, scale=(0.2, 0.6), opacity=opacity)


def test_gradcheck_full_rasterizer():
    means, quats, scales, opacities, colors = _tiny_scene()
    W, H = 10, 8
    viewmat, K = make_camera(W, H)
    bg = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)
    inputs = [t.clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors, bg)]

    def fn(m, q, s, o, c, b):
        render, alpha, _ = rasterize(m, q, s, o, c, viewmat, K, W, H, backgrounds=b, render_mode="RGB+ED")
        return render, alpha

    # fast mode (random projections of the Jacobian, two seeds) keeps this cheap; compositing alone is checked in full
    for seed in (0, 1):
        torch.manual_seed(seed)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def _stops_and_clamps_scene():
    means, quats, scales, opacities, colors = make_scene(12, seed=3, scale=(0.3, 0.8), opacity=(0.8, 1.0))
    W, H = 10, 8
    viewmat, K = make_camera(W, H)
    opacities[0] = 1.0
    means[0] = viewmat[:3, :3].T @ (torch.tensor([0.02, 0.01, 1.5], dtype=torch.float64) - viewmat[:3, 3])
    scales[0] = 3.0
    proj = project_gaussians(means, quats, scales, opacities, viewmat, K, W, H)
    return proj, opacities, colors, W, H


def _autograd_composite(means2d, conics, colors, opacities, background, pairs, W, H):
    """The same compositing written with differentiable torch ops on the fixed pair list (per-pixel padded cumprod)."""
    use = pairs.cat("alpha") > 0
    pix, gid = pairs.cat("pix")[use].long(), pairs.cat("gid")[use].long()
    pix, order = torch.sort(pix, stable=True)  # chunks are front to back: by pixel, then depth
    gid = gid[order]
    px = (pix % W).double() + 0.5
    py = torch.div(pix, W, rounding_mode="floor").double() + 0.5
    dx = means2d[0, gid, 0] - px
    dy = means2d[0, gid, 1] - py
    con = conics[gid]
    sigma = 0.5 * (con[:, 0] * dx * dx + con[:, 2] * dy * dy) + con[:, 1] * dx * dy
    alpha = torch.clamp_max(opacities[gid] * torch.exp(-sigma), 0.999)
    counts = torch.bincount(pix, minlength=W * H)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(pix.numel()) - starts[pix]
    one_minus = torch.ones(W * H, int(counts.max()) + 1, dtype=torch.float64)
    one_minus = one_minus.index_put((pix, slot + 1), 1.0 - alpha)
    trans = torch.cumprod(one_minus, dim=1)  # trans[:, k] = T in front of slot k
    weight = alpha * trans[pix, slot]
    render = torch.zeros(W * H, colors.shape[1], dtype=torch.float64).index_add(0, pix, weight[:, None] * colors[gid])
    t_final = trans[:, -1]
    render = render + t_final[:, None] * background[None, :]
    return render.view(H, W, -1), (1.0 - t_final).view(H, W, 1)


def test_compositing_backward_matches_autograd_with_stops_and_clamps():
    # Scene where pixels stop early and alphas clamp; the hand-written backward against autograd on the same pairs.
    proj, opacities, colors, W, H = _stops_and_clamps_scene()
    pairs = build_pairs(proj.means2d, proj.conics, opacities, proj.depths, proj.radii, W, H)
    assert bool((pairs.cat("alpha") >= 0.999).any())
    assert float(pairs.log_t_final.min()) < math.log(1e-3)
    bg = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    w_render, w_alpha = torch.randn(H, W, 3, generator=g, dtype=torch.float64), torch.randn(H, W, 1, generator=g,
                                                                                             dtype=torch.float64)
    results = []
    for impl in (composite, _autograd_composite):
        inputs = [
            t.detach().clone().requires_grad_(True) for t in (proj.means2d[None], proj.conics, colors, opacities, bg)
        ]
        if impl is composite:
            render, alpha = composite(*inputs[:4], pairs, W, H, background=inputs[4])
        else:
            render, alpha = _autograd_composite(*inputs, pairs, W, H)
        ((render * w_render).sum() + (alpha * w_alpha).sum()).backward()
        results.append((render.detach(), alpha.detach(), [t.grad for t in inputs]))
    (r1, a1, g1), (r2, a2, g2) = results
    assert float((r1 - r2).abs().max()) <= 1e-12 and float((a1 - a2).abs().max()) <= 1e-12
    for ours, ref in zip(g1, g2):
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-9)


def test_gradcheck_compositing_with_stops_and_clamps():
    proj, opacities, colors, W, H = _stops_and_clamps_scene()
    bg = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)
    inputs = [
        t.detach().clone().requires_grad_(True) for t in (proj.means2d[None], proj.conics, colors, opacities, bg)
    ]

    def fn(m2, con, c, o, b):
        p = build_pairs(m2[0], con, o, proj.depths, proj.radii, W, H)
        return composite(m2, con, c, o, p, W, H, background=b)

    # eps small enough that no pair enters or leaves the composited set; fast mode (random projections) keeps it cheap
    for seed in (0, 1):
        torch.manual_seed(seed)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-7, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_absgrad_is_attached_to_meta_means2d():
    means, quats, scales, opacities, colors = make_scene(30, seed=9)
    means.requires_grad_(True)
    W, H = 16, 12
    viewmat, K = make_camera(W, H)
    render, _alpha, meta = rasterize(means, quats, scales, opacities, colors, viewmat, K, W, H, absgrad=True)
    meta["means2d"].retain_grad()
    (render * torch.randn_like(render)).sum().backward()
    grad, absgrad = meta["means2d"].grad, meta["means2d"].absgrad
    assert absgrad.shape == grad.shape == (1, 30, 2)
    assert bool((absgrad >= grad.abs() - 1e-12).all())
    assert float(absgrad.sum()) > float(grad.abs().sum())  # per-pixel terms of both signs do not cancel


def test_empty_and_fully_culled_scenes_show_the_background():
    viewmat, K = make_camera(16, 12, torch.float32)
    bg = torch.tensor([1.0, 0.0, 0.5])
    for n in (0, 4):
        means = torch.zeros(n, 3)
        means[:, 2] = -10.0  # behind the camera
        render, alpha, meta = rasterize(
            means, torch.randn(n, 4), torch.rand(n, 3), torch.rand(n), torch.rand(n, 3), viewmat, K, 16, 12,
            backgrounds=bg, render_mode="RGB+ED",
        )
        assert render.shape == (12, 16, 4) and alpha.shape == (12, 16, 1)
        assert float(alpha.abs().max()) == 0.0
        assert torch.equal(render[..., :3], bg.expand(12, 16, 3)) and float(render[..., 3].abs().max()) == 0.0
        assert meta["n_pairs"] == 0 and int(meta["radii"].abs().sum()) == 0


def test_camera_dtype_follows_the_gaussians():
    means, quats, scales, opacities, colors = (t.float() for t in make_scene(20, seed=1))
    viewmat, K = make_camera(16, 12, torch.float64)
    render, alpha, _ = rasterize(means, quats, scales, opacities, colors, viewmat, K, 16, 12)
    assert render.dtype == torch.float32 and float(alpha.max()) > 0.1


def test_gsplat_backend_is_called_with_one_camera_unpacked(monkeypatch):
    # No CUDA here: check the dispatch and the argument/shape conventions against a stand-in for gsplat.rasterization.
    import importlib

    import gsplat

    rz = importlib.import_module("gags.splat.rasterize")  # the module (gags.splat.rasterize is also the function)

    seen = {}

    def fake_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kw):
        seen.update(kw, viewmats=viewmats.shape, Ks=Ks.shape)
        n = means.shape[0]
        meta = {"means2d": torch.zeros(1, n, 2), "radii": torch.ones(1, n, 2, dtype=torch.int32), "n_cameras": 1}
        return torch.zeros(1, height, width, 4), torch.zeros(1, height, width, 1), meta

    monkeypatch.setattr(gsplat, "rasterization", fake_rasterization)
    monkeypatch.setattr(rz, "_pick_backend", lambda backend, means: "gsplat")
    means, quats, scales, opacities, colors = (t.float() for t in make_scene(6, seed=0))
    viewmat, K = make_camera(8, 6, torch.float32)
    render, alpha, meta = rasterize(
        means, quats, scales, opacities, colors, viewmat, K, 8, 6, render_mode="RGB+ED", backgrounds=torch.ones(3),
        absgrad=True,
    )
    assert render.shape == (6, 8, 4) and alpha.shape == (6, 8, 1) and meta["means2d"].shape == (1, 6, 2)
    assert seen["viewmats"] == (1, 4, 4) and seen["Ks"] == (1, 3, 3)
    assert seen["packed"] is False and seen["absgrad"] is True and seen["render_mode"] == "RGB+ED"
    assert tuple(seen["backgrounds"].shape) == (1, 3)


# ----------------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_gags_error():
    means, quats, scales, opacities, colors = make_scene(5, seed=0)
    viewmat, K = make_camera(8, 8)
    with pytest.raises(GagsError, match="quats"):
        rasterize(means, quats[:, :3], scales, opacities, colors, viewmat, K, 8, 8)
    with pytest.raises(GagsError, match="render_mode"):
        rasterize(means, quats, scales, opacities, colors, viewmat, K, 8, 8, render_mode="RGBD")
    with pytest.raises(GagsError, match="SH colors"):
        rasterize(means, quats, scales, opacities, colors, viewmat, K, 8, 8, sh_degree=1)
    with pytest.raises(GagsError, match="backgrounds"):
        rasterize(means, quats, scales, opacities, colors, viewmat, K, 8, 8, backgrounds=torch.zeros(4))
    if not torch.cuda.is_available():
        with pytest.raises(GagsError, match="CUDA"):
            rasterize(means, quats, scales, opacities, colors, viewmat, K, 8, 8, backend="gsplat")
