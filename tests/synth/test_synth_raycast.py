"""Analytic checks of the ray caster: exact depths of spheres, boxes and cylinders; every other primitive's hits lie
on its surface and are the first crossing along the ray; clipped and open surfaces show their inside; shadows."""

import math

import cv2
import numpy as np
import pytest
import torch

from gags.cameras import Camera, intrinsics, look_at
from gags.synth import raycast
from gags.synth.library import (
    align_z,
    box,
    capsule,
    cone,
    cylinder,
    ellipsoid,
    plane,
    rot_y,
    rounded_box,
    sphere,
    torus,
)
from gags.synth.raycast import AMBIENT, DIFFUSE, cast_rays, compile_world, render
from gags.synth.world import Material, WholeSpec, assemble, part


def world_of(*prims, light=(0.0, 0.0, 1.0), color="red"):
    spec = WholeSpec("thing", "thing", [part("thing", Material(color), *prims)])
    return assemble("test", 0, [(spec, np.eye(3), np.zeros(3), 1.0)], np.array(light), np.zeros(3), 1.0)


def camera(size=64, fov=60.0, w2c=None):
    f = 0.5 * size / math.tan(math.radians(fov) / 2)
    return Camera("c.png", intrinsics(f, f, size / 2, size / 2), torch.eye(4) if w2c is None else w2c, size, size)


def pixel_rays(cam):
    """[H*W, 3] unit camera-frame (= world for the identity pose) directions through pixel centres, float64."""
    return raycast.unit_pixel_rays(cam).reshape(-1, 3)


def test_sphere_depth_is_exact():
    c, r = np.array([0.1, -0.05, 1.5]), 0.3
    cam = camera()
    out = render(world_of(sphere(r, tuple(c))), cam, supersample=1)
    d = pixel_rays(cam).numpy()
    b = d @ c
    disc = b * b - (c @ c - r * r)
    hit = disc > 1e-3  # away from the silhouette
    s = b - np.sqrt(np.maximum(disc, 0))
    expected = (s * d[:, 2]).reshape(64, 64)  # z-depth = ray length x cos(angle to the axis)
    mask = hit.reshape(64, 64)
    assert mask.sum() > 300
    np.testing.assert_allclose(out.depth[mask], expected[mask], atol=2e-5)
    assert (out.ids[:, mask] == 0).all()
    assert (out.depth[~(disc > -1e-3).reshape(64, 64)] == 0).all()  # nothing else in this world


def test_cast_rays_sphere_from_anywhere():
    gen = torch.Generator().manual_seed(0)
    comp = compile_world(world_of(sphere(0.05, (0.3, 0.2, 0.1))))
    center = torch.tensor([0.3, 0.2, 0.1])
    d = torch.nn.functional.normalize(torch.randn(500, 3, generator=gen), dim=1)
    dist = 0.1 + 2 * torch.rand(500, generator=gen)
    o = center - d * dist[:, None]  # rays aimed at the centre from 0.1..2.1 m away
    t, prim = cast_rays(comp, o, d)
    np.testing.assert_allclose(t.numpy(), (dist - 0.05).numpy(), atol=2e-6)
    assert (prim == 0).all()


def test_box_depth_is_exact():
    R = rot_y(0.5)
    c, half = np.array([0.0, 0.1, 1.4]), np.array([0.3, 0.2, 0.25])
    cam = camera()
    out = render(world_of(box(*half, tuple(c), R)), cam, supersample=1)
    d = pixel_rays(cam).numpy()
    # independent slab test in the box frame
    o_l = (-c) @ R
    d_l = d @ R
    with np.errstate(divide="ignore"):
        t1, t2 = (-half - o_l) / d_l, (half - o_l) / d_l
    near, far = np.minimum(t1, t2).max(1), np.maximum(t1, t2).min(1)
    hit = (far - near > 1e-3).reshape(64, 64)
    expected = (near * d[:, 2]).reshape(64, 64)
    assert hit.sum() > 300
    np.testing.assert_allclose(out.depth[hit], expected[hit], atol=2e-5)


def test_cylinder_side_and_cap_depth_are_exact():
    zc, r, h = 1.2, 0.2, 0.35
    cam = camera()
    # axis along world x: the side faces the camera
    out = render(world_of(cylinder(r, h, (0, 0, zc), align_z((1.0, 0.0, 0.0)))), cam, supersample=1)
    d = pixel_rays(cam).numpy()
    a = d[:, 1] ** 2 + d[:, 2] ** 2  # (s dy)^2 + (s dz - zc)^2 = r^2
    b = -2 * d[:, 2] * zc
    disc = b * b - 4 * a * (zc * zc - r * r)
    s = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    x = s * d[:, 0]
    side = ((disc > 1e-3) & (np.abs(x) < h - 0.01)).reshape(64, 64)
    assert side.sum() > 300
    np.testing.assert_allclose(out.depth[side], (s * d[:, 2]).reshape(64, 64)[side], atol=2e-5)
    # axis along z: the camera sees the bottom cap, a disc at z = zc - h
    out = render(world_of(cylinder(r, h, (0, 0, zc + h))), cam, supersample=1)
    lateral = np.hypot(d[:, 0], d[:, 1]) / d[:, 2] * zc
    cap = (lateral < r - 0.01).reshape(64, 64)
    assert cap.sum() > 100
    np.testing.assert_allclose(out.depth[cap], zc, atol=2e-5)


def _sdf(kind, p, params):
    """Signed distance (or an implicit function with the same sign and zero set) in the primitive's frame."""
    if kind == "ellipsoid":
        rad = np.array([params["rx"], params["ry"], params["rz"]])
        return (np.linalg.norm(p / rad, axis=-1) - 1) * rad.min()
    if kind == "torus":
        q = np.stack([np.hypot(p[..., 0], p[..., 1]) - params["R"], p[..., 2]], -1)
        return np.linalg.norm(q, axis=-1) - params["r"]
    if kind == "capsule":
        q = p.copy()
        q[..., 2] = p[..., 2] - np.clip(p[..., 2], -params["h"], params["h"])
        return np.linalg.norm(q, axis=-1) - params["r"]
    if kind == "rounded_box":
        inner = np.array([params["hx"], params["hy"], params["hz"]]) - params["rr"]
        q = np.abs(p) - inner
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0) - params["rr"]
    if kind == "cone":
        r0, r1, h = params["r0"], params["r1"], params["h"]
        radius = r0 + (r1 - r0) * (p[..., 2] + h) / (2 * h)
        return np.maximum(np.hypot(p[..., 0], p[..., 1]) - radius, np.abs(p[..., 2]) - h)
    raise ValueError(kind)


@pytest.mark.parametrize("prim", [
    ellipsoid(0.12, 0.05, 0.08, (0.0, 0.0, 0.0), rot_y(0.3)),
    torus(0.1, 0.03, (0.0, 0.0, 0.0), rot_y(0.7)),
    capsule(0.04, 0.1, (0.0, 0.0, 0.0), rot_y(1.1)),
    rounded_box(0.1, 0.06, 0.04, 0.015, (0.0, 0.0, 0.0), rot_y(0.4)),
    cone(0.08, 0.02, 0.1, (0.0, 0.0, 0.0), rot_y(-0.6)),
], ids=["ellipsoid", "torus", "capsule", "rounded_box", "cone"])
def test_hits_lie_on_the_surface_and_are_the_first_crossing(prim):
    gen = torch.Generator().manual_seed(1)
    comp = compile_world(world_of(prim))
    n = 2000
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=1)
    aim = (torch.rand(n, 3, generator=gen) - 0.5) * 0.2
    o = aim - 0.6 * d
    t, _ = cast_rays(comp, o.float(), d.float())
    hit = torch.isfinite(t)
    assert hit.sum() > 200, "too few rays hit: the test would prove little"
    R = prim.rotation
    to_local = lambda x: (x - prim.translation) @ R
    p = to_local(o[hit].double().numpy() + t[hit].double().numpy()[:, None] * d[hit].double().numpy())
    assert np.abs(_sdf(prim.kind, p, prim.params)).max() < 5e-5
    # no crossing before the hit: samples along the ray up to just before it are all outside
    frac = np.linspace(0.0, 1.0, 200)[None, :, None]
    o_h, d_h, t_h = o[hit].double().numpy(), d[hit].double().numpy(), t[hit].double().numpy()
    samples = o_h[:, None, :] + frac * (t_h[:, None, None] - 1e-4) * d_h[:, None, :]
    assert (_sdf(prim.kind, to_local(samples), prim.params) > -1e-6).all()
    # and rays reported as misses never pass through the inside
    o_m, d_m = o[~hit].double().numpy(), d[~hit].double().numpy()
    samples = o_m[:, None, :] + np.linspace(0.0, 1.2, 400)[None, :, None] * d_m[:, None, :]
    assert (_sdf(prim.kind, to_local(samples), prim.params) > -1e-4).all()


def test_plane_is_two_sided_and_bounded():
    comp = compile_world(world_of(plane(0.2, 0.1, (0.0, 0.0, 0.5))))
    o = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.3, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    t, _ = cast_rays(comp, o, d)
    assert t[0] == pytest.approx(0.5, abs=1e-6) and t[1] == pytest.approx(0.5, abs=1e-6)
    assert math.isinf(t[2])


def test_clipped_bowl_and_open_cup_show_their_inside():
    # a bowl: lower half of a sphere (radius 0.1, centre at the origin); a ray from above through the opening hits
    # the inner surface at the bottom, not the missing upper half
    comp = compile_world(world_of(sphere(0.1, (0.0, 0.0, 0.0), clip=((0.0, 0.0, 1.0), 0.0))))
    t, _ = cast_rays(comp, torch.tensor([[0.03, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    assert t[0] == pytest.approx(1.0 + math.sqrt(0.1**2 - 0.03**2), abs=1e-5)
    # an open cup (no top cap): the ray hits the bottom cap inside
    comp = compile_world(world_of(cylinder(0.05, 0.05, (0.0, 0.0, 0.05), caps="bottom")))
    t, _ = cast_rays(comp, torch.tensor([[0.01, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    assert t[0] == pytest.approx(1.0, abs=1e-5)


def test_lambert_and_hard_shadow():
    # a white floor under a sphere, light straight above: lit floor = albedo * (AMBIENT + DIFFUSE), the floor right
    # under the sphere = albedo * AMBIENT
    cam = camera(64, 50.0, look_at(torch.tensor([0.0, -0.8, 1.2]), torch.tensor([0.0, 0.0, 0.0])))
    world = world_of(plane(2.0, 2.0, (0, 0, 0)), sphere(0.1, (0.25, 0.0, 0.3)), color="white")
    out = render(world, cam, supersample=1)
    white = np.array(Material("white").rgb)
    x_lit, _ = cam.project(torch.tensor([[-0.25, 0.0, 0.0]], dtype=torch.float32))
    x_sh, _ = cam.project(torch.tensor([[0.25, 0.0, 0.0]], dtype=torch.float32))
    u, v = (int(x) for x in x_lit[0])
    lit = np.clip(white * (AMBIENT + DIFFUSE), 0, 1) * 255
    np.testing.assert_allclose(out.rgb[v, u], lit, atol=1.0)
    u, v = (int(x) for x in x_sh[0])
    np.testing.assert_allclose(out.rgb[v, u], white * AMBIENT * 255, atol=1.0)


def test_supersampling_antialiases_edges_and_keeps_ids_nested():
    world = world_of(box(0.2, 0.2, 0.2, (0.0, 0.0, 1.5), rot_y(0.3)))
    out1 = render(world, camera(48), supersample=1)
    out3 = render(world, camera(48), supersample=3)
    levels1 = np.unique(out1.rgb.reshape(-1, 3), axis=0)
    levels3 = np.unique(out3.rgb.reshape(-1, 3), axis=0)
    assert len(levels3) > len(levels1)  # edge pixels mix object and background
    hit = out3.ids[0] >= 0
    assert ((out3.ids[1] >= 0) == hit).all() and ((out3.ids[2] >= 0) == hit).all()


@pytest.mark.parametrize("texture", ["checkered", "striped", "dotted", "speckled"])
def test_textures_on_a_plane_have_no_pixel_noise(texture):
    """A textured floor seen obliquely: the pattern is there, as regions, without isolated pixels (no parity flips
    from rounding of the coordinate along the normal)."""
    spec = WholeSpec("thing", "thing", [part("thing", Material("blue", texture, scale=0.25),
                                             plane(3.0, 3.0, (0.0, 0.0, -0.75)))])
    world = assemble("test", 0, [(spec, np.eye(3), np.zeros(3), 1.0)], np.array([0.0, 0.0, 1.0]), np.zeros(3), 1.0)
    cam = camera(96, 60.0, look_at(torch.tensor([0.31, -0.47, 0.2]), torch.tensor([0.013, 0.021, -0.75])))
    rgb = render(world, cam, supersample=1).rgb
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) >= 2  # the pattern is there
    isolated = (np.abs(rgb.astype(int) - cv2.medianBlur(rgb, 3).astype(int)).max(-1) > 20).mean()
    assert isolated < 0.02  # (pattern corners make a few; the parity flips made 20%)
