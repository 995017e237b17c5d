"""The object library (one function per kind) and the scene presets.

Every kind is a function ``(rng) -> WholeSpec`` that draws its own size, proportions, colours and textures from
``rng`` and builds the object from primitives in its own frame: base on z = 0, centred on the z axis, front toward
+x. Sizes are in metres, of real tabletop things (a lid knob of ~1.5 cm to a table of ~1.2 m).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from gags.synth.world import (
    COLORS,
    PAINT,
    TEXTURES,
    Material,
    PartSpec,
    Prim,
    SubSpec,
    WholeSpec,
    World,
    assemble,
    part,
    part_of,
    sub,
)

Vec = tuple[float, float, float]

# ---------------------------------------------------------------------------------------------------- geometry helpers


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def align_z(v: np.ndarray) -> np.ndarray:
    """A rotation taking the local +z axis onto the direction ``v`` [3]."""
    v = np.asarray(v, dtype=np.float64)
    z = v / np.linalg.norm(v)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _prim(kind: str, params: dict[str, float], rot: np.ndarray | None, at: Vec | np.ndarray, **kwargs: Any) -> Prim:
    """A primitive of ``kind`` rotated by ``rot`` (None: identity) and placed at ``at``."""
    return Prim(kind, params, np.eye(3) if rot is None else np.asarray(rot, float), np.asarray(at, float), **kwargs)


def sphere(r: float, at: Vec | np.ndarray = (0, 0, 0), clip=None) -> Prim:
    return _prim("sphere", {"r": r}, None, at, clip=clip)


def ellipsoid(rx: float, ry: float, rz: float, at: Vec | np.ndarray = (0, 0, 0), rot=None, clip=None) -> Prim:
    return _prim("ellipsoid", {"rx": rx, "ry": ry, "rz": rz}, rot, at, clip=clip)


def box(hx: float, hy: float, hz: float, at: Vec | np.ndarray = (0, 0, 0), rot=None) -> Prim:
    return _prim("box", {"hx": hx, "hy": hy, "hz": hz}, rot, at)


def rounded_box(hx: float, hy: float, hz: float, rr: float, at: Vec | np.ndarray = (0, 0, 0), rot=None) -> Prim:
    return _prim("rounded_box", {"hx": hx, "hy": hy, "hz": hz, "rr": rr}, rot, at)


def cylinder(r: float, h: float, at: Vec | np.ndarray = (0, 0, 0), rot=None, caps: str = "both", clip=None) -> Prim:
    return _prim("cylinder", {"r": r, "h": h}, rot, at, caps=caps, clip=clip)


def cone(r0: float, r1: float, h: float, at: Vec | np.ndarray = (0, 0, 0), rot=None, caps: str = "both") -> Prim:
    return _prim("cone", {"r0": r0, "r1": r1, "h": h}, rot, at, caps=caps)


def torus(R: float, r: float, at: Vec | np.ndarray = (0, 0, 0), rot=None, clip=None) -> Prim:
    return _prim("torus", {"R": R, "r": r}, rot, at, clip=clip)


def capsule(r: float, h: float, at: Vec | np.ndarray = (0, 0, 0), rot=None) -> Prim:
    return _prim("capsule", {"r": r, "h": h}, rot, at)


def plane(hx: float, hy: float, at: Vec | np.ndarray = (0, 0, 0), rot=None, room: bool = False) -> Prim:
    """A rectangle; ``room`` marks a surface of the room (encloses the scene, casts no shadow)."""
    return _prim("plane", {"hx": hx, "hy": hy}, rot, at, casts_shadow=not room, encloses=room)


def stick(a: Vec, b: Vec, r: float) -> Prim:
    """A capsule from point ``a`` to point ``b``."""
    pa, pb = np.asarray(a, float), np.asarray(b, float)
    return capsule(r, float(np.linalg.norm(pb - pa)) / 2, (pa + pb) / 2, align_z(pb - pa))


def rod(a: Vec, b: Vec, r: float, caps: str = "both") -> Prim:
    """A cylinder from point ``a`` to point ``b``."""
    pa, pb = np.asarray(a, float), np.asarray(b, float)
    return cylinder(r, float(np.linalg.norm(pb - pa)) / 2, (pa + pb) / 2, align_z(pb - pa), caps=caps)


def taper(a: Vec, b: Vec, ra: float, rb: float) -> Prim:
    """A cone from point ``a`` (radius ``ra``) to point ``b`` (radius ``rb``)."""
    pa, pb = np.asarray(a, float), np.asarray(b, float)
    return cone(ra, rb, float(np.linalg.norm(pb - pa)) / 2, (pa + pb) / 2, align_z(pb - pa))


KEEP_BELOW = ((0.0, 0.0, 1.0), 0.0)
"""Clip keeping local z <= 0 (the lower half: a bowl from an ellipsoid)."""
KEEP_ABOVE = ((0.0, 0.0, -1.0), 0.0)
"""Clip keeping local z >= 0 (the upper half: a dome)."""
KEEP_POS_X = ((-1.0, 0.0, 0.0), 0.0)
KEEP_NEG_X = ((1.0, 0.0, 0.0), 0.0)
HANDLE_ROT = rot_x(math.pi / 2)
"""A torus standing in the xz plane (a handle)."""

# ------------------------------------------------------------------------------------------------- material helpers

TEXTURE_WEIGHTS = {"plain": 0.44, "striped": 0.14, "checkered": 0.14, "dotted": 0.14, "speckled": 0.14}
"""How often painted things are textured: a bit under half are plain."""


def paint(rng: np.random.Generator, scale: float, colors=PAINT, plain: bool = False) -> Material:
    """A manufactured surface: any paint colour and, unless ``plain``, a random texture (stripes across local x or
    y)."""
    color = str(rng.choice(colors))
    if plain:
        texture = "plain"
    else:
        names = list(TEXTURE_WEIGHTS)
        texture = str(rng.choice(names, p=np.array(list(TEXTURE_WEIGHTS.values()))))
    return Material(color, texture, scale=scale, axis=int(rng.integers(0, 2)), seed=int(rng.integers(0, 2**16)))


def natural(rng: np.random.Generator, colors, scale: float = 0.01, speckle: float = 0.5) -> Material:
    """A natural surface (food, plants): one of ``colors``, plain or speckled."""
    texture = "speckled" if rng.random() < speckle else "plain"
    return Material(str(rng.choice(colors)), texture, scale=scale, seed=int(rng.integers(0, 2**16)))


def fixed(color: str, texture: str = "plain", scale: float = 0.01, axis: int = 2) -> Material:
    return Material(color, texture, scale=scale, axis=axis)


def u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


# ------------------------------------------------------------------------------------------------------ object kinds


def ramen_bowl(rng: np.random.Generator) -> WholeSpec:
    R = u(rng, 0.085, 0.11)  # rim radius
    H = R * u(rng, 0.6, 0.75)  # depth
    foot = 0.012
    zc = foot + H  # centre of the bowl ellipsoid = rim height
    bowl_mat = paint(rng, scale=R * 0.3)
    rim_mat = paint(rng, scale=0.01, plain=True)
    zb = zc - 0.3 * H  # broth level
    rb = R * math.sqrt(1 - 0.3**2) - 0.002
    a0 = u(rng, 0, 2 * math.pi)
    ring = 0.5 * rb

    def spot(k: float, lift: float) -> Vec:
        a = a0 + k * math.pi / 2
        return (ring * math.cos(a), ring * math.sin(a), zb + lift)

    noodle_mat = natural(rng, ("yellow", "beige"), scale=0.004, speckle=0.0)
    noodle_mat = Material(noodle_mat.color, "striped", scale=0.004, axis=0)
    strands = [stick((-0.6 * rb * math.cos(a0 + t), -0.6 * rb * math.sin(a0 + t), zb + 0.004),
                     (0.55 * rb * math.cos(a0 + t + 2.6), 0.55 * rb * math.sin(a0 + t + 2.6), zb + 0.01), 0.0035)
               for t in (0.3, 0.8, 1.3)]
    ex, ey, ez = spot(0, 0.0)
    egg_rot = rot_z(a0 + u(rng, -0.5, 0.5))
    egg_white = ellipsoid(0.026, 0.018, 0.012, (ex, ey, ez + 0.006), egg_rot)
    yolk = sphere(0.0115, (ex, ey, ez + 0.012))
    cx, cy, cz = spot(1, 0.006)
    chashu_rot = rot_z(u(rng, 0, 3)) @ rot_x(u(rng, 0.15, 0.35))
    nx, ny, _ = spot(2, 0.0)
    nori_rot = rot_z(a0 + math.pi + math.pi / 2) @ rot_x(u(rng, -0.3, -0.15))
    kx, ky, kz = spot(3, 0.004)
    scallions = [cylinder(0.0045, 0.002, (0.35 * rb * math.cos(a), 0.35 * rb * math.sin(a), zb + 0.013))
                 for a in a0 + 0.4 + np.linspace(0, 2 * math.pi, int(rng.integers(5, 9)), endpoint=False)]
    return WholeSpec("ramen bowl", "ramen bowl", [
        part_of("bowl",
                sub("bowl body", bowl_mat, ellipsoid(R, R, H, (0, 0, zc), clip=KEEP_BELOW),
                    cylinder(0.45 * R, foot / 2, (0, 0, foot / 2))),
                sub("bowl rim", rim_mat, torus(R, 0.006, (0, 0, zc)))),
        part("broth", natural(rng, ("brown", "orange", "beige"), scale=0.02), cylinder(rb, 0.002, (0, 0, zb))),
        part("noodles", noodle_mat, ellipsoid(0.55 * rb, 0.45 * rb, 0.016, (0, 0, zb)), *strands),
        part_of("egg", sub("egg white", fixed("white"), egg_white),
                sub("egg yolk", natural(rng, ("yellow", "orange"), speckle=0.0), yolk)),
        part("chashu", natural(rng, ("pink", "brown"), scale=0.006, speckle=1.0),
             cylinder(0.026, 0.0035, (cx, cy, cz), chashu_rot)),
        part("nori", fixed("dark green", "speckled", 0.004), box(0.026, 0.0015, 0.04, (nx, ny, zb + 0.022), nori_rot)),
        part("naruto", fixed("white", "striped", 0.003, axis=0), cylinder(0.017, 0.003, (kx, ky, kz))),
        part("scallions", natural(rng, ("green",), speckle=0.0), *scallions),
    ])


def mug(rng: np.random.Generator) -> WholeSpec:
    r = u(rng, 0.035, 0.045)
    h = u(rng, 0.08, 0.11)
    body = paint(rng, scale=0.012)
    handle_R = u(rng, 0.024, 0.03)
    return WholeSpec("mug", "mug", [
        part_of("mug body", sub("mug wall", body, cylinder(r, h / 2, (0, 0, h / 2), caps="bottom")),
                sub("mug rim", Material(body.color), torus(r, 0.0035, (0, 0, h)))),
        part("mug handle", Material(body.color, scale=0.01),
             torus(handle_R, 0.006, (r + 0.004, 0, h * 0.5), HANDLE_ROT, clip=KEEP_POS_X)),
        part("coffee", natural(rng, ("brown", "black"), speckle=0.0), cylinder(r - 0.001, 0.0015, (0, 0, h * 0.8))),
    ])


def teapot(rng: np.random.Generator) -> WholeSpec:
    rb = u(rng, 0.07, 0.09)
    hb = rb * u(rng, 0.75, 0.9)
    body = paint(rng, scale=0.02)
    lid_mat = Material(body.color, scale=0.01) if rng.random() < 0.6 else paint(rng, 0.01)
    lid_r = rb * 0.55
    lid_z = 2 * hb - 0.012
    spout_base = (0.8 * rb, 0.0, 0.8 * hb)
    spout_tip = (rb + 0.06, 0.0, 1.45 * hb)
    return WholeSpec("teapot", "teapot", [
        part("teapot body", body, ellipsoid(rb, rb, hb, (0, 0, hb))),
        part("spout", Material(body.color, scale=0.01), taper(spout_base, spout_tip, 0.016, 0.007)),
        part_of("lid", sub("lid dome", lid_mat, ellipsoid(lid_r, lid_r, 0.024, (0, 0, lid_z), clip=KEEP_ABOVE)),
                sub("lid knob", paint(rng, 0.01, plain=True), sphere(0.0085, (0, 0, lid_z + 0.029)))),
        part("teapot handle", Material(body.color, scale=0.01),
             torus(0.042, 0.008, (-rb + 0.004, 0, hb * 1.05), HANDLE_ROT, clip=KEEP_NEG_X)),
    ])


def teacup(rng: np.random.Generator) -> WholeSpec:
    r0, r1 = u(rng, 0.026, 0.032), u(rng, 0.038, 0.046)
    hh = u(rng, 0.022, 0.03)
    zs = 0.008  # saucer thickness
    cup = paint(rng, scale=0.008)
    saucer_r = r1 + u(rng, 0.02, 0.035)
    zt = zs + 1.6 * hh  # tea level
    rt = r0 + (r1 - r0) * 0.8 - 0.001
    return WholeSpec("teacup", "teacup", [
        part_of("cup", sub("cup wall", cup, cone(r0, r1, hh, (0, 0, zs + hh), caps="bottom")),
                sub("cup rim", Material(cup.color), torus(r1, 0.0025, (0, 0, zs + 2 * hh)))),
        part("tea", natural(rng, ("brown", "orange", "green"), speckle=0.0), cylinder(rt, 0.0012, (0, 0, zt))),
        part("cup handle", Material(cup.color),
             torus(0.016, 0.0042, (0.5 * (r0 + r1) + 0.006, 0, zs + 1.1 * hh), HANDLE_ROT, clip=KEEP_POS_X)),
        part("saucer", paint(rng, 0.015) if rng.random() < 0.5 else Material(cup.color),
             cylinder(saucer_r, zs / 2, (0, 0, zs / 2))),
    ])


def plate_of_cookies(rng: np.random.Generator) -> WholeSpec:
    rp = u(rng, 0.09, 0.12)
    plate_mat = paint(rng, scale=0.02)
    cookies = []
    n = int(rng.integers(3, 6))
    dough = natural(rng, ("beige", "brown", "orange"), scale=0.004, speckle=0.7)
    for i in range(n):
        a = 2 * math.pi * i / n + u(rng, -0.2, 0.2)
        d = 0.0 if (i == 0 and n == 5) else 0.5 * rp
        x, y = d * math.cos(a), d * math.sin(a)
        rc = u(rng, 0.022, 0.028)
        zc = 0.012 + (0.009 if (i == 0 and n == 5) else 0.0)
        chips = [sphere(0.0042, (x + 0.6 * rc * math.cos(b), y + 0.6 * rc * math.sin(b), zc + 0.0035))
                 for b in u(rng, 0, 6) + np.linspace(0, 2 * math.pi, int(rng.integers(3, 6)), endpoint=False)]
        cookies.append(part_of("cookie", sub("cookie dough", dough, cylinder(rc, 0.0045, (x, y, zc))),
                               sub("chocolate chip", fixed("black" if rng.random() < 0.5 else "brown"), *chips)))
    return WholeSpec("plate of cookies", "plate of cookies", [
        part_of("plate", sub("plate center", plate_mat, cylinder(rp, 0.0035, (0, 0, 0.0035))),
                sub("plate rim", Material(plate_mat.color), torus(rp, 0.006, (0, 0, 0.006)))),
        *cookies,
    ])


def chopsticks(rng: np.random.Generator) -> WholeSpec:
    wood = natural(rng, ("brown", "beige", "black", "red"), scale=0.003, speckle=0.3)
    tip = Material(str(rng.choice(("beige", "white", "red", "black"))))
    length = u(rng, 0.2, 0.24)
    parts = []
    for side in (-1, 1):
        a = side * u(rng, 0.02, 0.08)
        d = np.array([math.cos(a), math.sin(a), 0.0])
        y0 = side * 0.012
        start = np.array([-length / 2, y0, 0.0045])
        mid = start + d * (0.65 * length)
        end = start + d * length
        end[2] = mid[2] = 0.0045
        parts.append(part_of("chopstick", sub("chopstick grip", wood, taper(tuple(start), tuple(mid), 0.0045, 0.0036)),
                             sub("chopstick tip", tip, taper(tuple(mid), tuple(end), 0.0036, 0.002))))
    return WholeSpec("chopsticks", "chopsticks", parts)


def spoon(rng: np.random.Generator) -> WholeSpec:
    metal = Material(str(rng.choice(("gray", "white", "black", "pink", "red"))), "plain")
    bowl_r = u(rng, 0.018, 0.025)
    zb = 0.009
    return WholeSpec("spoon", "spoon", [
        part("spoon bowl", metal, ellipsoid(bowl_r * 1.35, bowl_r, zb, (0, 0, zb), clip=KEEP_BELOW)),
        part("spoon handle", metal if rng.random() < 0.5 else paint(rng, 0.006),
             stick((bowl_r * 1.3, 0, zb), (bowl_r * 1.3 + u(rng, 0.09, 0.12), 0, 0.012), 0.0042)),
    ])


def glass_of_water(rng: np.random.Generator) -> WholeSpec:
    r = u(rng, 0.03, 0.038)
    h = u(rng, 0.09, 0.12)
    glass = Material(str(rng.choice(("white", "gray", "teal", "green"))), "plain")
    return WholeSpec("glass of water", "glass of water", [
        part("glass", glass, cylinder(r, h / 2, (0, 0, h / 2), caps="bottom")),
        part("water", fixed(str(rng.choice(("blue", "teal")))), cylinder(r - 0.0008, 0.0015, (0, 0, h * 0.7))),
    ])


def toy_car(rng: np.random.Generator) -> WholeSpec:
    L, W = u(rng, 0.12, 0.16), u(rng, 0.055, 0.07)
    rw = u(rng, 0.014, 0.018)
    hb = u(rng, 0.014, 0.02)
    zb = rw + hb * 0.6
    body = paint(rng, scale=0.015)
    cabin = Material(body.color, scale=0.015) if rng.random() < 0.6 else paint(rng, 0.015)
    cab_h = u(rng, 0.013, 0.018)
    zc = zb + hb + cab_h - 0.004
    wheels = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * L * 0.3, sy * (W / 2 - 0.003)
            tire = cylinder(rw, 0.006, (x, y, rw), rot_x(math.pi / 2))
            wheels.append(part_of("wheel", sub("tire", fixed("black"), tire),
                                  sub("hubcap", fixed(str(rng.choice(("gray", "white", "yellow")))),
                                      cylinder(rw * 0.5, 0.001, (x, y + sy * 0.0065, rw), rot_x(math.pi / 2)))))
    light = fixed(str(rng.choice(("yellow", "white"))))
    return WholeSpec("toy car", "toy car", [
        part_of("car body", sub("car chassis", body, rounded_box(L / 2, W / 2, hb, 0.007, (0, 0, zb))),
                sub("headlight", light, sphere(0.0055, (L / 2 - 0.003, W * 0.3, zb + 0.003))),
                sub("headlight", light, sphere(0.0055, (L / 2 - 0.003, -W * 0.3, zb + 0.003)))),
        part_of("car cabin", sub("car roof", cabin, rounded_box(L * 0.27, W * 0.42, cab_h, 0.006, (-0.01, 0, zc))),
                sub("car window", fixed("black"), box(0.0008, W * 0.34, cab_h * 0.55, (-0.01 + L * 0.27, 0, zc))),
                sub("car window", fixed("black"), box(L * 0.2, 0.0008, cab_h * 0.55, (-0.01, W * 0.42, zc))),
                sub("car window", fixed("black"), box(L * 0.2, 0.0008, cab_h * 0.55, (-0.01, -W * 0.42, zc)))),
        *wheels,
    ])


def toy_robot(rng: np.random.Generator) -> WholeSpec:
    s = u(rng, 0.9, 1.2)
    metal = paint(rng, scale=0.01)
    accent = paint(rng, scale=0.01, plain=True)
    leg_h = 0.05 * s
    torso = (0.028 * s, 0.04 * s, 0.035 * s)
    zt = leg_h + torso[2]
    zh = zt + torso[2] + 0.026 * s
    eye = fixed(str(rng.choice(("red", "yellow", "teal", "white"))))
    legs = [part("robot leg", accent, cylinder(0.012 * s, leg_h / 2, (0, y * 0.022 * s, leg_h / 2))) for y in (-1, 1)]
    arms = [part("robot arm", accent, stick((0.0, y * 0.052 * s, zt + 0.025 * s),
                                            (0.025 * s, y * 0.058 * s, zt - 0.03 * s), 0.009 * s)) for y in (-1, 1)]
    return WholeSpec("toy robot", "toy robot", [
        part_of("robot torso", sub("robot chest", metal, box(*torso, (0, 0, zt))),
                sub("control panel", paint(rng, 0.004, plain=False),
                    box(0.001, 0.022 * s, 0.015 * s, (torso[0] + 0.0008, 0, zt + 0.005 * s)))),
        part_of("robot head",
                sub("robot face", metal, rounded_box(0.025 * s, 0.03 * s, 0.024 * s, 0.006 * s, (0, 0, zh))),
                sub("robot eye", eye, sphere(0.0058 * s, (0.024 * s, 0.012 * s, zh + 0.004 * s))),
                sub("robot eye", eye, sphere(0.0058 * s, (0.024 * s, -0.012 * s, zh + 0.004 * s))),
                sub("antenna", accent, rod((0, 0, zh + 0.02 * s), (0, 0, zh + 0.05 * s), 0.0022 * s),
                    sphere(0.0055 * s, (0, 0, zh + 0.052 * s)))),
        *arms, *legs,
    ])


def rubber_duck(rng: np.random.Generator) -> WholeSpec:
    s = u(rng, 0.8, 1.25)
    skin = paint(rng, scale=0.01, colors=("yellow", "yellow", "orange", "pink", "blue", "white", "green"))
    beak = fixed(str(rng.choice(("orange", "red"))))
    eye = fixed("black")
    return WholeSpec("rubber duck", "rubber duck", [
        part("duck body", skin, ellipsoid(0.05 * s, 0.04 * s, 0.03 * s, (0, 0, 0.03 * s))),
        part("duck wing", Material(skin.color),
             ellipsoid(0.03 * s, 0.008 * s, 0.015 * s, (-0.006 * s, 0.036 * s, 0.036 * s))),
        part("duck wing", Material(skin.color),
             ellipsoid(0.03 * s, 0.008 * s, 0.015 * s, (-0.006 * s, -0.036 * s, 0.036 * s))),
        part_of("duck head", sub("duck face", Material(skin.color), sphere(0.025 * s, (0.028 * s, 0, 0.072 * s))),
                sub("duck beak", beak, ellipsoid(0.016 * s, 0.011 * s, 0.0055 * s, (0.054 * s, 0, 0.067 * s))),
                sub("duck eye", eye, sphere(0.0042 * s, (0.047 * s, 0.011 * s, 0.08 * s))),
                sub("duck eye", eye, sphere(0.0042 * s, (0.047 * s, -0.011 * s, 0.08 * s)))),
    ])


def teddy_bear(rng: np.random.Generator) -> WholeSpec:
    s = u(rng, 0.9, 1.3)
    fur = natural(rng, ("brown", "beige", "white", "pink", "gray", "orange"), scale=0.003, speckle=0.6)
    snout = fixed(str(rng.choice(("beige", "white"))))
    dark = fixed("black")
    limbs = [part("bear arm", Material(fur.color, fur.texture, fur.scale),
                  stick((0.0, y * 0.043 * s, 0.085 * s), (0.03 * s, y * 0.052 * s, 0.05 * s), 0.012 * s))
             for y in (-1, 1)]
    limbs += [part("bear leg", Material(fur.color, fur.texture, fur.scale),
                   stick((0.005 * s, y * 0.026 * s, 0.016 * s), (0.05 * s, y * 0.032 * s, 0.014 * s), 0.015 * s))
              for y in (-1, 1)]
    return WholeSpec("teddy bear", "teddy bear", [
        part("bear body", fur, ellipsoid(0.04 * s, 0.045 * s, 0.05 * s, (0, 0, 0.052 * s))),
        part_of("bear head",
                sub("bear face", Material(fur.color, fur.texture, fur.scale),
                    sphere(0.034 * s, (0.004 * s, 0, 0.128 * s))),
                sub("bear ear", Material(fur.color), sphere(0.012 * s, (0, 0.027 * s, 0.158 * s))),
                sub("bear ear", Material(fur.color), sphere(0.012 * s, (0, -0.027 * s, 0.158 * s))),
                sub("bear snout", snout, ellipsoid(0.012 * s, 0.016 * s, 0.011 * s, (0.033 * s, 0, 0.12 * s))),
                sub("bear nose", dark, sphere(0.0055 * s, (0.045 * s, 0, 0.124 * s))),
                sub("bear eye", dark, sphere(0.0045 * s, (0.031 * s, 0.013 * s, 0.137 * s))),
                sub("bear eye", dark, sphere(0.0045 * s, (0.031 * s, -0.013 * s, 0.137 * s)))),
        *limbs,
    ])


def apple(rng: np.random.Generator) -> WholeSpec:
    r = u(rng, 0.033, 0.042)
    hz = r * u(rng, 0.85, 0.95)
    skin = natural(rng, ("red", "green", "yellow"), scale=0.004, speckle=0.6)
    tilt = rot_y(u(rng, 0.1, 0.35))
    return WholeSpec("apple", "apple", [
        part("apple body", skin, ellipsoid(r, r, hz, (0, 0, hz))),
        part("apple stem", fixed("brown"), cylinder(0.0022, 0.009, (0.002, 0, 2 * hz + 0.004), tilt)),
        part("apple leaf", fixed("green" if skin.color != "green" else "dark green"),
             ellipsoid(0.016, 0.007, 0.0015, (0.014, 0.004, 2 * hz + 0.002), rot_z(0.4) @ rot_y(-0.3))),
    ])


def bottle(rng: np.random.Generator) -> WholeSpec:
    r = u(rng, 0.028, 0.036)
    h = u(rng, 0.12, 0.16)
    glass = Material(str(rng.choice(("green", "brown", "blue", "white", "teal"))))
    label = paint(rng, scale=0.008)
    neck_h = 0.03
    return WholeSpec("bottle", "bottle", [
        part_of("bottle body", sub("bottle wall", glass, cylinder(r, h / 2, (0, 0, h / 2))),
                sub("bottle label", label, cylinder(r + 0.0006, h * 0.18, (0, 0, h * 0.45), caps="none"))),
        part("bottle neck", Material(glass.color), cone(r, 0.011, neck_h / 2, (0, 0, h + neck_h / 2)),
             cylinder(0.011, 0.015, (0, 0, h + neck_h + 0.015))),
        part("bottle cap", paint(rng, 0.01, plain=True), cylinder(0.0125, 0.007, (0, 0, h + neck_h + 0.032))),
    ])


def saucepan(rng: np.random.Generator) -> WholeSpec:
    r = u(rng, 0.08, 0.1)
    h = u(rng, 0.07, 0.09)
    metal = Material(str(rng.choice(("gray", "black", "red", "blue", "white"))), "plain")
    handle = paint(rng, 0.01, colors=("black", "brown", "red", "gray"), plain=True)
    lid = Material(metal.color) if rng.random() < 0.5 else Material("gray")
    return WholeSpec("saucepan", "saucepan", [
        part_of("pan body", sub("pan wall", metal, cylinder(r, h / 2, (0, 0, h / 2), caps="bottom")),
                sub("pan rim", Material(metal.color), torus(r, 0.004, (0, 0, h)))),
        part("pan handle", handle, stick((r + 0.004, 0, h * 0.85), (r + u(rng, 0.14, 0.18), 0, h * 0.98), 0.009)),
        part_of("lid", sub("lid dome", lid, ellipsoid(r + 0.002, r + 0.002, 0.028, (0, 0, h + 0.001), clip=KEEP_ABOVE)),
                sub("lid knob", handle, sphere(0.011, (0, 0, h + 0.035)))),
    ])


def salt_shaker(rng: np.random.Generator) -> WholeSpec:
    r = u(rng, 0.015, 0.02)
    h = u(rng, 0.05, 0.07)
    return WholeSpec("salt shaker", "salt shaker", [
        part("shaker body", Material(str(rng.choice(("white", "gray", "teal", "blue")))),
             cylinder(r, h / 2, (0, 0, h / 2))),
        part("shaker cap", fixed(str(rng.choice(("gray", "red", "black"))), "dotted", 0.003),
             ellipsoid(r, r, 0.012, (0, 0, h), clip=KEEP_ABOVE)),
    ])


def donut(rng: np.random.Generator) -> WholeSpec:
    R, r = u(rng, 0.028, 0.034), u(rng, 0.014, 0.018)
    dough = natural(rng, ("beige", "orange", "brown"), speckle=0.5, scale=0.003)
    icing = Material(str(rng.choice(("pink", "brown", "white", "purple"))))
    sprinkles = []
    n = int(rng.integers(6, 11))
    for i, a in enumerate(np.linspace(0, 2 * math.pi, n, endpoint=False) + u(rng, 0, 1)):
        rad = R + (0.6 if i % 2 else -0.6) * r * 0.5
        c = (rad * math.cos(a), rad * math.sin(a), r + r * 0.97)
        sprinkles.append(capsule(0.0016, 0.0035, c, rot_z(a + i) @ rot_y(math.pi / 2)))
    sprinkle = fixed(str(rng.choice(("red", "yellow", "blue", "green", "white"))))
    return WholeSpec("donut", "donut", [
        part("dough ring", dough, torus(R, r, (0, 0, r))),
        part_of("icing", sub("icing glaze", icing, torus(R, r * 1.03, (0, 0, r), clip=((0, 0, -1), -0.003))),
                sub("sprinkle", sprinkle, *sprinkles)),
    ])


DIE_PIPS = {1: [(0, 0)], 2: [(-1, -1), (1, 1)], 3: [(-1, -1), (0, 0), (1, 1)], 4: [(-1, -1), (-1, 1), (1, -1), (1, 1)],
            5: [(-1, -1), (-1, 1), (0, 0), (1, -1), (1, 1)], 6: [(-1, -1), (-1, 0), (-1, 1), (1, -1), (1, 0), (1, 1)]}
"""Pip layouts of a standard die face, on a 3x3 grid."""


def die(rng: np.random.Generator) -> WholeSpec:
    h = u(rng, 0.011, 0.016)
    body = Material(str(rng.choice(("white", "red", "black", "blue", "green"))))
    pip = fixed("white" if body.color in ("black", "red", "blue", "green") else "black")
    top = int(rng.integers(1, 7))
    faces = {(0, 0, 1): top, (1, 0, 0): 1 + (top % 6), (-1, 0, 0): 1 + ((top + 2) % 6), (0, 1, 0): 1 + ((top + 1) % 6),
             (0, -1, 0): 1 + ((top + 3) % 6)}
    pips = []
    pr, step = 0.17 * h, 0.5 * h
    for normal, value in faces.items():
        n = np.array(normal, float)
        a = np.array([0, 0, 1.0]) if n[2] == 0 else np.array([1.0, 0, 0])
        b = np.cross(n, a)
        for i, j in DIE_PIPS[value]:
            c = np.array([0, 0, h]) + n * (h + 0.55 * pr) + step * (i * a + j * b)
            pips.append(sphere(pr, tuple(c)))
    return WholeSpec("die", "die", [
        PartSpec("die", [SubSpec("die cube", body, [rounded_box(h, h, h, 0.2 * h, (0, 0, h))]),
                         SubSpec("pip", pip, pips)], implicit=True),
    ])


def block_tower(rng: np.random.Generator) -> WholeSpec:
    parts, z = [], 0.0
    for _ in range(int(rng.integers(2, 5))):
        hx, hy, hz = u(rng, 0.018, 0.03), u(rng, 0.018, 0.03), u(rng, 0.015, 0.025)
        parts.append(part("block", paint(rng, 0.01), box(hx, hy, hz, (u(rng, -0.004, 0.004), u(rng, -0.004, 0.004),
                                                                       z + hz), rot_z(u(rng, -0.4, 0.4)))))
        z += 2 * hz
    return WholeSpec("block tower", "block tower", parts)


def table_lamp(rng: np.random.Generator) -> WholeSpec:
    pole = u(rng, 0.16, 0.22)
    metal = paint(rng, 0.01, colors=("black", "gray", "white", "brown"), plain=True)
    shade = paint(rng, 0.02)
    zs = 0.012 + pole
    return WholeSpec("table lamp", "table lamp", [
        part("lamp base", metal, cylinder(0.06, 0.006, (0, 0, 0.006))),
        part("lamp pole", Material(metal.color), cylinder(0.007, pole / 2, (0, 0, 0.012 + pole / 2))),
        part("lampshade", shade, cone(0.09, 0.05, 0.055, (0, 0, zs + 0.02), caps="none")),
        part("light bulb", fixed(str(rng.choice(("white", "yellow")))), sphere(0.022, (0, 0, zs - 0.005))),
    ])


def vase_of_flowers(rng: np.random.Generator) -> WholeSpec:
    r, h = u(rng, 0.04, 0.05), u(rng, 0.07, 0.09)
    vase = paint(rng, 0.01)
    flowers = []
    for i in range(int(rng.integers(2, 4))):
        a = u(rng, 0, 2 * math.pi)
        top = np.array([0.05 * math.cos(a), 0.05 * math.sin(a), 2 * h + u(rng, 0.06, 0.12)])
        petal_mat = paint(rng, 0.01, colors=("red", "pink", "yellow", "white", "purple", "orange", "blue"), plain=True)
        petals = [ellipsoid(0.014, 0.0075, 0.003, tuple(top + 0.013 * np.array([math.cos(b), math.sin(b), 0])),
                            rot_z(b))
                  for b in np.linspace(0, 2 * math.pi, 5, endpoint=False) + i]
        flowers.append(part_of("flower", sub("petal", petal_mat, *petals),
                               sub("flower center", fixed(str(rng.choice(("yellow", "brown", "orange")))),
                                   sphere(0.0075, tuple(top + [0, 0, 0.002]))),
                               sub("flower stem", fixed("green"), rod((0, 0, 1.2 * h), tuple(top), 0.0025))))
    return WholeSpec("vase of flowers", "vase of flowers", [
        part("vase", vase, ellipsoid(r, r, h, (0, 0, h), clip=((0, 0, 1), 0.75 * h))),
        *flowers,
    ])


def book(rng: np.random.Generator) -> WholeSpec:
    hx, hy, hz = u(rng, 0.08, 0.11), u(rng, 0.06, 0.08), u(rng, 0.008, 0.018)
    cover = paint(rng, 0.02)
    t = 0.0016
    return WholeSpec("book", "book", [
        part("book cover", cover, box(hx, hy, t, (0, 0, t)), box(hx, hy, t, (0, 0, 2 * hz - t)),
             box(t, hy, hz, (-hx + t, 0, hz))),
        part("book pages", fixed(str(rng.choice(("white", "beige"))), "striped", 0.0015, axis=2),
             box(hx - 0.004, hy - 0.003, hz - 2 * t, (0.0, 0, hz))),
    ])


def napkin(rng: np.random.Generator) -> WholeSpec:
    h = u(rng, 0.07, 0.11)
    return WholeSpec("napkin", "napkin", [
        PartSpec("napkin", [SubSpec("napkin", paint(rng, 0.015), [box(h, h * u(rng, 0.7, 1.0), 0.0012, (0, 0, 0.0012))],
                                    implicit=True)], implicit=True),
    ])


def potted_cactus(rng: np.random.Generator) -> WholeSpec:
    r0, r1, hh = u(rng, 0.03, 0.036), u(rng, 0.04, 0.048), u(rng, 0.035, 0.045)
    pot = paint(rng, 0.01, colors=("orange", "brown", "white", "teal", "blue", "pink"))
    skin = natural(rng, ("green", "dark green"), scale=0.004, speckle=0.5)
    zs = 2 * hh - 0.006
    rs = u(rng, 0.015, 0.02)
    top = zs + u(rng, 0.07, 0.11)
    arms = []
    for y in (-1, 1):
        za = zs + u(rng, 0.035, 0.06)
        arms.append(part("cactus arm", Material(skin.color, skin.texture, skin.scale),
                         stick((0, y * rs * 0.8, za), (0, y * (rs + 0.018), za + 0.004), 0.0085),
                         stick((0, y * (rs + 0.018), za + 0.004), (0, y * (rs + 0.018), za + 0.03), 0.0085)))
    return WholeSpec("potted cactus", "potted cactus", [
        part_of("flower pot", sub("pot wall", pot, cone(r0, r1, hh, (0, 0, hh), caps="bottom")),
                sub("pot rim", Material(pot.color), torus(r1, 0.004, (0, 0, 2 * hh)))),
        part("soil", fixed("brown", "speckled", 0.003), cylinder(r0 + (r1 - r0) * 0.93, 0.001, (0, 0, zs))),
        part("cactus stem", skin, stick((0, 0, zs), (0, 0, top), rs)),
        *arms,
    ])


def cutting_board(rng: np.random.Generator) -> WholeSpec:
    hx, hy = u(rng, 0.13, 0.17), u(rng, 0.09, 0.11)
    wood = Material(str(rng.choice(("beige", "brown", "white"))), "striped", 0.006, axis=1)
    carrots = []
    for i in range(int(rng.integers(1, 3))):
        y = (i - 0.5) * 0.045
        root = taper((-0.05, y, 0.02 + 0.012), (0.05, y + u(rng, -0.01, 0.01), 0.02 + 0.004), 0.012, 0.0025)
        leaves = [stick((-0.052, y, 0.032), (-0.09, y + dy, 0.036), 0.0022) for dy in (-0.012, 0.0, 0.012)]
        carrots.append(part_of("carrot", sub("carrot root", natural(rng, ("orange",), scale=0.004), root),
                               sub("carrot leaves", fixed("green"), *leaves)))
    return WholeSpec("cutting board", "cutting board", [
        part("board", wood, rounded_box(hx, hy, 0.01, 0.004, (0, 0, 0.01))),
        part("board handle", Material(wood.color, "striped", 0.006, axis=1),
             rounded_box(0.028, 0.028, 0.008, 0.004, (hx + 0.024, 0, 0.008))),
        *carrots,
    ])


def knife(rng: np.random.Generator) -> WholeSpec:
    return WholeSpec("knife", "knife", [
        part("knife blade", fixed("gray"), box(0.065, 0.012, 0.0012, (0.03, 0, 0.0012))),
        part("knife handle", paint(rng, 0.005, colors=("black", "brown", "red", "blue"), plain=True),
             rounded_box(0.045, 0.009, 0.006, 0.003, (-0.08, 0, 0.006))),
    ])


def banana(rng: np.random.Generator) -> WholeSpec:
    R, r = u(rng, 0.08, 0.1), u(rng, 0.015, 0.019)
    cut = 0.45 * R
    ends = [(sx * math.sqrt(R**2 - cut**2), -cut + R * 0.8, r) for sx in (-1, 1)]
    return WholeSpec("banana", "banana", [
        part("banana peel", natural(rng, ("yellow", "yellow", "green"), scale=0.004, speckle=0.6),
             torus(R, r, (0, R * 0.8, r), clip=((0, 1, 0), -cut))),
        part("banana tip", fixed("brown"), *[sphere(r * 0.75, e) for e in ends]),
    ])


KINDS: dict[str, Callable[[np.random.Generator], WholeSpec]] = {
    "ramen bowl": ramen_bowl, "mug": mug, "teapot": teapot, "teacup": teacup, "plate of cookies": plate_of_cookies,
    "chopsticks": chopsticks, "spoon": spoon, "glass of water": glass_of_water, "toy car": toy_car,
    "toy robot": toy_robot, "rubber duck": rubber_duck, "teddy bear": teddy_bear, "apple": apple, "bottle": bottle,
    "saucepan": saucepan, "salt shaker": salt_shaker, "donut": donut, "die": die, "block tower": block_tower,
    "table lamp": table_lamp, "vase of flowers": vase_of_flowers, "book": book, "napkin": napkin,
    "potted cactus": potted_cactus, "cutting board": cutting_board, "knife": knife, "banana": banana,
}
"""Every object kind that stands on the table."""

# ------------------------------------------------------------------------------------------------------ surroundings

FLOOR_Z = -0.75
"""The floor lies 75 cm under the table top (a common table height)."""
ROOM_HALF = 3.0
ROOM_TOP = 2.25
ROOM_CONTRAST = 0.2
"""Floor and wall textures are subtler than the objects' (a room seen far away and at grazing angles, as the out of
focus background of a tabletop capture)."""


def table(rng: np.random.Generator, hx: float, hy: float) -> WholeSpec:
    if rng.random() < 0.35:  # a table cloth
        top = Material(str(rng.choice(("red", "blue", "green", "white", "beige"))), "checkered", 0.04)
    else:
        top = Material(str(rng.choice(("brown", "beige", "gray", "white"))), str(rng.choice(("striped", "speckled"))),
                       u(rng, 0.025, 0.04), axis=0, seed=int(rng.integers(0, 2**16)))
    legs = [part("table leg", Material(top.color if top.texture != "checkered" else "brown"),
                 cylinder(0.025, (-FLOOR_Z - 0.04) / 2, (sx * (hx - 0.06), sy * (hy - 0.06), (FLOOR_Z - 0.04) / 2)))
            for sx in (-1, 1) for sy in (-1, 1)]
    return WholeSpec("table", "table", [part("table top", top, box(hx, hy, 0.02, (0, 0, -0.02))), *legs])


def floor(rng: np.random.Generator) -> WholeSpec:
    mat = Material(str(rng.choice(("gray", "beige", "brown", "white"))), str(rng.choice(("checkered", "speckled"))),
                   0.5, contrast=ROOM_CONTRAST)
    prim = plane(ROOM_HALF, ROOM_HALF, (0, 0, FLOOR_Z), room=True)
    return WholeSpec("floor", "floor", [PartSpec("floor", [SubSpec("floor", mat, [prim], True)], True)])


def walls(rng: np.random.Generator) -> WholeSpec:
    mat = Material(str(rng.choice(("beige", "white", "teal", "pink", "gray", "green"))),
                   str(rng.choice(("striped", "plain", "dotted", "speckled"))), 0.12, axis=0, contrast=ROOM_CONTRAST)
    half_h = (ROOM_TOP - FLOOR_Z) / 2
    zc = FLOOR_Z + half_h
    prims = [plane(ROOM_HALF, half_h, (ROOM_HALF * math.cos(a), ROOM_HALF * math.sin(a), zc),
                   rot_z(a + math.pi / 2) @ rot_x(math.pi / 2), room=True)
             for a in np.arange(4) * math.pi / 2]
    ceiling = plane(ROOM_HALF, ROOM_HALF, (0, 0, ROOM_TOP), room=True)
    return WholeSpec("wall", "wall", [
        PartSpec("wall", [SubSpec("wall", mat, prims, True), SubSpec("ceiling", fixed("white"), [ceiling])], True)])


# ---------------------------------------------------------------------------------------------------------- presets

PRESETS: dict[str, dict] = {
    # kinds always present (in placement order: the first ones go near the middle), then clutter drawn from a pool.
    "ramen": {"kinds": ["ramen bowl", "chopsticks", "spoon", "glass of water", "napkin", "teacup", "ramen bowl"],
              "clutter": ["apple", "salt shaker", "bottle", "die", "donut", "mug"], "n_clutter": (2, 4)},
    "teatime": {"kinds": ["teapot", "teacup", "teacup", "plate of cookies", "spoon", "teddy bear", "apple", "napkin"],
                "clutter": ["donut", "vase of flowers", "book", "mug", "rubber duck"], "n_clutter": (2, 3)},
    "figurines": {"kinds": ["toy car", "toy robot", "rubber duck", "rubber duck", "teddy bear", "die", "block tower",
                            "apple", "apple"],
                  "clutter": ["book", "potted cactus", "die", "toy car", "banana"], "n_clutter": (2, 3)},
    "kitchen": {"kinds": ["saucepan", "cutting board", "knife", "bottle", "mug", "mug", "salt shaker", "banana",
                          "apple"],
                "clutter": ["glass of water", "bottle", "potted cactus", "teapot", "donut"], "n_clutter": (1, 3)},
    "random": {"kinds": [], "clutter": list(KINDS), "n_clutter": (7, 12)},
}


TABLE_MARGIN = 0.015
"""Gap between objects' footprints and to the table edge (metres)."""
PLACEMENT_TRIES = 300
"""Random positions tried per object before the table is declared full."""
PLACEMENT_ROUNDS = 6
"""Times the table grows by 10% when the objects do not fit."""


def _place_all(rng: np.random.Generator, footprints: list[float], hx: float,
               hy: float) -> list[tuple[float, float] | None]:
    """Non-overlapping disc centres on a table of half size hx x hy (None for a disc that found no room); the first
    disc goes near the middle."""
    discs: list[tuple[float, float, float]] = []
    out: list[tuple[float, float] | None] = []
    for i, f in enumerate(footprints):
        spread = 0.3 if i == 0 else 1.0
        for _ in range(PLACEMENT_TRIES):
            x = u(rng, -1, 1) * max(hx * spread - f - TABLE_MARGIN, 0.0)
            y = u(rng, -1, 1) * max(hy * spread - f - TABLE_MARGIN, 0.0)
            if all(math.hypot(x - a, y - b) > f + r + TABLE_MARGIN for a, b, r in discs):
                discs.append((x, y, f))
                out.append((x, y))
                break
        else:
            out.append(None)
    return out


def compose(preset: str, seed: int) -> World:
    """Draw a preset's table, objects and light from ``seed`` and place the objects without overlap."""
    rng = np.random.default_rng([seed, sum(map(ord, preset))])
    cfg = PRESETS[preset]
    kinds = list(cfg["kinds"])
    lo, hi = cfg["n_clutter"]
    n_extra = int(rng.integers(lo, hi + 1))
    pool = [k for k in cfg["clutter"] if preset != "random" or k != "table lamp" or rng.random() < 0.3]
    kinds += [str(k) for k in rng.choice(pool, size=n_extra, replace=preset != "random" or n_extra > len(pool))]
    specs = [KINDS[k](rng) for k in kinds]
    # Table just large enough for the objects (area ~ 2.6 x their footprints); grown by 10% per round until every
    # object fits (the main object first near the middle, then the others from the largest down).
    area = sum(math.pi * (s.footprint() + TABLE_MARGIN) ** 2 for s in specs)
    hx = float(np.clip(math.sqrt(2.6 * area * 1.4) / 2, 0.4, 0.7))
    hy = float(np.clip(hx / 1.4, 0.3, 0.5))
    order = [0, *sorted(range(1, len(specs)), key=lambda i: -specs[i].footprint())]
    for _ in range(PLACEMENT_ROUNDS):
        poses = _place_all(rng, [specs[i].footprint() for i in order], hx, hy)
        if all(p is not None for p in poses):
            break
        hx, hy = hx * 1.1, hy * 1.1
    where = dict(zip(order, poses, strict=True))
    placed: list[tuple[WholeSpec, np.ndarray, np.ndarray, float]] = []
    discs: list[tuple[float, float, float]] = []
    for i, spec in enumerate(specs):
        pose = where[i]
        if pose is None:
            continue  # still no room after the last round: leave this object out
        x, y = pose
        discs.append((x, y, spec.footprint()))
        placed.append((spec, rot_z(u(rng, 0, 2 * math.pi)), np.array([x, y, 0.0]), 1.0))
    xs = np.array([[a, b] for a, b, _ in discs])
    rs = np.array([r for _, _, r in discs])
    lo_xy, hi_xy = (xs - rs[:, None]).min(0), (xs + rs[:, None]).max(0)
    center = 0.5 * (lo_xy + hi_xy)
    focus = np.array([center[0], center[1], 0.04])
    extent = float(np.max(np.hypot(*(xs - center).T) + rs))
    n_objects = len(placed)
    placed.append((table(rng, hx, hy), np.eye(3), np.zeros(3), 1.0))
    placed.append((floor(rng), np.eye(3), np.zeros(3), 1.0))
    placed.append((walls(rng), np.eye(3), np.zeros(3), 1.0))
    elevation, azimuth = u(rng, math.radians(45), math.radians(70)), u(rng, 0, 2 * math.pi)
    light = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                      math.sin(elevation)])
    return assemble(preset, seed, placed, light, focus, extent, background=set(range(n_objects, len(placed))))


# ------------------------------------------------------------------------------------------------------- vocabulary

VOCABULARY_SEEDS = 6
"""Seeds per kind used to collect names (names do not depend on the seed; counts of repeated parts do)."""


@functools.lru_cache(maxsize=1)
def _vocabulary() -> tuple[tuple[str, tuple[str, ...]], ...]:
    names: dict[str, set[str]] = {"whole": set(), "part": set(), "subpart": set()}
    rng = np.random.default_rng(0)
    builders = [*KINDS.values(), lambda g: table(g, 0.6, 0.4), floor, walls]
    for build in builders:
        for _ in range(VOCABULARY_SEEDS):
            spec = build(rng)
            names["whole"].add(spec.name)
            for p in spec.parts:
                if not p.implicit:
                    names["part"].add(p.name)
                for s in p.subs:
                    if not s.implicit:
                        names["subpart"].add(s.name)
    return tuple((k, tuple(sorted(v))) for k, v in names.items())


def library_vocabulary() -> dict[str, list[str]]:
    """Every explicit name per level ("whole", "part", "subpart"), plus "color" and "texture" names."""
    out = {k: list(v) for k, v in _vocabulary()}
    out["color"] = list(COLORS)
    out["texture"] = list(TEXTURES)
    return out
