"""Camera paths around a world, like a handheld capture: rings at several distances, heights and look-at jitter.

A far ring frames the whole table, a middle ring parts of it, a near ring single objects, so that every object is
small in some views and large in others (nearest to farthest camera-to-target distance >= 3x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gags.cameras import Camera, intrinsics, look_at
from gags.errors import GagsError
from gags.synth.world import World

FOV_DEG = 55.0
"""Horizontal field of view (a phone's main camera is ~65-70 degrees; a little narrower frames tabletop objects)."""
NEAR_DISTANCE = 0.38
"""Camera-to-target distance of the near ring (metres): one object fills much of the frame."""
FAR_FRAMING = 2.3
"""The far ring's distance in units of the objects' extent (radius): the whole arrangement fits the frame."""
FAR_MIN = 1.25
"""The far ring is at least this far (metres); with NEAR_DISTANCE this keeps far / near >= 3.29."""
FAR_MAX = 2.4
"""...and at most this far, so that it stays inside the room (walls 3 m from the centre, ``library.ROOM_HALF``)."""
RING_SHARES = (0.3, 0.35, 0.35)
"""Share of the views in the far, middle and near rings."""
ELEVATION_DEG = ((28.0, 50.0), (22.0, 55.0), (22.0, 60.0))
"""Elevation range (degrees above the table) per ring: far, middle, near."""
ROLL_DEG = 3.0
"""Handheld roll jitter (degrees)."""
CLEARANCE = 0.03
"""Cameras keep this distance (metres) from every object's bounding sphere and above the table."""


@dataclass(frozen=True)
class CameraPlan:
    """How one view was drawn: its ring (0 far, 1 middle, 2 near), distance to its target and the target."""

    ring: int
    distance: float
    target: tuple[float, float, float]


def _resolution(resolution: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(resolution, int):
        return resolution, resolution
    width, height = resolution
    return int(width), int(height)


def ring_distances(world: World) -> tuple[float, float, float]:
    """Nominal camera-to-target distances of the far, middle and near rings (metres)."""
    far = min(FAR_MAX, max(FAR_MIN, FAR_FRAMING * world.extent))
    return far, math.sqrt(far * NEAR_DISTANCE), NEAR_DISTANCE


def sample_cameras(world: World, n: int, resolution: int | tuple[int, int], seed: int, *, fov_deg: float = FOV_DEG,
                   prefix: str = "frame_", suffix: str = ".png", start: int = 0,
                   focus_whole: int | None = None) -> list[Camera]:
    """``n`` cameras along a handheld-like path around ``world`` (OpenCV, pixel centres at +0.5).

    The path visits the far ring, then the middle ring, then the near ring, each all around the table. Cameras are
    named ``{prefix}{start + i:05d}{suffix}``. With ``focus_whole`` every view targets that object (near ones fill
    the frame with it), for crops of one object.
    """
    cams, _ = plan_cameras(world, n, resolution, seed, fov_deg=fov_deg, prefix=prefix, suffix=suffix, start=start,
                           focus_whole=focus_whole)
    return cams


def plan_cameras(world: World, n: int, resolution: int | tuple[int, int], seed: int, *, fov_deg: float = FOV_DEG,
                 prefix: str = "frame_", suffix: str = ".png", start: int = 0,
                 focus_whole: int | None = None) -> tuple[list[Camera], list[CameraPlan]]:
    """``sample_cameras`` plus how each view was drawn."""
    if n < 1:
        raise GagsError(f"need at least one view, got {n}.")
    width, height = _resolution(resolution)
    if width < 1 or height < 1:
        raise GagsError(f"image size must be positive, got {width}x{height}.")
    if not 10.0 <= fov_deg <= 120.0:
        raise GagsError(f"field of view must be 10..120 degrees, got {fov_deg}.")
    rng = np.random.default_rng([seed, 7919])  # 7919: a fixed stream id, so cameras do not reuse the world's draws
    fx = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    K = intrinsics(fx, fx, width / 2, height / 2)
    objects = [w.id for w in world.wholes if w.id not in world.background]
    if focus_whole is not None and not 0 <= focus_whole < len(world.wholes):
        raise GagsError(f"focus_whole {focus_whole} is not a whole of this world ({len(world.wholes)} wholes).")
    far, mid, near = ring_distances(world)
    if focus_whole is not None:
        far = max(NEAR_DISTANCE * 3.0, 4.0 * float(world.bound_radii[focus_whole]))
        mid = math.sqrt(far * NEAR_DISTANCE)
    counts = np.floor(np.array(RING_SHARES) * n).astype(int)
    counts[2] += n - counts.sum()
    obj_azimuth = {o: math.atan2(*(world.bound_centers[o, :2] - world.focus[:2])[::-1]) for o in objects}
    cams: list[Camera] = []
    plans: list[CameraPlan] = []
    for ring, (count, dist) in enumerate(zip(counts, (far, mid, near), strict=True)):
        if count == 0:
            continue
        a0 = rng.uniform(0, 2 * math.pi)
        for k in range(count):
            azimuth = a0 + 2 * math.pi * (k + rng.uniform(-0.3, 0.3)) / count
            lo, hi = ELEVATION_DEG[ring]
            elevation = math.radians(rng.uniform(lo, hi))
            if ring == 0:
                distance = dist * rng.uniform(1.0, 1.1)
            elif ring == 1:
                distance = dist * rng.uniform(0.9, 1.1)
            else:
                distance = dist * rng.uniform(0.9, 1.0)
            if focus_whole is not None:
                target = world.bound_centers[focus_whole] + rng.normal(0, 0.01, 3)
            elif ring == 0:
                target = world.focus + np.r_[rng.normal(0, 0.05 * world.extent, 2), 0.0]
            elif ring == 1:
                a, r = rng.uniform(0, 2 * math.pi), 0.5 * world.extent * math.sqrt(rng.uniform())
                target = world.focus + np.array([r * math.cos(a), r * math.sin(a), 0.0])
            else:  # the object on the camera's side of the table
                gap = [abs((obj_azimuth[o] - azimuth + math.pi) % (2 * math.pi) - math.pi) for o in objects]
                target = world.bound_centers[objects[int(np.argmin(gap))]] + rng.normal(0, 0.01, 3)
            eye = _place(world, target, distance, azimuth, elevation)
            w2c = look_at(torch.tensor(eye), torch.tensor(target, dtype=torch.float64))
            roll = math.radians(rng.uniform(-ROLL_DEG, ROLL_DEG))
            c, s = math.cos(roll), math.sin(roll)
            w2c = torch.tensor([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float32) @ w2c
            name = f"{prefix}{start + len(cams):05d}{suffix}"
            cams.append(Camera(name, K.clone(), w2c, width, height))
            plans.append(CameraPlan(ring, float(np.linalg.norm(eye - target)),
                                    (float(target[0]), float(target[1]), float(target[2]))))
    return cams, plans


def _place(world: World, target: np.ndarray, distance: float, azimuth: float, elevation: float) -> np.ndarray:
    """A camera position at ``distance`` from ``target``, raised (then pulled back) until it is clear of objects."""
    objects = [w.id for w in world.wholes if w.id not in world.background]
    centers, radii = world.bound_centers[objects], world.bound_radii[objects]
    for _ in range(40):
        direction = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                              math.sin(elevation)])
        eye = target + distance * direction
        clear = np.linalg.norm(centers - eye, axis=1) > radii + CLEARANCE
        if clear.all() and eye[2] > CLEARANCE:
            return eye
        if elevation < math.radians(75):
            elevation += math.radians(5)
        else:
            distance *= 1.1
    return eye


def split_views(n_train: int) -> tuple[int, list[int]]:
    """Total number of views and the indices of the held-out ones: one held-out view for every 8 training views
    (at least one), spread evenly along the path so every ring has some."""
    n_test = max(1, n_train // 8)
    total = n_train + n_test
    test = sorted({min(total - 1, int((j + 0.5) * total / n_test)) for j in range(n_test)})
    return total, test
