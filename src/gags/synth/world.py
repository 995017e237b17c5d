"""The procedural world: objects as a hierarchy whole -> parts -> sub-parts of analytic primitives, with names.

Coordinates are metres, +z up; the table top is the plane z = 0. Every primitive belongs to exactly one sub-part,
every sub-part to one part, every part to one whole. A part that is not divided further has one *implicit* sub-part
that carries the part's name (so the three id maps are always nested); likewise a whole made of one piece has one
implicit part. ``World.vocabulary()`` lists the explicit names of every level once.

Ids are indices: ``world.wholes[i].id == i``, ``world.parts[j].id == j``, ``world.subparts[k].id == k``; the
renderer's id maps (``[3, H, W]``, levels sub-part, part, whole) hold these indices, -1 where a ray hits nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from gags.errors import GagsError
from gags.levels import NAMES as LEVELS

SUBPART, PART, WHOLE = LEVELS
"""The entity levels of the world, finest first (``gags.levels``)."""

"""Level names in the order of the id maps' first axis (finest first)."""

PRIMITIVE_KINDS = ("sphere", "ellipsoid", "box", "rounded_box", "cylinder", "cone", "torus", "capsule", "plane")

# Named colours, sRGB in [0, 1]. Food colours are drawn from the same names, so a colour never names a kind.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.12, 0.12),
    "orange": (0.93, 0.48, 0.10),
    "yellow": (0.95, 0.82, 0.18),
    "green": (0.22, 0.60, 0.22),
    "dark green": (0.08, 0.28, 0.12),
    "teal": (0.10, 0.55, 0.55),
    "blue": (0.16, 0.32, 0.80),
    "purple": (0.50, 0.22, 0.65),
    "pink": (0.95, 0.55, 0.68),
    "brown": (0.45, 0.28, 0.14),
    "beige": (0.90, 0.80, 0.62),
    "white": (0.93, 0.93, 0.90),
    "gray": (0.52, 0.52, 0.54),
    "black": (0.09, 0.09, 0.10),
}

TEXTURES = ("plain", "striped", "checkered", "dotted", "speckled")
"""Procedural textures: solid (3D) patterns evaluated at the hit point in the primitive's own frame."""

PAINT = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "white", "gray", "black")
"""Colours of painted / manufactured things (mugs, toys, bowls...)."""


@dataclass(frozen=True)
class Material:
    """Surface appearance of one sub-part.

    ``color`` names the dominant colour; a texture mixes it with a shade of itself (lighter for dark colours, darker
    for light ones), so the colour name stays true. ``scale`` is the texture period in metres; ``axis`` the local axis
    of stripes; ``seed`` varies the speckle noise; ``contrast`` is how far the shade goes toward white or black.
    """

    color: str
    texture: str = "plain"
    scale: float = 0.01
    axis: int = 2
    seed: int = 0
    contrast: float = 0.4

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown colour {self.color!r}")
        if self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}")

    @property
    def rgb(self) -> np.ndarray:
        """[3] base colour."""
        return np.asarray(COLORS[self.color], dtype=np.float32)

    @property
    def rgb2(self) -> np.ndarray:
        """[3] the texture's second colour: the base colour mixed ``contrast`` toward white (dark colours) or black."""
        base = self.rgb
        luminance = float(base @ np.array([0.299, 0.587, 0.114], dtype=np.float32))  # Rec. 601 luma weights
        target = np.ones(3, np.float32) if luminance < 0.45 else np.zeros(3, np.float32)
        return ((1 - self.contrast) * base + self.contrast * target).astype(np.float32)

    def to_json(self) -> dict:
        return {"color": self.color, "texture": self.texture, "scale": self.scale, "axis": self.axis,
                "seed": self.seed, "contrast": self.contrast}


@dataclass
class Prim:
    """One analytic primitive, in its owner's frame (an object while building, the world once placed).

    The primitive's own frame is ``x_owner = rotation @ x_local + translation``. Local shapes (``params``):
      sphere: r | ellipsoid: rx ry rz | box: hx hy hz (half extents) | rounded_box: hx hy hz rr (corner radius,
      inside the half extents) | cylinder: r h (half height, axis z) | cone: r0 r1 h (radius r0 at z=-h, r1 at z=+h)
      | torus: R r (ring in the xy plane) | capsule: r h (segment z in [-h, h]) | plane: hx hy (rectangle at z=0).
    ``caps`` (cylinder, cone): "both", "bottom", "top" or "none" (open tube, both faces visible).
    ``clip``: keep only local points with ``normal . x <= offset`` (a bowl is a clipped ellipsoid; its inside shows).
    ``encloses``: the primitive bounds the scene (the room's floor, walls, ceiling): everything else lies in front of
    it as seen from inside, so the renderer tests it only against rays that hit nothing else.
    """

    kind: str
    params: dict[str, float]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    caps: str = "both"
    clip: tuple[tuple[float, float, float], float] | None = None
    casts_shadow: bool = True
    encloses: bool = False

    def __post_init__(self) -> None:
        if self.kind not in PRIMITIVE_KINDS:
            raise ValueError(f"unknown primitive kind {self.kind!r}")
        self.rotation = np.asarray(self.rotation, dtype=np.float64).reshape(3, 3)
        self.translation = np.asarray(self.translation, dtype=np.float64).reshape(3)

    def bound_radius(self) -> float:
        """Radius of a sphere about the local origin that contains the primitive."""
        p = self.params
        if self.kind == "sphere":
            return p["r"]
        if self.kind == "ellipsoid":
            return max(p["rx"], p["ry"], p["rz"])
        if self.kind in ("box", "rounded_box"):
            return float(np.linalg.norm([p["hx"], p["hy"], p["hz"]]))
        if self.kind == "cylinder":
            return float(np.hypot(p["r"], p["h"]))
        if self.kind == "cone":
            return float(np.hypot(max(p["r0"], p["r1"]), p["h"]))
        if self.kind == "torus":
            return p["R"] + p["r"]
        if self.kind == "capsule":
            return p["h"] + p["r"]
        return float(np.hypot(p["hx"], p["hy"]))  # plane

    def half_extents(self) -> np.ndarray:
        """[3] half sizes of a box about the local origin, along the local axes, that contains the primitive."""
        p = self.params
        if self.kind == "sphere":
            return np.full(3, p["r"])
        if self.kind == "ellipsoid":
            return np.array([p["rx"], p["ry"], p["rz"]])
        if self.kind in ("box", "rounded_box"):
            return np.array([p["hx"], p["hy"], p["hz"]])
        if self.kind == "cylinder":
            return np.array([p["r"], p["r"], p["h"]])
        if self.kind == "cone":
            r = max(p["r0"], p["r1"])
            return np.array([r, r, p["h"]])
        if self.kind == "torus":
            return np.array([p["R"] + p["r"], p["R"] + p["r"], p["r"]])
        if self.kind == "capsule":
            return np.array([p["r"], p["r"], p["h"] + p["r"]])
        return np.array([p["hx"], p["hy"], 0.0])  # plane

    def moved(self, rotation: np.ndarray, translation: np.ndarray, scale: float = 1.0) -> Prim:
        """This primitive after ``x -> rotation @ (scale * x) + translation`` (lengths scale too)."""
        params = {k: v * scale for k, v in self.params.items()}
        clip = None if self.clip is None else (self.clip[0], self.clip[1] * scale)
        return Prim(self.kind, params, rotation @ self.rotation, rotation @ (scale * self.translation) + translation,
                    self.caps, clip, self.casts_shadow, self.encloses)

    def to_json(self) -> dict:
        out = {"kind": self.kind, "params": {k: round(float(v), 6) for k, v in self.params.items()},
               "rotation": np.round(self.rotation, 6).tolist(), "translation": np.round(self.translation, 6).tolist()}
        if self.kind in ("cylinder", "cone"):
            out["caps"] = self.caps
        if self.clip is not None:
            out["clip"] = {"normal": list(self.clip[0]), "offset": round(float(self.clip[1]), 6)}
        return out


@dataclass
class SubSpec:
    name: str
    material: Material
    prims: list[Prim]
    implicit: bool = False


@dataclass
class PartSpec:
    name: str
    subs: list[SubSpec]
    implicit: bool = False


@dataclass
class WholeSpec:
    """An object as built by the library, in its own frame (base on z = 0, centred on the z axis)."""

    kind: str
    name: str
    parts: list[PartSpec]

    def prims(self) -> list[Prim]:
        return [p for part in self.parts for sub in part.subs for p in sub.prims]

    def footprint(self) -> float:
        """Radius in the xy plane of a disc about the origin that contains the object (from bounding spheres)."""
        return max(float(np.hypot(*p.translation[:2])) + p.bound_radius() for p in self.prims())

    def height(self) -> float:
        return max(float(p.translation[2]) + p.bound_radius() for p in self.prims())


def sub(name: str, material: Material, *prims: Prim) -> SubSpec:
    """A named sub-part."""
    return SubSpec(name, material, list(prims))


def part(name: str, material: Material, *prims: Prim) -> PartSpec:
    """A part with no named sub-parts (one implicit sub-part carrying the part's name)."""
    return PartSpec(name, [SubSpec(name, material, list(prims), implicit=True)])


def part_of(name: str, *subs: SubSpec) -> PartSpec:
    """A part made of named sub-parts."""
    return PartSpec(name, list(subs))


@dataclass
class Node:
    """One entity of the hierarchy at one level."""

    id: int
    level: str
    name: str
    kind: str
    parent: int
    """Id of the parent at the next coarser level (-1 for wholes)."""
    children: list[int]
    material: Material
    """The material of the entity's main (first) sub-part: its colour and texture names describe it."""
    implicit: bool = False


@dataclass(frozen=True)
class Description:
    """What a crop of one entity shows, for captions: ``name`` at its level, colour, texture and the parents."""

    level: str
    id: int
    name: str
    kind: str
    color: str
    texture: str
    parents: tuple[str, ...]
    """Names of the enclosing part and whole (nearest first); empty for a whole."""
    implicit: bool

    def text(self) -> str:
        """A short caption, e.g. "red striped mug" or "yellow egg yolk"."""
        texture = "" if self.texture == "plain" else f"{self.texture} "
        return f"{self.color} {texture}{self.name}"


@dataclass
class World:
    """A composed scene: the hierarchy, the placed primitives, one directional light."""

    preset: str
    seed: int
    wholes: list[Node]
    parts: list[Node]
    subparts: list[Node]
    prims: list[Prim]
    """World-frame primitives."""
    prim_subpart: np.ndarray
    """[P] int: the sub-part id of every primitive."""
    light: np.ndarray
    """[3] unit vector toward the (directional) light."""
    focus: np.ndarray
    """[3] centre of interest (the middle of the objects on the table)."""
    extent: float
    """Radius around ``focus`` that holds the objects on the table."""
    positions: np.ndarray
    """[W, 3] where each whole stands (its base centre); the room's surfaces have their own centre."""
    bound_centers: np.ndarray
    """[W, 3] centre of a sphere containing each whole."""
    bound_radii: np.ndarray
    """[W] radius of that sphere."""
    background: frozenset[int] = frozenset()
    """Ids of wholes that are surroundings (floor, wall, table): not "objects on the table"."""

    @property
    def prim_part(self) -> np.ndarray:
        """[P] int: the part id of every primitive."""
        return np.array([self.subparts[s].parent for s in self.prim_subpart], dtype=np.int64)

    @property
    def prim_whole(self) -> np.ndarray:
        """[P] int: the whole id of every primitive."""
        return np.array([self.parts[p].parent for p in self.prim_part], dtype=np.int64)

    def nodes(self, level: int | str) -> list[Node]:
        """The entities of one level (0 / "subpart", 1 / "part", 2 / "whole")."""
        name = LEVELS[level] if isinstance(level, int) else level
        if name not in LEVELS:
            raise GagsError(f"unknown level {level!r}; use one of {LEVELS} or 0, 1, 2.")
        return dict(zip(LEVELS, (self.subparts, self.parts, self.wholes), strict=True))[name]

    def describe(self, level: int | str, id: int) -> Description:
        """Name, colour, texture and parent names of entity ``id`` at ``level`` (0 sub-part, 1 part, 2 whole)."""
        nodes = self.nodes(level)
        if not 0 <= id < len(nodes):
            raise GagsError(f"no entity {id} at level {level!r}: this world has {len(nodes)} there.")
        node = nodes[id]
        parents: list[str] = []
        lvl = LEVELS.index(node.level)
        parent = node.parent
        while lvl < 2:
            lvl += 1
            up = self.nodes(lvl)[parent]
            parents.append(up.name)
            parent = up.parent
        return Description(node.level, node.id, node.name, node.kind, node.material.color, node.material.texture,
                           tuple(parents), node.implicit)

    @staticmethod
    def vocabulary() -> dict[str, list[str]]:
        """Every name the object library can produce, per level, plus colour and texture names.

        The same for every world (it is the library's vocabulary, not only what this world holds); see ``present``.
        """
        from gags.synth.library import library_vocabulary

        return library_vocabulary()

    def present(self) -> dict[str, list[str]]:
        """The explicit names this world holds, per level (sorted)."""
        out = {}
        for level in reversed(LEVELS):
            out[level] = sorted({n.name for n in self.nodes(level) if not n.implicit})
        return out

    def to_json(self) -> dict:
        """The object list with names, colours, textures, primitives and the seed (world.json)."""
        wholes = []
        prims_of_sub: dict[int, list[dict]] = {}
        for prim, s in zip(self.prims, self.prim_subpart, strict=True):
            prims_of_sub.setdefault(int(s), []).append(prim.to_json())
        for w in self.wholes:
            parts = []
            for p in w.children:
                pn = self.parts[p]
                subs = []
                for s in pn.children:
                    sn = self.subparts[s]
                    subs.append({"id": sn.id, "name": sn.name, "implicit": sn.implicit,
                                 "material": sn.material.to_json(), "primitives": prims_of_sub.get(sn.id, [])})
                parts.append({"id": pn.id, "name": pn.name, "implicit": pn.implicit, "color": pn.material.color,
                              "texture": pn.material.texture, "subparts": subs})
            wholes.append({"id": w.id, "name": w.name, "kind": w.kind, "color": w.material.color,
                           "texture": w.material.texture, "background": w.id in self.background,
                           "position": np.round(self.positions[w.id], 6).tolist(), "parts": parts})
        return {"preset": self.preset, "seed": self.seed, "light": np.round(self.light, 6).tolist(),
                "focus": np.round(self.focus, 6).tolist(), "extent": round(float(self.extent), 6),
                "levels": list(LEVELS), "objects": wholes}

    def summary(self) -> str:
        return json.dumps({"preset": self.preset, "seed": self.seed, "wholes": len(self.wholes),
                           "parts": len(self.parts), "subparts": len(self.subparts), "primitives": len(self.prims)})


def assemble(preset: str, seed: int, placed: list[tuple[WholeSpec, np.ndarray, np.ndarray, float]],
             light: np.ndarray, focus: np.ndarray, extent: float, background: set[int] | None = None) -> World:
    """Number the hierarchy and move every object's primitives into the world.

    Args:
        placed: (object, rotation [3, 3], translation [3], scale) per whole; whole ids follow this order.
    """
    wholes: list[Node] = []
    parts: list[Node] = []
    subs: list[Node] = []
    prims: list[Prim] = []
    prim_sub: list[int] = []
    positions, centers, radii = [], [], []
    for spec, rotation, translation, scale in placed:
        wid = len(wholes)
        whole = Node(wid, WHOLE, spec.name, spec.kind, -1, [], spec.parts[0].subs[0].material)
        wholes.append(whole)
        placed_prims: list[Prim] = []
        for pspec in spec.parts:
            pid = len(parts)
            pnode = Node(pid, PART, pspec.name, spec.kind, wid, [], pspec.subs[0].material, pspec.implicit)
            parts.append(pnode)
            whole.children.append(pid)
            for sspec in pspec.subs:
                sid = len(subs)
                subs.append(Node(sid, SUBPART, sspec.name, spec.kind, pid, [], sspec.material, sspec.implicit))
                pnode.children.append(sid)
                for prim in sspec.prims:
                    moved = prim.moved(rotation, translation, scale)
                    prims.append(moved)
                    placed_prims.append(moved)
                    prim_sub.append(sid)
        positions.append(np.asarray(translation, dtype=np.float64))
        lo = np.min([p.translation - p.bound_radius() for p in placed_prims], axis=0)
        hi = np.max([p.translation + p.bound_radius() for p in placed_prims], axis=0)
        center = 0.5 * (lo + hi)
        centers.append(center)
        radii.append(max(float(np.linalg.norm(p.translation - center)) + p.bound_radius() for p in placed_prims))
    light = np.asarray(light, dtype=np.float64)
    return World(preset, seed, wholes, parts, subs, prims, np.asarray(prim_sub, dtype=np.int64),
                 light / np.linalg.norm(light), np.asarray(focus, dtype=np.float64), float(extent),
                 np.stack(positions), np.stack(centers), np.asarray(radii), frozenset(background or ()))


def build_world(preset: str, seed: int) -> World:
    """Compose a scene: "ramen", "teatime", "figurines", "kitchen" (tabletop presets) or "random".

    Deterministic: the same preset and seed give the same world.
    """
    from gags.synth.library import PRESETS, compose

    if preset not in PRESETS:
        raise GagsError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    return compose(preset, seed)
