"""A posed image set in one form for every stage: ``load_scene`` detects the format, the scene record keeps it in OUT.

Accepted inputs (``load_scene(path)``), tried in this order:
1. a ``transforms.json`` (nerfstudio / instant-ngp) or a folder holding one;
2. a Blender (NeRF synthetic) folder with ``transforms_train.json`` and ``transforms_test.json``;
3. a COLMAP model: ``path`` itself, ``path/sparse/0`` or ``path/sparse``, with an image folder in the scene root
   (``images``, ``images_2``, ``images_4``, ``images_8``, or ``images_dir``);
4. a scene output folder (OUT) whose scene record was written by :func:`save_scene_json` (its path:
   ``gags.workspace.Workspace.scene_json``).

Undistortion cache: distorted images are undistorted once and stored as PNG in ``cache_dir`` (``load_scene``'s argument;
default ``$XDG_CACHE_HOME/gags/undistorted/NAME-HASH``, ``~/.cache`` without XDG_CACHE_HOME; datasets are never written
to). Entries are keyed by the calibration and the source file's path, size and modification time, so edited files or
calibrations are never served stale. An unwritable cache only costs time (a warning, then undistortion on every load).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from gags.cameras import Camera
from gags.data.colmap import find_model_dir, read_colmap
from gags.data.images import (
    Distortion,
    SourceView,
    is_distorted,
    read_image,
    resize_image,
    undistort_image,
    undistort_maps,
    undistorted_intrinsics,
)
from gags.data.ply import read_point_ply, write_point_ply
from gags.data.transforms_json import find_transforms, read_transforms
from gags.errors import GagsError
from gags.io import atomic_path, ensure_dir, read_json, write_json
from gags.workspace import Workspace

SCENE_JSON_VERSION = 1
# LLFF / Mip-NeRF 360 / 3DGS convention: every 8th image (index % 8 == 0) is held out.
DEFAULT_TEST_EVERY = 8
# 3DGS getNerfppNorm: the scene extent is the largest camera distance from the camera centroid times 1.1.
EXTENT_MARGIN = 1.1
# Part of every undistortion cache key: bump it when the undistortion itself changes (new intrinsics, resampling).
UNDISTORT_CACHE_VERSION = 1


@dataclass
class Scene:
    """Posed images with undistorted pinhole cameras.

    Attributes:
        root: scene folder (where the format's files are).
        source_format: "colmap" or "transforms".
        cameras: one undistorted OpenCV camera per image, at the image files' resolution.
        image_paths: the image files (as stored; distorted ones are undistorted by :meth:`load_image`).
        train_ids, test_ids: indices into ``cameras``.
        points: [P, 3] float32 initial points (COLMAP points3D, nerfstudio ply_file_path) or None.
        point_colors: [P, 3] uint8 or None.
        scale: scene extent, 1.1 x the largest distance of a training camera centre from their mean (3DGS).
        distortions: per image, the lens distortion to remove, or None.
        cache_dir: where undistorted images are cached (only used when some image is distorted).
    """

    root: Path
    source_format: str
    cameras: list[Camera]
    image_paths: list[Path]
    train_ids: list[int]
    test_ids: list[int]
    points: np.ndarray | None = None
    point_colors: np.ndarray | None = None
    scale: float = 1.0
    distortions: list[Distortion | None] = field(default_factory=list)
    cache_dir: Path | None = None
    _maps: dict[bytes, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.distortions:
            self.distortions = [None] * len(self.cameras)
        if not (len(self.cameras) == len(self.image_paths) == len(self.distortions)):
            raise ValueError("cameras, image_paths and distortions must have one entry per image")

    def __len__(self) -> int:
        return len(self.cameras)

    @property
    def names(self) -> list[str]:
        """Image names, in order."""
        return [c.name for c in self.cameras]

    def index(self, name: str) -> int:
        """Index of the image called ``name``."""
        for i, cam in enumerate(self.cameras):
            if cam.name == name:
                return i
        raise GagsError(f"no image named {name!r} in the scene at {self.root}.")

    def camera(self, i: int, downscale: float = 1) -> Camera:
        """Camera ``i`` for its image downscaled by ``downscale`` (sizes rounded, intrinsics scaled per axis)."""
        if downscale <= 0:
            raise GagsError(f"downscale must be positive, got {downscale}.")
        cam = self.cameras[i]
        return cam if downscale == 1 else cam.scaled(1.0 / downscale)

    def load_image(self, i: int, downscale: float = 1) -> np.ndarray:
        """Image ``i`` as [H, W, 3] uint8 RGB, undistorted, at the size of ``camera(i, downscale)``.

        Alpha is composited on black. Raises GagsError for a missing or corrupt file, or one whose size differs from
        its camera's.
        """
        cam = self.cameras[i]
        path = Path(self.image_paths[i])
        dist = self.distortions[i]
        image = self._cached(path, dist) if dist is not None else None
        if image is None:
            image = read_image(path)
            h, w = image.shape[:2]
            expected = (dist.width, dist.height) if dist is not None else (cam.width, cam.height)
            if (w, h) != expected:
                raise GagsError(f"image {path} is {w}x{h} but its camera {cam.name!r} is {expected[0]}x{expected[1]}. "
                                "Use images matching the camera model (or the right images_N folder).")
            if dist is not None:
                key = dist.key()
                if key not in self._maps:
                    self._maps[key] = undistort_maps(dist)
                image = undistort_image(image, self._maps[key])
                self._store(path, dist, image)
        target = self.camera(i, downscale)
        return resize_image(image, target.width, target.height)

    # --- undistortion cache -------------------------------------------------------------------------------------
    def _cache_file(self, path: Path, dist: Distortion) -> Path | None:
        if self.cache_dir is None:
            return None
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = f"v{UNDISTORT_CACHE_VERSION}:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        digest = hashlib.sha1(dist.key() + stamp.encode()).hexdigest()
        return Path(self.cache_dir) / f"{path.stem}.{digest[:16]}.png"

    def _cached(self, path: Path, dist: Distortion) -> np.ndarray | None:
        if not path.is_file():
            raise GagsError(f"image {path} does not exist. Restore it, or remove it from the scene's camera model.")
        file = self._cache_file(path, dist)
        if file is None or not file.is_file():
            return None
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (dist.height, dist.width):
            return None  # unreadable cache entry: redo it
        return np.ascontiguousarray(bgr[..., ::-1])

    def _store(self, path: Path, dist: Distortion, image: np.ndarray) -> None:
        file = self._cache_file(path, dist)
        if file is None:
            return
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(file) as tmp:
                if not cv2.imwrite(str(tmp), np.ascontiguousarray(image[..., ::-1])):
                    raise OSError(f"cv2.imwrite failed for {tmp}")
        except (OSError, GagsError) as exc:  # the cache is an optimisation: never fail a load because of it
            warnings.warn(f"cannot cache the undistorted image in {file.parent}: {exc}", stacklevel=3)


def default_cache_dir(image_folder: Path) -> Path:
    """Per-user cache folder for the undistorted copies of ``image_folder``'s images.

    ``$XDG_CACHE_HOME/gags/undistorted/NAME-HASH`` (``~/.cache`` without XDG_CACHE_HOME), HASH naming the folder's
    absolute path. The dataset folder itself is never written to.
    """
    image_folder = Path(image_folder).resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(image_folder).encode()).hexdigest()[:16]
    return base / "gags" / "undistorted" / f"{image_folder.name}-{digest}"


def split_ids(names: Sequence[str], test_every: int = DEFAULT_TEST_EVERY,
              split: tuple[Sequence[str], Sequence[str]] | None = None) -> tuple[list[int], list[int]]:
    """Train and test indices.

    Args:
        names: image names in scene order.
        test_every: hold out index % test_every == 0 (LLFF); 0 or less holds out nothing.
        split: explicit (train names, test names); wins over ``test_every``.
    """
    if split is not None:
        index = {n: i for i, n in enumerate(names)}
        train_names, test_names = split
        unknown = [n for n in [*train_names, *test_names] if n not in index]
        if unknown:
            raise GagsError(f"the train/test split names images that are not in the scene: {unknown[:5]}.")
        overlap = set(train_names) & set(test_names)
        if overlap:
            raise GagsError(f"images are both train and test: {sorted(overlap)[:5]}.")
        return sorted(index[n] for n in train_names), sorted(index[n] for n in test_names)
    n = len(names)
    if test_every <= 0 or n < 2:
        return list(range(n)), []
    test = [i for i in range(n) if i % test_every == 0]
    return [i for i in range(n) if i % test_every != 0], test


def scene_extent(cameras: Sequence[Camera]) -> float:
    """1.1 x the largest distance of a camera centre from the centroid (3DGS getNerfppNorm); 1.0 for one camera."""
    if not cameras:
        return 1.0
    centers = torch.stack([c.center.double() for c in cameras])
    radius = (centers - centers.mean(0)).norm(dim=1).max().item()
    return float(radius * EXTENT_MARGIN) if radius > 1e-9 else 1.0


def _build(root: Path, source_format: str, views: list[SourceView], points: np.ndarray | None,
           colors: np.ndarray | None, train_ids: list[int], test_ids: list[int], cache_dir: Path | None) -> Scene:
    cameras, distortions = [], []
    for v in views:
        dist = None
        K = v.K
        if is_distorted(v.coeffs):
            dist = Distortion(K=np.asarray(v.K, np.float64), coeffs=np.asarray(v.coeffs, np.float64),
                              width=v.width, height=v.height)
            K = undistorted_intrinsics(dist)
        cameras.append(Camera(name=v.name, K=torch.from_numpy(np.asarray(K, np.float64)).float(),
                              world_to_cam=torch.from_numpy(np.asarray(v.world_to_cam, np.float64)).float(),
                              width=v.width, height=v.height))
        distortions.append(dist)
    train_cams = [cameras[i] for i in train_ids] or cameras
    return Scene(root=Path(root), source_format=source_format, cameras=cameras,
                 image_paths=[Path(v.path) for v in views], train_ids=list(train_ids), test_ids=list(test_ids),
                 points=points, point_colors=colors, scale=scene_extent(train_cams), distortions=distortions,
                 cache_dir=cache_dir)


def _unknown_format(path: Path) -> GagsError:
    has_images = path.is_dir() and any(p.suffix.lower() in (".png", ".jpg", ".jpeg") for p in path.iterdir())
    hint = (" It holds images only: run structure-from-motion first (`gags reconstruct --images DIR --out OUT`)."
            if has_images else "")
    return GagsError(
        f"{path}: unknown scene format. Accepted: a COLMAP model (cameras/images/points3D .bin or .txt in the folder, "
        "its sparse/0 or its sparse/, with an images folder beside), a nerfstudio / instant-ngp transforms.json (the "
        "file or its folder), a Blender folder with transforms_train.json and transforms_test.json, or an output "
        f"folder written by `gags reconstruct`.{hint}")


def load_scene(path: Path, *, images_dir: str | None = None, test_every: int = DEFAULT_TEST_EVERY,
               split: tuple[Sequence[str], Sequence[str]] | None = None, cache_dir: Path | None = None,
               strict: bool = False) -> Scene:
    """Load a scene in any accepted format (see the module docstring).

    Args:
        path: scene folder, model folder or transforms file.
        images_dir: image folder relative to the scene root (COLMAP: default the first of images, images_2, images_4,
            images_8; transforms: replaces the frames' folders, e.g. images_2), or an absolute path.
        test_every: hold out every N-th image (index % N == 0, LLFF); 0 holds out none.
        split: explicit (train names, test names); wins over the transforms file's own split and ``test_every``.
        cache_dir: undistortion cache folder (default: see the module docstring).
        strict: refuse a transforms file that lists frames whose image is missing (default: skip them, with a
            warning that counts them).
    Raises:
        GagsError: unknown format, missing/corrupt image, size mismatch, NaN pose, empty model.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise GagsError(f"scene path {path} does not exist.")
    if path.is_file() and path.name in {f"{n}{e}" for n in ("cameras", "images", "points3D") for e in (".bin", ".txt")}:
        path = path.parent
    is_scene_json = path.is_file() and path == Workspace(path.parent).scene_json
    transforms = None if is_scene_json else find_transforms(path)
    model_dir = find_model_dir(path) if path.is_dir() else None
    if transforms is not None:
        root, views, points, colors, file_split = read_transforms(transforms, images_dir, strict)
        fmt = "transforms"
        image_folder = views[0].path.parent
    elif model_dir is not None:
        root, image_folder, views, points, colors = read_colmap(model_dir, images_dir)
        fmt, file_split = "colmap", None
    elif is_scene_json or Workspace(path).scene_json.is_file():
        return load_scene_json(path.parent if is_scene_json else path)
    else:
        raise _unknown_format(path)
    names = [v.name for v in views]
    train_ids, test_ids = split_ids(names, test_every, split if split is not None else file_split)
    if cache_dir is None and any(is_distorted(v.coeffs) for v in views):
        cache_dir = default_cache_dir(image_folder)
    return _build(root, fmt, views, points, colors, train_ids, test_ids, cache_dir)


# --- the scene record of OUT ------------------------------------------------------------------------------------
def save_scene_json(scene: Scene, out: Path) -> Path:
    """Record ``scene`` in the scene output folder ``out`` (``Workspace.save_scene``). Returns the record's path."""
    return Workspace(Path(out)).save_scene(scene)


def load_scene_json(out: Path) -> Scene:
    """The scene recorded in the scene output folder ``out`` (``Workspace.load_scene``)."""
    return Workspace(Path(out)).load_scene()


def write_scene_record(scene: Scene, path: Path, points_path: Path) -> Path:
    """Write the scene record (JSON) to ``path`` and, when the scene has points, them to ``points_path`` (a PLY in
    the same folder), both atomically. Returns ``path``."""
    path, points_path = Path(path), Path(points_path)
    ensure_dir(path.parent)
    points_file = None
    if scene.points is not None and len(scene.points):
        colors = scene.point_colors if scene.point_colors is not None else np.full_like(scene.points, 128, np.uint8)
        write_point_ply(points_path, scene.points, colors)
        points_file = os.path.relpath(points_path, path.parent)
    images = []
    train, test = set(scene.train_ids), set(scene.test_ids)
    for i, (cam, image_path, dist) in enumerate(zip(scene.cameras, scene.image_paths, scene.distortions, strict=True)):
        images.append({
            "name": cam.name,
            "path": str(Path(image_path).resolve()),
            "split": "test" if i in test else ("train" if i in train else "none"),
            "width": cam.width,
            "height": cam.height,
            "K": cam.K.double().tolist(),
            "world_to_cam": cam.world_to_cam.double().tolist(),
            "distortion": None if dist is None else {
                "K": np.asarray(dist.K).tolist(), "coeffs": np.asarray(dist.coeffs).tolist(),
                "width": dist.width, "height": dist.height},
        })
    data = {
        "format_version": SCENE_JSON_VERSION,
        "source_format": scene.source_format,
        "root": str(Path(scene.root).resolve()),
        "scale": scene.scale,
        "train": [scene.cameras[i].name for i in scene.train_ids],
        "test": [scene.cameras[i].name for i in scene.test_ids],
        "points": points_file,
        "num_points": 0 if scene.points is None else len(scene.points),
        "cache_dir": None if scene.cache_dir is None else str(Path(scene.cache_dir).resolve()),
        "images": images,
    }
    write_json(path, data)
    return path


def read_scene_record(path: Path) -> Scene:
    """Read a scene record written by :func:`write_scene_record`."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or "images" not in data or "source_format" not in data:
        raise GagsError(f"{path} is not a gags scene record (no images / source_format). Re-run `gags reconstruct`.")
    version = data.get("format_version")
    if version != SCENE_JSON_VERSION:
        raise GagsError(f"{path} has format_version {version}; this gags reads {SCENE_JSON_VERSION}. "
                        "Re-run `gags reconstruct` to rewrite it.")
    try:
        cameras, paths, distortions = [], [], []
        for entry in data["images"]:
            cameras.append(Camera(name=entry["name"], K=torch.tensor(entry["K"], dtype=torch.float64),
                                  world_to_cam=torch.tensor(entry["world_to_cam"], dtype=torch.float64),
                                  width=int(entry["width"]), height=int(entry["height"])))
            paths.append(Path(entry["path"]))
            d = entry.get("distortion")
            distortions.append(None if d is None else Distortion(
                K=np.asarray(d["K"], np.float64), coeffs=np.asarray(d["coeffs"], np.float64),
                width=int(d["width"]), height=int(d["height"])))
        index = {c.name: i for i, c in enumerate(cameras)}
        train_ids = [index[n] for n in data["train"]]
        test_ids = [index[n] for n in data["test"]]
        scale = float(data["scale"])
    except (KeyError, TypeError, ValueError) as exc:
        raise GagsError(f"{path} is incomplete or malformed ({type(exc).__name__}: {exc}). Re-run "
                        "`gags reconstruct` to rewrite it.") from exc
    points = colors = None
    if data.get("points"):
        points, colors = read_point_ply(path.parent / data["points"])
    if not math.isfinite(scale) or scale <= 0:
        raise GagsError(f"{path}: scale {scale} must be a positive number.")
    return Scene(root=Path(data["root"]), source_format=str(data["source_format"]), cameras=cameras,
                 image_paths=paths, train_ids=train_ids, test_ids=test_ids, points=points, point_colors=colors,
                 scale=scale, distortions=distortions,
                 cache_dir=Path(data["cache_dir"]) if data.get("cache_dir") else None)


def with_split(scene: Scene, test_every: int = DEFAULT_TEST_EVERY,
               split: tuple[Sequence[str], Sequence[str]] | None = None) -> Scene:
    """A copy of ``scene`` with another train/test split (scale recomputed from the new training cameras)."""
    train_ids, test_ids = split_ids(scene.names, test_every, split)
    train_cams = [scene.cameras[i] for i in train_ids] or scene.cameras
    return replace(scene, train_ids=train_ids, test_ids=test_ids, scale=scene_extent(train_cams), _maps={})
