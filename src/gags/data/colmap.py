"""COLMAP models (binary or text; classic cameras/images/points3D and the newer layout with rigs/frames) via pycolmap.

Supported camera models: SIMPLE_PINHOLE, PINHOLE (no distortion), SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV (converted
to OpenCV distortion coefficients; images are undistorted later, see ``gags.data.images``). Fisheye and other models
raise a GagsError asking for ``colmap image_undistorter``.
"""

from __future__ import annotations

import signal
import threading
import warnings
from pathlib import Path

import numpy as np
import pycolmap

from gags.data.images import SourceView, fit_to_image, image_size, list_images
from gags.errors import GagsError

# Folders holding the images of a COLMAP scene, tried in this order when none is given (Mip-NeRF 360 convention:
# ``images`` at full resolution, ``images_N`` downscaled by N).
DEFAULT_IMAGE_DIRS = ("images", "images_2", "images_4", "images_8")
MODEL_FILES = ("cameras", "images")
# A text file in the scene root holding the absolute path of the image folder (written by gags.data.sfm).
IMAGES_PATH_FILE = "images_path.txt"


def is_model_dir(path: Path) -> bool:
    """True when ``path`` holds a COLMAP model (cameras and images, .bin or .txt)."""
    path = Path(path)
    return path.is_dir() and any(all((path / f"{name}{ext}").is_file() for name in MODEL_FILES)
                                 for ext in (".bin", ".txt"))


def find_model_dir(path: Path) -> Path | None:
    """The COLMAP model folder at ``path``, ``path/sparse/0``, ``path/sparse`` or ``path/0`` (``path`` = sparse/).

    None when there is none.
    """
    path = Path(path)
    for candidate in (path, path / "sparse" / "0", path / "sparse", path / "0"):
        if is_model_dir(candidate):
            return candidate
    return None


def scene_root(model_dir: Path) -> Path:
    """The scene folder of a model: ROOT for ROOT/sparse/0 and ROOT/sparse, else the model folder itself."""
    model_dir = Path(model_dir)
    if model_dir.name == "sparse":
        return model_dir.parent
    if model_dir.parent.name == "sparse":
        return model_dir.parent.parent
    return model_dir


def find_images_dir(root: Path, model_dir: Path, images_dir: str | None) -> Path:
    """The image folder: ``images_dir`` (absolute, or relative to the scene root), else the first default one found."""
    candidates_roots = [root] if root == model_dir else [root, model_dir]
    if images_dir is not None:
        given = Path(images_dir)
        if given.is_absolute():
            if given.is_dir():
                return given
        else:
            for base in candidates_roots:
                if (base / given).is_dir():
                    return base / given
        raise GagsError(f"image folder {images_dir!r} not found in {root}. Available: {_available_dirs(root)}.")
    for base in candidates_roots:
        for name in DEFAULT_IMAGE_DIRS:
            if (base / name).is_dir():
                return base / name
    record = root / IMAGES_PATH_FILE
    if record.is_file() and Path(record.read_text().strip()).is_dir():
        return Path(record.read_text().strip())
    raise GagsError(f"no image folder beside the COLMAP model {model_dir}: looked for {list(DEFAULT_IMAGE_DIRS)} in "
                    f"{root} (nor an {IMAGES_PATH_FILE}). Pass images_dir (e.g. --images-dir images_4).")


def _available_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and p.name.startswith("images")) if Path(
        root).is_dir() else []


MAX_PLAUSIBLE_RADIAL = 1.0
"""Radial distortion coefficients of real lenses stay well within +-1 (COLMAP's estimates of ordinary cameras: a few
tenths); larger ones mean a broken calibration, and undistorting with them warps the images."""
MAX_PLAUSIBLE_ASPECT = 1.5
"""Pixels are close to square (fy / fx near 1); a ratio beyond 1.5 either way means a broken calibration."""


def check_intrinsics(K: np.ndarray, coeffs: np.ndarray | None, width: int, height: int, where: str) -> None:
    """GagsError for intrinsics no camera has (non-positive or non-finite focal lengths or size, as a truncated
    cameras.bin reads); a warning for implausible ones (huge radial distortion, very non-square pixels)."""
    fx, fy = float(K[0, 0]), float(K[1, 1])
    if not (np.isfinite(K).all() and fx > 0 and fy > 0 and width > 0 and height > 0):
        raise GagsError(f"{where} has focal lengths {fx:g}, {fy:g} and size {width}x{height}; they must be positive "
                        "(is the model file truncated?). Re-export the model with COLMAP.")
    radial = [] if coeffs is None else [float(coeffs[0]), float(coeffs[1])]
    if any(abs(k) > MAX_PLAUSIBLE_RADIAL for k in radial) or not 1 / MAX_PLAUSIBLE_ASPECT <= fy / fx \
            <= MAX_PLAUSIBLE_ASPECT:
        warnings.warn(f"{where} has an implausible calibration (fx {fx:g}, fy {fy:g}, radial {radial}); the "
                      "undistorted images may be warped. Check the calibration.", stacklevel=3)


def opencv_distortion(camera: pycolmap.Camera, model_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(K [3, 3] float64, OpenCV coefficients or None) of a pycolmap camera, at the camera's resolution."""
    K, coeffs = _opencv_distortion(camera, model_path)
    check_intrinsics(K, coeffs, int(camera.width), int(camera.height), f"{model_path}: camera {camera.camera_id}")
    return K, coeffs


def _opencv_distortion(camera: pycolmap.Camera, model_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    model = camera.model.name
    p = np.asarray(camera.params, dtype=np.float64)
    if model == "SIMPLE_PINHOLE":
        f, cx, cy = p
        return _K(f, f, cx, cy), None
    if model == "PINHOLE":
        fx, fy, cx, cy = p
        return _K(fx, fy, cx, cy), None
    if model == "SIMPLE_RADIAL":
        f, cx, cy, k = p
        return _K(f, f, cx, cy), np.array([k, 0.0, 0.0, 0.0])
    if model == "RADIAL":
        f, cx, cy, k1, k2 = p
        return _K(f, f, cx, cy), np.array([k1, k2, 0.0, 0.0])
    if model == "OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2 = p
        return _K(fx, fy, cx, cy), np.array([k1, k2, p1, p2])
    if model == "FULL_OPENCV":
        fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6 = p
        return _K(fx, fy, cx, cy), np.array([k1, k2, p1, p2, k3, k4, k5, k6])
    raise GagsError(f"{model_path}: camera {camera.camera_id} uses the {model} model, which gags does not undistort. "
                    "Supported: SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL, OPENCV, FULL_OPENCV. Run "
                    "`colmap image_undistorter` and point gags at its output.")


def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def restore_signal_handlers() -> None:
    """Put Python's SIGINT and SIGTERM handlers back at the C level after pycolmap ran: its logging library installs a
    failure handler that prints a native stack trace and kills the process, so ``gags``'s handler (stop as Ctrl-C
    does, one line, resumable) would never run. Only the main thread can set handlers; elsewhere nothing is done."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:
            signal.signal(signum, handler)


def read_model(model_dir: Path) -> pycolmap.Reconstruction:
    """Load a COLMAP model with pycolmap or raise a GagsError naming the folder."""
    model_dir = Path(model_dir)
    try:
        return pycolmap.Reconstruction(str(model_dir))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError for unreadable models
        detail = " ".join(str(exc).split())
        if "unordered_map" in detail or "map::at" in detail:
            detail = "one file refers to entries missing from another, e.g. an empty or truncated images.bin"
        raise GagsError(f"cannot read the COLMAP model in {model_dir} ({detail}). Check that the .bin/.txt files are "
                        "complete and written by COLMAP.") from exc
    finally:
        restore_signal_handlers()


def read_colmap(model_dir: Path, images_dir: str | None = None
                ) -> tuple[Path, Path, list[SourceView], np.ndarray | None, np.ndarray | None]:
    """Read a COLMAP scene.

    Args:
        model_dir: folder with the model files.
        images_dir: image folder (absolute, or relative to the scene root); default: the first of
            :data:`DEFAULT_IMAGE_DIRS`. Images of another size than the model (``images_N``) scale the intrinsics by the
            exact per-axis factor of their real size.
    Returns:
        (scene root, image folder, views sorted by name, points [P, 3] float32 or None, colours [P, 3] uint8 or None).
        Images in the folder that the model does not register are skipped with a warning.
    """
    model_dir = Path(model_dir)
    root = scene_root(model_dir)
    image_folder = find_images_dir(root, model_dir, images_dir)
    rec = read_model(model_dir)
    registered = [img for img in rec.images.values() if img.has_pose]
    unposed = sorted(img.name for img in rec.images.values() if not img.has_pose)
    if not registered:
        raise GagsError(f"the COLMAP model in {model_dir} has no registered images (empty model). Re-run "
                        "structure-from-motion with more overlapping photos.")
    registered.sort(key=lambda img: img.name)
    names = {img.name for img in registered}
    on_disk = {p.relative_to(image_folder).as_posix() for p in list_images(image_folder)}
    skipped = sorted((on_disk - names) | set(unposed))
    if skipped:
        shown = ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        warnings.warn(f"{len(skipped)} image(s) in {image_folder} are not registered in the COLMAP model "
                      f"{model_dir} and are skipped: {shown}", stacklevel=3)
    allow_rescale = image_folder.name != "images"
    per_camera: dict[int, tuple[np.ndarray, np.ndarray | None, tuple[int, int]]] = {}
    views = []
    for img in registered:
        path = image_folder / img.name
        size = image_size(path)  # raises for missing or corrupt files
        cam = rec.cameras[img.camera_id]
        if img.camera_id not in per_camera:
            K, coeffs = opencv_distortion(cam, model_dir)
            K = fit_to_image(K, (cam.width, cam.height), size, path, allow_rescale)
            per_camera[img.camera_id] = (K, coeffs, size)
        K, coeffs, cam_size = per_camera[img.camera_id]
        if size != cam_size:
            raise GagsError(f"image {path} is {size[0]}x{size[1]} but its camera (shared with other images of "
                            f"camera {img.camera_id}) is {cam_size[0]}x{cam_size[1]}. All images of one camera must "
                            "have the same size.")
        w2c = np.eye(4)
        w2c[:3, :] = np.asarray(img.cam_from_world().matrix(), dtype=np.float64)
        if not np.isfinite(w2c).all():
            raise GagsError(f"image {img.name} has a NaN or infinite pose in the COLMAP model {model_dir}. Fix or "
                            "remove it from the model.")
        views.append(SourceView(name=img.name, path=path, K=K, coeffs=coeffs, world_to_cam=w2c,
                                width=size[0], height=size[1]))
    points = colors = None
    if rec.num_points3D() > 0:
        pts = list(rec.points3D.values())
        points = np.array([p.xyz for p in pts], dtype=np.float32).reshape(-1, 3)
        colors = np.array([p.color for p in pts], dtype=np.uint8).reshape(-1, 3)
    return root, image_folder, views, points, colors
