"""nerfstudio / instant-ngp ``transforms.json`` and the Blender (NeRF synthetic) ``transforms_{train,test}.json``.

- Intrinsics: ``fl_x fl_y cx cy w h`` globally or per frame (per frame wins); or only ``camera_angle_x`` (and
  optionally ``camera_angle_y``): ``f = w / 2 / tan(angle / 2)``; missing ``cx, cy`` are the image centre; missing
  ``w, h`` come from the image file. Pixel centres are at +0.5, as in nerfstudio.
- Distortion ``k1 k2 (k3 k4) p1 p2`` (nerfstudio's OPENCV model) -> OpenCV coefficients; images are undistorted later.
- Poses: ``transform_matrix`` is an OpenGL camera-to-world (x right, y up, looking down -z); it is converted to an
  OpenCV world-to-camera.
- Optional ``ply_file_path`` (nerfstudio) gives the initial point cloud; optional ``train_filenames`` and
  ``test_filenames`` (nerfstudio) give the split. The Blender layout's own files give its split; a Blender folder
  without ``transforms_test.json`` holds out its ``transforms_val.json`` views instead (with a warning).
- ``file_path`` may use Windows separators (older instant-ngp scenes write ``images\\0001.jpg``).
- Frames whose image file is missing are skipped with one warning that counts them, as instant-ngp does
  (``strict``: refuse instead).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from gags.cameras import OPENGL_TO_OPENCV
from gags.data.images import IMAGE_EXTENSIONS, SourceView, fit_to_image, image_size
from gags.data.ply import read_point_ply
from gags.errors import GagsError
from gags.io import read_json

TRANSFORMS_FILE = "transforms.json"
BLENDER_FILES = ("transforms_train.json", "transforms_test.json")
BLENDER_VAL_FILES = ("transforms_train.json", "transforms_val.json")
"""A Blender folder without a test file: its validation views are held out instead."""
_UNSUPPORTED_MODELS = ("OPENCV_FISHEYE", "EQUIRECTANGULAR", "FISHEYE624", "VR180_L", "VR180_R",
                       "OMNIDIRECTIONALSTEREO_L", "OMNIDIRECTIONALSTEREO_R")


def find_transforms(path: Path) -> list[Path] | None:
    """The transforms file(s) at ``path`` (a .json file, or a folder with transforms.json or the Blender pair)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return [path]
    if (path / TRANSFORMS_FILE).is_file():
        return [path / TRANSFORMS_FILE]
    if all((path / name).is_file() for name in BLENDER_FILES):
        return [path / name for name in BLENDER_FILES]
    if all((path / name).is_file() for name in BLENDER_VAL_FILES):
        warnings.warn(f"{path} has no {BLENDER_FILES[1]}: the views of {BLENDER_VAL_FILES[1]} are held out for "
                      "evaluation instead.", stacklevel=2)
        return [path / name for name in BLENDER_VAL_FILES]
    return None


def _number(frame: dict[str, Any], meta: dict[str, Any], key: str, json_path: Path) -> float | None:
    value = frame.get(key, meta.get(key))
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise GagsError(f"{json_path}: {key} = {value!r} is not a number.") from exc


def _resolve_image(json_dir: Path, file_path: str, images_dir: str | None) -> Path:
    rel = Path(file_path.replace("\\", "/"))  # Windows separators (older instant-ngp scenes)
    path = json_dir / images_dir / rel.name if images_dir is not None else json_dir / rel
    if path.suffix.lower() not in IMAGE_EXTENSIONS:  # Blender writes "./train/r_0" without extension
        for ext in (".png", ".jpg", ".jpeg"):
            if path.with_name(path.name + ext).is_file():
                return path.with_name(path.name + ext)
    return path


def _opencv_w2c(c2w_gl: Any, json_path: Path, file_path: str) -> np.ndarray:
    try:
        c2w = np.array(c2w_gl, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GagsError(f"{json_path}: frame {file_path!r} has a transform_matrix that is not numeric.") from exc
    if c2w.shape == (3, 4):
        c2w = np.vstack([c2w, [0.0, 0.0, 0.0, 1.0]])
    if c2w.shape != (4, 4):
        raise GagsError(f"{json_path}: frame {file_path!r} has a transform_matrix of shape {c2w.shape}; expected 4x4.")
    if not np.isfinite(c2w).all():
        raise GagsError(f"{json_path}: frame {file_path!r} has a NaN or infinite transform_matrix. Fix or remove "
                        "that frame.")
    c2w_cv = c2w @ OPENGL_TO_OPENCV.numpy()
    R = c2w_cv[:3, :3]
    if abs(np.linalg.det(R)) < 1e-8:
        raise GagsError(f"{json_path}: frame {file_path!r} has a singular rotation in its transform_matrix.")
    return np.linalg.inv(c2w_cv)


def _frame_views(json_path: Path, images_dir: str | None, strict: bool = False
                 ) -> tuple[list[tuple[str, SourceView]], dict[str, Any], list[str]]:
    """(file_path, view) of every frame with its image, the file's metadata, and the file_paths of frames skipped
    because their image is missing."""
    meta = read_json(json_path, user_input=True)
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise GagsError(f"{json_path} has no 'frames' list; it is not a nerfstudio / instant-ngp transforms file.")
    if not meta["frames"]:
        raise GagsError(f"{json_path} has an empty 'frames' list (no images).")
    json_dir = json_path.parent
    out = []
    missing: list[str] = []
    for frame in meta["frames"]:
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise GagsError(f"{json_path}: every frame needs 'file_path' and 'transform_matrix'; got {frame!r:.200}.")
        file_path = str(frame["file_path"])
        model = str(frame.get("camera_model", meta.get("camera_model", "OPENCV")))
        if model in _UNSUPPORTED_MODELS:
            raise GagsError(f"{json_path}: camera_model {model} is not supported (pinhole with OPENCV distortion "
                            "only).")
        path = _resolve_image(json_dir, file_path, images_dir)
        if not path.exists() and not strict:
            missing.append(file_path)
            continue
        real = image_size(path)  # raises for missing (with strict) or corrupt files
        w = _number(frame, meta, "w", json_path)
        h = _number(frame, meta, "h", json_path)
        model_size = (int(w), int(h)) if w is not None and h is not None else real
        fx = _number(frame, meta, "fl_x", json_path)
        fy = _number(frame, meta, "fl_y", json_path)
        if fx is None:
            angle_x = _number(frame, meta, "camera_angle_x", json_path)
            if angle_x is None:
                raise GagsError(f"{json_path}: frame {file_path!r} has no focal length (fl_x or camera_angle_x).")
            fx = 0.5 * model_size[0] / math.tan(0.5 * angle_x)
        if fy is None:
            angle_y = _number(frame, meta, "camera_angle_y", json_path)
            fy = 0.5 * model_size[1] / math.tan(0.5 * angle_y) if angle_y is not None else fx
        cx = _number(frame, meta, "cx", json_path)
        cy = _number(frame, meta, "cy", json_path)
        cx = model_size[0] / 2.0 if cx is None else cx
        cy = model_size[1] / 2.0 if cy is None else cy
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)
        if not np.isfinite(K).all():
            raise GagsError(f"{json_path}: frame {file_path!r} has NaN or infinite intrinsics.")
        if not (fx > 0 and fy > 0 and model_size[0] > 0 and model_size[1] > 0):
            raise GagsError(f"{json_path}: frame {file_path!r} has focal lengths {fx:g}, {fy:g} and size "
                            f"{model_size[0]}x{model_size[1]}; they must be positive. Fix fl_x / fl_y (or "
                            "camera_angle_x) and w / h.")
        K = fit_to_image(K, model_size, real, path, allow_rescale=images_dir is not None)
        ks = {k: _number(frame, meta, k, json_path) or 0.0 for k in ("k1", "k2", "k3", "k4", "p1", "p2")}
        if ks["k4"] != 0.0:
            coeffs = np.array([ks["k1"], ks["k2"], ks["p1"], ks["p2"], ks["k3"], ks["k4"], 0.0, 0.0])
        elif ks["k3"] != 0.0:
            coeffs = np.array([ks["k1"], ks["k2"], ks["p1"], ks["p2"], ks["k3"]])
        else:
            coeffs = np.array([ks["k1"], ks["k2"], ks["p1"], ks["p2"]])
        w2c = _opencv_w2c(frame["transform_matrix"], json_path, file_path)
        view = SourceView(name=path.name, path=path, K=K, coeffs=coeffs if np.any(coeffs != 0) else None,
                          world_to_cam=w2c, width=real[0], height=real[1])
        out.append((file_path, view))
    if missing:
        if not out:
            raise GagsError(f"{json_path}: none of its {len(missing)} frames has its image (e.g. {missing[0]!r}). "
                            "Check the image folder.")
        warnings.warn(f"{json_path}: {len(missing)} of {len(meta['frames'])} frames have no image file and are "
                      f"skipped (e.g. {missing[0]!r}); pass --strict to refuse such a scene.", stacklevel=2)
    return out, meta, missing


def _unique_names(views: list[SourceView], base: Path) -> list[SourceView]:
    """When file names repeat, name every view by its path relative to ``base`` (e.g. ``train/r_0.png``)."""
    if len({v.name for v in views}) == len(views):
        return views
    out = []
    for v in views:
        try:
            name = v.path.relative_to(base).as_posix()
        except ValueError:
            name = v.path.as_posix()
        out.append(SourceView(name=name, path=v.path, K=v.K, coeffs=v.coeffs, world_to_cam=v.world_to_cam,
                              width=v.width, height=v.height))
    return out


def read_transforms(json_paths: list[Path], images_dir: str | None = None, strict: bool = False
                    ) -> tuple[Path, list[SourceView], np.ndarray | None, np.ndarray | None,
                               tuple[list[str], list[str]] | None]:
    """Read a transforms file (or the Blender train/test pair).

    Args:
        json_paths: [transforms.json] or [transforms_train.json, transforms_test.json].
        images_dir: optional image folder (relative to the JSON's folder) replacing the frames' folders, e.g.
            nerfstudio's ``images_2``; the intrinsics are scaled by the exact per-axis factor of the real size.
        strict: refuse frames whose image is missing instead of skipping them.
    Returns:
        (root, views sorted by name, points [P, 3] float32 or None, colours [P, 3] uint8 or None,
        (train names, test names) when the files define a split, else None).
    """
    json_paths = [Path(p) for p in json_paths]
    root = json_paths[0].parent
    groups = [_frame_views(p, images_dir, strict) for p in json_paths]
    views = _unique_names([v for frames, _, _ in groups for _, v in frames], root)
    skipped = {Path(m.replace("\\", "/")).name for _, _, missing in groups for m in missing}
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        dup = sorted(n for n, c in Counter(names).items() if c > 1)
        raise GagsError(f"{json_paths[0]}: the same image is listed more than once: {dup[:5]}.")
    split: tuple[list[str], list[str]] | None = None
    if len(json_paths) == 2:  # Blender: the files are the split
        n_train = len(groups[0][0])
        split = (names[:n_train], names[n_train:])
    else:
        meta = groups[0][1]
        if "train_filenames" in meta or "test_filenames" in meta:
            by_path = {}
            for (file_path, _), v in zip(groups[0][0], views, strict=True):
                by_path[Path(file_path.replace("\\", "/")).as_posix()] = v.name
                by_path[Path(file_path.replace("\\", "/")).name] = v.name

            def lookup(key: str) -> list[str]:
                out = []
                for f in meta.get(key, []):
                    k = Path(str(f).replace("\\", "/")).as_posix()
                    if k not in by_path and Path(k).name in skipped:
                        continue  # a frame skipped for its missing image
                    if k not in by_path and Path(k).name not in by_path:
                        raise GagsError(f"{json_paths[0]}: {key} lists {f!r}, which is not among the frames.")
                    out.append(by_path[k] if k in by_path else by_path[Path(k).name])
                return out

            test = lookup("test_filenames")
            train = lookup("train_filenames") if "train_filenames" in meta else [n for n in names if n not in test]
            split = (train, test)
    points = colors = None
    ply_rel = groups[0][1].get("ply_file_path")
    if ply_rel:
        points, colors = read_point_ply(root / str(ply_rel))
    order = sorted(range(len(views)), key=lambda i: views[i].name)
    return root, [views[i] for i in order], points, colors, split
