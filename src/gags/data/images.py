"""Image files: decoding to RGB uint8, sizes, resizing, and lens undistortion (OpenCV).

Conventions:
- Every image is returned as ``uint8 [H, W, 3]`` RGB. Alpha is composited on black (``rgb * alpha``), the official
  3DGS default background; grey images are repeated to 3 channels; 16-bit images are scaled to 8 bits.
- EXIF orientation is not applied (COLMAP and nerfstudio calibrate the stored pixel grid).
- Pixel centres are at +0.5 (COLMAP, nerfstudio and gsplat); OpenCV puts them at integer coordinates, so principal
  points are shifted by 0.5 when talking to OpenCV.
- Undistortion keeps the image size and chooses new intrinsics with ``cv2.getOptimalNewCameraMatrix(alpha=0)``: every
  output pixel sees real image content (no black borders for the reconstruction to learn), a few border pixels are
  cropped away. Resampling is bilinear.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from gags.errors import GagsError

# Fixed-point iterations to invert the distortion of points (OpenCV's default of 5 is loose for strong distortion).
UNDISTORT_POINT_ITERATIONS = 50
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr")


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by their path relative to it."""
    folder = Path(folder)
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[Image.Image]:
    """The image file opened by PIL for the block; a missing file, or one PIL cannot read (in the block too: decoding
    is lazy), is a GagsError. PIL's decompression-bomb warning is silenced for large photos."""
    path = Path(path)
    if not path.is_file():
        raise GagsError(f"image {path} does not exist. Restore it, or remove it from the scene's camera model.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                yield img
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise GagsError(f"image {path} is corrupt or not an image ({exc}). Replace or re-export it.") from exc


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels."""
    with _open_image(path) as img:
        return int(img.size[0]), int(img.size[1])


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to RGB.

    Returns:
        [H, W, 3] uint8, writable (alpha composited on black, grey repeated, 16-bit scaled to 8-bit).
    Raises:
        GagsError: missing, corrupt or truncated file.
    Warns:
        when libjpeg reports damaged data in a JPEG that still decodes (PIL decodes such files without a word).
    """
    with _open_image(path) as img:
        img.load()
        rgb = _to_rgb8(img)
    if Path(path).suffix.lower() in JPEG_EXTENSIONS:
        damage = jpeg_damage(Path(path))
        if damage:
            warnings.warn(f"{path}: the JPEG decoder reports damaged data ({damage}); the image may show artefacts. "
                          "Replace or re-export it.", stacklevel=2)
    return rgb


JPEG_EXTENSIONS = (".jpg", ".jpeg")
_STDERR_LOCK = threading.Lock()
"""libjpeg writes its warnings to the process's standard error: one check captures it at a time."""


def jpeg_damage(path: Path) -> str | None:
    """What libjpeg (OpenCV's decoder, at 1/8 scale) reports about a JPEG's data: its ``Corrupt JPEG data`` and
    ``Premature end of JPEG file`` warnings, or None. Anything else written to standard error meanwhile (e.g. by
    another thread) is written back."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        lines = capture.read().decode(errors="replace").splitlines()
    reports = [line.strip() for line in lines if "JPEG" in line]
    others = [line for line in lines if "JPEG" not in line]
    if others:
        sys.stderr.write("\n".join(others) + "\n")
    return "; ".join(reports) or None


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img).astype(np.float64)
        arr = np.clip(arr / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)  # 16-bit full range -> 8-bit
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.clip(np.asarray(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)  # float images in [0, 1]
        return np.repeat(arr[..., None], 3, axis=2)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA")).astype(np.uint16)
        rgb = (rgba[..., :3] * rgba[..., 3:4] + 127) // 255  # composite on black, rounded
        return rgb.astype(np.uint8)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)  # a writable copy (np.asarray of a PIL image is read-only)


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize [H, W, C] uint8 to [height, width, C]: area averaging when shrinking, bilinear when enlarging."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    interp = cv2.INTER_AREA if width <= w and height <= h else cv2.INTER_LINEAR
    return cv2.resize(image, (int(width), int(height)), interpolation=interp)


@dataclass(frozen=True)
class Distortion:
    """Lens distortion of one image, in OpenCV's model.

    Attributes:
        K: [3, 3] float64 intrinsics of the distorted image at the image file's resolution (pixel centres at +0.5).
        coeffs: OpenCV distortion coefficients (k1, k2, p1, p2[, k3[, k4, k5, k6]]), float64.
        width, height: the distorted image's size.
    """

    K: np.ndarray
    coeffs: np.ndarray
    width: int
    height: int

    def key(self) -> bytes:
        """Bytes identifying this calibration (for caches)."""
        return (np.asarray(self.K, np.float64).tobytes() + np.asarray(self.coeffs, np.float64).tobytes()
                + f"{self.width}x{self.height}".encode())


def is_distorted(coeffs: np.ndarray | None) -> bool:
    """True when any distortion coefficient is non-zero."""
    return coeffs is not None and bool(np.any(np.asarray(coeffs) != 0.0))


def _to_opencv(K: np.ndarray) -> np.ndarray:
    K = np.array(K, dtype=np.float64)
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def _from_opencv(K: np.ndarray) -> np.ndarray:
    K = np.array(K, dtype=np.float64)
    K[0, 2] += 0.5
    K[1, 2] += 0.5
    return K


def undistorted_intrinsics(dist: Distortion) -> np.ndarray:
    """[3, 3] float64 intrinsics of the undistorted image (same size; alpha = 0: only valid pixels, no skew)."""
    new_K, _ = cv2.getOptimalNewCameraMatrix(_to_opencv(dist.K), np.asarray(dist.coeffs, np.float64),
                                             (dist.width, dist.height), 0.0, (dist.width, dist.height))
    return _from_opencv(new_K)


def undistort_maps(dist: Distortion) -> tuple[np.ndarray, np.ndarray]:
    """Remap tables (map_x, map_y: [H, W] float32) from undistorted pixels to distorted-image pixels."""
    new_K = undistorted_intrinsics(dist)
    return cv2.initUndistortRectifyMap(_to_opencv(dist.K), np.asarray(dist.coeffs, np.float64), None,
                                       _to_opencv(new_K), (dist.width, dist.height), cv2.CV_32FC1)


def undistort_image(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Apply remap tables from :func:`undistort_maps` to [H, W, C] uint8 (bilinear; borders replicated)."""
    return cv2.remap(image, maps[0], maps[1], interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def undistort_points(uv: np.ndarray, dist: Distortion) -> np.ndarray:
    """Map [N, 2] pixel positions of the distorted image to the undistorted image (pixel centres at +0.5)."""
    new_K = undistorted_intrinsics(dist)
    pts = (np.asarray(uv, np.float64) - 0.5).reshape(-1, 1, 2)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, UNDISTORT_POINT_ITERATIONS, 1e-12)
    # OpenCV 4 names the variant with a termination criterion undistortPointsIter; OpenCV 5 folds it into
    # undistortPoints.
    fn = getattr(cv2, "undistortPointsIter", cv2.undistortPoints)
    out = fn(pts, _to_opencv(dist.K), np.asarray(dist.coeffs, np.float64), R=None, P=_to_opencv(new_K),
             criteria=criteria)
    return out.reshape(-1, 2) + 0.5


@dataclass(frozen=True)
class SourceView:
    """One image as a scene format describes it, before undistortion and splitting.

    Attributes:
        name: unique image name in the scene (the file name, or a relative path when file names repeat).
        path: the image file.
        K: [3, 3] float64 intrinsics at the image file's resolution (pixel centres at +0.5), distorted if ``coeffs``.
        coeffs: OpenCV distortion coefficients, or None for a pinhole camera.
        world_to_cam: [4, 4] float64 OpenCV world-to-camera.
        width, height: the image file's size.
    """

    name: str
    path: Path
    K: np.ndarray
    coeffs: np.ndarray | None
    world_to_cam: np.ndarray
    width: int
    height: int


def fit_to_image(K: np.ndarray, model_size: tuple[int, int], image_size_: tuple[int, int], path: Path,
                 allow_rescale: bool) -> np.ndarray:
    """Intrinsics ``K`` [3, 3] given at ``model_size`` (w, h), adapted to the real image size.

    With ``allow_rescale`` (a downscaled folder such as Mip-NeRF 360's ``images_N``), the per-axis factors are
    ``real / model`` (so a rounded size such as 1558 / 8 -> 195 is exact); the two factors must describe the same
    downscale within one pixel of rounding. Otherwise the sizes must be equal.
    """
    (mw, mh), (w, h) = model_size, image_size_
    if (mw, mh) == (w, h):
        return np.array(K, dtype=np.float64)
    if allow_rescale:
        factor = mw / w  # the downscale N implied by the width
        if abs(mh / factor - h) <= 1.0 and abs(mw / factor - w) <= 1.0:
            K = np.array(K, dtype=np.float64)
            K[0] *= w / mw
            K[1] *= h / mh
            return K
    raise GagsError(f"image {path} is {w}x{h} but its camera is {mw}x{mh}"
                    + (" (not a uniform downscale of it)" if allow_rescale else "")
                    + ". Use images matching the camera model (or the right images_N folder).")
