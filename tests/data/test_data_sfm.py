import shutil
import warnings

import numpy as np
import pycolmap
import pytest
from PIL import Image

from gags.data import load_scene
from gags.data.sfm import run_sfm
from gags.errors import GagsError

# 195x130 photos going all around an object are hard for SIFT: the low-resolution settings register 16 to 24 of the
# 25 (the reference model, from the full-resolution photos, has 23); require at least half.
MIN_REGISTERED = 13
# Camera centres after the best similarity alignment to the reference model, relative to the mean camera distance
# from the centroid; measured 1-3 % (median) on this machine.
MAX_MEDIAN_CENTRE_ERROR = 0.1


def _similarity_residuals(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Distances after the least-squares similarity X -> Y (Umeyama 1991)."""
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    U, S, Vt = np.linalg.svd(Yc.T @ Xc / len(X))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (Xc**2).sum() * len(X)
    return np.linalg.norm(s * Xc @ R.T - Yc, axis=1)


def test_sfm_on_kitchen_images_8(kitchen, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = run_sfm(kitchen / "images_8", tmp_path / "out", num_threads=1)  # threaded matching varies run to run
    assert model == tmp_path / "out" / "sfm" / "sparse" / "0"
    rec = pycolmap.Reconstruction(str(model))
    assert rec.num_reg_images() >= MIN_REGISTERED
    ref = pycolmap.Reconstruction(str(kitchen / "sparse" / "0"))
    ours = {im.name: im.projection_center() for im in rec.images.values() if im.has_pose}
    theirs = {im.name: im.projection_center() for im in ref.images.values() if im.has_pose}
    common = sorted(set(ours) & set(theirs))
    assert len(common) >= MIN_REGISTERED - 2
    Y = np.array([theirs[n] for n in common])
    err = _similarity_residuals(np.array([ours[n] for n in common]), Y)
    radius = np.linalg.norm(Y - Y.mean(0), axis=1).mean()
    assert np.median(err) / radius < MAX_MEDIAN_CENTRE_ERROR
    # the result loads as a scene through the images link (or images_path.txt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = load_scene(tmp_path / "out" / "sfm", cache_dir=tmp_path / "cache")
    assert len(scene) == rec.num_reg_images()
    assert scene.load_image(0).shape == (130, 195, 3)
    (tmp_path / "out" / "sfm" / "images").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(load_scene(tmp_path / "out" / "sfm", cache_dir=tmp_path / "cache")) == len(scene)
    # a finished model is reused
    mtime = (model / "images.bin").stat().st_mtime_ns
    assert run_sfm(kitchen / "images_8", tmp_path / "out") == model
    assert (model / "images.bin").stat().st_mtime_ns == mtime


def test_sfm_nothing_registers(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):  # unrelated noise: features, but no consistent geometry
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    with pytest.raises(GagsError, match=f"registered no image of {photos}"):
        run_sfm(photos, tmp_path / "out")
    shutil.rmtree(photos)
    photos.mkdir()
    with pytest.raises(GagsError, match=f"{photos} holds 0 image"):
        run_sfm(photos, tmp_path / "out")
