"""Structure-from-motion for a folder of bare photos (pycolmap, CPU): SIFT features, exhaustive matching, incremental
mapping. Writes a COLMAP scene folder that :func:`gags.data.load_scene` reads:

```
OUT/sfm/
  database.db       features and matches (kept so the run can be inspected with COLMAP's GUI)
  sparse/0/         the model with the most registered images (binary, cameras/images/points3D[/rigs/frames])
  images            symbolic link to the photos (when the file system allows one)
  images_path.txt   absolute path of the photos (always)
```

A finished model is reused: the run is skipped when ``OUT/sfm/sparse/0`` exists (it is renamed into place only when
complete). Delete ``OUT/sfm`` to redo it.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from pathlib import Path

import pycolmap
from tqdm import tqdm

from gags.data.colmap import IMAGES_PATH_FILE, is_model_dir
from gags.data.images import image_size, list_images
from gags.errors import GagsError
from gags.io import atomic_path, ensure_dir
from gags.workspace import Workspace

# Photos whose longer side is below this many pixels get the low-resolution settings below: with a few hundred SIFT
# features per image, COLMAP's defaults (made for megapixel photos) register almost nothing. Measured on the kitchen
# scene at 195x130: defaults register 2 of 25 images, these settings 16 to 24 (see tests/data/test_data_sfm.py).
LOW_RESOLUTION_PX = 1000
# COLMAP defaults -> low-resolution values (pycolmap 4.2.1 option names):
LOW_RES_INIT_MIN_NUM_INLIERS = 30  # mapper.init_min_num_inliers (default 100)
LOW_RES_ABS_POSE_MIN_NUM_INLIERS = 10  # mapper.abs_pose_min_num_inliers (default 30)
LOW_RES_ABS_POSE_MIN_INLIER_RATIO = 0.1  # mapper.abs_pose_min_inlier_ratio (default 0.25)
LOW_RES_INIT_MIN_TRI_ANGLE = 8.0  # mapper.init_min_tri_angle in degrees (default 16)
LOW_RES_MAX_REG_TRIALS = 5  # mapper.max_reg_trials (default 3)
LOW_RES_SIFT_MAX_RATIO = 0.9  # matching sift.max_ratio, Lowe's ratio test (default 0.8)
LOW_RES_RANSAC_MAX_TRIALS = 2000  # two-view verification ransac.max_num_trials (default 10000): bounds the time the
#                                   looser ratio test costs

log = logging.getLogger(__name__)


def images_folder_of(sfm_dir: Path) -> Path | None:
    """The photo folder recorded by :func:`run_sfm` in ``sfm_dir`` (None when there is no record)."""
    record = Path(sfm_dir) / IMAGES_PATH_FILE
    return Path(record.read_text().strip()) if record.is_file() else None


def run_sfm(images: Path, out: Path, *, num_threads: int = -1, seed: int = 0) -> Path:
    """Run structure-from-motion on the photos in ``images``.

    Args:
        images: folder of photos (searched recursively; names in the model are relative to it).
        out: the scene output folder (OUT); the model goes to OUT/sfm/sparse/0.
        num_threads: CPU threads for pycolmap (-1: all).
        seed: random seed of the mapper.
    Returns:
        OUT/sfm/sparse/0.
    Raises:
        GagsError: no images in the folder, fewer than 2 images, or no image could be registered.
    """
    images = Path(images).expanduser().resolve()
    if not images.is_dir():
        raise GagsError(f"photo folder {images} does not exist.")
    photos = list_images(images)
    if len(photos) < 2:
        raise GagsError(f"{images} holds {len(photos)} image(s); structure-from-motion needs at least 2 overlapping "
                        "photos (png, jpg, ...).")
    sfm_dir = ensure_dir(Workspace(Path(out)).sfm_dir)
    model_dir = sfm_dir / "sparse" / "0"
    _link_images(sfm_dir, images)
    if is_model_dir(model_dir):
        log.info("reusing the structure-from-motion model in %s", model_dir)
        return model_dir

    database = sfm_dir / "database.db"
    with contextlib.suppress(FileNotFoundError):
        database.unlink()  # a database from an interrupted run may be half written
    sizes = {image_size(p) for p in photos}
    # One shared camera when every photo has the same size (one device, the usual case): far fewer unknowns.
    camera_mode = pycolmap.CameraMode.SINGLE if len(sizes) == 1 else pycolmap.CameraMode.AUTO
    low_res = max(max(s) for s in sizes) < LOW_RESOLUTION_PX
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = num_threads
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = num_threads
    verification = pycolmap.TwoViewGeometryOptions()
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = num_threads
    options.random_seed = seed
    if low_res:
        matching.sift.max_ratio = LOW_RES_SIFT_MAX_RATIO
        verification.ransac.max_num_trials = LOW_RES_RANSAC_MAX_TRIALS
        options.mapper.init_min_num_inliers = LOW_RES_INIT_MIN_NUM_INLIERS
        options.mapper.abs_pose_min_num_inliers = LOW_RES_ABS_POSE_MIN_NUM_INLIERS
        options.mapper.abs_pose_min_inlier_ratio = LOW_RES_ABS_POSE_MIN_INLIER_RATIO
        options.mapper.init_min_tri_angle = LOW_RES_INIT_MIN_TRI_ANGLE
        options.mapper.max_reg_trials = LOW_RES_MAX_REG_TRIALS
    work = sfm_dir / "sparse.partial"
    steps = tqdm(total=3, desc="structure from motion", unit="step")
    try:
        steps.set_postfix_str(f"SIFT features of {len(photos)} images")
        pycolmap.extract_features(database, images, camera_mode=camera_mode, extraction_options=extraction,
                                  device=pycolmap.Device.cpu)
        steps.update()
        steps.set_postfix_str(f"exhaustive matching of {len(photos) * (len(photos) - 1) // 2} pairs")
        pycolmap.match_exhaustive(database, matching_options=matching, verification_options=verification,
                                  device=pycolmap.Device.cpu)
        steps.update()
        steps.set_postfix_str("incremental mapping")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        with tqdm(total=len(photos), desc="registered images", unit="img", leave=False) as registered:
            models = pycolmap.incremental_mapping(database, images, work, options,
                                                  initial_image_pair_callback=lambda: registered.update(2),
                                                  next_image_callback=registered.update)
        steps.update()
    finally:
        steps.close()
    if not models:
        shutil.rmtree(sfm_dir / "sparse.partial", ignore_errors=True)
        raise GagsError(f"structure-from-motion registered no image of {images}: the photos do not overlap enough or "
                        "are too small/blurry. Use more photos with overlapping views, or bring your own COLMAP model.")
    best = max(models.values(), key=lambda rec: rec.num_reg_images())
    n_reg = best.num_reg_images()
    if n_reg < len(photos):
        warnings.warn(f"structure-from-motion registered {n_reg} of {len(photos)} images of {images}; the others are "
                      "skipped.", stacklevel=2)
    staged = sfm_dir / "sparse" / ".0.partial"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    best.write_binary(str(staged))
    staged.rename(model_dir)  # appears only when complete
    shutil.rmtree(sfm_dir / "sparse.partial", ignore_errors=True)
    return model_dir


def _link_images(sfm_dir: Path, images: Path) -> None:
    with atomic_path(sfm_dir / IMAGES_PATH_FILE) as tmp:
        tmp.write_text(f"{images}\n")
    link = sfm_dir / "images"
    if link.is_symlink() and link.resolve() == images:
        return
    if link.is_symlink():
        link.unlink()
    if not link.exists():
        with contextlib.suppress(OSError):  # no symbolic links on this file system: images_path.txt still says where
            link.symlink_to(images, target_is_directory=True)
