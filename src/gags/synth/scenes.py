"""``gags synth``: write a procedural scene with exact ground truth that every other verb reads.

Layout of DIR (``--out``):

    transforms.json            nerfstudio: per-frame fl_x fl_y cx cy w h, OpenGL camera-to-world ``transform_matrix``,
                               ``file_path`` relative to the json, ``depth_file_path``, ``ply_file_path``,
                               ``train_filenames`` / ``test_filenames`` (the split)
    images/frame_XXXXX.png     RGB
    depth/frame_XXXXX.npy      [H, W] float32 z-depth along the optical axis (metres), 0 where nothing is hit
    ids/frame_XXXXX.npy        [3, H, W] int32 entity ids, levels (sub-part, part, whole); -1 where nothing is hit
    points3d.ply               surface samples seen by the training views (x y z red green blue)
    label/frame_XXXXX.json     LERF-OVS labels of the evaluation frames (every held-out frame and every
                               ``label_every``-th training frame): info {name, width, height}, objects [{category,
                               segmentation [[x, y], ...], bbox [x1, y1, x2, y2], ...}], one entry per connected
                               component of every instance of every query visible in the frame
    label/frame_XXXXX/NAME.png exact masks (0 / 255) of those categories (spaces in NAME become underscores)
    queries.json               the evaluation queries with their level (whole, part, subpart) and frames
    world.json                 the object hierarchy with names, colours, textures, primitives, and the seed

Re-running the same command resumes: frames already written are read back instead of rendered again.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
from plyfile import PlyData, PlyElement
from tqdm import tqdm

from gags.cameras import OPENGL_TO_OPENCV, Camera
from gags.config import SynthConfig
from gags.errors import GagsError
from gags.io import atomic_path, ensure_dir, read_json, write_json
from gags.synth.labels import mask_to_polygons
from gags.synth.library import PRESETS
from gags.synth.raycast import Render, backproject, compile_world, render
from gags.synth.rig import plan_cameras, split_views
from gags.synth.world import LEVELS, WHOLE, World, build_world

MAX_RESOLUTION = 512
"""Largest --resolution (the renderer is CPU-bound; 512 keeps a 40-view scene within minutes)."""
MIN_RESOLUTION = 16
MIN_QUERY_AREA = 0.001
"""A query counts as visible in a frame when it covers at least this fraction of the image (0.1%: 65 px at 256x256)."""
QUERIES_PER_LEVEL = 10
"""At most this many queries per level (whole, part, subpart); the most often visible ones are chosen."""
MIN_QUERY_FRAMES = 2
"""A query must be visible in at least this many labelled frames (fewer when fewer frames are labelled)."""
MIN_QUERIES = 12
"""The presets are built so that at least this many queries are visible at the default settings."""
FORMAT_VERSION = 1

TRANSFORMS_JSON = "transforms.json"
"""Written last: its presence means the scene is complete."""
WORLD_JSON = "world.json"
QUERIES_JSON = "queries.json"
LABEL_DIR = "label"
IDS_DIR = "ids"
IMAGES_DIR = "images"
DEPTH_DIR = "depth"
POINTS_PLY = "points3d.ply"


def transforms_path(root: Path) -> Path:
    """The scene's transforms file; it exists once the scene is complete."""
    return Path(root) / TRANSFORMS_JSON


def world_path(root: Path) -> Path:
    return Path(root) / WORLD_JSON


def queries_path(root: Path) -> Path:
    """The evaluation queries with their level (whole, part, subpart) and frames."""
    return Path(root) / QUERIES_JSON


def query_levels(root: Path) -> dict[str, str]:
    """Query text -> the level of what it names (``gags.levels.NAMES``) from a synthetic scene's queries ({} when
    the folder is not a synthetic scene)."""
    path = queries_path(root)
    if not path.is_file():
        return {}
    return {q["text"]: q["level"] for q in read_json(path).get("queries", []) if "text" in q and "level" in q}


def label_dir(root: Path) -> Path:
    """The LERF-OVS labels of the evaluation frames."""
    return Path(root) / LABEL_DIR


def ids_dir(root: Path) -> Path:
    """The [3, H, W] entity ids of every frame (sub-part, part, whole)."""
    return Path(root) / IDS_DIR


def frame_name(index: int) -> str:
    return f"frame_{index:05d}"


def slug(name: str) -> str:
    """A category name as a file name: "egg yolk" -> "egg_yolk"."""
    return name.replace(" ", "_").replace("/", "_")


def validate(config: SynthConfig) -> None:
    if config.preset not in PRESETS:
        raise GagsError(f"unknown preset {config.preset!r}; choose one of {', '.join(PRESETS)}.")
    if not MIN_RESOLUTION <= config.resolution <= MAX_RESOLUTION:
        raise GagsError(f"--resolution {config.resolution} is out of range: use {MIN_RESOLUTION}..{MAX_RESOLUTION} "
                        "pixels (the renderer runs on the CPU; larger images take too long).")
    if config.views < 1:
        raise GagsError(f"--views must be at least 1, got {config.views}.")
    if not 1 <= config.supersample <= 4:
        raise GagsError(f"--supersample must be 1..4, got {config.supersample}.")
    if config.label_every < 1:
        raise GagsError(f"--label-every must be at least 1, got {config.label_every}.")
    if config.points < 0:
        raise GagsError(f"--points must be >= 0, got {config.points}.")


def _settings(config: SynthConfig) -> dict:
    return {"format": FORMAT_VERSION, "preset": config.preset, "seed": config.seed, "resolution": config.resolution,
            "views": config.views, "supersample": config.supersample}


def _check_resume(out: Path, config: SynthConfig) -> None:
    """Refuse to mix two different scenes in one folder."""
    path = world_path(out)
    if not path.exists():
        return
    previous = read_json(path).get("settings")
    if previous != _settings(config):
        raise GagsError(f"{out} already holds a different synthetic scene ({previous}). Choose another --out, or "
                        "delete that folder to replace it.")


# ---------------------------------------------------------------------------------------------------------- frames


def _write_frame(out: Path, name: str, r: Render) -> None:
    with atomic_path(out / IMAGES_DIR / f"{name}.png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(r.rgb, cv2.COLOR_RGB2BGR)):
            raise GagsError(f"could not write {tmp}.")
    with atomic_path(out / DEPTH_DIR / f"{name}.npy") as tmp:
        np.save(tmp, r.depth)
    with atomic_path(ids_dir(out) / f"{name}.npy") as tmp:
        np.save(tmp, r.ids)


def _read_frame(out: Path, name: str) -> Render | None:
    paths = [out / IMAGES_DIR / f"{name}.png", out / DEPTH_DIR / f"{name}.npy", ids_dir(out) / f"{name}.npy"]
    if not all(p.exists() for p in paths):
        return None
    bgr = cv2.imread(str(paths[0]), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    try:
        return Render(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.load(paths[1]), np.load(paths[2]))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------- transforms


def _frame_entry(cam: Camera, name: str) -> dict:
    c2w_gl = cam.cam_to_world.double() @ OPENGL_TO_OPENCV  # OpenCV -> OpenGL axes (flip y and z); its own inverse
    K = cam.K
    return {"file_path": f"{IMAGES_DIR}/{name}.png", "depth_file_path": f"{DEPTH_DIR}/{name}.npy",
            "ids_file_path": f"{IDS_DIR}/{name}.npy",
            "transform_matrix": [[round(float(v), 9) for v in row] for row in c2w_gl.tolist()],
            "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
            "w": cam.width, "h": cam.height}


def write_transforms(out: Path, cams: list[Camera], names: list[str], test: list[int]) -> None:
    frames = [_frame_entry(c, n) for c, n in zip(cams, names, strict=True)]
    test_set = set(test)
    K = cams[0].K
    write_json(transforms_path(out), {
        "camera_model": "OPENCV",
        "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
        "w": cams[0].width, "h": cams[0].height, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "ply_file_path": POINTS_PLY,
        "train_filenames": [f["file_path"] for i, f in enumerate(frames) if i not in test_set],
        "test_filenames": [f["file_path"] for i, f in enumerate(frames) if i in test_set],
        "frames": frames,
    })


# -------------------------------------------------------------------------------------------------------- points


def surface_points(cams: list[Camera], renders: list[Render], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coloured surface samples seen by ``cams``: pixels whose 3x3 neighbourhood shows one sub-part (so the depth is
    not an average across an edge), back-projected with the rendered depth.

    Returns:
        xyz: [M, 3] float32 world points, rgb: [M, 3] uint8, M <= n.
    """
    if n == 0 or not cams:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    rng = np.random.default_rng([seed, 104729])  # a fixed stream id for the point draw
    per_view = math.ceil(n / len(cams))
    xyz, rgb = [], []
    for cam, r in zip(cams, renders, strict=True):
        sub = r.ids[0]
        same = np.ones_like(sub, dtype=bool)
        padded = np.pad(sub, 1, mode="edge")
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                same &= padded[1 + dy:1 + dy + sub.shape[0], 1 + dx:1 + dx + sub.shape[1]] == sub
        ys, xs = np.nonzero(same & (r.depth > 0) & (sub >= 0))
        if len(ys) == 0:
            continue
        pick = rng.choice(len(ys), size=min(per_view, len(ys)), replace=False)
        ys, xs = ys[pick], xs[pick]
        pts = backproject(cam, r.depth, xs, ys).numpy()
        xyz.append(pts.astype(np.float32))
        rgb.append(r.rgb[ys, xs])
    if not xyz:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    xyz_all, rgb_all = np.concatenate(xyz), np.concatenate(rgb)
    return xyz_all[:n], rgb_all[:n]


def write_points(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    vertex = np.zeros(len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                                       ("blue", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = xyz.T
    vertex["red"], vertex["green"], vertex["blue"] = rgb.T
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")]).write(str(tmp))


# -------------------------------------------------------------------------------------------------------- queries


def _name_ids(world: World) -> dict[tuple[str, str], np.ndarray]:
    """(level, explicit name) -> ids at that level, for the objects on the table (not the room or the table)."""
    out: dict[tuple[str, str], list[int]] = {}
    for level in LEVELS:
        for node in world.nodes(level):
            whole = node
            while whole.level != WHOLE:
                whole = world.nodes(LEVELS.index(whole.level) + 1)[whole.parent]
            if node.implicit or whole.id in world.background:
                continue
            out.setdefault((level, node.name), []).append(node.id)
    return {k: np.array(v, dtype=np.int64) for k, v in out.items()}


def query_mask(ids: np.ndarray, level: str, members: np.ndarray) -> np.ndarray:
    """[H, W] bool: pixels whose id at ``level`` is one of ``members``. ids: [3, H, W]."""
    return np.isin(ids[LEVELS.index(level)], members)


def choose_queries(world: World, renders: dict[str, Render]) -> list[dict]:
    """The evaluation queries: explicit names of objects on the table that cover >= MIN_QUERY_AREA of at least
    MIN_QUERY_FRAMES labelled frames, up to QUERIES_PER_LEVEL per level, the most often visible first (ties: by
    name)."""
    min_frames = min(MIN_QUERY_FRAMES, len(renders))
    candidates = []
    for (level, name), members in sorted(_name_ids(world).items()):
        frames = []
        for frame, r in renders.items():
            area = query_mask(r.ids, level, members).mean()
            if area >= MIN_QUERY_AREA:
                frames.append(frame)
        if frames and len(frames) >= min_frames:
            candidates.append({"text": name, "level": level, "frames": frames})
    queries = []
    for level in reversed(LEVELS):
        mine = sorted((c for c in candidates if c["level"] == level), key=lambda c: (-len(c["frames"]), c["text"]))
        queries += mine[:QUERIES_PER_LEVEL]
    return queries


def frame_labels(world: World, name: str, r: Render, queries: list[dict]) -> tuple[dict, dict[str, np.ndarray]]:
    """LERF-OVS label JSON of one frame and the exact mask of every query visible in it."""
    name_ids = _name_ids(world)
    h, w = r.depth.shape
    objects, masks = [], {}
    for q in queries:
        if name not in q["frames"]:
            continue
        level, members = q["level"], name_ids[(q["level"], q["text"])]
        level_ids = r.ids[LEVELS.index(level)]
        masks[q["text"]] = np.isin(level_ids, members)
        for instance in members:
            inst = level_ids == instance
            if not inst.any():
                continue
            for polygon, area, bbox in mask_to_polygons(inst):
                objects.append({"category": q["text"], "group": int(instance), "level": level,
                                "segmentation": [[float(x), float(y)] for x, y in polygon], "area": area,
                                "layer": 0, "bbox": [float(v) for v in bbox], "iscrowd": 0, "note": ""})
    info = {"name": f"{name}.png", "width": w, "height": h, "depth": 3, "note": f"gags synth {world.preset}"}
    return {"info": info, "objects": objects}, masks


def write_labels(out: Path, world: World, renders: dict[str, Render], queries: list[dict]) -> None:
    """label/NAME.json and label/NAME/CATEGORY.png for every frame of ``renders``; labels of other frames or
    categories left by an earlier run with other settings are removed, so the folder holds exactly this split."""
    root = ensure_dir(label_dir(out))
    for stale in root.glob("frame_*"):
        if stale.name.removesuffix(".json") not in renders:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    for name, r in renders.items():
        label, masks = frame_labels(world, name, r, queries)
        write_json(root / f"{name}.json", label)
        folder = ensure_dir(root / name)
        keep = {f"{slug(category)}.png" for category in masks}
        for stale in folder.glob("*.png"):
            if stale.name not in keep:
                stale.unlink()
        for category, mask in masks.items():
            with atomic_path(folder / f"{slug(category)}.png") as tmp:
                cv2.imwrite(str(tmp), mask.astype(np.uint8) * 255)


# ------------------------------------------------------------------------------------------------------------ run


def run(config: SynthConfig) -> Path:
    """Write the scene of ``config`` into ``config.out`` (see the module docstring for the layout)."""
    validate(config)
    out = ensure_dir(Path(config.out))
    _check_resume(out, config)
    world = build_world(config.preset, config.seed)
    total, test = split_views(config.views)
    cams, plans = plan_cameras(world, total, config.resolution, config.seed)
    names = [frame_name(i) for i in range(total)]
    compiled = compile_world(world)
    world_json = {"settings": _settings(config), **world.to_json(),
                  "cameras": [{"name": n, "ring": p.ring, "distance": round(p.distance, 6), "target": p.target,
                               "split": "test" if i in test else "train"}
                              for i, (n, p) in enumerate(zip(names, plans, strict=True))]}
    write_json(world_path(out), world_json)

    renders: list[Render] = []
    for cam, name in tqdm(list(zip(cams, names, strict=True)), desc=f"gags synth {config.preset}", unit="view"):
        r = _read_frame(out, name)
        if r is None or r.rgb.shape[:2] != (cam.height, cam.width):
            r = render(world, cam, config.supersample, compiled)
            _write_frame(out, name, r)
        renders.append(r)

    test_set = set(test)
    train = [i for i in range(total) if i not in test_set]
    xyz, rgb = surface_points([cams[i] for i in train], [renders[i] for i in train], config.points, config.seed)
    write_points(out / POINTS_PLY, xyz, rgb)

    labelled = sorted(set(test) | set(train[:: config.label_every]))
    label_renders = {names[i]: renders[i] for i in labelled}
    queries = choose_queries(world, label_renders)
    write_labels(out, world, label_renders, queries)
    write_json(queries_path(out), {
        "preset": config.preset, "seed": config.seed, "min_area": MIN_QUERY_AREA,
        "label_frames": {"train": [names[i] for i in labelled if i not in test_set],
                         "test": [names[i] for i in labelled if i in test_set]},
        "queries": queries,
    })
    write_transforms(out, cams, names, test)  # last: its presence means the scene is complete
    return out


__all__ = ["choose_queries", "frame_labels", "ids_dir", "label_dir", "queries_path", "query_levels", "run",
           "surface_points", "transforms_path", "validate", "world_path", "write_transforms"]
