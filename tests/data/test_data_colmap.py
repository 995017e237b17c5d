import shutil
import warnings
from pathlib import Path

import numpy as np
import pycolmap
import pytest
import torch

from gags.data import load_scene
from gags.data.images import undistort_points
from gags.errors import GagsError

# Reprojection error of the shared model is 0.50 px at full resolution (its README); at 1/4 and 1/8 it must be below 1.
MAX_MEAN_REPROJECTION_PX = 1.0


def _reprojection_error(scene, model_dir: Path) -> float:
    rec = pycolmap.Reconstruction(str(model_dir))
    by_name = {img.name: img for img in rec.images.values()}
    errors = []
    for i, cam in enumerate(scene.cameras):
        img = by_name[cam.name]
        obs = [(p.xy, rec.points3D[p.point3D_id].xyz) for p in img.points2D if p.has_point3D()]
        uv_full = np.array([o[0] for o in obs])
        xyz = torch.tensor(np.array([o[1] for o in obs]), dtype=torch.float64)
        full = rec.cameras[img.camera_id]
        uv = uv_full * np.array([cam.width / full.width, cam.height / full.height])  # observations at this resolution
        dist = scene.distortions[i]
        if dist is not None:
            uv = undistort_points(uv, dist)
        proj, z = cam.project(xyz)
        assert (z > 0).all()
        errors.append(np.linalg.norm(proj.numpy() - uv, axis=1))
    return float(np.concatenate(errors).mean())


@pytest.mark.parametrize("images_dir,size", [("images_8", (195, 130)), ("images_4", (390, 260))])
def test_kitchen_cameras_reproject(kitchen, tmp_path, images_dir, size):
    with pytest.warns(UserWarning, match="2 image.*not registered.*00.png, 01.png"):
        scene = load_scene(kitchen, images_dir=images_dir, cache_dir=tmp_path / "cache")
    assert scene.source_format == "colmap"
    assert len(scene.cameras) == 23
    assert scene.names == sorted(scene.names)
    assert all((c.width, c.height) == size for c in scene.cameras)
    assert scene.test_ids == [0, 8, 16]
    assert sorted(scene.train_ids + scene.test_ids) == list(range(23))
    assert scene.points is not None and scene.points.shape == (1942, 3)
    assert scene.point_colors.dtype == np.uint8
    err = _reprojection_error(scene, kitchen / "sparse" / "0")
    assert err < MAX_MEAN_REPROJECTION_PX, err
    image = scene.load_image(5)
    assert image.shape == (size[1], size[0], 3) and image.dtype == np.uint8
    half = scene.load_image(5, downscale=2)
    cam = scene.camera(5, downscale=2)
    assert half.shape == (cam.height, cam.width, 3)


def test_classic_binary_and_text_layouts(kitchen, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = load_scene(kitchen, images_dir="images_8", cache_dir=tmp_path / "cache")
    classic = tmp_path / "classic"
    (classic / "sparse" / "0").mkdir(parents=True)
    for name in ("cameras.bin", "images.bin", "points3D.bin"):
        shutil.copy(kitchen / "sparse" / "0" / name, classic / "sparse" / "0" / name)
    (classic / "images_8").symlink_to(kitchen / "images_8")
    text = tmp_path / "text"
    (text / "sparse" / "0").mkdir(parents=True)
    pycolmap.Reconstruction(str(kitchen / "sparse" / "0")).write_text(str(text / "sparse" / "0"))
    (text / "images_8").symlink_to(kitchen / "images_8")
    for root in (classic, text, classic / "sparse" / "0", classic / "sparse"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scene = load_scene(root, images_dir="images_8", cache_dir=tmp_path / "cache")
        assert scene.names == reference.names
        for a, b in zip(scene.cameras, reference.cameras, strict=True):
            torch.testing.assert_close(a.K, b.K, atol=1e-4, rtol=0)
            torch.testing.assert_close(a.world_to_cam, b.world_to_cam, atol=1e-5, rtol=0)
        np.testing.assert_allclose(scene.points, reference.points, atol=1e-5)


def test_default_images_dir_and_missing_folder(kitchen, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = load_scene(kitchen, cache_dir=tmp_path / "cache")  # no images/: first of images_2, images_4, images_8
    assert scene.cameras[0].width == 390
    with pytest.raises(GagsError, match="images_3.*images_4"):
        load_scene(kitchen, images_dir="images_3")


def _with_camera(kitchen: Path, root: Path, model: str, params: list[float]) -> Path:
    """A copy of the kitchen scene whose camera is re-expressed in another COLMAP camera model."""
    rec = pycolmap.Reconstruction(str(kitchen / "sparse" / "0"))
    cam = rec.cameras[1]
    new = pycolmap.Camera.create_from_model_name(1, model, 1.0, cam.width, cam.height)
    new.params = params
    rec.cameras[1] = new
    (root / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(root / "sparse" / "0"))
    (root / "images_8").symlink_to(kitchen / "images_8")
    return root


def test_camera_models(kitchen, tmp_path):
    f, cx, cy, k = pycolmap.Reconstruction(str(kitchen / "sparse" / "0")).cameras[1].params
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_scene(kitchen, images_dir="images_8", cache_dir=tmp_path / "cache")
        equivalent = {  # the same lens in richer models: identical undistorted cameras
            "RADIAL": [f, cx, cy, k, 0.0],
            "OPENCV": [f, f, cx, cy, k, 0.0, 0.0, 0.0],
            "FULL_OPENCV": [f, f, cx, cy, k, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        }
        for model, params in equivalent.items():
            scene = load_scene(_with_camera(kitchen, tmp_path / model, model, params), images_dir="images_8",
                               cache_dir=tmp_path / "cache")
            for a, b in zip(scene.cameras, ref.cameras, strict=True):
                torch.testing.assert_close(a.K, b.K, atol=1e-4, rtol=0)
            np.testing.assert_array_equal(scene.load_image(2), ref.load_image(2))
        # dropping the small radial term: pinhole cameras, no undistortion, still within a pixel
        for model, params in {"PINHOLE": [f, f, cx, cy], "SIMPLE_PINHOLE": [f, cx, cy]}.items():
            root = _with_camera(kitchen, tmp_path / model, model, params)
            scene = load_scene(root, images_dir="images_8", cache_dir=tmp_path / "cache")
            assert all(d is None for d in scene.distortions)
            assert scene.cameras[0].K[0, 0].item() == pytest.approx(f * 195 / 1558, rel=1e-6)
            assert _reprojection_error(scene, kitchen / "sparse" / "0") < MAX_MEAN_REPROJECTION_PX
        root = _with_camera(kitchen, tmp_path / "fisheye", "OPENCV_FISHEYE", [f, f, cx, cy, 0.0, 0.0, 0.0, 0.0])
        with pytest.raises(GagsError, match=f"{root / 'sparse' / '0'}.*OPENCV_FISHEYE.*image_undistorter"):
            load_scene(root, images_dir="images_8")
