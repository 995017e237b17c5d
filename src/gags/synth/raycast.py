"""Vectorised analytic ray casting of a ``World``: RGB, z-depth and per-pixel ids at three levels.

One loop over primitives (never over pixels): each primitive is intersected in closed form with the rays that can
reach it (its bounding sphere's screen rectangle for camera rays, a grid on the light's plane for shadow rays).
Shading is Lambert + ambient with hard shadows from one directional light; anti-aliasing by ``supersample`` x
``supersample`` samples per pixel.

Conventions of ``Render``:
  rgb:   [H, W, 3] uint8, the mean of the samples.
  depth: [H, W] float32 z-depth along the optical axis (not the ray length), the mean over the samples of the pixel
         that hit a surface; 0 where no sample hits anything (the room's walls, floor and ceiling close every scene,
         so 0 only occurs in hand-built worlds).
  ids:   [3, H, W] int32, levels sub-part, part, whole (``gags.synth.world.LEVELS``); -1 where nothing is hit. The
         three levels come from one and the same sample of the pixel (the sample whose sub-part is the most frequent
         among the pixel's samples), so they are always nested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gags.cameras import Camera
from gags.errors import GagsError
from gags.synth.world import TEXTURES, World
from gags.threads import scoped_torch_threads

AMBIENT = 0.32
"""Share of light that reaches every surface (no shadow, no orientation)."""
DIFFUSE = 0.78
"""Strength of the directional light (Lambert); AMBIENT + DIFFUSE > 1 lets lit white surfaces saturate a little."""
T_MIN = 1e-5
"""Smallest accepted ray parameter (metres) for camera rays."""
SHADOW_OFFSET = 2e-4
"""Shadow rays start this far (metres) off the surface along its normal, so a surface does not shadow itself."""
SHADOW_GRID = 96
"""Cells per side of the grid that buckets shadow rays on the plane perpendicular to the light."""
MAX_SUPERSAMPLE = 4
ROUNDED_BOX_STEPS = 48
"""Sphere-tracing steps for rounded boxes (a distance bound that converges in a few steps away from grazing rays)."""
ROUNDED_BOX_EPS = 2e-6
"""A sphere-traced rounded-box hit is accepted when the distance bound is under this (metres)."""
TORUS_IMAG_TOL = 1e-3
"""Roots of the (unit-scaled) torus quartic with a larger imaginary part are not intersections."""


@dataclass
class Render:
    """One rendered view; see the module docstring for the conventions."""

    rgb: np.ndarray
    """[H, W, 3] uint8."""
    depth: np.ndarray
    """[H, W] float32 z-depth, 0 where nothing is hit."""
    ids: np.ndarray
    """[3, H, W] int32, levels (sub-part, part, whole), -1 where nothing is hit."""


@dataclass
class Compiled:
    """A world's primitives as tensors for the renderer."""

    kinds: list[str]
    params: list[dict[str, float]]
    caps: list[str]
    clips: list[tuple[torch.Tensor, float] | None]
    rotation: torch.Tensor
    """[P, 3, 3] float32, local -> world."""
    translation: torch.Tensor
    """[P, 3] float32."""
    half: torch.Tensor
    """[P, 3] float64 half extents of each primitive's local bounding box."""
    radii: torch.Tensor
    """[P] float64 radius of each primitive's bounding sphere (about its local origin = ``translation``)."""
    casts_shadow: torch.Tensor
    """[P] bool."""
    encloses: torch.Tensor
    """[P] bool: room surfaces, tested only against rays that hit nothing else."""
    ids: torch.Tensor
    """[3, P] long: sub-part, part, whole of every primitive."""
    materials: list
    light: torch.Tensor
    """[3] float32 unit vector toward the light."""


def compile_world(world: World) -> Compiled:
    """Pack ``world`` for ``render``; reuse the result across views of the same world."""
    prims = world.prims
    if not prims:
        raise GagsError("the world has no primitives to render.")
    clips = [None if p.clip is None else (torch.tensor(p.clip[0], dtype=torch.float32), float(p.clip[1]))
             for p in prims]
    ids = torch.tensor(np.stack([world.prim_subpart, world.prim_part, world.prim_whole]), dtype=torch.long)
    return Compiled(
        kinds=[p.kind for p in prims], params=[p.params for p in prims], caps=[p.caps for p in prims], clips=clips,
        rotation=torch.tensor(np.stack([p.rotation for p in prims]), dtype=torch.float32),
        translation=torch.tensor(np.stack([p.translation for p in prims]), dtype=torch.float32),
        half=torch.tensor(np.stack([p.half_extents() for p in prims]), dtype=torch.float64),
        radii=torch.tensor([p.bound_radius() for p in prims], dtype=torch.float64),
        casts_shadow=torch.tensor([p.casts_shadow for p in prims]), encloses=torch.tensor([p.encloses for p in prims]),
        ids=ids, materials=[world.subparts[s].material for s in world.prim_subpart],
        light=torch.tensor(world.light, dtype=torch.float32))


# ------------------------------------------------------------------------------------------- local-frame intersections
# Every function takes rays in the primitive's frame, o: [N, 3], d: [N, 3] (unit), tmin: [N], and returns t: [N]
# (inf where the ray misses). ``clip`` keeps local points with n . x <= offset; it applies to every surface.

INF = float("inf")


def _first(o: torch.Tensor, d: torch.Tensor, tmin: torch.Tensor, cands: list[torch.Tensor],
           valid: list[torch.Tensor], clip) -> torch.Tensor:
    """The smallest candidate t > tmin that is valid and survives the clip."""
    t = torch.stack(cands, 1)
    ok = torch.stack(valid, 1) & (t > tmin[:, None])  # NaN compares false
    if clip is not None:
        normal, offset = clip
        p = o[:, None, :] + t[..., None] * d[:, None, :]
        ok &= (p @ normal.to(p)) <= offset
    return torch.where(ok, t, torch.full_like(t, INF)).min(1).values


def _quadratic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both roots of a t^2 + b t + c = 0 (a may vanish: then the linear root, twice) and whether they are real."""
    disc = b * b - 4 * a * c
    sq = torch.sqrt(disc.clamp_min(0))
    small = a.abs() < 1e-12
    a_safe = torch.where(small, torch.ones_like(a), a)
    t1 = torch.where(small, -c / torch.where(b.abs() < 1e-30, torch.full_like(b, 1e-30), b), (-b - sq) / (2 * a_safe))
    t2 = torch.where(small, t1, (-b + sq) / (2 * a_safe))
    return t1, t2, (disc >= 0) | small


def hit_ellipsoid(o, d, tmin, params, clip=None):
    rad = torch.tensor([params["rx"], params["ry"], params["rz"]], dtype=o.dtype)
    os_, ds = o / rad, d / rad
    a = (ds * ds).sum(1)
    b = 2 * (os_ * ds).sum(1)
    c = (os_ * os_).sum(1) - 1
    t1, t2, ok = _quadratic(a, b, c)
    return _first(o, d, tmin, [t1, t2], [ok, ok], clip)


def hit_sphere(o, d, tmin, params, clip=None):
    r = params["r"]
    return hit_ellipsoid(o, d, tmin, {"rx": r, "ry": r, "rz": r}, clip)


def _frustum(o, d, tmin, r0: float, r1: float, h: float, caps: str, clip):
    """Side of the cone (frustum) whose radius goes linearly from r0 at z = -h to r1 at z = +h, plus its caps."""
    rm, k = 0.5 * (r0 + r1), (r1 - r0) / (2 * h)
    ox, oy, oz = o.unbind(1)
    dx, dy, dz = d.unbind(1)
    w = rm + k * oz
    a = dx * dx + dy * dy - k * k * dz * dz
    b = 2 * (ox * dx + oy * dy - k * dz * w)
    c = ox * ox + oy * oy - w * w
    t1, t2, ok = _quadratic(a, b, c)
    cands, valid = [], []
    for t in (t1, t2):
        z = oz + t * dz
        cands.append(t)
        valid.append(ok & (z.abs() <= h) & (rm + k * z >= 0))
    dz_safe = torch.where(dz.abs() < 1e-30, torch.full_like(dz, 1e-30), dz)
    for zc, rc, name in ((-h, r0, "bottom"), (h, r1, "top")):
        if caps in (name, "both"):
            t = (zc - oz) / dz_safe
            x, y = ox + t * dx, oy + t * dy
            cands.append(t)
            valid.append(x * x + y * y <= rc * rc)
    return _first(o, d, tmin, cands, valid, clip)


def hit_cylinder(o, d, tmin, params, caps="both", clip=None):
    return _frustum(o, d, tmin, params["r"], params["r"], params["h"], caps, clip)


def hit_cone(o, d, tmin, params, caps="both", clip=None):
    return _frustum(o, d, tmin, params["r0"], params["r1"], params["h"], caps, clip)


def _slab(o, d, half: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d_safe = torch.where(d.abs() < 1e-30, torch.full_like(d, 1e-30), d)
    t1, t2 = (-half - o) / d_safe, (half - o) / d_safe
    return torch.minimum(t1, t2).max(1).values, torch.maximum(t1, t2).min(1).values


def hit_box(o, d, tmin, params, clip=None):
    half = torch.tensor([params["hx"], params["hy"], params["hz"]], dtype=o.dtype)
    near, far = _slab(o, d, half)
    ok = near <= far
    return _first(o, d, tmin, [near, far], [ok, ok], clip)


def _rounded_box_sdf(p: torch.Tensor, inner: torch.Tensor, rr: float) -> torch.Tensor:
    q = p.abs() - inner
    return q.clamp_min(0).norm(dim=1) + q.max(1).values.clamp_max(0) - rr


def hit_rounded_box(o, d, tmin, params, clip=None):
    """Sphere tracing of the exact distance function, from where the ray enters the bounding box."""
    half = torch.tensor([params["hx"], params["hy"], params["hz"]], dtype=o.dtype)
    rr = params["rr"]
    near, far = _slab(o, d, half)
    out = torch.full_like(near, INF)
    idx = torch.nonzero((near <= far) & (far > tmin)).flatten()
    if idx.numel() == 0:
        return out
    o_, d_, far_ = o[idx], d[idx], far[idx]
    t = torch.maximum(near[idx], tmin[idx])
    inner = half - rr
    for step in range(ROUNDED_BOX_STEPS):
        dist = _rounded_box_sdf(o_ + t[:, None] * d_, inner, rr)
        t = t + dist.clamp_min(0)
        if step % 8 == 7 and bool(((dist < ROUNDED_BOX_EPS) | (t > far_)).all()):
            break
    dist = _rounded_box_sdf(o_ + t[:, None] * d_, inner, rr)
    hit = (dist < ROUNDED_BOX_EPS * 10) & (t <= far_ + 1e-6)
    out[idx] = _first(o_, d_, tmin[idx], [t], [hit], clip)
    return out


def hit_capsule(o, d, tmin, params, clip=None):
    r, h = params["r"], params["h"]
    cands, valid = [], []
    ox, oy, oz = o.unbind(1)
    dx, dy, dz = d.unbind(1)
    t1, t2, ok = _quadratic(dx * dx + dy * dy, 2 * (ox * dx + oy * dy), ox * ox + oy * oy - r * r)
    for t in (t1, t2):
        cands.append(t)
        valid.append(ok & ((oz + t * dz).abs() <= h) & ((dx * dx + dy * dy) > 1e-18))
    for zc in (-h, h):
        oc = o - torch.tensor([0.0, 0.0, zc], dtype=o.dtype)
        b = 2 * (oc * d).sum(1)
        c = (oc * oc).sum(1) - r * r
        s1, s2, ok = _quadratic(torch.ones_like(b), b, c)
        cands += [s1, s2]
        valid += [ok, ok]
    return _first(o, d, tmin, cands, valid, clip)


def hit_plane(o, d, tmin, params, clip=None):
    dz = d[:, 2]
    t = -o[:, 2] / torch.where(dz.abs() < 1e-30, torch.full_like(dz, 1e-30), dz)
    p = o + t[:, None] * d
    ok = (p[:, 0].abs() <= params["hx"]) & (p[:, 1].abs() <= params["hy"])
    return _first(o, d, tmin, [t], [ok], clip)


def hit_torus(o, d, tmin, params, clip=None):
    """Roots of the torus quartic (companion-matrix eigenvalues, then Newton polishing), in unit scale, float64."""
    R, r = params["R"], params["r"]
    scale = R + r
    out = torch.full((o.shape[0],), INF, dtype=o.dtype)
    # Cheap rejection: along the part of the ray inside the slab |z| <= r and the bounding sphere, the distance to the
    # z axis (convex in t) must reach into [R - r, R + r].
    b = (o * d).sum(1)
    disc = b * b - ((o * o).sum(1) - scale * scale)
    sq = torch.sqrt(disc.clamp_min(0))
    lo, hi = -b - sq, -b + sq
    dz = torch.where(d[:, 2].abs() < 1e-30, torch.full_like(b, 1e-30), d[:, 2])
    z1, z2 = (-r - o[:, 2]) / dz, (r - o[:, 2]) / dz
    lo, hi = torch.maximum(lo, torch.minimum(z1, z2)), torch.minimum(hi, torch.maximum(z1, z2))
    axy = d[:, 0] ** 2 + d[:, 1] ** 2
    bxy = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
    cxy = o[:, 0] ** 2 + o[:, 1] ** 2

    def rho2(t):
        return axy * t * t + 2 * bxy * t + cxy

    vertex = torch.minimum(torch.maximum(-bxy / axy.clamp_min(1e-30), lo), hi)
    maybe = (disc >= 0) & (lo <= hi) & (hi > tmin) & (rho2(vertex) <= scale * scale) & \
        (torch.maximum(rho2(lo), rho2(hi)) >= (R - r) ** 2)
    idx = torch.nonzero(maybe).flatten()
    if idx.numel() == 0:
        return out
    o, d, tmin = o[idx], d[idx], tmin[idx]
    o64, d64 = o.double() / scale, d.double()
    Rs, rs = R / scale, r / scale
    f = (o64 * d64).sum(1)
    k = (o64 * o64).sum(1) + Rs * Rs - rs * rs
    dxy = d64[:, 0] ** 2 + d64[:, 1] ** 2
    a3 = 4 * f
    a2 = 4 * f * f + 2 * k - 4 * Rs * Rs * dxy
    a1 = 4 * f * k - 8 * Rs * Rs * (o64[:, 0] * d64[:, 0] + o64[:, 1] * d64[:, 1])
    a0 = k * k - 4 * Rs * Rs * (o64[:, 0] ** 2 + o64[:, 1] ** 2)
    n = o.shape[0]
    comp = torch.zeros(n, 4, 4, dtype=torch.float64)
    comp[:, 0, 0], comp[:, 0, 1], comp[:, 0, 2], comp[:, 0, 3] = -a3, -a2, -a1, -a0
    comp[:, 1, 0] = comp[:, 2, 1] = comp[:, 3, 2] = 1.0
    roots = torch.linalg.eigvals(comp)
    t = roots.real
    ok = roots.imag.abs() < TORUS_IMAG_TOL
    coef = torch.stack([torch.ones_like(a3), a3, a2, a1, a0], 1)[:, None, :]
    for _ in range(3):  # Newton polishing of every real-ish root
        val = (((coef[..., 0] * t + coef[..., 1]) * t + coef[..., 2]) * t + coef[..., 3]) * t + coef[..., 4]
        der = ((4 * coef[..., 0] * t + 3 * coef[..., 1]) * t + 2 * coef[..., 2]) * t + coef[..., 3]
        step = val / torch.where(der.abs() < 1e-12, torch.full_like(der, 1e-12), der)
        t = torch.where(ok & (der.abs() > 1e-12), t - step, t)
    t = (t * scale).to(o.dtype)
    out[idx] = _first(o, d, tmin, list(t.unbind(1)), list(ok.unbind(1)), clip)
    return out


def intersect_local(kind: str, o, d, tmin, params, caps: str = "both", clip=None) -> torch.Tensor:
    """t: [N] of rays o, d: [N, 3] (local frame, unit d) with the primitive ``kind``; inf where missed."""
    if kind in ("cylinder", "cone"):
        return (hit_cylinder if kind == "cylinder" else hit_cone)(o, d, tmin, params, caps, clip)
    return HIT[kind](o, d, tmin, params, clip)


HIT = {"sphere": hit_sphere, "ellipsoid": hit_ellipsoid, "box": hit_box, "rounded_box": hit_rounded_box,
       "torus": hit_torus, "capsule": hit_capsule, "plane": hit_plane}


# --------------------------------------------------------------------------------------------------------- normals


def normal_local(kind: str, p: torch.Tensor, params: dict[str, float]) -> torch.Tensor:
    """Outward surface normals [N, 3] (not normalised) at local points p: [N, 3] on the primitive."""
    if kind in ("sphere", "ellipsoid"):
        rad = (torch.tensor([params["r"]] * 3, dtype=p.dtype) if kind == "sphere"
               else torch.tensor([params["rx"], params["ry"], params["rz"]], dtype=p.dtype))
        return p / rad**2
    if kind == "box":
        half = torch.tensor([params["hx"], params["hy"], params["hz"]], dtype=p.dtype)
        rel = p.abs() / half
        axis = rel.argmax(1)
        return torch.nn.functional.one_hot(axis, 3).to(p) * torch.sign(p)
    if kind == "rounded_box":
        inner = torch.tensor([params["hx"], params["hy"], params["hz"]], dtype=p.dtype) - params["rr"]
        eps = 1e-5
        grads = [(_rounded_box_sdf(p + e, inner, params["rr"]) - _rounded_box_sdf(p - e, inner, params["rr"]))
                 for e in torch.eye(3, dtype=p.dtype) * eps]
        return torch.stack(grads, 1)
    if kind in ("cylinder", "cone"):
        r0, r1 = (params["r"], params["r"]) if kind == "cylinder" else (params["r0"], params["r1"])
        h = params["h"]
        rm, k = 0.5 * (r0 + r1), (r1 - r0) / (2 * h)
        w = rm + k * p[:, 2]
        side = torch.stack([p[:, 0], p[:, 1], -k * w], 1)
        side_res = (p[:, :2].norm(dim=1) - w).abs()
        cap_res = (p[:, 2].abs() - h).abs()
        cap = torch.stack([torch.zeros_like(w), torch.zeros_like(w), torch.sign(p[:, 2])], 1)
        side = side / side.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.where((cap_res < side_res)[:, None], cap, side)
    if kind == "torus":
        R, r = params["R"], params["r"]
        s = (p * p).sum(1, keepdim=True)
        g = 4 * (s + R * R - r * r) * p
        g[:, :2] -= 8 * R * R * p[:, :2]
        return g
    if kind == "capsule":
        q = torch.zeros_like(p)
        q[:, 2] = p[:, 2].clamp(-params["h"], params["h"])
        return p - q
    if kind == "plane":
        return torch.tensor([[0.0, 0.0, 1.0]], dtype=p.dtype).expand_as(p)
    raise GagsError(f"unknown primitive kind {kind!r}")


# -------------------------------------------------------------------------------------------------------- textures


NOISE_PERIOD = 32
"""Lattice cells per side of the value-noise table, a power of two (the pattern repeats every 32 cells)."""
NOISE_TABLE = torch.rand(NOISE_PERIOD**3, generator=torch.Generator().manual_seed(0))
"""Random lattice values of the value noise (fixed: the same on every run)."""
def _value_noise(x: torch.Tensor, seed: int) -> torch.Tensor:
    """[N] smooth value noise in [0, 1] at points x: [N, 3] (lattice period 1, smoothstep-interpolated); ``seed``
    shifts the lattice so that materials get different patterns."""
    base = torch.floor(x)
    f = x - base
    f = f * f * (3 - 2 * f)
    mask = NOISE_PERIOD - 1  # the period is a power of two: "& mask" is a modulo, also for negative cells
    shift = torch.tensor([seed * 7, seed * 13 + 5, seed * 29 + 11])  # distinct per seed within the period
    i0 = (base.long() + shift) & mask  # [N, 3]
    i1 = (i0 + 1) & mask
    ix = torch.stack([i0[:, 0], i1[:, 0]], 1) * NOISE_PERIOD**2  # [N, 2] each
    iy = torch.stack([i0[:, 1], i1[:, 1]], 1) * NOISE_PERIOD
    iz = torch.stack([i0[:, 2], i1[:, 2]], 1)
    v = NOISE_TABLE[ix[:, :, None, None] + iy[:, None, :, None] + iz[:, None, None, :]].to(x)  # [N, 2, 2, 2]
    v = v[..., 0] + f[:, 2, None, None] * (v[..., 1] - v[..., 0])  # along z
    v = v[..., 0] + f[:, 1, None] * (v[..., 1] - v[..., 0])  # along y
    return v[:, 0] + f[:, 0] * (v[:, 1] - v[:, 0])  # along x


def albedo(material, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """[N, 3] surface colour of ``material`` at local points p: [N, 3] with local unit normals n: [N, 3]."""
    base = torch.tensor(material.rgb, dtype=p.dtype)
    alt = torch.tensor(material.rgb2, dtype=p.dtype)
    tex = material.texture
    x = p / material.scale
    if tex == "plain":
        mix = torch.zeros(p.shape[0], dtype=p.dtype)
    elif tex == "striped":
        # stripes across the material's axis, or the next axis where the surface faces that axis
        axis = torch.full((p.shape[0],), material.axis, dtype=torch.long)
        axis = torch.where(n.abs().gather(1, axis[:, None])[:, 0] > 0.9, (axis + 1) % 3, axis)
        mix = (torch.floor(x.gather(1, axis[:, None])[:, 0]) % 2).to(p.dtype)
    elif tex == "checkered":
        # a surface facing an axis lies at a constant coordinate there: leave that axis out, or rounding noise in it
        # would flip the parity from pixel to pixel
        cells = torch.floor(x)
        cells = torch.where(n.abs() > 0.9, torch.zeros_like(cells), cells)
        mix = (cells.sum(1) % 2).to(p.dtype)
    elif tex == "dotted":
        f = x - torch.floor(x) - 0.5
        tangential = f - (f * n).sum(1, keepdim=True) * n  # the lattice point seen along the normal
        mix = (tangential.norm(dim=1) < 0.3).to(p.dtype)  # dot radius: 0.3 of the period
    elif tex == "speckled":
        v = 0.65 * _value_noise(x * 2.0, material.seed) + 0.35 * _value_noise(x * 5.0, material.seed + 1)
        mix = ((v - 0.35) / 0.3).clamp(0, 1)
    else:
        raise GagsError(f"unknown texture {tex!r}; known: {TEXTURES}")
    return base * (1 - mix[:, None]) + alt * mix[:, None]


# --------------------------------------------------------------------------------------------------------- casting


def _local_rays(comp: Compiled, i: int, o: torch.Tensor, d: torch.Tensor):
    """Rays [N, 3] in primitive i's frame, their origins first moved along the ray to the point nearest the
    primitive's centre (for precision); returns the local origin, direction and that shift t0: [N]."""
    c = comp.translation[i].to(o)
    R = comp.rotation[i].to(o)
    d_local = d @ R
    if o.stride(0) == 0:  # one origin for all rays (a camera): fewer full-size ops
        oc_local = (c - o[0]) @ R
        t0 = d_local @ oc_local
        return t0[:, None] * d_local - oc_local, d_local, t0
    t0 = ((c - o) * d).sum(1)
    o_local = (o - c) @ R + t0[:, None] * d_local
    return o_local, d_local, t0


def hit_primitive(comp: Compiled, i: int, o: torch.Tensor, d: torch.Tensor, tmin: float | torch.Tensor) -> torch.Tensor:
    """t: [N] of world rays o, d: [N, 3] with primitive i (inf where missed)."""
    o_local, d_local, t0 = _local_rays(comp, i, o, d)
    tmin_t = torch.as_tensor(tmin, dtype=o.dtype).expand(o.shape[0]) - t0
    t = intersect_local(comp.kinds[i], o_local, d_local, tmin_t, comp.params[i], comp.caps[i], comp.clips[i])
    return t + t0


def cast_rays(comp: Compiled, o: torch.Tensor, d: torch.Tensor,
              tmin: float = T_MIN) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest hit of arbitrary rays (tests, probes): o, d: [N, 3] world, d unit. Returns t: [N] (inf where none),
    prim: [N] long (-1 where none). Candidates by a vectorised ray / bounding-sphere test."""
    best_t = torch.full((o.shape[0],), INF, dtype=o.dtype)
    best_p = torch.full((o.shape[0],), -1, dtype=torch.long)
    for i in range(len(comp.kinds)):
        oc = o - comp.translation[i].to(o)
        b = (oc * d).sum(1)
        disc = b * b - ((oc * oc).sum(1) - comp.radii[i].item() ** 2)
        idx = torch.nonzero((disc >= 0) & (-b + torch.sqrt(disc.clamp_min(0)) > tmin)).flatten()
        if idx.numel() == 0:
            continue
        t = hit_primitive(comp, i, o[idx], d[idx], tmin)
        better = t < best_t[idx]
        best_t[idx] = torch.where(better, t, best_t[idx])
        best_p[idx] = torch.where(better, torch.full_like(idx, i), best_p[idx])
    return best_t, best_p


def _screen_rects(comp: Compiled, w2c: torch.Tensor, K: torch.Tensor, width: int, height: int) -> np.ndarray:
    """[P, 4] int pixel rectangles (x0, x1, y0, y1), end-exclusive, that hold each primitive's image (the image of
    its oriented bounding box's 8 corners; the whole image when the box straddles the camera plane)."""
    signs = torch.tensor([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=torch.float64)
    local = comp.half[:, None, :] * signs[None]  # [P, 8, 3]
    world = local @ comp.rotation.double().transpose(1, 2) + comp.translation.double()[:, None, :]
    corners = world @ w2c[:3, :3].T + w2c[:3, 3]
    z = corners[..., 2]
    near = 1e-6
    zs = z.clamp_min(near)
    u = K[0, 0] * corners[..., 0] / zs + K[0, 1] * corners[..., 1] / zs + K[0, 2]
    v = K[1, 1] * corners[..., 1] / zs + K[1, 2]
    x0 = torch.floor(u.min(1).values).clamp(0, width)
    x1 = torch.ceil(u.max(1).values).clamp(0, width)
    y0 = torch.floor(v.min(1).values).clamp(0, height)
    y1 = torch.ceil(v.max(1).values).clamp(0, height)
    straddles = (z.min(1).values <= near) & (z.max(1).values > near)
    behind = z.max(1).values <= near
    x0 = torch.where(straddles, torch.zeros_like(x0), x0)
    y0 = torch.where(straddles, torch.zeros_like(y0), y0)
    x1 = torch.where(straddles, torch.full_like(x1, width), x1)
    y1 = torch.where(straddles, torch.full_like(y1, height), y1)
    x1 = torch.where(behind, x0, x1)
    return torch.stack([x0, x1, y0, y1], 1).long().numpy()


def _ranges_to_index(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenate arange(s, s + l) for every (s, l), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return torch.empty(0, dtype=torch.long)
    offsets = torch.cumsum(lengths, 0) - lengths
    return torch.repeat_interleave(starts - offsets, lengths) + torch.arange(total)


def _shadowed(comp: Compiled, points: torch.Tensor) -> torch.Tensor:
    """[N] bool: is the way from points [N, 3] toward the light blocked by a shadow-casting primitive?"""
    n = points.shape[0]
    blocked = torch.zeros(n, dtype=torch.bool)
    if n == 0:
        return blocked
    light = comp.light.to(points)
    helper = torch.tensor([1.0, 0.0, 0.0], dtype=points.dtype)
    if abs(float(light[0])) > 0.9:
        helper = torch.tensor([0.0, 1.0, 0.0], dtype=points.dtype)
    e1 = torch.linalg.cross(light, helper)
    e1 = e1 / e1.norm()
    e2 = torch.linalg.cross(light, e1)
    uv = torch.stack([points @ e1, points @ e2], 1)
    lo = uv.min(0).values
    cell = float((uv.max(0).values - lo).max()) / SHADOW_GRID + 1e-9
    g = SHADOW_GRID
    ij = ((uv - lo) / cell).long().clamp(0, g - 1)
    key = ij[:, 1] * g + ij[:, 0]
    order = torch.argsort(key)
    starts = torch.zeros(g * g + 1, dtype=torch.long)
    starts[1:] = torch.cumsum(torch.bincount(key, minlength=g * g), 0)
    along = points @ light
    centers = comp.translation.to(points)
    radii = comp.radii.to(points)
    centers_uv = torch.stack([centers @ e1, centers @ e2], 1)
    max_along = (centers @ light + radii).tolist()
    cell_lo = ((centers_uv - radii[:, None] - lo) / cell).floor().long()
    cell_hi = ((centers_uv + radii[:, None] - lo) / cell).floor().long()
    outside = (cell_hi < 0).any(1) | (cell_lo > g - 1).any(1)
    c0, c1 = cell_lo.clamp(0, g - 1).tolist(), cell_hi.clamp(0, g - 1).tolist()
    for i in torch.nonzero(comp.casts_shadow & ~outside).flatten().tolist():
        (x0, y0), (x1, y1) = c0[i], c1[i]
        rows = torch.arange(y0, y1 + 1) * g
        seg_start = starts[rows + x0]
        idx = order[_ranges_to_index(seg_start, starts[rows + x1 + 1] - seg_start)]
        idx = idx[(along[idx] < max_along[i]) & ~blocked[idx]]
        if idx.numel() == 0:
            continue
        p = points[idx]
        t = hit_primitive(comp, i, p, light.expand_as(p), 0.0)
        blocked[idx] |= torch.isfinite(t)
    return blocked


def render(world: World, camera: Camera, supersample: int = 2, compiled: Compiled | None = None) -> Render:
    """Render ``world`` from ``camera`` (OpenCV, pixel centres at +0.5): RGB, z-depth and ids at three levels.

    Args:
        supersample: samples per pixel side (1..4); 2 means 4 samples per pixel.
        compiled: ``compile_world(world)``, to reuse across views.
    """
    if not 1 <= supersample <= MAX_SUPERSAMPLE:
        raise GagsError(f"supersample must be 1..{MAX_SUPERSAMPLE}, got {supersample}.")
    comp = compile_world(world) if compiled is None else compiled
    # One thread: the renderer issues many small tensor ops, for which intra-op threads cost more than they give
    # (measured on a loaded 2-core machine: 25 s per view with 2 threads, 0.33 s with 1).
    with scoped_torch_threads(1):
        return _render(comp, camera, supersample)


def _render(comp: Compiled, camera: Camera, s: int) -> Render:
    H, W = camera.height * s, camera.width * s
    K = camera.K.double().clone()
    K[:2] *= s
    w2c = camera.world_to_cam.double()
    R, tvec = w2c[:3, :3], w2c[:3, 3]
    origin = -R.T @ tvec
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                            indexing="ij")
    y_cam = (ys - K[1, 2]) / K[1, 1]
    x_cam = (xs - K[0, 2] - K[0, 1] * y_cam) / K[0, 0]
    d_cam = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], -1).reshape(-1, 3)
    d_cam = d_cam / d_cam.norm(dim=1, keepdim=True)
    dirs = (d_cam @ R).float()  # world directions, R^T d
    o_all = origin.float()

    # 1. nearest hit per ray: loop over primitives, each against the rays of its screen rectangle (2-D views, no
    #    gathers); room surfaces last, against the rays that hit nothing else
    n_rays = H * W
    dirs2 = dirs.reshape(H, W, 3)
    best_t2 = torch.full((H, W), INF, dtype=torch.float32)
    best_p2 = torch.full((H, W), -1, dtype=torch.long)
    rects = _screen_rects(comp, w2c, K, W, H)
    enclosing = comp.encloses.tolist()
    for i, (x0, x1, y0, y1) in enumerate(rects):
        if x1 <= x0 or y1 <= y0 or enclosing[i]:
            continue
        d = dirs2[y0:y1, x0:x1].reshape(-1, 3)
        t = hit_primitive(comp, i, o_all.expand_as(d), d, T_MIN).reshape(y1 - y0, x1 - x0)
        cur_t = best_t2[y0:y1, x0:x1]
        better = t < cur_t
        cur_t.copy_(torch.where(better, t, cur_t))
        best_p2[y0:y1, x0:x1].masked_fill_(better, i)
    best_t, best_p = best_t2.view(-1), best_p2.view(-1)
    rest = torch.nonzero(best_p < 0).flatten()
    for i in [j for j in range(len(enclosing)) if enclosing[j]]:
        if rest.numel() == 0:
            break
        d = dirs[rest]
        t = hit_primitive(comp, i, o_all.expand_as(d), d, T_MIN)
        better = t < best_t[rest]
        best_t[rest] = torch.where(better, t, best_t[rest])
        best_p[rest] = torch.where(better, torch.full_like(rest, i), best_p[rest])

    # 2. shading inputs per hit: position, normal (facing the camera), albedo
    hit = torch.nonzero(best_p >= 0).flatten()
    points = o_all + best_t[hit, None] * dirs[hit]
    normals = torch.zeros_like(points)
    colors = torch.zeros_like(points)
    prim_of_hit = best_p[hit]
    order = torch.argsort(prim_of_hit, stable=True)
    counts = torch.bincount(prim_of_hit, minlength=len(comp.kinds)).tolist()
    start = 0
    for i, count in enumerate(counts):
        if count == 0:
            continue
        sel = order[start:start + count]
        start += count
        Ri = comp.rotation[i]
        p_local = (points[sel] - comp.translation[i]) @ Ri
        n_local = normal_local(comp.kinds[i], p_local.double(), comp.params[i]).float()
        n_local = n_local / n_local.norm(dim=1, keepdim=True).clamp_min(1e-12)
        n_world = n_local @ Ri.T
        facing = ((n_world * dirs[hit[sel]]).sum(1, keepdim=True) > 0)
        n_world = torch.where(facing, -n_world, n_world)
        n_local = torch.where(facing, -n_local, n_local)
        normals[sel] = n_world
        colors[sel] = albedo(comp.materials[i], p_local, n_local).float()

    # 3. Lambert + ambient, hard shadows from the directional light
    light = comp.light
    lambert = (normals @ light).clamp_min(0)
    lit = torch.nonzero(lambert > 0).flatten()
    shadow = torch.zeros(hit.shape[0], dtype=torch.bool)
    if lit.numel():
        offset = SHADOW_OFFSET * (1 + best_t[hit[lit]])[:, None]
        shadow[lit] = _shadowed(comp, points[lit] + offset * normals[lit])
    shade = AMBIENT + DIFFUSE * lambert * (~shadow).float()
    rgb = torch.zeros(n_rays, 3)
    rgb[hit] = (colors * shade[:, None]).clamp(0, 1)

    z = torch.zeros(n_rays)
    z[hit] = best_t[hit] * d_cam[hit, 2].float()
    ids = torch.full((3, n_rays), -1, dtype=torch.long)
    ids[:, hit] = comp.ids[:, best_p[hit]]
    return _resolve(rgb, z, ids, camera.height, camera.width, s)


def _resolve(rgb: torch.Tensor, z: torch.Tensor, ids: torch.Tensor, h: int, w: int, s: int) -> Render:
    """Average s x s samples into pixels: mean colour, mean depth of the hitting samples, ids of the modal sample."""
    def blocks(x: torch.Tensor) -> torch.Tensor:  # [h*s*w*s, ...] -> [h, w, s*s, ...]
        x = x.reshape(h, s, w, s, *x.shape[1:])
        return x.transpose(1, 2).reshape(h, w, s * s, *x.shape[4:])

    rgb_px = blocks(rgb).mean(2)
    zb = blocks(z)
    hits = (zb > 0).float()
    depth = (zb * hits).sum(2) / hits.sum(2).clamp_min(1)
    idb = blocks(ids.T)  # [h, w, S, 3]
    sub = idb[..., 0]
    votes = (sub[..., :, None] == sub[..., None, :]).sum(-1)  # [h, w, S]
    pick = votes.argmax(-1)
    chosen = idb.gather(2, pick[..., None, None].expand(h, w, 1, 3))[:, :, 0]  # [h, w, 3]
    rgb8 = (rgb_px * 255.0 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
    return Render(rgb8, depth.numpy().astype(np.float32), chosen.permute(2, 0, 1).numpy().astype(np.int32))


def unit_pixel_rays(camera: Camera) -> torch.Tensor:
    """[H, W, 3] unit world directions through pixel centres (float64)."""
    K = camera.K.double()
    R = camera.world_to_cam.double()[:3, :3]
    ys, xs = torch.meshgrid(torch.arange(camera.height, dtype=torch.float64) + 0.5,
                            torch.arange(camera.width, dtype=torch.float64) + 0.5, indexing="ij")
    y_cam = (ys - K[1, 2]) / K[1, 1]
    x_cam = (xs - K[0, 2] - K[0, 1] * y_cam) / K[0, 0]
    d = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], -1)
    return (d / d.norm(dim=-1, keepdim=True)) @ R


def backproject(camera: Camera, depth: np.ndarray | torch.Tensor, xs: np.ndarray | None = None,
                ys: np.ndarray | None = None) -> torch.Tensor:
    """World points (float64) of pixel centres at z-depth ``depth``: [H, W, 3] for the whole image, or [N, 3] for the
    pixels (xs[k], ys[k]) only (``depth`` still [H, W])."""
    K = camera.K.double()
    c2w = camera.cam_to_world.double()
    z = torch.as_tensor(np.asarray(depth), dtype=torch.float64)
    if xs is None or ys is None:
        ys_t, xs_t = torch.meshgrid(torch.arange(camera.height, dtype=torch.float64),
                                    torch.arange(camera.width, dtype=torch.float64), indexing="ij")
    else:
        xs_t, ys_t = torch.as_tensor(xs, dtype=torch.float64), torch.as_tensor(ys, dtype=torch.float64)
        z = z[torch.as_tensor(ys, dtype=torch.long), torch.as_tensor(xs, dtype=torch.long)]
    y_cam = (ys_t + 0.5 - K[1, 2]) / K[1, 1]
    x_cam = (xs_t + 0.5 - K[0, 2] - K[0, 1] * y_cam) / K[0, 0]
    cam = torch.stack([x_cam * z, y_cam * z, z], -1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


__all__ = [
    "Render",
    "albedo",
    "backproject",
    "cast_rays",
    "compile_world",
    "intersect_local",
    "render",
    "unit_pixel_rays",
]
