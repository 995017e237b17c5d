import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from gags.data import load_scene, load_scene_json, save_scene_json, split_ids
from gags.data.images import Distortion, undistort_points
from gags.data.scene import Scene, with_split
from gags.errors import GagsError


def _kitchen(kitchen, tmp_path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_scene(kitchen, images_dir="images_8", cache_dir=tmp_path / "cache", **kwargs)


def test_split_llff_and_overrides():
    names = [f"{i:02d}.png" for i in range(17)]
    train, test = split_ids(names)
    assert test == [0, 8, 16]
    assert train == [i for i in range(17) if i not in (0, 8, 16)]
    assert split_ids(names, test_every=4)[1] == [0, 4, 8, 12, 16]
    assert split_ids(names, test_every=0) == (list(range(17)), [])
    assert split_ids(names, split=(names[2:], names[:2])) == (list(range(2, 17)), [0, 1])
    with pytest.raises(GagsError, match="not in the scene"):
        split_ids(names, split=(names, ["nope.png"]))


def test_scene_json_roundtrip(kitchen, tmp_path):
    scene = _kitchen(kitchen, tmp_path, test_every=5)
    path = save_scene_json(scene, tmp_path / "out")
    data = json.loads(path.read_text())
    assert data["source_format"] == "colmap"
    assert data["test"] == [scene.names[i] for i in range(0, 23, 5)]
    assert len(data["images"]) == 23
    back = load_scene_json(tmp_path / "out")
    assert back.names == scene.names
    assert back.train_ids == scene.train_ids and back.test_ids == scene.test_ids
    assert back.scale == scene.scale
    assert back.source_format == "colmap"
    for a, b in zip(back.cameras, scene.cameras, strict=True):
        assert torch.equal(a.K, b.K) and torch.equal(a.world_to_cam, b.world_to_cam)
    np.testing.assert_array_equal(back.points, scene.points)
    np.testing.assert_array_equal(back.point_colors, scene.point_colors)
    np.testing.assert_array_equal(back.load_image(4), scene.load_image(4))
    # load_scene accepts an OUT folder too
    assert load_scene(tmp_path / "out").names == scene.names
    # load_scene accepts the record's file too
    assert load_scene(path).names == scene.names
    # no temporary files left behind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["points3D.ply", "scene.json"]


def test_scene_json_malformed(tmp_path):
    (tmp_path / "scene.json").write_text(json.dumps({"format_version": 1, "source_format": "colmap", "images": [{}]}))
    with pytest.raises(GagsError, match=f"{tmp_path / 'scene.json'}.*malformed"):
        load_scene_json(tmp_path)
    with pytest.raises(GagsError, match="scene.json does not exist"):
        load_scene_json(tmp_path / "nothing")


def test_scale_is_nerfpp_extent(kitchen, tmp_path):
    scene = _kitchen(kitchen, tmp_path)
    centers = torch.stack([scene.cameras[i].center for i in scene.train_ids]).double()
    expected = 1.1 * (centers - centers.mean(0)).norm(dim=1).max().item()
    assert scene.scale == pytest.approx(expected, rel=1e-6)
    assert with_split(scene, test_every=0).train_ids == list(range(23))


def test_undistortion_moves_pixels_where_points_go(tmp_path):
    """A bright dot drawn in a strongly distorted image lands where undistort_points says (pixel centres +0.5)."""
    w, h = 160, 120
    K = np.array([[100.0, 0, 80.0], [0, 100.0, 60.0], [0, 0, 1]])
    dist = Distortion(K=K, coeffs=np.array([-0.25, 0.05, 0.001, -0.002]), width=w, height=h)
    dots = np.array([[30.5, 25.5], [130.5, 95.5], [80.5, 60.5], [20.5, 100.5]])
    yy, xx = np.mgrid[0:h, 0:w] + 0.5  # pixel centres
    img = np.zeros((h, w), np.float64)
    for u, v in dots:
        img += 255 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 1.5**2))
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGB").save(tmp_path / "d.png")
    from gags.cameras import Camera

    scene = Scene(root=tmp_path, source_format="colmap",
                  cameras=[Camera(name="d.png", K=torch.eye(3), world_to_cam=torch.eye(4), width=w, height=h)],
                  image_paths=[tmp_path / "d.png"], train_ids=[0], test_ids=[], distortions=[dist],
                  cache_dir=tmp_path / "cache")
    out = scene.load_image(0)[..., 0].astype(np.float64)
    expected = undistort_points(dots, dist)
    for (u, v) in expected:
        win = (np.abs(xx - u) < 5) & (np.abs(yy - v) < 5)
        weights = out * win
        centroid = np.array([(weights * xx).sum(), (weights * yy).sum()]) / weights.sum()
        assert np.linalg.norm(centroid - [u, v]) < 0.2, (centroid, (u, v))
    # cached: the second read comes from the cache folder and equals the first
    cached = list((tmp_path / "cache").glob("d.*.png"))
    assert len(cached) == 1
    np.testing.assert_array_equal(scene.load_image(0)[..., 0], out.astype(np.uint8))


def test_default_cache_is_per_user(kitchen, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = load_scene(kitchen, images_dir="images_8")
    assert scene.cache_dir.parent == tmp_path / "xdg" / "gags" / "undistorted"
    assert scene.cache_dir.name.startswith("images_8-")
    scene.load_image(0)
    assert len(list(scene.cache_dir.glob("*.png"))) == 1
    assert not (kitchen / ".gags_cache").exists()


def test_rgba_and_grey_and_16bit(tmp_path):
    from gags.data.images import read_image

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = 51
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert (read_image(tmp_path / "a.png") == 51).all()
    Image.fromarray(np.full((4, 5), 77, np.uint8)).save(tmp_path / "g.png")
    assert (read_image(tmp_path / "g.png") == 77).all()
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "w.png")
    assert (read_image(tmp_path / "w.png") == 255).all()


def test_read_image_is_writable(tmp_path):
    """Decoded RGB arrays are writable: torch.as_tensor on them must not warn about read-only memory."""
    from gags.data.images import read_image

    Image.fromarray(np.full((4, 5, 3), 9, np.uint8)).save(tmp_path / "c.png")
    image = read_image(tmp_path / "c.png")
    assert image.flags.writeable and image.flags.c_contiguous
