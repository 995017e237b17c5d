"""Every user mistake raises a GagsError naming the path."""

import shutil
import warnings
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image

from gags.data import load_scene, save_scene_json
from gags.errors import GagsError


def _copy_scene(kitchen: Path, tmp_path: Path, text: bool = False) -> Path:
    """A writable copy of the kitchen scene (images_8 and the model)."""
    root = tmp_path / "scene"
    shutil.copytree(kitchen / "images_8", root / "images_8")
    model = root / "sparse" / "0"
    model.mkdir(parents=True)
    rec = pycolmap.Reconstruction(str(kitchen / "sparse" / "0"))
    (rec.write_text if text else rec.write_binary)(str(model))
    return root


def _load(root: Path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_scene(root, images_dir="images_8", cache_dir=root / "cache", **kwargs)


def test_missing_image(kitchen, tmp_path):
    root = _copy_scene(kitchen, tmp_path)
    scene = _load(root)
    victim = root / "images_8" / "07.png"
    victim.unlink()
    with pytest.raises(GagsError, match=f"{victim}.*does not exist"):
        _load(root)
    with pytest.raises(GagsError, match=f"{victim}.*does not exist"):
        scene.load_image(scene.index("07.png"))


def test_corrupt_image(kitchen, tmp_path):
    root = _copy_scene(kitchen, tmp_path)
    scene = _load(root)
    victim = root / "images_8" / "07.png"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # truncated: the header still reads
    with pytest.raises(GagsError, match=f"{victim}.*corrupt"):
        scene.load_image(scene.index("07.png"))
    victim.write_bytes(b"not an image")
    with pytest.raises(GagsError, match=f"{victim}.*corrupt"):
        _load(root)


def test_image_size_mismatch(kitchen, tmp_path):
    root = _copy_scene(kitchen, tmp_path)
    scene = _load(root)
    victim = root / "images_8" / "07.png"
    Image.new("RGB", (100, 100)).save(victim)
    with pytest.raises(GagsError, match=f"{victim} is 100x100 but its camera.*195x130"):
        _load(root)
    with pytest.raises(GagsError, match=f"{victim} is 100x100 but its camera.*195x130"):
        scene.load_image(scene.index("07.png"))


def test_nan_pose(kitchen, tmp_path):
    root = tmp_path / "scene"
    root.mkdir()
    (root / "images_8").symlink_to(kitchen / "images_8")
    rec = pycolmap.Reconstruction(str(kitchen / "sparse" / "0"))
    frame = rec.frames[rec.find_image_with_name("07.png").frame_id]
    frame.rig_from_world = pycolmap.Rigid3d(frame.rig_from_world.rotation, np.array([np.nan, 0.0, 0.0]))
    (root / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(root / "sparse" / "0"))
    with pytest.raises(GagsError, match=f"07.png.*NaN.*{root / 'sparse' / '0'}"):
        _load(root)


def test_empty_model(tmp_path):
    root = tmp_path / "empty"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.png")
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera.create_from_model_name(1, "PINHOLE", 8.0, 8, 8))
    (root / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(root / "sparse" / "0"))
    with pytest.raises(GagsError, match=f"{root / 'sparse' / '0'}.*no registered images"):
        load_scene(root)


def test_unknown_format(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "a.jpg")
    pattern = f"{tmp_path / 'photos'}: unknown scene format.*COLMAP.*transforms.json.*--images"
    with pytest.raises(GagsError, match=pattern):
        load_scene(tmp_path / "photos")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GagsError, match="notes.txt: unknown scene format"):
        load_scene(tmp_path / "notes.txt")
    with pytest.raises(GagsError, match="nowhere.*does not exist"):
        load_scene(tmp_path / "nowhere")


def test_unwritable_out(kitchen, tmp_path):
    scene = _load(_copy_scene(kitchen, tmp_path))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(GagsError, match=f"{blocker / 'out'}"):
        save_scene_json(scene, blocker / "out")
